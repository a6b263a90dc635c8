"""Git plumbing for research: branches, archive refs, one worktree and one commit per experiment.

The user's checkout is never touched: no checkout, no reset, no stash in the main worktree. All
research state lives in refs (`refs/heads/autoresearch/<tag>`, `refs/autoresearch/<tag>/<id>`)
and in worktrees under the task's state folder.
"""
from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from autoresearch.core.config import TaskConfig, is_editable
from autoresearch.core.errors import AutoresearchError

AUTHOR = {"GIT_AUTHOR_NAME": "autoresearch", "GIT_AUTHOR_EMAIL": "autoresearch@localhost",
          "GIT_COMMITTER_NAME": "autoresearch", "GIT_COMMITTER_EMAIL": "autoresearch@localhost"}
BRANCH_PREFIX = "autoresearch/"
ARCHIVE_PREFIX = "refs/autoresearch/"


# git's worktree bookkeeping (.git/worktrees/) is not safe for concurrent add/remove/prune: parallel
# slots take turns (a few milliseconds each).
_WORKTREES = threading.RLock()


class GitError(AutoresearchError):
    """A git command failed: `problem` is what git said, `fix` what to do about it."""

    def __init__(self, message: str, problem: str = "", fix: str = ""):
        super().__init__(message)
        self.problem, self.fix = problem or message, fix


@dataclass
class DiffStat:
    files_changed: int = 0
    insertions: int = 0
    deletions: int = 0


def git(repo: Path | str, *args: str, input: str | None = None, check: bool = True,
        env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, **AUTHOR, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    # No automatic gc: it would repack under experiments running in parallel.
    proc = subprocess.run(["git", "-C", str(repo), "-c", "gc.auto=0", *args], input=input, capture_output=True,
                          text=True, env=full_env)
    if check and proc.returncode != 0:
        detail = proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}, no message"
        if not proc.stderr.strip() and args[:1] == ("rev-parse",) and "--verify" in args:  # --quiet: git says nothing
            detail = f"{args[-1].removesuffix('^{commit}')} names no commit that git can read"
        fix = _git_fix(repo, args, detail)
        raise GitError(f"git {' '.join(args)} failed in {repo}: {detail}\n  fix: {fix}", problem=detail, fix=fix)
    return proc.stdout.strip()


def _git_fix(repo: Path | str, args: tuple[str, ...], detail: str) -> str:
    """What to do about a failed git command, from what git said."""
    text = detail.lower()
    if "not a git repository" in text:
        return (f"make {repo} a git repository (git init) or repair its .git folder "
                f"(`git -C {repo} status` shows what git sees)")
    commit_first = f"commit the task's files first: git -C {repo} add -A && git -C {repo} commit -m \"task\""
    if "does not have any commits" in text or "ambiguous argument 'head'" in text:
        return commit_first
    if args[:1] == ("rev-parse",) and "--verify" in args:
        ref = args[-1].removesuffix("^{commit}")
        unborn = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", "HEAD"],
                                capture_output=True).returncode != 0
        if ref.startswith("HEAD") and unborn:
            return commit_first
        return (f"check what {ref} points at (`git -C {repo} log -1 {ref}`); `git -C {repo} fsck` "
                "finds objects that are missing or damaged")
    if "invalid path" in text or "bad file name" in text:
        return "use a file name git accepts (no control characters, no .git part)"
    if "index.lock" in text or ".lock': file exists" in text:
        return f"another git process is working in {repo}; if none is, remove the stale .lock file git names"
    if "dubious ownership" in text:
        return f"git config --global --add safe.directory {repo} (or run as the repository's owner)"
    if "permission denied" in text or "read-only file system" in text:
        return f"make {repo}/.git writable for this user"
    if "no space left" in text:
        return "free disk space, then run again"
    return f"run `git -C {repo} status` (and `git -C {repo} fsck` for damage), repair what git reports, run again"


def toplevel(path: Path) -> Path | None:
    """The root of the git repository containing `path`, or None."""
    proc = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"],
                          capture_output=True, text=True)
    return Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None


