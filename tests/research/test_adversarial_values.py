"""The adversarial suite, values: hostile numbers and states against the harness, one test per attack.

Each test replays an attack from an adversarial review on what a run reports, what the command line
is given or what is left on disk (a poisoned ledger, a corrupt one), through the real metrics
reader, judge, ledger and command line, and fails if the hole reopens. Attacks by the experiment's
code itself (escapes, tampering, resources) are in test_adversarial.py.
"""
from __future__ import annotations

import fcntl
import gc
import json
import math
import os
from pathlib import Path

import pytest

from autoresearch.apps import cli
from autoresearch.core import metrics
from autoresearch.core.config import ConfigError, JudgeConfig, MetricSpec, load_config
from autoresearch.core.judge import decide, pooled_sigma
from autoresearch.core.metrics import MetricError, read_metrics
from autoresearch.repo import gitops
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits
from autoresearch.store import ledger as ledger_module
from autoresearch.store.ledger import Ledger
from tests.conftest import TOY_CONFIG, make_task
from tests.scripted import SERIAL, ScriptedAgent, replace

LOWER = MetricSpec("score", "minimize")


pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


# -- 1. absurd metric values ------------------------------------------------------------------

def test_run_printing_1e300_is_a_crash_not_a_result(tmp_path: Path):
    with pytest.raises(MetricError, match=r"score is 1e\+300 .*beyond ±1e\+12"):
        read_metrics("score: 1e300\n", LOWER, tmp_path)
    with pytest.raises(MetricError, match="beyond"):
        read_metrics("score: -2e12\n", LOWER, tmp_path)
    bound = metrics.MAX_ABS_METRIC
    assert read_metrics(f"score: {bound!r}\n", LOWER, tmp_path)["score"] == bound


def test_absurd_secondary_metrics_are_never_stored(tmp_path: Path):
    out = "score: 1.5\nloss: 1e300\naux: nan\ngrad: inf\nneg: -inf\nsteps: 100\n"
    assert read_metrics(out, LOWER, tmp_path) == {"score": 1.5, "steps": 100.0}
    (tmp_path / "m.json").write_text('{"score": 2.0, "big": 1e300, "deep": {"x": 1e13, "y": 3}}')
    spec = MetricSpec("score", source="json", file="m.json")
    assert read_metrics("", spec, tmp_path) == {"score": 2.0, "deep.y": 3.0}


def test_ledger_holding_1e300_and_inf_does_not_break_the_noise_estimate(tmp_path: Path):
    """An older version stored whatever a run printed; every restart fed it back to pooled_sigma."""
    ledger = Ledger(tmp_path / "state" / "ledger.db")
    rows = {"a": [1.0, 1.2, 1e300], "b": [2.0, math.inf, 2.2], "c": [1e300, 1e300], "d": [-math.inf, 5.0]}
    for name, values in rows.items():
        exp = ledger.start_experiment(tag="t", parent_commit="a" * 40, agent="x", description=name)
        for v in values:
            ledger.add_run(exp, "noise", "ok", v)
    groups = ledger.run_groups("t")
    assert any(1e300 in g for g in groups)  # the ledger keeps its record; the judge ignores the values
    sigma, dof = pooled_sigma(groups)
    assert (sigma, dof) == pooled_sigma([[1.0, 1.2], [2.0, 2.2]])
    assert dof == 2 and sigma == pytest.approx(0.1 * math.sqrt(2))


@pytest.mark.parametrize("best", [[1e300], [1e300, 1e300], [1e308, 1e308], [math.inf], [math.nan],
                                  [math.inf, -math.inf]])
def test_decide_against_a_poisoned_best_is_sane(best):
    """A best whose recorded values are absurd is replaced by any valid candidate."""
    d = decide(LOWER, JudgeConfig(), [0.9], best, sigma=0.01, dof=5)
    assert d.action == "keep" and "no valid score" in d.reason, d.reason
    d = decide(LOWER, JudgeConfig(), [0.9], [1.0, *best], sigma=0.01, dof=5)  # the valid runs decide
    assert d.action == "keep" and "-0.1 ±" in d.reason, d.reason


