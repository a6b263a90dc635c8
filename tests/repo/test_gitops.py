"""Commits built from trees: what git itself would have committed, from any thread."""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from autoresearch.repo import gitops


def _repo(root: Path) -> tuple[Path, str]:
    (root / "pkg" / "deep").mkdir(parents=True)
    (root / "train.py").write_text("X = 1\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "pkg" / "model.py").write_text("WIDTH = 3\n")
    (root / "pkg" / "deep" / "data.txt").write_text("rows\n")
    (root / "odd name\twith tab.txt").write_text("kept\n")
    return root, gitops.init_repo(root)


def _tree(repo: Path, commit: str) -> list[str]:
    return gitops.git(repo, "ls-tree", "-r", commit).splitlines()


def test_commit_files_matches_what_git_commits(tmp_path: Path):
    repo, base = _repo(tmp_path / "r")
    edits = {"train.py": "X = 2\n", "run.sh": "#!/bin/sh\necho bye\n", "pkg/deep/data.txt": "more rows\n",
             "pkg/new/extra.py": "Y = 1\n"}
    commit = gitops.commit_files(repo, base, edits, "an experiment\n")
    assert gitops.git(repo, "rev-parse", f"{commit}^") == base
    assert gitops.git(repo, "log", "-1", "--format=%B", commit) == "an experiment"
    # The same change made by git in a checkout gives the same tree: modes, untouched files, new folders.
    check = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", str(repo), str(check)], check=True)
    for path, text in edits.items():
        (check / path).parent.mkdir(parents=True, exist_ok=True)
        (check / path).write_text(text)
    gitops.git(check, "add", "-A")
    assert _tree(repo, commit) == gitops.git(check, "ls-tree", "-r", gitops.git(check, "write-tree")).splitlines()
    assert any(line.startswith("100755") and line.endswith("\trun.sh") for line in _tree(repo, commit))
    # A commit on a commit made here (a rebase onto a new best) builds on the cached trees.
    again = gitops.commit_files(repo, commit, {"pkg/model.py": "WIDTH = 4\n"}, "on top\n")
    assert gitops.read_file(repo, again, "pkg/model.py") == "WIDTH = 4\n"
    assert gitops.read_file(repo, again, "train.py") == "X = 2\n"
    assert gitops.read_file(repo, again, "pkg/new/extra.py") == "Y = 1\n"
    gitops.git(repo, "fsck", "--strict", "--no-dangling")


def test_commit_files_from_many_threads(tmp_path: Path):
    repo, base = _repo(tmp_path / "r")
    commits: dict[int, str] = {}

    def commit(i: int) -> None:
        commits[i] = gitops.commit_files(repo, base, {"train.py": f"X = {i}\n", "pkg/model.py": f"W = {i}\n"}, f"{i}\n")

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(commits.values())) == 12
    for i, sha in commits.items():
        assert gitops.read_files(repo, sha, ["train.py", "pkg/model.py"]) == {"train.py": f"X = {i}\n",
                                                                            "pkg/model.py": f"W = {i}\n"}
