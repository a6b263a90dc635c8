"""Finding tasks: shipped examples, fresh research repositories, and `init` for existing repos.

Research never writes branches into a repository that is not the task's own. A shipped example
(or any folder inside another repository) is first copied into a research repository of its
own: `autoresearch new nanogpt DIR`, or automatically by `autoresearch run nanogpt`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from autoresearch.core.config import CONFIG_NAME, GIT_IGNORED, STATE_DIR
from autoresearch.core.errors import AutoresearchError
from autoresearch.repo import gitops

HOME_ENV = "AUTORESEARCH_HOME"
COPY_IGNORE = shutil.ignore_patterns(".git", STATE_DIR, "__pycache__", "*.pyc", "results.tsv", "progress.png",
                                    "model.pt2")


class TaskError(AutoresearchError):
    pass


def examples_dir() -> Path:
    """Shipped examples: inside the installed package, or the source checkout's `examples/`."""
    packaged = Path(__file__).parents[1] / "_examples"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "examples"


def list_examples() -> dict[str, Path]:
    root = examples_dir()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / CONFIG_NAME).is_file()}


def research_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / "autoresearch").expanduser()


def task_root(name: str) -> Path:
    """The task repository a command names: a folder, or a shipped example's research repository."""
    path = Path(name).expanduser()
    if not path.exists() and name in list_examples():
        path = research_home() / name
    return path.resolve()


def new_task(source: str | Path, dest: Path) -> Path:
    """Copy an example (by name) or a task folder into `dest` as a fresh git repository."""
    examples = list_examples()
    src = examples[str(source)] if str(source) in examples else Path(source)
    if not (src / CONFIG_NAME).is_file():
        known = ", ".join(examples) or "none"
        raise TaskError(f"{source!s} is neither a shipped example (known: {known}) nor a folder with {CONFIG_NAME}")
    dest = Path(dest).resolve()
    if dest.exists() and any(dest.iterdir()):
        raise TaskError(f"{dest} already exists and is not empty; choose another folder")
    shutil.copytree(src, dest, ignore=COPY_IGNORE, dirs_exist_ok=True)
    gitops.init_repo(dest, f"Import task {src.name} for autoresearch", exclude=GIT_IGNORED)
    return dest


def resolve_task(target: str) -> tuple[Path, str | None]:
    """The task repository to research for a CLI argument, creating one from an example if needed.

    Returns (repo root, a message for the user or None).
    """
    path = Path(target).expanduser()
    examples = list_examples()
    if not path.exists() and target in examples:
        return _research_copy(target, examples[target])
    if not path.is_dir():
        known = ", ".join(examples) or "none"
        raise TaskError(f"{target}: no such folder, and not a shipped example (known: {known})\n"
                        "  fix: give a task repository's folder, or an example name from `autoresearch examples`")
    path = path.resolve()
    top = gitops.toplevel(path)
    if top == path:
        if (path / CONFIG_NAME).is_file() and not gitops.ref_exists(path, "HEAD"):  # no config: load_config says so
            raise TaskError(f"{path} is a git repository without a commit: research starts from the last commit.\n"
                            f"  fix: commit the task's files first: git -C {path} add -A && "
                            f"git -C {path} commit -m \"task\"")
        return path, None
    if top is None and (path / ".git").exists():  # a repository git cannot read: never init over it
        _unreadable_repository(path)
    if top is None:
        if not (path / CONFIG_NAME).is_file():
            raise TaskError(f"{path} is not a git repository and has no {CONFIG_NAME}, so it is no task yet.\n"
                            f"  fix: run `autoresearch init {target}` to write a config, review it, then run again")
        gitops.init_repo(path, exclude=GIT_IGNORED)
        return path, f"{path} was not a git repository: initialised one with everything committed"
    for name, ex in examples.items():  # `run examples/nanogpt` from a clone of autoresearch
        if ex.resolve() == path:
            return _research_copy(name, ex)
    first = "" if (path / CONFIG_NAME).is_file() else f"write a config with `autoresearch init {target}`, then "
    raise TaskError(f"{path} is inside the git repository {top}, not its own: research branches would land there.\n"
                    f"  fix: {first}copy it into a research repository with `autoresearch new {target} DIR`, "
                    f"or run on {top}")


def _unreadable_repository(path: Path) -> None:
    """TaskError for a folder whose .git git refuses, with what git says about it."""
    try:
        gitops.git(path, "rev-parse", "--show-toplevel")
        problem, fix = "git does not read it as a repository", ""
    except gitops.GitError as e:
        problem, fix = e.problem, e.fix
    if "not a git repository" in problem or not fix:  # a damaged .git (a corrupt HEAD...), not a missing one
        fix = (f"repair it (`git -C {path} status` shows what git sees; .git/HEAD normally reads "
               "`ref: refs/heads/main`), or move .git away to start a fresh repository")
    raise TaskError(f"{path}/.git exists, but git cannot use it: {problem}\n  fix: {fix}")


def _research_copy(name: str, example: Path) -> tuple[Path, str | None]:
    dest = research_home() / name
    if (dest / CONFIG_NAME).is_file() and gitops.toplevel(dest) == dest.resolve():
        return dest.resolve(), f"using the research repository {dest}"
    new_task(example, dest)
    return dest.resolve(), f"created the research repository {dest} from the {name} example"


# -- init ------------------------------------------------------------------------------------

def guess_config(root: Path) -> str:
    """A commented autoresearch.toml for an existing repository, with what can be guessed (init_guess.py)."""
    from autoresearch.apps import init_guess

    return init_guess.render(init_guess.guess(root))