@pytest.mark.parametrize("candidate", [[1e300], [math.nan], [math.inf, 1e13]])
def test_decide_never_keeps_a_poisoned_candidate(candidate):
    for sigma in (0.01, None, math.inf, math.nan, 1e300):
        d = decide(LOWER, JudgeConfig(), candidate, [1.0, 1.01], sigma=sigma, dof=3)
        assert d.action == "discard" and "no valid score" in d.reason, d.reason
    maximize = MetricSpec("score", "maximize")
    assert decide(maximize, JudgeConfig(), candidate, [1.0], sigma=None).action == "discard"


def test_poisoned_ledger_does_not_brick_the_next_research_run(toy_task: Path):
    """1e300 and inf in the runs table (left by an older version): the next run judges normally."""
    r = Research(load_config(toy_task), ScriptedAgent([("better: X=4", replace("X = 5.0", "X = 4.0"))]), tag="t",
                 parallel=SERIAL)
    r.open()
    r.run(Limits(max_experiments=2))
    r.close()
    ledger = Ledger(toy_task / ".autoresearch" / "ledger.db")
    base, win = ledger.experiments("t")
    assert (base.status, win.status) == ("keep", "keep")
    ledger.add_run(base.id, "confirm", "ok", 1e300)
    ledger.add_run(win.id, "confirm", "ok", math.inf)
    ledger.close()
    agent = ScriptedAgent([("worse: X=4.5", replace("X = 4.0", "X = 4.5")),
                           ("better: X=3", replace("X = 4.0", "X = 3.0"))])
    r = Research(load_config(toy_task), agent, tag="t", parallel=SERIAL)
    r.open()
    r.run(Limits(max_experiments=2))
    r.close()
    worse, better = Ledger(toy_task / ".autoresearch" / "ledger.db").experiments("t")[2:]
    assert (worse.status, better.status) == ("discard", "keep"), (worse.reason, better.reason)


def test_experiment_printing_1e300_crashes_with_the_reason(toy_task: Path):
    agent = ScriptedAgent([("overflow", replace('print(f"score: {score:.6f}")', 'print("score: 1e300")'))])
    r = Research(load_config(toy_task), agent, tag="t", parallel=SERIAL)
    r.open()
    r.run(Limits(max_experiments=2))
    r.close()
    exp = Ledger(toy_task / ".autoresearch" / "ledger.db").experiments("t")[1]
    assert exp.status == "crash" and "beyond ±1e+12" in exp.reason and exp.metric is None


# -- 2. numbers on the command line and in the config -----------------------------------------

@pytest.mark.parametrize("option, value, message", [
    ("--budget", "nan", "--budget: must be a finite number of seconds above 0, not 'nan'"),
    ("--budget", "inf", "--budget: must be a finite number of seconds above 0, not 'inf'"),
    ("--budget", "-5", "--budget: must be a finite number of seconds above 0, not '-5'"),
    ("--budget", "0", "--budget: must be a finite number of seconds above 0, not '0'"),
    ("--budget", "soon", "--budget: must be a finite number of seconds above 0, not 'soon'"),
    ("--max-hours", "nan", "--max-hours: must be a finite number of hours above 0, not 'nan'"),
    ("--max-hours", "inf", "--max-hours: must be a finite number of hours above 0, not 'inf'"),
    ("--max-hours", "0", "--max-hours: must be a finite number of hours above 0, not '0'"),
    ("--max-experiments", "0", "--max-experiments: must be a whole number of at least 1, not '0'"),
    ("--max-experiments", "-1", "--max-experiments: must be a whole number of at least 1, not '-1'"),
    ("--max-experiments", "1.5", "--max-experiments: must be a whole number of at least 1, not '1.5'"),
    ("--slots", "0", "--slots: must be a whole number of at least 1, not '0'"),
    ("--slots", "-2", "--slots: must be a whole number of at least 1, not '-2'"),
    ("--ahead", "-1", "--ahead: must be a whole number of at least 0, not '-1'"),
])
def test_run_refuses_bad_numbers(tmp_path: Path, capsys, option: str, value: str, message: str):
    # A missing task: before the options were checked, this failed on the task, not the option.
    assert cli.main(["run", str(tmp_path / "missing"), option, value]) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_run_accepts_good_numbers():
    args = cli.build_parser().parse_args(["run", "--budget", "1.5", "--max-hours", "0.01", "--max-experiments", "1",
                                          "--slots", "2", "--ahead", "0"])
    assert (args.budget, args.max_hours, args.max_experiments, args.slots, args.ahead) == (1.5, 0.01, 1, 2, 0)


