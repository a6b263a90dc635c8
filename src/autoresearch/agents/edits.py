"""The edit format LLM agents answer in, and a tolerant parser for it.

A reply holds a one-line description, the model's reasoning, optional notes for the lab notebook,
and edits. Edits are search/replace blocks, each after a line naming the file:

    DESCRIPTION: halve the learning rate
    REASONING: the loss curve is noisy late in training
    NOTEBOOK: lr above 3e-3 diverges with depth 8

    train.py
    <<<<<<< SEARCH
    LEARNING_RATE = 0.004
    =======
    LEARNING_RATE = 0.002
    >>>>>>> REPLACE

A small file may be replaced whole with a `FILE: path` line followed by a fenced block.
The same content may come as JSON (structured output): `{"description", "reasoning", "notebook",
"edits": [{"path", "search", "replace"}], "files": [{"path", "content"}]}`.

The parser tolerates the usual slips of models: code fences around blocks, markdown around file
names, trailing whitespace, CRLF line ends, 5 to 9 marker characters, a search text that differs
from the file only in trailing whitespace or in uniform indentation. It rejects what cannot be
applied with certainty (a search text found twice, or nowhere) with a message meant to be shown to
the model, which then gets another try.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

SEARCH_RE = re.compile(r"^\s*<{5,9}\s*SEARCH\b.*$", re.IGNORECASE)
DIVIDER_RE = re.compile(r"^\s*={5,9}\s*$")
REPLACE_RE = re.compile(r"^\s*>{5,9}\s*REPLACE\b.*$", re.IGNORECASE)
FENCE_RE = re.compile(r"^\s*(`{3,}|~{3,})")
FILE_RE = re.compile(r"^\s*(?:[#*>\-]+\s*)?\**\s*FILE\s*:\s*(.+?)\s*$", re.IGNORECASE)
SECTION_RE = re.compile(r"^\s*(?:[#*]+\s*)?\**\s*(DESCRIPTION|REASONING|NOTEBOOK|SKIP|IDEA)\s*\**\s*:\s*\**\s*(.*)$",
                        re.IGNORECASE)

MAX_MESSAGE_CHARS = 1500  # one problem as shown to the model
CLOSEST_LINES = 8  # how much of the nearest part of the file a non-matching edit quotes


@dataclass
class Block:
    """One edit as the model wrote it: a search/replace pair, or a whole file (search is None)."""

    path: str | None
    search: str | None
    replace: str


@dataclass
class Reply:
    """What a model's answer says, before the edits are applied."""

    description: str = ""
    reasoning: str = ""
    notebook: str = ""
    skip: bool = False  # the model declines (e.g. to fix a crash it thinks unfixable)
    idea_id: int | None = None  # the open idea the model says it tries
    blocks: list[Block] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # format problems found while parsing
    structured: bool = False  # it came as JSON


@dataclass
class Applied:
    """The outcome of applying a reply to the files: new contents, or why not."""

    edits: dict[str, str] = field(default_factory=dict)  # path -> full new content (changed files only)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.edits)


class EditError(ValueError):
    """An edit that cannot be applied; the message is meant for the model."""


# -- parsing ---------------------------------------------------------------------------------

def parse_reply(text: str, paths: list[str] | None = None) -> Reply:
    """Read a model's reply (text format or JSON). Never raises; problems are listed in the result."""
    text = normalize_newlines(text or "")
    stripped = _strip_outer_fence(text.strip())
    if stripped.startswith("{"):
        reply = _parse_json(stripped)
        if reply is not None:
            return reply
    return _parse_text(text, paths or [])


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _strip_outer_fence(text: str) -> str:
    lines = text.split("\n")
    if len(lines) >= 2 and FENCE_RE.match(lines[0]) and FENCE_RE.match(lines[-1]):
        return "\n".join(lines[1:-1]).strip()
    return text


