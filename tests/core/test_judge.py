"""Noise-aware decisions, the simplicity price, guards."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from autoresearch.core.config import Guard, JudgeConfig, MetricSpec, load_config
from autoresearch.core.judge import (
    check_guards,
    complexity,
    decide,
    pooled_sigma,
    t_quantile,
)
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits
from autoresearch.store.ledger import Ledger
from tests.scripted import ScriptedAgent, replace

LOWER = MetricSpec("val_bpb", "minimize")
CFG = JudgeConfig()


def test_pooled_sigma_and_t_quantile():
    sigma, dof = pooled_sigma([[1.0, 3.0], [10.0, 12.0, 14.0], [5.0]])
    assert dof == 3 and sigma == pytest.approx(((2 + 8) / 3) ** 0.5)
    assert pooled_sigma([[1.0]]) == (None, 0)
    assert t_quantile(1.959964, 10) == pytest.approx(2.228, abs=0.01)  # the table value
    assert t_quantile(1.959964, 1000) == pytest.approx(1.962, abs=0.01)


def test_pooled_sigma_and_decide_ignore_invalid_values():
    assert pooled_sigma([[1e300, 1.0, 3.0], [math.nan, 2.0], [math.inf, -math.inf], [None, 4.0]]) == \
        pooled_sigma([[1.0, 3.0]])
    sigma, dof = pooled_sigma([[1e12, -1e12], [-1e12, 1e12]])  # at the bound: no overflow, exact
    assert dof == 2 and sigma == pytest.approx(2 ** 0.5 * 1e12)
    d = decide(LOWER, CFG, [0.9] * 50, [1.0] * 50, sigma=5e-324, dof=98)  # σ·sqrt(1/50 + 1/50) rounds to 0
    assert d.action == "keep" and "no noise estimate" in d.reason


def test_clear_improvement_is_kept_with_explanation():
    d = decide(LOWER, CFG, [0.95], [1.0, 1.001, 0.999], sigma=0.01, dof=20)
    assert d.action == "keep"
    assert re.fullmatch(r"keep: -0\.05 ± 0\.012 \(4\.3σ, 1 run\)", d.reason), d.reason


def test_uncertain_band_is_confirmed_then_decided():
    d = decide(LOWER, CFG, [0.99], [1.0, 1.0, 1.0], sigma=0.01, dof=20, confirmations_left=2)
    assert d.action == "confirm" and "uncertain" in d.reason
    assert decide(LOWER, CFG, [0.99], [1.0, 1.0, 1.0], sigma=0.01, dof=20, confirmations_left=0).action == "discard"
    assert decide(LOWER, CFG, [1.02], [1.0], sigma=0.01, dof=20, confirmations_left=2).action == "discard"
    # Maximize flips the sign of the gain.
    assert decide(MetricSpec("acc", "maximize"), CFG, [0.95], [1.0], sigma=0.01, dof=20).action == "discard"


def test_the_first_look_is_stricter():
    # Group-sequential: 1.7 standard errors on one run is uncertain (z_first 1.8), not yet a keep.
    one = ([0.98], [1.0, 1.0, 1.0])
    assert decide(LOWER, CFG, *one, sigma=0.01, dof=1000, confirmations_left=2).action == "confirm"
    assert decide(LOWER, JudgeConfig(z_first=0.0), *one, sigma=0.01, dof=1000).keep  # z alone would keep it
    assert decide(LOWER, CFG, [0.98, 0.985], [1.0, 1.0, 1.0], sigma=0.01, dof=1000).keep  # 2.1σ on two runs


def test_no_noise_estimate_falls_back_to_strictly_better():
    assert decide(LOWER, CFG, [0.999], [1.0], sigma=None).keep
    assert decide(LOWER, CFG, [1.0], [1.0], sigma=0.0).action == "discard"


def test_simplicity_price_and_simplifications():
    cfg = JudgeConfig(complexity_cost=0.001)
    # A 4σ gain bought with 40 new lines (cost 0.04) is not worth it.
    d = decide(LOWER, cfg, [0.95, 0.95], [1.0, 1.0], sigma=0.01, dof=20, lines_added=40)
    assert d.action == "discard" and "+40 lines cost 0.04" in d.reason
    # Equal metric with less code is kept as a simplification.
    d = decide(LOWER, cfg, [1.001], [1.0], sigma=0.01, dof=20, lines_added=-12)
    assert d.keep and "simplification" in d.reason
    assert complexity("a = 1\n\n# comment\n  b = 2  # x\n") == 2


def test_guards_relative_to_baseline():
    guards = [Guard("peak_memory_mb", max_ratio=1.25), Guard("training_seconds", max=65)]
    assert check_guards(guards, {"peak_memory_mb": 120, "training_seconds": 60}, {"peak_memory_mb": 100}) is None
    assert "1.25x baseline" in check_guards(guards, {"peak_memory_mb": 126, "training_seconds": 60},
                                            {"peak_memory_mb": 100})
    assert "above max 65" in check_guards(guards, {"peak_memory_mb": 1, "training_seconds": 70}, {})
    # Silence is no pass: a guarded metric the run did not report is a violation.
    assert "training_seconds: the run did not report it" in check_guards(guards, {"peak_memory_mb": 120}, {})


NOISY = '''import os, random
X = 5.0
NOOP = 0
random.seed(os.urandom(8))
print(f"score: {X + random.gauss(0, 0.05):.6f}")
'''


def test_loop_measures_noise_and_confirms(tmp_path: Path):
    from tests.conftest import TOY_CONFIG, make_task

    # z = 3: the default z = 2 keeps ~3% of no-ops by design (benchmarks/judge_noise.py), which would
    # make this test fail once in thirty; the big win is 20σ, kept either way.
    task = make_task(tmp_path / "noisy", train=NOISY, config=TOY_CONFIG.split("[search]")[0] + "\n[judge]\nz = 3.0\n")
    agent = ScriptedAgent([("no-op", replace("NOOP = 0", "NOOP = 1")), ("big win", replace("X = 5.0", "X = 4.0"))])
    r = Research(load_config(task), agent, tag="t")
    r.open()
    r.run(Limits())
    r.close()
    ledger = Ledger(task / ".autoresearch" / "ledger.db")
    base, noop, win = ledger.experiments("t")
    assert [r.kind for r in ledger.runs(base.id)][:3] == ["primary", "noise", "noise"]
    assert "± " in base.reason and "over 3 runs" in base.reason
    assert noop.status == "discard" and win.status == "keep"
    assert re.match(r"keep: -[01]\.\d+ ± 0\.\d+ \(\d+\.\dσ, \d runs?\)", win.reason), win.reason
    assert win.metric == pytest.approx(4.0, abs=0.2)


# -- robust to what real machines do: stalls and drift --------------------------------------------

PLANNED = '''import json, os
from pathlib import Path
X = 5.0
plan = Path(os.environ["PLAN_DIR"])
exp = os.environ["AUTORESEARCH_EXPERIMENT_ID"]
counter = plan / f"{exp}.count"
n = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(n + 1))
values = json.loads((plan / "plan.json").read_text())[exp]
print(f"score: {values[min(n, len(values) - 1)]}")
'''


def planned_research(tmp_path: Path, plan: dict[str, list[float]], judge: str = "",
                     changes: tuple[tuple[str, str], ...] = (("X = 5.0", "X = 4.0"),)) -> Ledger:
    """The real loop on a task whose run n of experiment k prints plan[k][n]: one candidate per change."""
    from tests.conftest import TOY_CONFIG, make_task

    (tmp_path / "plan").mkdir()
    (tmp_path / "plan" / "plan.json").write_text(__import__("json").dumps(plan))
    config = (TOY_CONFIG.split("[search]")[0] + f'\n[env]\nPLAN_DIR = "{tmp_path / "plan"}"\n'
              "\n[sandbox]\nenabled = false\n" + judge)
    task = make_task(tmp_path / "t", train=PLANNED, config=config)
    r = Research(load_config(task), ScriptedAgent([("candidate", replace(a, b)) for a, b in changes]), tag="t")
    r.open()
    try:
        r.run(Limits())
    finally:
        r.close()
    return Ledger(task / ".autoresearch" / "ledger.db")


def test_a_stalled_baseline_run_is_recognised_and_a_real_gain_is_kept(tmp_path: Path):
    # The story: one of three baseline runs stalled (12 steps instead of ~600: 2.816 against
    # 2.110-2.160), its mean became 2.35 with a huge σ, and every later candidate (four runs at
    # 2.075-2.082) was discarded. The stall is now left out once the evidence can tell.
    ledger = planned_research(tmp_path, {"1": [2.11, 2.816, 2.16, 2.13, 2.12, 2.14],
                                         "2": [2.075, 2.082, 2.078, 2.080]})
    base, cand = ledger.experiments("t")
    assert cand.status == "keep", cand.reason
    assert 2.07 < cand.metric < 2.085
    # One consistent number for the baseline: the mean of its runs without the stall.
    assert base.metric == pytest.approx(sum(v for v in ledger.run_values(base.id) if v < 2.5) /
                                        len([v for v in ledger.run_values(base.id) if v < 2.5]))


def test_drift_between_the_baseline_and_a_candidate_is_not_a_gain(tmp_path: Path):
    # The story: on a speed benchmark the baseline's three back-to-back noise runs came at a slow
    # moment, and a change with no effect was kept at 2.9σ. The best is re-measured before any keep.
    ledger = planned_research(tmp_path, {"1": [1.69, 1.70, 1.68, 1.52, 1.54, 1.53, 1.525, 1.535],
                                         "2": [1.53, 1.535, 1.525, 1.54]})
    base, cand = ledger.experiments("t")
    assert cand.status == "discard", cand.reason
    assert "re-measured" in cand.reason or "needs" in cand.reason, cand.reason
    assert any(r.kind == "confirm" for r in ledger.runs(base.id))  # the best ran again alongside


def test_broken_runs_need_evidence_to_be_told_apart():
    from autoresearch.core.judge import clean_groups, clean_values

    stall = [2.11, 2.816, 2.16]
    assert clean_values(stall, [stall]) == stall  # three runs alone: could be bad luck
    more = [stall + [2.13], [2.075, 2.082]]
    assert clean_values(more[0], more) == [2.11, 2.16, 2.13]
    assert clean_groups(more) == [[2.11, 2.16, 2.13], [2.075, 2.082]]
    rng = __import__("random").Random(1)
    honest = [[rng.gauss(0, 1) for _ in range(5)] for _ in range(200)]
    assert sum(len(g) for g in clean_groups(honest)) == 1000  # no honest run flagged


def test_a_best_kept_on_one_run_is_rechecked_and_shares_its_runs_for_the_drift_check(tmp_path: Path):
    # #2 clearly beats the baseline on its first run: the baseline is re-run before the keep (its own
    # back-to-back runs are one moment), then #2 once more (the winner's curse). #3 beats #2 right
    # after: #2's runs, made alongside the last experiments, are recent, so #2 is not re-run again.
    serial = "\n[parallel]\nahead = 0\n"  # each change is proposed on the best of its time
    ledger = planned_research(tmp_path, {"1": [2.0, 2.01, 1.99, 2.0], "2": [1.8, 1.81], "3": [1.6, 1.61]}, serial,
                              changes=(("X = 5.0", "X = 4.0"), ("X = 4.0", "X = 3.0")))
    base, second, third = ledger.experiments("t")
    assert [second.status, third.status] == ["keep", "keep"], (second.reason, third.reason)
    assert [r.kind for r in ledger.runs(base.id)] == ["primary", "noise", "noise", "confirm"]
    assert [r.kind for r in ledger.runs(second.id)] == ["primary", "confirm"]  # no drift re-run for #3
    assert [r.kind for r in ledger.runs(third.id)] == ["primary", "confirm"]
    assert second.metric == pytest.approx(1.805)
    (tmp_path / "w0").mkdir()
    window = planned_research(tmp_path / "w0", {"1": [2.0, 2.01, 1.99, 2.0], "2": [1.8, 1.81, 1.8],
                                                "3": [1.6, 1.61]}, judge=serial + "\n[judge]\ndrift_window = 0\n",
                              changes=(("X = 5.0", "X = 4.0"), ("X = 4.0", "X = 3.0")))
    assert len(window.runs(window.experiments("t")[1].id)) == 3  # without the window: re-run for #3