@pytest.mark.parametrize("change, key", [
    (("seconds = 5", "seconds = nan"), "budget.seconds"),
    (("seconds = 5", "seconds = inf"), "budget.seconds"),
    (("timeout = 30", "timeout = inf"), "budget.timeout"),
    (("[search]", "[judge]\nz = nan\n\n[search]"), "judge.z"),
    (("[search]", "[limits]\nmemory_mb = -inf\n\n[search]"), "limits.memory_mb"),
])
def test_config_refuses_non_finite_numbers(tmp_path: Path, change, key: str):
    task = make_task(tmp_path / "bad", config=TOY_CONFIG.replace(*change), git=False)
    with pytest.raises(ConfigError) as err:
        load_config(task)
    assert err.value.key == key and "finite" in err.value.fix


# -- 3. a refused second run ------------------------------------------------------------------

def test_refused_second_run_leaves_last_tag_alone(toy_task: Path, capsys):
    state = toy_task / ".autoresearch"
    Ledger(state / "ledger.db").set_meta("last_tag", "first")
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another autoresearch process holds the task
        assert cli.main(["run", str(toy_task), "--tag", "other", "--max-experiments", "1"]) == 1
    finally:
        os.close(fd)
    assert "another autoresearch process" in capsys.readouterr().err
    assert Ledger(state / "ledger.db").get_meta("last_tag") == "first"


# -- 4. a corrupt ledger ----------------------------------------------------------------------