def _parse_json(text: str) -> Reply | None:
    try:
        data, _ = json.JSONDecoder(strict=False).raw_decode(text)  # raw newlines in strings are common
    except json.JSONDecodeError as e:
        reply = Reply(structured=True)
        reply.problems.append(f"the reply looks like JSON but does not parse: {e.msg} at character {e.pos} "
                              "(was it cut off? keep the answer shorter)")
        return reply
    if not isinstance(data, dict):
        return None
    reply = Reply(structured=True)
    reply.description = _one_line(str(data.get("description") or ""))
    reply.reasoning = str(data.get("reasoning") or "").strip()
    reply.notebook = str(data.get("notebook") or "").strip()
    reply.skip = bool(data.get("skip", False))
    reply.idea_id = _int(str(data.get("idea") or ""))
    for item in data.get("edits") or []:
        if not isinstance(item, dict) or not isinstance(item.get("replace", ""), str):
            reply.problems.append(f"an edit must be an object with path, search and replace: got {str(item)[:200]}")
            continue
        search = item.get("search")
        reply.blocks.append(Block(_clean_path(str(item.get("path") or "")) or None,
                                  normalize_newlines(str(search)) if search is not None else "",
                                  normalize_newlines(str(item.get("replace") or ""))))
    for item in data.get("files") or []:
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            reply.problems.append(f"a file must be an object with path and content: got {str(item)[:200]}")
            continue
        reply.blocks.append(Block(_clean_path(str(item.get("path") or "")) or None, None,
                                  normalize_newlines(item["content"])))
    return reply


def _parse_text(text: str, paths: list[str]) -> Reply:
    reply = Reply()
    lines = text.split("\n")
    prose: list[str] = []  # lines outside blocks, to find sections in
    section: str | None = None
    sections: dict[str, list[tuple[int, str]]] = {"description": [], "reasoning": [], "notebook": []}
    i = 0
    while i < len(lines):
        line = lines[i]
        if SEARCH_RE.match(line):
            path, at = _path_before(lines, i, paths)
            if section:  # the file name line belongs to the block, not to the section above it
                sections[section] = [(k, v) for k, v in sections[section] if k < at]
            i, block, problem = _read_search_block(lines, i, path)
            _collect(reply, block, problem)
            section = None
            continue
        file_match = FILE_RE.match(line)
        if file_match:
            i, block, problem = _read_whole_file(lines, i, _clean_path(file_match.group(1)))
            _collect(reply, block, problem)
            section = None
            continue
        sec = SECTION_RE.match(line)
        if line.strip().strip("*#`").strip().upper() in ("SKIP", "SKIP."):
            reply.skip, section = True, None
        elif sec:
            name = sec.group(1).lower()
            if name == "skip":
                reply.skip = True
                section = None
            elif name == "idea":
                reply.idea_id = _int(sec.group(2))
                section = None
            else:
                section = name
                sections[name].append((i, sec.group(2)))
        elif section and not FENCE_RE.match(line):
            sections[section].append((i, line))
        prose.append(line)
        i += 1
    reply.description = _one_line(" ".join(v.strip() for _, v in sections["description"] if v.strip())[:300])
    reply.reasoning = "\n".join(v for _, v in sections["reasoning"]).strip()
    reply.notebook = "\n".join(v for _, v in sections["notebook"]).strip()
    if not reply.description:
        first = next((ln.strip(" #*`") for ln in prose if ln.strip(" #*`") and not DIVIDER_RE.match(ln)), "")
        reply.description = _one_line(first)[:200]
    return reply


def _collect(reply, block, problem) -> None:
    """Record what one block of the reply gave: an edit, a problem to feed back, or both."""
    if problem:
        reply.problems.append(problem)
    if block:
        reply.blocks.append(block)


def _read_search_block(lines: list[str], start: int, path: str | None) -> tuple[int, Block | None, str | None]:
    """Read `<<<<<<< SEARCH ... ======= ... >>>>>>> REPLACE` starting at `start`."""
    search: list[str] = []
    replace: list[str] = []
    i = start + 1
    while i < len(lines) and not DIVIDER_RE.match(lines[i]):
        if SEARCH_RE.match(lines[i]) or REPLACE_RE.match(lines[i]):
            return i, None, (f"a SEARCH block (line {start + 1} of your reply) has no ======= divider; "
                             "write SEARCH, the old lines, =======, the new lines, REPLACE")
        search.append(lines[i])
        i += 1
    if i >= len(lines):
        return i, None, f"a SEARCH block (line {start + 1} of your reply) is not closed (was the reply cut off?)"
    i += 1
    while i < len(lines) and not REPLACE_RE.match(lines[i]):
        if SEARCH_RE.match(lines[i]):
            return i, None, (f"a SEARCH block (line {start + 1} of your reply) has no >>>>>>> REPLACE line "
                             "before the next block")
        replace.append(lines[i])
        i += 1
    if i >= len(lines):
        return i, None, (f"a SEARCH block (line {start + 1} of your reply) has no >>>>>>> REPLACE line "
                         "(was the reply cut off? keep it shorter)")
    return i + 1, Block(path, _strip_fence_lines(search), _strip_fence_lines(replace)), None


