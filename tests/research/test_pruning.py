"""Stopping doomed runs early: the progress protocol, the rule, [prune], and pruning in the real loop."""
from __future__ import annotations

import json
import math
import re
import sqlite3
import textwrap
from pathlib import Path

import pytest

from autoresearch.apps.cli import main
from autoresearch.apps.doctor import repair
from autoresearch.core.config import (
    ConfigError,
    ParallelConfig,
    PruneConfig,
    load_config,
)
from autoresearch.core.progress import (
    MAX_LINE_CHARS,
    MAX_NAMES,
    MAX_POINTS,
    Curve,
    curve_from_text,
    parse_progress,
)
from autoresearch.core.pruning import check
from autoresearch.core.records import FINISHED, STATUSES
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits
from autoresearch.store.ledger import Ledger
from autoresearch.testing import process_gone
from tests.conftest import make_task, step
from tests.scripted import ScriptedAgent

# A run that "trains" for its budget: 20 progress points of a decaying, noisy loss; its final score
# is the loss at the end. EFFECT shifts the whole curve; SPAWN leaves a sleeping grandchild.
CURVE_TRAIN = textwrap.dedent('''\
    import os, random, subprocess, sys, time
    EFFECT = 0.0
    SPAWN = 0
    random.seed(os.urandom(8))
    budget = float(os.environ["AUTORESEARCH_TIME_BUDGET"])
    if SPAWN:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        with open(os.environ["PID_FILE"], "a") as f:
            f.write(f"{os.getpid()} {child.pid}\\n")
    offset = random.gauss(0, 0.01)
    for i in range(1, 21):
        time.sleep(budget / 20)
        t = i / 20
        loss = 2.0 + 0.5 * (t ** -0.5 - 1) + EFFECT + offset + random.gauss(0, 0.005)
        print(f"progress: t={t:.2f} loss={loss:.5f}", flush=True)
    print(f"score: {2.0 + EFFECT + offset:.6f}")
''')
CURVE_CONFIG = textwrap.dedent('''\
    [task]
    editable = ["train.py"]
    run = "python train.py"
    [budget]
    seconds = 0.6
    timeout = 30
    [metric]
    name = "score"
    ''')


def curve_task(tmp: Path, extra: str = "", train: str = CURVE_TRAIN) -> Path:
    return make_task(tmp / "task", train=train, config=CURVE_CONFIG + extra)


def effect(value: float):
    return lambda files: {"train.py": re.sub(r"EFFECT = .*", f"EFFECT = {value}", files["train.py"])}


def open_research(task: Path, steps) -> Research:
    research = Research(load_config(task), ScriptedAgent(steps), tag="t")
    research.open()
    return research


# -- the protocol ----------------------------------------------------------------------------

def test_progress_lines_are_parsed_and_others_ignored() -> None:
    assert parse_progress("progress: t=0.25 val_loss=2.91") == (0.25, {"val_loss": 2.91})
    assert parse_progress("  progress: t=1 loss=3e-1 acc=0.5\r") == (1.0, {"loss": 0.3, "acc": 0.5})
    for line in ("val_loss: 2.91", "progress: val_loss=2.91", "progress: t=0.5", "step 1 | progress: t=0.5 a=1",
                 "progress: t=1.5 loss=2", "progress: t=-0.1 loss=2", "progress: t=nan loss=2", "progress: t=0.5 a=2x"):
        assert parse_progress(line) is None, line


def test_hostile_progress_is_bounded() -> None:
    # NaN, inf and absurd values are dropped; a line with nothing valid left is no point
    assert parse_progress("progress: t=0.5 a=nan b=inf c=1e300 d=2") == (0.5, {"d": 2.0})
    assert parse_progress("progress: t=0.5 a=nan") is None
    # a huge line is ignored, however valid it looks
    assert parse_progress("progress: t=0.5 a=1 " + "x" * MAX_LINE_CHARS) is None
    many = " ".join(f"v{i}={i}" for i in range(100))
    assert len(parse_progress(f"progress: t=0.5 {many}")[1]) == MAX_NAMES
    # a flood: 200,000 lines keep at most MAX_POINTS points, t never goes back
    curve = curve_from_text("\n".join(f"progress: t={(i % 1000) / 1000:.3f} loss={i}" for i in range(200_000)))
    ts = [t for t, _ in curve.points]
    assert len(ts) <= MAX_POINTS and ts == sorted(ts) and ts[-1] >= 0.99
    # what a ledger hands back is checked again (an older or edited ledger)
    hostile = [[0.1, {"a": 1.0}], [2.0, {"a": 1.0}], ["x", {}], [0.2, {"a": float("nan"), "b": True}], [0.3, []],
               [0.4, {"a": 2}], "junk"]
    assert Curve.from_json(hostile).to_json() == [[0.1, {"a": 1.0}], [0.4, {"a": 2.0}]]
    assert Curve.from_json({"not": "a list"}).points == []


