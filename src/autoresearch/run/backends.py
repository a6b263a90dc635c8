"""Where runs happen: a backend turns a `RunSpec` on a `Slot` into an `Outcome`.

The coordinator (one process: the ledger, the research branch, the agents) calls `run` from one
thread per slot. `LocalBackend` runs in a git worktree on this machine; `RayBackend`
(ray_backend.py, `pip install "autoresearch[ray]"`) ships the commit's files to a Ray worker with
the slot's resource request. A backend raises `WorkerLost` when the machine running an experiment
went away: the coordinator re-queues that experiment instead of judging it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from autoresearch.core.config import BACKENDS
from autoresearch.repo import gitops
from autoresearch.run.execution import Outcome, RunSpec, run_in_folder
from autoresearch.run.slots import Slot, local_slots


class Backend(Protocol):
    name: str
    slots: list[Slot]

    def run(self, spec: RunSpec, slot: Slot, *, on_output: Callable[[str], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Outcome: ...

    def close(self) -> None: ...


class LocalBackend:
    """Runs each experiment in a fresh git worktree of the task repository, on this machine."""

    name = "local"

    def __init__(self, repo: Path, state_dir: Path, slots: list[Slot] | None = None):
        self.repo, self.state_dir = repo, state_dir
        self.slots = slots or local_slots()

    def run(self, spec: RunSpec, slot: Slot, *, on_output: Callable[[str], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Outcome:
        worktree = self.state_dir / "worktrees" / f"exp-{spec.exp_id}-{spec.n}"
        gitops.add_worktree(self.repo, worktree, spec.commit)
        try:
            spec.env = {**spec.env, **slot.env}
            return run_in_folder(spec, worktree, self.state_dir / "logs", on_output=on_output,
                                 should_stop=should_stop)
        finally:
            gitops.remove_worktree(self.repo, worktree)

    def close(self) -> None:
        pass


def make_backend(name: str, repo: Path, state_dir: Path, *, slots: int | None = None,
                 address: str | None = None, cpus_per_slot: float | None = None,
                 gpus_per_slot: float | None = None) -> Backend:
    if name == "local":
        return LocalBackend(repo, state_dir, local_slots(slots))
    if name == "ray":
        try:
            from autoresearch.run.ray_backend import RayBackend
        except ImportError as e:
            raise ValueError(f"the ray backend needs Ray: pip install 'autoresearch[ray]' ({e})") from None
        return RayBackend(repo, state_dir, address=address, slots=slots, cpus_per_slot=cpus_per_slot,
                          gpus_per_slot=gpus_per_slot)
    raise ValueError(f"unknown backend {name!r}; use one of: {', '.join(BACKENDS)}")