def _read_whole_file(lines: list[str], start: int, path: str) -> tuple[int, Block | None, str | None]:
    """Read `FILE: path` followed by a fenced block holding the whole new content."""
    i = start + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    after_fence = i + 1 if i < len(lines) and FENCE_RE.match(lines[i]) else i
    if after_fence < len(lines) and SEARCH_RE.match(lines[after_fence]):
        return start + 1, None, None  # `FILE: path` naming the file of a SEARCH block that follows
    if i >= len(lines) or not FENCE_RE.match(lines[i]):
        return i, None, f"FILE: {path} must be followed by the whole new content in a ``` fenced block"
    fence = FENCE_RE.match(lines[i]).group(1)
    body: list[str] = []
    i += 1
    while i < len(lines) and lines[i].strip() != fence:
        body.append(lines[i])
        i += 1
    if i >= len(lines):
        return i, None, f"the fenced block of FILE: {path} is not closed (was the reply cut off? keep it shorter)"
    return i + 1, Block(path, None, "\n".join(body) + "\n"), None


def _strip_fence_lines(lines: list[str]) -> str:
    """The block's text, without stray fence lines a model put inside the markers."""
    if lines and FENCE_RE.match(lines[0]) and re.fullmatch(r"[`~]{3,}[\w+-]*", lines[0].strip()):
        lines = lines[1:]
    if lines and re.fullmatch(r"[`~]{3,}", lines[-1].strip()):
        lines = lines[:-1]
    return "\n".join(lines) + ("\n" if lines else "")


def _path_before(lines: list[str], i: int, paths: list[str]) -> tuple[str | None, int]:
    """The file a SEARCH block belongs to, from the nearest earlier lines, and where it was named."""
    top = i
    for j in range(i - 1, max(-1, i - 4), -1):
        line = lines[j].strip()
        if not line:
            continue
        if REPLACE_RE.match(line):
            break
        if FENCE_RE.match(line):  # ```python, or ```python train.py
            top = j
            words = line.strip("`~").split()
            candidate = _clean_path(words[-1]) if words else ""
            if candidate and (candidate in paths or _looks_like_path(candidate)):
                return candidate, j
            continue
        candidate = _clean_path(line)
        if candidate and (candidate in paths or _looks_like_path(candidate)):
            return candidate, j
        break
    return None, top


def _looks_like_path(text: str) -> bool:
    return bool(re.fullmatch(r"[\w./\-]+\.\w{1,8}", text)) and " " not in text


def _clean_path(text: str) -> str:
    text = text.strip().lstrip("#>").strip().strip("`*'\"").strip()
    for prefix in ("file:", "path:", "filename:"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):].strip().strip("`*'\"").strip()
    text = text.rstrip(":").strip()
    return text[2:] if text.startswith("./") else text


def _int(text: str) -> int | None:
    m = re.search(r"\d+", text)
    return int(m.group()) if m else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- applying --------------------------------------------------------------------------------

def resolve_path(path: str | None, files: dict[str, str]) -> str | None:
    """Map the file name a model wrote onto a known file: exact, else a unique basename match."""
    if path is None:
        return next(iter(files)) if len(files) == 1 else None
    if path in files:
        return path
    base = path.rsplit("/", 1)[-1]
    matches = [p for p in files if p.rsplit("/", 1)[-1] == base]
    if len(matches) == 1:
        return matches[0]
    return path  # a new file (the harness decides whether it may be written)


