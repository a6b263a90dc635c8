"""What a claimed patch may be: whole new contents of editable text files, nothing else.

A patch travels as {path: new content} for the files it changes (no unified diff to parse, so no
hunk can reach outside its file). `check_patch` is the one gate every patch passes before the hub
commits it: canonical repository-relative paths only (no absolute path, no `..`, no `.git`), only
files the task config marks editable and not frozen, text only (UTF-8 without NUL or other control
bytes), size caps per file, in total and in file count, and an actual change. Git objects are
written by the hub itself from these contents (gitops.commit_files keeps each file's mode, new
files are plain 100644), so a patch cannot make a symlink, an executable or a submodule. The
content hash names the whole set of editable files after the change: equal hashes are one patch.
"""
from __future__ import annotations

import difflib
import hashlib
import json

from autoresearch.core.config import TaskConfig, edit_problem, normalize_path
from autoresearch.core.errors import AutoresearchError

MAX_FILE_BYTES = 256 * 1024  # larger than any source file an agent writes in one change
MAX_PATCH_BYTES = 512 * 1024  # the whole patch; the server's request limit sits just above it
MAX_FILES = 16  # one idea touches a few files
# Control characters that text files carry; any other one below 0x20 means binary content.
TEXT_CONTROLS = {"\t", "\n", "\r", "\f", "\v"}


class PatchError(AutoresearchError):
    """A patch the hub refuses: the message says which file and why."""


def check_patch(config: TaskConfig, base_files: dict[str, str], files: object) -> dict[str, str]:
    """The patch's changed files under canonical paths, or PatchError saying why it is refused.

    `base_files` are the editable files of the commit the patch is against."""
    if not isinstance(files, dict) or not files:
        raise PatchError("the patch names no file; send {path: new content} for each changed editable file")
    if len(files) > MAX_FILES:
        raise PatchError(f"the patch changes {len(files)} files; at most {MAX_FILES}")
    out, total = {}, 0
    for path, content in files.items():
        try:
            norm = normalize_path(path)
        except ValueError as e:
            raise PatchError(f"invalid path: {e}") from None
        problem = edit_problem(config, norm)
        if problem:
            raise PatchError(problem)
        if norm in out:
            raise PatchError(f"{path!r} and another path both name {norm}")
        size = _check_text(norm, content)
        total += size
        if total > MAX_PATCH_BYTES:
            raise PatchError(f"the patch is over {MAX_PATCH_BYTES} bytes")
        out[norm] = content
    changed = {p: c for p, c in out.items() if base_files.get(p) != c}
    if not changed:
        raise PatchError("the patch changes nothing: every file equals the base")
    return changed


def _check_text(path: str, content: object) -> int:
    if not isinstance(content, str):
        raise PatchError(f"{path}: the content must be a string of text")
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        raise PatchError(f"{path}: not valid UTF-8 text (lone surrogates)") from None
    if len(data) > MAX_FILE_BYTES:
        raise PatchError(f"{path}: {len(data)} bytes, over the {MAX_FILE_BYTES}-byte limit per file")
    bad = next((c for c in content if (ord(c) < 32 and c not in TEXT_CONTROLS) or c == "\x7f"), None)
    if bad is not None:
        raise PatchError(f"{path}: binary content (control byte {ord(bad):#04x}); only text files can be patched")
    return len(data)


def content_hash(files: dict[str, str]) -> str:
    """The identity of a set of editable files (path and content of each): equal hash, equal patch."""
    digest = hashlib.sha256()
    for path in sorted(files):
        data = files[path].encode("utf-8", errors="surrogatepass")
        digest.update(f"{path}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def commitment_digest(base_commit: str, files: dict[str, str], nonce: str) -> str:
    """What a worker commits to before revealing: SHA-256 of the canonical JSON of base, files, nonce."""
    text = json.dumps({"base": base_commit, "files": files, "nonce": nonce}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def edit_hash(base_files: dict[str, str], changed: dict[str, str]) -> str:
    """The identity of an edit wherever it lands: per changed file, the lines it removes and adds
    (difflib opcodes without their line numbers). A claim rebased onto a head that moved elsewhere
    keeps its edit hash, and with it the pairs measured before."""
    digest = hashlib.sha256()
    for path in sorted(changed):
        old, new = base_files.get(path, "").splitlines(True), changed[path].splitlines(True)
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
            if tag != "equal":
                digest.update(json.dumps([path, old[i1:i2], new[j1:j2]]).encode("utf-8", errors="surrogatepass"))
    return digest.hexdigest()
