"""The plain-data records of research: an experiment, one run of it, an idea, a pause, a check; and
the statuses.

They carry no behaviour and no connection: the ledger stores them, agents read them, the UI shows
them, and they can travel (JSON, another machine). `STATUSES` names every state an experiment can
be in; `FINISHED` ones were decided by a run, `PENDING` ones are admitted and not decided yet.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Status(str, Enum):
    """An experiment's state. A str: it compares equal to, prints and stores as its value."""

    QUEUED = "queued"  # admitted and committed, waiting for a slot
    RUNNING = "running"
    KEEP = "keep"  # the branch moved to it
    DISCARD = "discard"  # ran, not better (or a guard, the budget, a held-out flag)
    CRASH = "crash"  # ran, no metric
    TIMEOUT = "timeout"  # killed at the hard timeout
    PRUNED = "pruned"  # stopped early: its progress could not plausibly beat the best (core/pruning.py)
    REJECTED = "rejected"  # never ran: invalid, duplicate, or nothing left after a rebase
    INTERRUPTED = "interrupted"  # stopped by the user, a crash of autoresearch or a lost worker

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


STATUSES = tuple(s.value for s in Status)
FINISHED = (Status.KEEP, Status.DISCARD, Status.CRASH, Status.TIMEOUT, Status.PRUNED)
PENDING = (Status.QUEUED, Status.RUNNING)  # admitted proposals not decided yet


@dataclass
class Experiment:
    id: int
    tag: str
    parent_commit: str
    commit: str | None
    agent: str
    description: str
    status: str
    idea_id: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    files_changed: int = 0
    insertions: int = 0
    deletions: int = 0
    reason: str = ""
    metric: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    exit_code: int | None = None
    wall_s: float | None = None
    peak_mem_mb: float | None = None
    log_path: str | None = None
    log_tail: str = ""
    lines_delta: int = 0
    content_hash: str | None = None  # of the editable files after the change: finds duplicates
    created_at: float = 0.0
    finished_at: float | None = None
    base_commit: str | None = None  # the best's commit when proposed; a newer best means a rebase
    slot: str | None = None  # the worker slot of its latest run

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Run:
    """One execution of an experiment's commit; an experiment has one or more (noise, confirmation)."""

    id: int
    experiment_id: int
    kind: str
    status: str  # ok | crash | timeout | stopped | tampered | lost | superseded | pruned
    metric: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float | None = None
    peak_mem_mb: float | None = None
    log_path: str | None = None
    created_at: float = 0.0  # when it was recorded (its end)
    slot: str | None = None
    started_at: float | None = None
    curve: list[Any] = field(default_factory=list)  # its progress points, Curve.to_json() (core/progress.py)


@dataclass
class Idea:
    id: int
    text: str
    status: str = "open"  # open | tried
    source: str = "human"
    experiment_id: int | None = None
    outcome: str | None = None
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Pause:
    """A period in which a research run starts nothing new (`autoresearch pause`, the dashboard):
    the experiments running when it began finish and are judged; open while `ended_at` is None."""

    id: int
    tag: str
    source: str  # who paused it: cli, dashboard...
    started_at: float
    ended_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Check:
    """An ablation or transfer check of a research run (research/checks.py): paired runs of a
    reference and a variant, interleaved on one slot.

    ablation: reference = the best, variant = the best without the kept change `experiment_id`;
    transfer: reference = the research base, variant = the best, in another `setting` (a budget).
    `gain` > 0 means the change (ablation) or the best (transfer) is better by that much."""

    id: int
    tag: str
    kind: str  # ablation | transfer
    experiment_id: int | None
    setting: dict[str, Any] = field(default_factory=dict)
    pairs: list[list[float]] = field(default_factory=list)  # [reference, variant] per pair
    note: str = ""  # why it stopped early, or could not be made
    created_at: float = 0.0
    direction: str = "minimize"

    @property
    def gain(self) -> float | None:
        diffs = self.differences()
        return sum(diffs) / len(diffs) if diffs else None

    @property
    def se(self) -> float | None:
        """Standard error of `gain` (None below two pairs)."""
        diffs = self.differences()
        if len(diffs) < 2:
            return None
        m = sum(diffs) / len(diffs)
        return (sum((d - m) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) ** 0.5

    def differences(self) -> list[float]:
        sign = 1.0 if self.direction == "minimize" else -1.0
        if self.kind == "ablation":  # the variant lacks the change: worse without it is a gain of it
            return [sign * (v - r) for r, v in self.pairs]
        return [sign * (r - v) for r, v in self.pairs]

    def gain_text(self) -> str:
        """`+0.012 ± 0.003` (— before the first pair): how the CLI, the report and the dashboard show it."""
        if self.gain is None:
            return "—"
        return f"{self.gain:+.4g}" + (f" ± {self.se:.2g}" if self.se is not None else "")

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "gain": self.gain, "se": self.se, "gain_text": self.gain_text()}

    @classmethod
    def from_row(cls, row: Any) -> Check:
        """From a row of the ledger's checks table (setting and pairs stored as JSON text)."""
        return cls(id=row["id"], tag=row["tag"], kind=row["kind"], experiment_id=row["experiment_id"],
                   setting=json.loads(row["setting"]), pairs=json.loads(row["pairs"]), note=row["note"],
                   created_at=row["created_at"], direction=row["direction"])