def apply_reply(reply: Reply, files: dict[str, str], *, whole_file_max_lines: int = 200,
                may_edit: Callable[[str], bool] | None = None) -> Applied:
    """Apply the reply's blocks in order to the files; all or nothing.

    `may_edit(path)` says whether a path may be written; edits to others are refused.
    """
    out = Applied()
    if reply.problems:
        out.problems.extend(reply.problems)
    if not reply.blocks:
        if not reply.problems:
            out.problems.append("the reply has no edits: give at least one SEARCH/REPLACE block")
        return out
    current = dict(files)
    for n, block in enumerate(reply.blocks, 1):
        path = resolve_path(block.path, files)
        if path is None:
            out.problems.append(f"edit {n} does not say which file it changes: put the file's path on the line "
                                f"before <<<<<<< SEARCH (files: {', '.join(files)})")
            continue
        if may_edit is not None and not may_edit(path):
            out.problems.append(f"edit {n}: {path} may not be changed (only the editable files: "
                                f"{', '.join(files) or 'none'})")
            continue
        old = current.get(path)
        try:
            if block.search is None:
                if old is not None and old.count("\n") > whole_file_max_lines:
                    raise EditError(f"{path} has {old.count(chr(10))} lines, too many to rewrite whole: "
                                    "use SEARCH/REPLACE blocks for it")
                current[path] = block.replace
            else:
                current[path] = apply_block(old, block.search, block.replace, path)
        except EditError as e:
            out.problems.append(f"edit {n}: {e}")
    if out.problems:
        return out
    for path, content in current.items():
        if files.get(path) != content:
            old = files.get(path)
            out.edits[path] = _restore_newlines(content, old) if old is not None else content
    if not out.edits:
        out.problems.append("the edits change nothing: the replacement equals the search text")
    return out


def _restore_newlines(content: str, original: str) -> str:
    if "\r\n" in original:
        return normalize_newlines(content).replace("\n", "\r\n")
    return content


def apply_block(content: str | None, search: str, replace: str, path: str = "the file") -> str:
    """Replace the one occurrence of `search` in `content`; raises EditError when not exactly one."""
    search, replace = normalize_newlines(search), normalize_newlines(replace)
    if content is None:
        if search.strip():
            raise EditError(f"{path} does not exist, so there is nothing to search in; to create it, "
                            "leave the SEARCH part empty")
        return replace
    text = normalize_newlines(content)
    if not search.strip():
        if text.strip():
            raise EditError(f"the SEARCH part for {path} is empty; quote the exact lines to replace")
        return replace
    # 1. Exact text.
    count = text.count(search)
    s_lines = search.rstrip("\n").split("\n")
    t_lines = text.split("\n")
    if count == 1:
        loose = _line_matches(t_lines, s_lines, lambda a: a.rstrip())
        if len(loose) > 1:  # the same lines again, differing only in trailing whitespace
            raise EditError(_ambiguous(path, search, len(loose)))
        return text.replace(search, replace, 1)
    if count > 1:
        unique = _full_line_matches(text, search)
        if len(unique) == 1:
            return _splice(text, unique[0], len(search.rstrip("\n").split("\n")), replace)
        raise EditError(_ambiguous(path, search, count))
    # 2. Line by line, ignoring trailing whitespace, then also surrounding blank lines of the search.
    for candidate in (s_lines, _trim_blank(s_lines)):
        if not candidate:
            continue
        hits = _line_matches(t_lines, candidate, lambda a: a.rstrip())
        if len(hits) == 1:
            return _splice(text, hits[0], len(candidate), replace)
        if len(hits) > 1:
            raise EditError(_ambiguous(path, search, len(hits)))
    # 3. The same lines at another indentation (a model that dropped or added a level): re-indent.
    candidate = _trim_blank(s_lines)
    hits = _line_matches(t_lines, candidate, lambda a: a.strip())
    if len(hits) == 1:
        start = hits[0]
        shift = _indent_shift(candidate, t_lines[start:start + len(candidate)])
        if shift is not None:
            return _splice(text, start, len(candidate), _reindent(replace, shift))
    if len(hits) > 1:
        raise EditError(_ambiguous(path, search, len(hits)))
    raise EditError(_no_match(path, search, t_lines))


def _full_line_matches(text: str, search: str) -> list[int]:
    """Start lines where `search` matches whole lines (disambiguates `X = 1` from `MAX = 1`)."""
    s_lines = search.rstrip("\n").split("\n")
    return _line_matches(text.split("\n"), s_lines, lambda a: a)


def _line_matches(t_lines: list[str], s_lines: list[str], key) -> list[int]:
    n = len(s_lines)
    want = [key(s) for s in s_lines]
    return [i for i in range(len(t_lines) - n + 1) if [key(t) for t in t_lines[i:i + n]] == want]


def _splice(text: str, start: int, n: int, replace: str) -> str:
    t_lines = text.split("\n")
    new = replace[:-1] if replace.endswith("\n") else replace
    middle = new.split("\n") if replace else []
    return "\n".join(t_lines[:start] + middle + t_lines[start + n:])


