"""Noise-aware decisions, the simplicity price, guards."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from autoresearch.core.config import Guard, JudgeConfig, MetricSpec, load_config
from autoresearch.core.judge import check_guards, complexity, decide, pooled_sigma, t_quantile
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits
from autoresearch.store.ledger import Ledger
from tests.test_loop import ScriptedAgent, replace

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