def _status(task: Path, capsys) -> dict:
    capsys.readouterr()
    assert cli.main(["status", "-C", str(task), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _corrupt(db: Path) -> None:
    gc.collect()  # no connection of this process keeps the old file alive
    db.write_bytes(b"this is not a database\n" * 512)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def test_corrupt_ledger_is_a_clear_error_and_doctor_rebuilds_it_from_git(toy_task: Path, capsys):
    assert cli.main(["run", str(toy_task), "--max-experiments", "3", "--json", "--seed", "1"]) == 0
    before = _status(toy_task, capsys)
    assert cli.main(["log", "-C", str(toy_task), "--json"]) == 0
    log_before = json.loads(capsys.readouterr().out)
    db = toy_task / ".autoresearch" / "ledger.db"
    _corrupt(db)

    for command in (["status"], ["log"], ["show", "1"], ["plot"], ["export"], ["idea", "list"], ["idea", "add", "x"]):
        assert cli.main([*command, "-C", str(toy_task)]) == 2, command
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(db) in err and "doctor" in err and "--repair" in err, err
        assert "Traceback" not in err and "refs/autoresearch/<tag>/<id>" in err
    assert cli.main(["run", str(toy_task), "--max-experiments", "1"]) == 2
    assert "doctor" in capsys.readouterr().err

    assert cli.main(["doctor", "-C", str(toy_task), "--json"]) == 1  # checks, changes nothing
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["repaired"] is False and db.read_bytes().startswith(b"this is not")

    assert cli.main(["doctor", "-C", str(toy_task), "--repair", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["repaired"] is True and report["experiments"] == len(log_before)
    aside = Path(report["moved_to"])
    assert aside.name.startswith("ledger.db.corrupt-") and aside.read_bytes().startswith(b"this is not")

    after = _status(toy_task, capsys)
    assert after["tag"] == before["tag"] and after["experiments"] == before["experiments"]
    assert after["best"]["id"] == before["best"]["id"] and after["best"]["commit"] == before["best"]["commit"]
    assert after["best"]["metric"] == pytest.approx(before["best"]["metric"])
    assert cli.main(["log", "-C", str(toy_task), "--json"]) == 0
    log_after = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in log_after] == [e["id"] for e in log_before]
    assert [e["commit"] for e in log_after] == [e["commit"] for e in log_before]
    assert [e["status"] == "keep" for e in log_after] == [e["status"] == "keep" for e in log_before]
    assert log_after[0]["agent"] == "baseline" and log_after[1]["agent"] == log_before[1]["agent"]
    assert [e["description"] for e in log_after] == [e["description"] for e in log_before]
    assert all("autoresearch doctor" in e["reason"] for e in log_after)

    assert cli.main(["doctor", "-C", str(toy_task)]) == 0  # healthy now
    # The research goes on from the rebuilt ledger, on the same branch.
    assert cli.main(["run", str(toy_task), "--max-experiments", "1", "--json", "--seed", "2"]) == 0
    final = _status(toy_task, capsys)
    assert final["experiments"] == before["experiments"] + 1
    head = gitops.rev_parse(toy_task, gitops.branch_ref(before["tag"]))
    assert head == final["best"]["commit"]


def test_doctor_does_not_move_the_ledger_under_a_running_research(toy_task: Path, capsys):
    state = toy_task / ".autoresearch"
    Ledger(state / "ledger.db").close()
    _corrupt(state / "ledger.db")
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert cli.main(["doctor", "-C", str(toy_task), "--repair"]) == 2
    finally:
        os.close(fd)
    assert "another autoresearch process" in capsys.readouterr().err
    assert (state / "ledger.db").read_bytes().startswith(b"this is not") and not list(state.glob("*.corrupt-*"))


def test_ledger_error_names_the_file_and_the_way_back(tmp_path: Path):
    db = tmp_path / "task" / ".autoresearch" / "ledger.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"garbage" * 100)
    with pytest.raises(ledger_module.LedgerError) as err:
        Ledger(db)
    text = str(err.value)
    assert str(db) in text and "refs/autoresearch/<tag>/<id>" in text and "autoresearch/<tag>" in text
    assert str(db.parent / "logs") in text and f"autoresearch doctor -C {tmp_path / 'task'} --repair" in text


def test_doctor_rebuilds_a_deleted_ledger_from_git(toy_task: Path, capsys):
    assert cli.main(["run", str(toy_task), "--max-experiments", "2", "--json", "--seed", "1"]) == 0
    before = _status(toy_task, capsys)
    db = toy_task / ".autoresearch" / "ledger.db"
    kinds_before = [r.kind for r in Ledger(db).runs(1)]
    gc.collect()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert cli.main(["doctor", "-C", str(toy_task)]) == 1
    assert "does not exist" in capsys.readouterr().out
    assert cli.main(["doctor", "-C", str(toy_task), "--repair", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["moved_to"] is None and report["tags"] == {before["tag"]: {"experiments": 2, "kept": before[
        "counts"]["keep"]}}
    after = _status(toy_task, capsys)
    assert after["best"]["commit"] == before["best"]["commit"] and after["baseline_metric"] == before["baseline_metric"]
    ledger = Ledger(db)
    # the noise estimate survives (with any re-run of the baseline beside a candidate: a log each)
    kinds = [r.kind for r in ledger.runs(1)]
    assert kinds == kinds_before, "the best re-measured beside a candidate is a confirm run, not noise"
    assert kinds[:3] == ["primary", "noise", "noise"] and len(kinds) == len(list(
        (toy_task / ".autoresearch" / "logs" / before["tag"]).glob("1.*log")))  # 1.log, 1.1.log, ...
    assert ledger.get_meta(f"base:{before['tag']}") == ledger.get(1).commit