def _trim_blank(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _indent_shift(search: list[str], found: list[str]) -> tuple[str, str] | None:
    """(remove, add): the uniform indentation change from the model's lines to the file's, or None."""
    pairs = [(s, f) for s, f in zip(search, found) if s.strip()]
    if not pairs:
        return None
    s0, f0 = _indent(pairs[0][0]), _indent(pairs[0][1])
    for s, f in pairs:
        si, fi = _indent(s), _indent(f)
        if len(fi) >= len(f0) and len(si) >= len(s0):
            if fi[len(f0):] != si[len(s0):]:
                return None
        else:
            return None
    return s0, f0


def _reindent(text: str, shift: tuple[str, str]) -> str:
    remove, add = shift
    out = []
    for line in text.split("\n"):
        if line.strip():
            line = add + (line[len(remove):] if line.startswith(remove) else line.lstrip())
        out.append(line)
    return "\n".join(out)


def _ambiguous(path: str, search: str, count: int) -> str:
    return _cap(f"the SEARCH text occurs {count} times in {path}, so the edit is ambiguous; include more "
                f"surrounding lines so that it matches exactly once:\n{_quote(search)}")


def _no_match(path: str, search: str, t_lines: list[str]) -> str:
    s_lines = _trim_blank(search.rstrip("\n").split("\n")) or [""]
    n = max(1, len(s_lines))
    best, best_i = 0.0, 0
    target = "\n".join(s.strip() for s in s_lines)
    for i in range(0, max(1, len(t_lines) - n + 1)):
        window = "\n".join(t.strip() for t in t_lines[i:i + n])
        ratio = difflib.SequenceMatcher(None, target, window, autojunk=False).quick_ratio()
        if ratio > best:
            ratio = difflib.SequenceMatcher(None, target, window, autojunk=False).ratio()
            if ratio > best:
                best, best_i = ratio, i
    msg = f"the SEARCH text was not found in {path}; it must copy the file's current lines exactly:\n{_quote(search)}"
    if best > 0.5:
        closest = "\n".join(t_lines[best_i:best_i + min(n, CLOSEST_LINES)])
        msg += f"\nthe closest lines in {path} (from line {best_i + 1}) are:\n{_quote(closest)}"
    return _cap(msg)


def _quote(text: str, limit: int = 600) -> str:
    text = text.rstrip("\n")
    if len(text) > limit:
        text = text[:limit] + "\n[...]"
    return "\n".join("    " + line for line in text.split("\n"))


def _cap(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + " [...]"


# -- structured output -------------------------------------------------------------------------

def reply_schema(files: dict[str, str], *, anchored_lines: int = 400, max_edits: int = 4,
                 max_text: int = 1000) -> dict[str, Any]:
    """A JSON schema for structured replies.

    `path` may only name an editable file. When the files are small (at most `anchored_lines`
    lines in all), `search` is restricted to a line that occurs exactly once in them, so that even a
    small model's edits always apply (lines with quotes or backslashes cannot be anchors); larger
    files get a free-text `search`. String lengths are
    bounded: llama.cpp turns the schema into a grammar and refuses very long bounded repetitions.
    """
    paths = sorted(files) or ["file"]
    unique: list[str] = []
    total = sum(c.count("\n") + 1 for c in files.values())
    if total <= anchored_lines:
        counts: dict[str, int] = {}
        for content in files.values():
            for line in normalize_newlines(content).split("\n"):
                if line.strip():
                    counts[line] = counts.get(line, 0) + 1
        # Lines whose JSON form needs escapes (quotes, backslashes, non-ASCII) are left out:
        # llama-cpp-python's schema-to-grammar conversion mis-escapes such literals.
        unique = [line for line, c in counts.items() if c == 1 and "\\" not in json.dumps(line)]
    search: dict[str, Any] = {"type": "string", "enum": unique} if unique else {"type": "string",
                                                                                   "maxLength": max_text}
    edit = {"type": "object",
            "properties": {"path": {"type": "string", "enum": paths}, "search": search,
                           "replace": {"type": "string", "maxLength": max_text}},
            "required": ["path", "search", "replace"], "additionalProperties": False}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "description": {"type": "string", "maxLength": 160},
            "reasoning": {"type": "string", "maxLength": 600},
            "notebook": {"type": "string", "maxLength": 300},
            "edits": {"type": "array", "items": edit, "minItems": 1, "maxItems": max_edits},
        },
        "required": ["description", "reasoning", "notebook", "edits"],
        "additionalProperties": False,
    }
    return schema
