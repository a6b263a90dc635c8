"""Shared fixtures: tiny task repositories that run in milliseconds."""
from __future__ import annotations

import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

TOY_TRAIN = textwrap.dedent('''\
    """A toy experiment: the score is a smooth function of two constants."""
    import os

    X = 5.0
    WIDTH = 3

    score = (X - 2.0) ** 2 + 0.1 * (WIDTH - 6) ** 2
    print("budget:", os.environ.get("AUTORESEARCH_TIME_BUDGET"))
    print(f"score: {score:.6f}")
    print(f"peak_memory_mb: {10 + WIDTH}")
''')

TOY_CONFIG = textwrap.dedent('''\
    [task]
    name = "toy"
    editable = ["train.py"]
    frozen = ["prepare.py"]
    run = "python train.py"

    [budget]
    seconds = 5
    timeout = 30

    [metric]
    name = "score"
    direction = "minimize"

    [search]
    X = { low = -5.0, high = 10.0 }
    WIDTH = { low = 1, high = 12 }
''')


def make_task(root: Path, train: str = TOY_TRAIN, config: str = TOY_CONFIG, git: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(train)
    (root / "prepare.py").write_text("# frozen: data and evaluation would live here\nEVAL = 1\n")
    (root / "program.md").write_text("Minimise score by editing train.py.\n")
    (root / "autoresearch.toml").write_text(config)
    if git:
        subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
        subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
        subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
                       check=True)
    return root


def step(research):
    """One experiment on the first slot, start to end, serially: the baseline first, then one proposal of
    the first agent (what the scheduler does, without its threads; for tests that look at one at a time)."""
    slot = research.slots[0]
    if research.ledger.best(research.tag) is None:
        return research.baseline(slot)
    exp = research.propose(research.agents[0])
    if exp is None or exp.status == "rejected":
        return exp
    return research.process(exp.id, slot)


@pytest.fixture
def toy_task(tmp_path: Path) -> Path:
    return make_task(tmp_path / "toy")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path / "research-home"))


@pytest.fixture
def keep_signal_handlers():
    """`run` (cli.main in-process) installs SIGINT/SIGTERM handlers for its research; pytest gets its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
