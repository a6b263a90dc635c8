"""The agent interface: given what the researcher sees, propose the next experiment.

An agent never runs anything. It reads the context (program.md, the editable files at the
current best, the ledger history, open ideas) and returns whole-file edits plus a one-line
description. The harness validates, commits, runs and judges the proposal.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from autoresearch.core.config import TaskConfig
from autoresearch.core.records import Experiment, Idea


@dataclass
class Context:
    config: TaskConfig
    program: str  # the text of program.md
    files: dict[str, str]  # editable files at the current best: path -> content
    history: list[Experiment]  # every finished experiment of this research run, oldest first
    ideas: list[Idea]  # open ideas from humans, oldest first
    best: Experiment | None  # the experiment the branch is at (None before the baseline)
    tag: str = ""  # the research run
    notebook: Path | None = None  # the lab notebook of this research run (agents may append to it)
    pending: list[Experiment] = field(default_factory=list)  # queued or running: results not known yet


@dataclass
class Proposal:
    description: str  # one line, shown in the log and results.tsv
    edits: dict[str, str]  # path -> full new content (only changed files)
    idea_id: int | None = None  # the idea this proposal tries, if any
    params: dict[str, Any] = field(default_factory=dict)  # settings tried (search agents)
    info: dict[str, Any] = field(default_factory=dict)  # agent bookkeeping (model, tokens, ...)
    parent_id: int | None = None  # build on this experiment (e.g. fixing a crash) instead of the best
    rejection: str | None = None  # the agent already knows this cannot run (why): recorded as rejected
    agent: str | None = None  # recorded as the experiment's agent instead of the agent's name (e.g. "search:tpe")


class NoProposal(Exception):
    """The agent has nothing (more) to propose; the loop stops or waits."""


class Idle:
    """An agent that never proposes: for runs of the task without research (a probe, checks)."""

    name = "idle"

    def propose(self, ctx: Context) -> Proposal:
        raise NoProposal("this run only re-runs what is there")


@runtime_checkable
class Agent(Protocol):
    name: str

    def propose(self, ctx: Context) -> Proposal: ...
