"""Ablation and transfer checks (research/checks.py, `autoresearch ablate` / `transfer`) on the
real loop and harness: the toy task's score is deterministic, so every gain is known exactly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoresearch.apps.cli import main
from autoresearch.core.config import load_config
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits
from autoresearch.store.ledger import Ledger
from tests.conftest import make_task
from tests.scripted import SERIAL, ScriptedAgent, replace

# score = (X - 2)^2 + 0.1 (WIDTH - 6)^2: base 9.9; X=2.5 -> 1.15; then WIDTH=6 -> 0.25
STEPS = [("X=2.5", replace("X = 5.0", "X = 2.5")), ("WIDTH=6", replace("WIDTH = 3", "WIDTH = 6"))]


def researched(tmp_path: Path, steps=STEPS) -> Path:
    task = make_task(tmp_path / "t")
    r = Research(load_config(task), ScriptedAgent(steps), tag="t", parallel=SERIAL)
    r.open()
    try:
        r.run(Limits(max_experiments=len(steps) + 1))
    finally:
        r.close()
    return task


def checks_of(task: Path) -> list:
    ledger = Ledger(task / ".autoresearch" / "ledger.db")
    try:
        return ledger.checks("t")
    finally:
        ledger.close()


def test_ablation_measures_what_each_kept_change_is_worth_in_the_best(tmp_path: Path, capsys) -> None:
    task = researched(tmp_path)
    assert main(["ablate", "-C", str(task), "--tag", "t", "--pairs", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    checks = checks_of(task)
    assert [c["id"] for c in printed] == [c.id for c in checks]
    without_x, without_width = checks
    assert without_x.kind == "ablation" and len(without_x.pairs) == 2
    assert without_x.pairs[0] == pytest.approx([0.25, 9.0])  # the best, then the best with X back at 5
    assert without_x.gain == pytest.approx(8.75) and without_x.se == pytest.approx(0.0)
    assert without_width.gain == pytest.approx(0.9)  # 1.15 - 0.25
    ledger = Ledger(task / ".autoresearch" / "ledger.db")
    assert [e.status for e in ledger.experiments("t")] == ["keep", "keep", "keep"]  # the research is untouched
    assert not [r for r in ledger.all_runs("t") if r.kind.startswith("check")]  # check runs are not experiments' runs
    ledger.close()


def test_a_change_later_changes_rewrote_cannot_be_ablated_and_says_why(tmp_path: Path, capsys) -> None:
    task = researched(tmp_path, STEPS + [("X=2.2", replace("X = 2.5", "X = 2.2"))])
    assert main(["ablate", "-C", str(task), "--tag", "t", "--pairs", "1", "--json"]) == 1  # one check could not be made
    first = checks_of(task)[0]
    assert first.pairs == [] and "later changes touch the same lines of train.py" in first.note
    assert [len(c.pairs) for c in checks_of(task)[1:]] == [1, 1]


def test_transfer_runs_base_and_best_under_another_budget(tmp_path: Path, capsys) -> None:
    task = researched(tmp_path)
    assert main(["transfer", "-C", str(task), "--tag", "t", "--budget", "11", "--pairs", "2", "--json"]) == 0
    (check,) = checks_of(task)
    assert check.kind == "transfer" and check.setting["budget_s"] == 11
    assert check.gain == pytest.approx(9.65)  # 9.9 - 0.25 at any budget: the toy ignores it
    logs = sorted((task / ".autoresearch" / "logs" / "t" / "checks").glob("*.log"))
    assert len(logs) == 4 and all("budget: 11" in p.read_text() for p in logs)  # the check's budget reached the runs


def test_checks_without_a_research_run_say_what_to_do(tmp_path: Path, capsys) -> None:
    task = make_task(tmp_path / "t")
    assert main(["ablate", "-C", str(task)]) != 0
    assert "no research recorded here yet" in capsys.readouterr().err
