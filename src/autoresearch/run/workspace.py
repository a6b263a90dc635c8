"""What a run's folder gets besides its commit: the setup's kept outputs and the named inputs.

Setup outputs (`[setup] outputs`) are kept in the task's state folder, one store per output
(`.autoresearch/setup/repo/<path>` or `.autoresearch/setup/home/<path>`), across research runs:

- a folder inside the repository is replaced, in the setup's folder and in every experiment's
  worktree, by a link to its store. The store starts as that folder's files at the research base
  (the setup finds its own code there, nanoGPT's `data/shakespeare_char/prepare.py`), then holds
  what the setup wrote (`train.bin`);
- a folder under `~` is bound at that path by the sandbox, whose home is otherwise a throw-away
  tmpfs (without a sandbox the real folder is used).

In the sandbox the stores are writable for the setup only: experiments see them read-only.
Inputs (`[setup] inputs`) are paths of the checkout git does not track (nanoGPT's `input.txt`):
linked into the setup's folder and every worktree, never copied. All links are made by the harness
before the command starts, so they work with and without the sandbox. The stores live on the
coordinator's machine; the Ray backend ships them to nodes that lack them (run/ray_backend.py).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from autoresearch.core.config import TaskConfig

SETUP_DIR = "setup"  # under the state folder


@dataclass(frozen=True)
class Links:
    """Links made in a run's folder before it starts: (path relative to the folder, absolute target).
    An output replaces what the commit has there; an input is only made where nothing is."""

    outputs: tuple[tuple[str, str], ...] = ()
    inputs: tuple[tuple[str, str], ...] = ()

    def apply(self, folder: Path) -> None:
        inside = os.path.realpath(folder)
        for rel, _ in (*self.outputs, *self.inputs):  # a symlinked parent must not lead the removal elsewhere
            parent = os.path.realpath((folder / rel).parent)
            if os.path.commonpath([parent, inside]) != inside:
                raise OSError(f"{folder / rel}: its folder leads out of {folder} (a symlink); [setup] outputs and "
                              "inputs must be real folders of the repository")
        for rel, target in self.outputs:
            path = folder / rel
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target, target_is_directory=True)
        for rel, target in self.inputs:
            path = folder / rel
            if not os.path.lexists(path):  # e.g. an input the setup already copied into an output's store
                path.parent.mkdir(parents=True, exist_ok=True)
                path.symlink_to(target)


def store(config: TaskConfig, output: str) -> Path:
    """Where the setup output `output` is kept."""
    base = config.state_dir / SETUP_DIR
    if output.startswith("~/"):
        return base / "home" / output[2:].strip("/")
    return base / "repo" / output.strip("/")


def links(config: TaskConfig) -> Links:
    outputs = tuple((o.strip("/"), str(store(config, o))) for o in config.setup_access.outputs if not o.startswith("~/"))
    inputs = tuple((i.strip("/"), str(config.root / i.strip("/"))) for i in config.setup_access.inputs)
    return Links(outputs, inputs)


def home_mounts(config: TaskConfig, writable: bool) -> tuple[tuple[Path, Path, bool], ...]:
    """Sandbox binds (store, the path under ~, writable) of the outputs under the home."""
    return tuple((store(config, o), Path(os.path.expanduser(o)), writable)
                 for o in config.setup_access.outputs if o.startswith("~/"))


def stores(config: TaskConfig) -> tuple[Path, ...]:
    return tuple(store(config, o) for o in config.setup_access.outputs)


def prepare_stores(config: TaskConfig, setup_folder: Path) -> None:
    """Create the stores; refresh an in-repository one with that folder's files at the research base."""
    for output in config.setup_access.outputs:
        target = store(config, output)
        target.mkdir(parents=True, exist_ok=True)
        tracked = setup_folder / output.strip("/")
        if not output.startswith("~/") and tracked.is_dir() and not tracked.is_symlink():
            shutil.copytree(tracked, target, symlinks=True, dirs_exist_ok=True)
