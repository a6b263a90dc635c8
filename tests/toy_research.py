"""A real research run on the toy task for the dashboard and report tests: every kind of decision.

The real loop (Research, the local backend, git, the ledger) runs a scripted agent whose edits
give a keep, a discard, a guard-refused discard, a crash and a rejection, plus an idea that is tried.
"""
from __future__ import annotations

from pathlib import Path

from autoresearch.core.config import ParallelConfig, load_config
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits
from autoresearch.store.ledger import Ledger
from tests.conftest import TOY_CONFIG, TOY_TRAIN, make_task
from tests.scripted import ScriptedAgent, replace

TAG = "t"
SERIAL = ParallelConfig(ahead=0)
TRAIN = TOY_TRAIN + 'print(f"width: {WIDTH}")\n'
CONFIG = TOY_CONFIG + "\n[guards]\nwidth = { max = 10 }\n"
STEPS = [
    ("worse: X=9", replace("X = 5.0", "X = 9.0")),
    ("better: X=2.5", replace("X = 5.0", "X = 2.5")),
    ("too wide: WIDTH=12", replace("WIDTH = 3", "WIDTH = 12")),
    ("crash", replace("score = ", "raise SystemExit(3)\nscore = ")),
    ("syntax error", replace("WIDTH = 3", "WIDTH = = 3")),
    ("better again: WIDTH=6", replace("WIDTH = 3", "WIDTH = 6")),
]
STATUSES = ["keep", "discard", "keep", "discard", "crash", "rejected", "keep"]


def build(root: Path) -> Path:
    """A task with one finished research run (tag `t`) of STEPS; returns the task folder."""
    task = make_task(root, train=TRAIN, config=CONFIG)
    ledger = Ledger(task / ".autoresearch" / "ledger.db")
    ledger.add_idea("X=2.5")
    ledger.close()
    more(task, STEPS)
    return task


def more(task: Path, steps: list, limit: int = 50) -> int:
    """Run the scripted steps on the task's research run (resuming it); the runs made."""
    research = Research(load_config(task), ScriptedAgent(steps), tag=TAG, parallel=SERIAL)
    research.open()
    try:
        return research.run(Limits(max_experiments=limit))
    finally:
        research.close()