def init_repo(path: Path, message: str = "Initial task import", exclude: tuple[str, ...] = ()) -> str:
    """Turn a folder into a git repository with everything committed but `exclude`; returns the commit."""
    git(path, "init", "-q", "-b", "main")
    exclude_state(path, exclude)
    git(path, "add", "-A")
    git(path, "commit", "-q", "--allow-empty", "-m", message)
    return rev_parse(path, "HEAD")


def exclude_state(repo: Path, names: tuple[str, ...]) -> None:
    """Keep autoresearch's files out of `git status` without touching tracked files."""
    exclude = Path(git(repo, "rev-parse", "--git-path", "info/exclude"))
    exclude = exclude if exclude.is_absolute() else repo / exclude
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    missing = [n for n in names if n not in lines]
    if missing:
        exclude.write_text("\n".join(lines + missing) + "\n")


def rev_parse(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")


def is_ancestor(repo: Path, commit: str, of: str) -> bool:
    """Whether `commit` is `of` or one of its ancestors."""
    try:
        git(repo, "merge-base", "--is-ancestor", commit, of)
        return True
    except GitError:
        return False


def ref_exists(repo: Path, ref: str) -> bool:
    return bool(git(repo, "rev-parse", "--verify", "--quiet", ref, check=False))


def branch_ref(tag: str) -> str:
    return f"refs/heads/{BRANCH_PREFIX}{tag}"


def archive_ref(tag: str, exp_id: int) -> str:
    return f"{ARCHIVE_PREFIX}{tag}/{exp_id}"


def update_ref(repo: Path, ref: str, new: str, old: str | None = None) -> None:
    """Point `ref` at `new`; with `old`, only if it still points there (compare-and-swap)."""
    git(repo, "update-ref", "-m", "autoresearch", ref, new, *([old] if old else []))


def has_uncommitted(repo: Path, paths: list[str]) -> bool:
    return bool(git(repo, "status", "--porcelain", "--", *paths)) if paths else False


def read_file(repo: Path, commit: str, path: str) -> str | None:
    proc = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], capture_output=True)
    return proc.stdout.decode("utf-8", errors="replace") if proc.returncode == 0 else None


def read_files(repo: Path, commit: str, paths: list[str]) -> dict[str, str]:
    out = {}
    for p in paths:
        text = read_file(repo, commit, p)
        if text is not None:
            out[p] = text
    return out


def list_files(repo: Path, commit: str) -> list[str]:
    return git(repo, "ls-tree", "-r", "--name-only", commit).splitlines()


def editable_files(config: TaskConfig, commit: str) -> dict[str, str]:
    """The files of `commit` that agents may edit (config.is_editable), path -> content."""
    return read_files(config.root, commit, [p for p in list_files(config.root, commit) if is_editable(config, p)])