# -- the rule ---------------------------------------------------------------------------------

def series(final: float, jitter: float = 0.0) -> list[tuple[float, float]]:
    return [(i / 20, final + 0.5 * ((i / 20) ** -0.5 - 1) + jitter * (-1) ** i) for i in range(1, 21)]


NOISE = [[series(2.0, 0.01), series(2.01, -0.01), series(1.99)]] * 5  # 5 commits x 3 runs: σ ≈ 0.017, 10 dof


def test_rule_prunes_a_clearly_worse_curve_after_min_share_only() -> None:
    cfg, best = PruneConfig(), [series(2.0), series(2.02)]
    assert check(cfg, "loss", True, 0.2, 5.0, best, NOISE) is None  # before min_share: never
    verdict = check(cfg, "loss", True, 0.35, 5.0, best, NOISE)
    assert verdict is not None and verdict.dof == 10 and verdict.value == 5.0
    assert verdict.worst == pytest.approx(max(v for s in best for t, v in s if t == 0.35))
    assert verdict.reason.startswith("pruned at 35% of the budget: loss 5 > ") and "the best's worst of 2 runs" in verdict.reason
    # maximize: a much lower value is the doomed one
    up = [[(t, -v) for t, v in s] for s in best]
    assert check(cfg, "acc", False, 0.5, -5.0, up, [[[(t, -v) for t, v in s] for s in g] for g in NOISE]) is not None
    assert check(cfg, "acc", False, 0.5, 5.0, up, [[[(t, -v) for t, v in s] for s in g] for g in NOISE]) is None


def test_rule_is_conservative() -> None:
    cfg, best = PruneConfig(), [series(2.0)]
    at = dict(series(2.0))[0.5]
    assert check(cfg, "loss", True, 0.5, at + 0.05, best, NOISE) is None  # slightly worse: goes on
    # a late bloomer, behind by less than `slack` of what the best still drops, goes on
    behind = at + 0.4 * (at - 2.0)
    assert check(cfg, "loss", True, 0.5, behind, best, NOISE) is None
    assert check(PruneConfig(slack=0.0), "loss", True, 0.5, behind, best, NOISE) is not None
    # no noise estimate (no repeated curves, or a spread of exactly 0), or no best curve at t: never
    assert check(cfg, "loss", True, 0.5, 99.0, best, []) is None
    assert check(cfg, "loss", True, 0.5, 99.0, best, [[series(2.0), series(2.0)]]) is None
    assert check(cfg, "loss", True, 0.5, 99.0, [[(0.1, 2.0), (0.3, 2.0)]], NOISE) is None
    assert check(cfg, "loss", True, 0.5, math.nan, best, NOISE) is None


# -- [prune] ------------------------------------------------------------------------------------

def test_prune_section(tmp_path: Path) -> None:
    task = curve_task(tmp_path, '[prune]\nmetric = "loss"\nmin_share = 0.4\nk = 2\nslack = 0\ndirection = "maximize"\n')
    assert load_config(task).prune == PruneConfig(True, "loss", "maximize", 0.4, 2.0, 0.0)
    assert load_config(curve_task(tmp_path / "default")).prune == PruneConfig()
    for body, key in (("enabled = 1", "prune.enabled"), ("min_share = 1.0", "prune.min_share"),
                      ("k = -1", "prune.k"), ("direction = \"down\"", "prune.direction"), ("kk = 1", "prune.kk")):
        (task / "autoresearch.toml").write_text(CURVE_CONFIG + f"[prune]\n{body}\n")
        with pytest.raises(ConfigError) as e:
            load_config(task)
        assert f"[{key}]" in str(e.value) and "fix:" in str(e.value)