def add_worktree(repo: Path, path: Path, commit: str) -> Path:
    if path.exists():
        remove_worktree(repo, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _WORKTREES:
        git(repo, "worktree", "add", "-q", "--detach", str(path), commit)
    return path


def remove_worktree(repo: Path, path: Path) -> None:
    with _WORKTREES:
        git(repo, "worktree", "remove", "--force", "--force", str(path), check=False)
        if path.exists():  # not a registered worktree (half-made): remove the folder, then the registration
            shutil.rmtree(path, ignore_errors=True)
            git(repo, "worktree", "prune", check=False)


def commit_files(repo: Path, parent: str, files: dict[str, str], message: str) -> str:
    """A commit on `parent` with `files` (path -> whole content) written; no worktree, no checkout.

    Built from trees (`git mktree`), not an index, so any number of threads can commit to the same
    repository at once. Trees and commits never change, so their listings are cached: a commit on
    top of one made here is three git calls (blob, tree, commit), which keeps rebasing off the
    slots' critical path cheap.
    """
    changes = {tuple(path.split("/")): git(repo, "hash-object", "-w", "--stdin", "--path", path, input=content)
               for path, content in files.items()}
    tree = _replace_in_tree(repo, _commit_tree(repo, parent), changes)
    commit = git(repo, "commit-tree", tree, "-p", parent, input=message)
    _COMMIT_TREES.put(commit, tree)
    return commit


class ObjectCache:
    """A bounded map keyed by git object id, safe across threads. Git objects never change, so an
    entry never goes stale; the oldest are dropped past `size`."""

    def __init__(self, size: int):
        self.size, self._items, self._lock = size, {}, threading.Lock()

    def get(self, key: str):
        with self._lock:
            return self._items.get(key)

    def put(self, key: str, value) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.pop(next(iter(self._items)))


class EditableFiles:
    """The editable files of commits, read once each (commits never change; rebases and the hub's
    patch checks read the same ones again and again). Callers get a copy they may change."""

    def __init__(self, config: TaskConfig, size: int = 256):
        self.config, self._cache = config, ObjectCache(size)

    def at(self, commit: str) -> dict[str, str]:
        files = self._cache.get(commit)
        if files is None:
            files = editable_files(self.config, commit)
            self._cache.put(commit, files)
        return dict(files)

    def remember(self, commit: str, files: dict[str, str]) -> None:
        """A commit just made from `files`: no need to read it back from git."""
        self._cache.put(commit, dict(files))


_TREES = ObjectCache(1024)  # tree -> its entries (mode, type, object, name)
_COMMIT_TREES = ObjectCache(1024)  # commit -> its tree


def _commit_tree(repo: Path, commit: str) -> str:
    tree = _COMMIT_TREES.get(commit)
    if tree is None:
        tree = git(repo, "rev-parse", f"{commit}^{{tree}}")
        _COMMIT_TREES.put(commit, tree)
    return tree


def _tree_entries(repo: Path, tree: str | None) -> tuple[tuple[str, str, str, str], ...]:
    if tree is None:
        return ()
    entries = _TREES.get(tree)
    if entries is None:
        entries = tuple(_parse_entry(e) for e in git(repo, "ls-tree", "-z", tree).split("\0") if e)
        _TREES.put(tree, entries)
    return entries


def _parse_entry(entry: str) -> tuple[str, str, str, str]:
    meta, name = entry.split("\t", 1)
    mode, kind, obj = meta.split()
    return mode, kind, obj, name


def _replace_in_tree(repo: Path, tree: str | None, changes: dict[tuple[str, ...], str]) -> str:
    """The tree `tree` with the blobs of `changes` (path parts -> blob) written in; modes are kept."""
    entries = {name: (mode, kind, obj) for mode, kind, obj, name in _tree_entries(repo, tree)}
    below: dict[str, dict[tuple[str, ...], str]] = {}
    for parts, blob in changes.items():
        if len(parts) == 1:
            old = entries.get(parts[0])
            entries[parts[0]] = (old[0] if old and old[1] == "blob" else "100644", "blob", blob)
        else:
            below.setdefault(parts[0], {})[parts[1:]] = blob
    for name, sub in below.items():
        old = entries.get(name)
        entries[name] = ("040000", "tree", _replace_in_tree(repo, old[2] if old and old[1] == "tree" else None, sub))
    listing = tuple((mode, kind, obj, name) for name, (mode, kind, obj) in sorted(entries.items()))
    new = git(repo, "mktree", "-z", input="".join(f"{m} {k} {o}\t{n}\0" for m, k, o, n in listing))
    _TREES.put(new, listing)
    return new


def merge_files(base: dict[str, str], ours: dict[str, str], theirs: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Replay the change `base -> theirs` onto `ours` (path -> content maps), file by file.

    Returns the merged content of every file the change touches that differs from `ours`, and the
    paths that conflict (both sides changed the same lines). Whole-file edits only: a file the
    change deletes, or adds where `ours` has another, counts as a conflict.
    """
    merged, conflicts = {}, []
    for path in sorted(set(base) | set(theirs)):
        old, mine, new = base.get(path), ours.get(path), theirs.get(path)
        if new == old:
            continue  # not part of the change
        if new is None:
            conflicts.append(path)
            continue
        if mine == old or mine == new:
            result = new
        elif old is None or mine is None:
            conflicts.append(path)
            continue
        else:
            result = _merge_text(old, mine, new)
            if result is None:
                conflicts.append(path)
                continue
        if result != mine:
            merged[path] = result
    return merged, conflicts


def _merge_text(base: str, ours: str, theirs: str) -> str | None:
    """Three-way merge of texts by lines: the merged text, or None when the two changes overlap.

    Finer than `git merge-file`, which also calls changes to adjacent lines a conflict: here two
    sides that change different lines merge even when those lines touch (e.g. two neighbouring
    constants). Safe for research because a merged candidate is always measured again.
    """
    lines = base.splitlines(keepends=True)
    ours_hunks, theirs_hunks = _hunks(lines, ours), _hunks(lines, theirs)
    for o in ours_hunks:
        for t in theirs_hunks:
            if o == t:
                continue  # the same change on both sides
            if _overlap(o, t):
                return None
    merged = {h[:2]: h for h in ours_hunks}
    merged.update({h[:2]: h for h in theirs_hunks})
    out = list(lines)
    for i1, i2, new in sorted(merged.values(), key=lambda h: (h[0], h[1]), reverse=True):
        out[i1:i2] = new
    return "".join(out)


def _hunks(base: list[str], text: str) -> list[tuple[int, int, tuple[str, ...]]]:
    """The changes from `base` to `text`: (first base line, end base line, new lines)."""
    other = text.splitlines(keepends=True)
    matcher = difflib.SequenceMatcher(None, base, other, autojunk=False)
    return [(i1, i2, tuple(other[j1:j2])) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


def _overlap(a: tuple[int, int, tuple], b: tuple[int, int, tuple]) -> bool:
    if max(a[0], b[0]) < min(a[1], b[1]):
        return True  # both change some of the same lines
    if a[0] == b[0] and (a[0] == a[1] or b[0] == b[1]):
        return True  # an insertion where the other side inserts or changes: order unknown
    return any(h[0] == h[1] and o[0] < h[0] < o[1] for h, o in ((a, b), (b, a)))  # insertion inside a change


def diff_stat(old: dict[str, str], new: dict[str, str]) -> DiffStat:
    """Files changed and lines inserted/deleted from `old` to `new` (path -> content maps)."""
    stat = DiffStat()
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path, ""), new.get(path, "")
        if a == b:
            continue
        stat.files_changed += 1
        matcher = difflib.SequenceMatcher(None, a.splitlines(), b.splitlines(), autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "equal":
                stat.deletions += i2 - i1
                stat.insertions += j2 - j1
    return stat


def diff(repo: Path, a: str, b: str) -> str:
    return git(repo, "diff", a, b)


def clear_stale_state(repo: Path, worktrees: Path) -> None:
    """Undo what a killed process may have left: our worktrees and lock files on our refs.

    Only called while holding the task's lock, so no other autoresearch process is using them.
    """
    if worktrees.exists():
        for path in worktrees.iterdir():
            remove_worktree(repo, path)
    common = Path(git(repo, "rev-parse", "--git-common-dir"))
    common = common if common.is_absolute() else (repo / common)
    admin = common / "worktrees"
    if admin.is_dir():  # half-registered worktrees (still "locked" by an interrupted `worktree add`)
        for entry in admin.iterdir():
            gitdir = entry / "gitdir"
            target = Path(gitdir.read_text().strip()) if gitdir.is_file() else None
            if target is None or str(target).startswith(str(worktrees.resolve())):
                shutil.rmtree(entry, ignore_errors=True)
    for pattern in ("refs/heads/autoresearch/**/*.lock", "refs/autoresearch/**/*.lock"):
        for lock in common.glob(pattern):
            lock.unlink(missing_ok=True)
    git(repo, "worktree", "prune", check=False)