# -- in the loop ------------------------------------------------------------------------------

def test_doomed_candidate_is_pruned_and_a_good_one_kept(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    task = curve_task(tmp_path)
    research = open_research(task, [("doomed", effect(3.0)), ("better", effect(-0.2)), ("doomed again", effect(0.5))])
    try:
        baseline = step(research)
        assert baseline.status == "keep"
        runs = research.ledger.runs(baseline.id)
        assert [r.status for r in runs] == ["ok"] * 3 and all(len(r.curve) == 20 for r in runs)  # never pruned
        doomed = step(research)
        assert doomed.status == "pruned" and doomed.metric is None
        assert doomed.reason.startswith("pruned at ") and "> " in doomed.reason and "the best's worst of 3 runs" in doomed.reason
        [run] = research.ledger.runs(doomed.id)
        assert run.status == "pruned" and 0 < len(run.curve) < 20
        assert 0.3 <= run.curve[-1][0] < 1.0 and run.curve[-1][1]["loss"] > 4.0
        assert run.wall_s < 0.9 * research.ledger.runs(baseline.id)[0].wall_s  # it did stop early
        better = step(research)
        assert better.status == "keep" and all(r.status == "ok" for r in research.ledger.runs(better.id))
        again = step(research)  # judged against the new best's curves
        assert again.status == "pruned", again.reason
    finally:
        research.close()
    rows = [line.split("\t") for line in (task / "results.tsv").read_text().splitlines()[1:]]
    assert [r[3] for r in rows] == ["keep", "pruned", "keep", "pruned"]
    assert "pruned" in STATUSES and "pruned" in FINISHED
    status = json.loads(cli(capsys, task, "status", "--json"))
    assert status["counts"]["pruned"] == 2 and status["counts"]["keep"] == 2
    log = json.loads(cli(capsys, task, "log", "--json"))
    assert [e["status"] for e in log] == ["keep", "pruned", "keep", "pruned"]
    shown = json.loads(cli(capsys, task, "show", str(doomed.id), "--json"))
    assert shown["runs"][0]["status"] == "pruned" and shown["runs"][0]["curve"]
    assert "pruned" in cli(capsys, task, "log") and "pruned: 2" in cli(capsys, task, "status")
    # a ledger rebuilt from git and the logs has the curves again, so pruning goes on after a repair
    before = Ledger(task / ".autoresearch" / "ledger.db")
    try:
        recorded = [len(c) for c in before.run_curves(baseline.id)]  # its 3 runs, and any re-run beside a candidate
    finally:
        before.close()
    assert recorded[:3] == [20, 20, 20]
    repair(task)
    rebuilt = Ledger(task / ".autoresearch" / "ledger.db")
    try:
        assert [len(c) for c in rebuilt.run_curves(baseline.id)] == recorded
    finally:
        rebuilt.close()


def cli(capsys: pytest.CaptureFixture, task: Path, *args: str) -> str:
    capsys.readouterr()
    assert main([*args, "-C", str(task), "--tag", "t"]) == 0
    return capsys.readouterr().out


def test_pruning_with_parallel_slots(tmp_path: Path) -> None:
    task = curve_task(tmp_path)
    plan = [("doomed 1", effect(3.0)), ("doomed 2", effect(2.5)), ("fine", effect(-0.01))]
    research = Research(load_config(task), ScriptedAgent(plan), tag="t", parallel=ParallelConfig(slots=2, ahead=0))
    research.open()
    try:
        research.run(Limits())
        exps = {e.description: e for e in research.ledger.experiments("t")}
        slots = {r.slot for e in exps.values() for r in research.ledger.runs(e.id)}
    finally:
        research.close()
    assert slots == {"cpu0", "cpu1"}
    assert exps["doomed 1"].status == exps["doomed 2"].status == "pruned"
    assert exps["fine"].status in ("keep", "discard") and exps["baseline"].status == "keep"


def test_pruning_can_be_switched_off(tmp_path: Path) -> None:
    task = curve_task(tmp_path, "[prune]\nenabled = false\n")
    research = open_research(task, [("doomed", effect(3.0))])
    try:
        step(research)
        doomed = step(research)
        [run] = research.ledger.runs(doomed.id)
    finally:
        research.close()
    assert doomed.status == "discard" and doomed.metric == pytest.approx(5.0, abs=0.1)
    assert run.status == "ok" and len(run.curve) == 20  # the curve is still recorded


def test_a_pruned_run_leaves_no_process(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    task = curve_task(tmp_path, f'[sandbox]\nenabled = false\n[env]\nPID_FILE = "{pids}"\n')
    research = open_research(task, [("doomed, with a child", lambda f: {"train.py": f["train.py"].replace(
        "EFFECT = 0.0", "EFFECT = 3.0").replace("SPAWN = 0", "SPAWN = 1")})])
    try:
        step(research)
        doomed = step(research)
    finally:
        research.close()
    assert doomed.status == "pruned"
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2 and all(process_gone(pid) for pid in started), started


# -- the ledger ---------------------------------------------------------------------------------

# The runs table as the ledger before curves (git main before this change) created it.
OLD_SCHEMA = """
CREATE TABLE experiments (id INTEGER PRIMARY KEY AUTOINCREMENT, tag TEXT NOT NULL, parent_commit TEXT NOT NULL,
    commit_sha TEXT, agent TEXT NOT NULL, description TEXT NOT NULL, idea_id INTEGER,
    params TEXT NOT NULL DEFAULT '{}', info TEXT NOT NULL DEFAULT '{}', files_changed INTEGER NOT NULL DEFAULT 0,
    insertions INTEGER NOT NULL DEFAULT 0, deletions INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', metric REAL, metrics TEXT NOT NULL DEFAULT '{}', exit_code INTEGER,
    wall_s REAL, peak_mem_mb REAL, log_path TEXT, log_tail TEXT NOT NULL DEFAULT '',
    lines_delta INTEGER NOT NULL DEFAULT 0, content_hash TEXT, created_at REAL NOT NULL, finished_at REAL,
    base_commit TEXT, slot TEXT);
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    kind TEXT NOT NULL, status TEXT NOT NULL, metric REAL, metrics TEXT NOT NULL DEFAULT '{}', wall_s REAL,
    peak_mem_mb REAL, log_path TEXT, created_at REAL NOT NULL, slot TEXT, started_at REAL);
CREATE TABLE ideas (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL, source TEXT NOT NULL DEFAULT 'human',
    status TEXT NOT NULL DEFAULT 'open', experiment_id INTEGER, outcome TEXT, created_at REAL NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO experiments (tag, parent_commit, agent, description, status, metric, created_at)
    VALUES ('t', 'abc', 'baseline', 'baseline', 'keep', 1.5, 1.0);
INSERT INTO runs (experiment_id, kind, status, metric, created_at) VALUES (1, 'primary', 'ok', 1.5, 1.0);
INSERT INTO runs (experiment_id, kind, status, metric, created_at) VALUES (1, 'noise', 'ok', 1.6, 2.0);
"""


def test_a_ledger_from_before_curves_opens_and_records_them(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.close()
    ledger = Ledger(path)
    try:
        assert [(r.metric, r.curve) for r in ledger.runs(1)] == [(1.5, []), (1.6, [])]
        assert ledger.run_values(1) == [1.5, 1.6] and ledger.run_curves(1) == [] and ledger.curve_groups("t") == []
        curve = [[0.5, {"loss": 2.5}], [1.0, {"loss": 2.0}]]
        ledger.add_run(1, "confirm", "ok", 1.55, curve=curve)
        ledger.finish(ledger.start_experiment(tag="t", parent_commit="abc", agent="a", description="d"), "pruned",
                      reason="pruned at 40% of the budget")
    finally:
        ledger.close()
    again = Ledger(path)
    try:
        assert again.run_curves(1) == [curve] and again.runs(1)[-1].curve == curve
        assert again.get(2).status == "pruned"
    finally:
        again.close()


def test_agents_see_why_a_run_was_pruned() -> None:
    from autoresearch.agents.prompt import history_lines
    from autoresearch.core.records import Experiment

    pruned = Experiment(id=2, tag="t", parent_commit="a", commit="b", agent="llm", description="LR x10",
                        status="pruned", reason="pruned at 30% of the budget: loss 5 > 2.9 (the best's worst run)")
    [line] = history_lines([pruned], "score")
    assert "pruned" in line and "no metric" in line and "at 30% of the budget: loss 5 > 2.9" in line
