"""Keep or discard: is a candidate truly better than the current best, beyond the noise?

Under a wall-clock budget the metric is noisy, and "lower once" keeps about half of all no-op
changes. Here a candidate is kept only if its mean improvement over the best exceeds
`t · σ · sqrt(1/n_candidate + 1/n_best)` (and `min_effect`), where σ is the run-to-run spread
pooled over every commit that ran more than once and t is the Student quantile for `z` at its
degrees of freedom (`z_first`, a stricter bar, on the candidate's first run: a group-sequential
design). Candidates in the uncertain band (better, but not by enough) are re-run, and the best with
them, before the decision; a candidate at or below `confirm_from` standard errors is discarded at
once. The sequence was calibrated by simulation and is measured end to end by
benchmarks/judge_noise.py. Complexity has a price: each added source line costs
`complexity_cost` metric units, and equal metric with less code is kept as a simplification.
Guard metrics (limits relative to the baseline) discard with the reason.

Robust to what real machines do: a run that sits far outside the spread of everything else
(a stall: 12 steps instead of 600) is recognised as broken and left out of every mean and of σ
(`clean_groups`, `clean_values`), once there is enough evidence to tell; the measurer re-runs the
best alongside candidates so that drift hits both sides (measure.py).

Every value judged here is a valid metric (metrics.valid_metric: finite, within ±MAX_ABS_METRIC);
others are ignored, never computed with. The judge is the one owner of that filter for what the
ledger feeds back (the ledger returns what it recorded, and an older version recorded anything a
run printed: 1e300, inf), so no value in a ledger can make a decision raise, and every restart
judges again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from autoresearch.core.config import Guard, JudgeConfig, MetricSpec
from autoresearch.core.metrics import MAX_ABS_METRIC, valid_metric


@dataclass(frozen=True)
class Decision:
    action: Literal["keep", "discard", "confirm"]
    reason: str

    @property
    def keep(self) -> bool:
        return self.action == "keep"

    @property
    def status(self) -> str:
        return "keep" if self.action == "keep" else "discard"


def check_guards(guards: list[Guard], metrics: dict[str, float],
                 baseline: dict[str, float] | None) -> str | None:
    """The first guard violation as a reason, or None if all hold. A guarded metric the run did not
    report is a violation: a guard that silence passes guards nothing."""
    for g in guards:
        value = metrics.get(g.metric)
        if value is None:
            return f"guard {g.metric}: the run did not report it"
        if g.max is not None and value > g.max:
            return f"guard {g.metric}={value:g} above max {g.max:g}"
        if g.min is not None and value < g.min:
            return f"guard {g.metric}={value:g} below min {g.min:g}"
        base = (baseline or {}).get(g.metric)
        if base:
            if g.max_ratio is not None and value > g.max_ratio * base:
                return f"guard {g.metric}={value:g} above {g.max_ratio:g}x baseline {base:g}"
            if g.min_ratio is not None and value < g.min_ratio * base:
                return f"guard {g.metric}={value:g} below {g.min_ratio:g}x baseline {base:g}"
    return None


def pooled_sigma(groups: list[list[float]]) -> tuple[float | None, int]:
    """Run-to-run standard deviation pooled over groups of repeated runs of the same commit,
    with its degrees of freedom. Invalid values are left out of their group."""
    groups = [g for g in (_valid(g) for g in groups) if len(g) > 1]
    dof = sum(len(g) - 1 for g in groups)
    if dof == 0:
        return None, 0
    ss = math.fsum(math.fsum((x - _mean(g)) ** 2 for x in g) for g in groups)  # each term below 4e24
    return math.sqrt(ss / dof), dof


# A run is clearly broken when it sits this many (t-corrected) standard deviations from the rest of
# its group, σ being pooled over every other run: a false flag of an honest run is then rarer than
# 1 in 10,000, while a stall (28σ in the story of tests/core/test_judge.py) is caught.
OUTLIER_Z = 4.0
MIN_OUTLIER_DOF = 3  # with fewer degrees of freedom left, nothing can be told apart from bad luck


def clean_groups(groups: list[list[float]]) -> list[list[float]]:
    """Each group of repeated runs without its clearly broken runs (see `clean_values`)."""
    totals = _pool_totals(groups)
    return [[v for i, v in enumerate(g) if i not in _broken(_valid(g), totals)] if len(g) > 2 else g
            for g in (_valid(g) for g in groups)]


def clean_values(values: list[float], groups: list[list[float]]) -> list[float]:
    """One experiment's valid run values without its clearly broken runs, judged against the pool
    `groups` (which holds `values` as one of its groups when it has two or more)."""
    values = _valid(values)
    if len(values) < 3:
        return values
    broken = _broken(values, _pool_totals(groups))
    return [v for i, v in enumerate(values) if i not in broken]


def _pool_totals(groups: list[list[float]]) -> tuple[float, int]:
    groups = [g for g in (_valid(g) for g in groups) if len(g) > 1]
    return math.fsum(_ss(g) for g in groups), sum(len(g) - 1 for g in groups)


def _ss(values: list[float]) -> float:
    m = _mean(values)
    return math.fsum((x - m) ** 2 for x in values)


def _broken(values: list[float], totals: tuple[float, int]) -> set[int]:
    """Indices of `values` (a group in the pool summed up by `totals`) whose leave-one-out
    residual exceeds OUTLIER_Z t-corrected σ of the pool without it. At most one per group and
    round: the worst, and only while the group keeps a majority."""
    ss_all, dof_all = totals
    ss_group, n = _ss(values), len(values)
    worst, worst_t = None, 0.0
    for i, x in enumerate(values):
        rest = values[:i] + values[i + 1:]
        dof = dof_all - 1
        if dof < MIN_OUTLIER_DOF:
            return set()
        var = (ss_all - ss_group + _ss(rest)) / dof
        if var <= 0:
            continue
        t = abs(x - _mean(rest)) / math.sqrt(var * (1 + 1 / len(rest)))
        if t > t_quantile(OUTLIER_Z, dof) and t > worst_t:
            worst, worst_t = i, t
    return {worst} if worst is not None and n >= 3 else set()


def _valid(values: list[float]) -> list[float]:
    return [float(x) for x in values if x is not None and valid_metric(x)]


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def t_quantile(z: float, dof: int) -> float:
    """Student's t quantile at the normal quantile `z` (Cornish-Fisher expansion; exact as dof grows).

    σ estimated from few runs is often too small; t widens the bar accordingly."""
    if dof <= 0:
        return math.inf
    v = float(dof)
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))


def decide(spec: MetricSpec, cfg: JudgeConfig, candidate: list[float], best: list[float],
           sigma: float | None, dof: int = 0, lines_added: int = 0, confirmations_left: int = 0) -> Decision:
    """Compare the candidate's runs with the best's runs, given the noise σ.

    `lines_added` is the candidate's net change in non-blank, non-comment source lines. Invalid
    values are ignored: a candidate without a valid one is discarded, and a best without one is
    replaced by any valid candidate.
    """
    candidate, best = _valid(candidate), _valid(best)
    bound = f"finite, within ±{MAX_ABS_METRIC:g}"
    if not candidate:
        return Decision("discard", f"discard: no valid {spec.name} among the candidate's runs ({bound})")
    c = _mean(candidate)
    if not best:
        return Decision("keep", f"keep: {spec.name} {c:.6g}; the best has no valid {spec.name} ({bound}) to beat")
    b = _mean(best)
    gain = (b - c) if spec.direction == "minimize" else (c - b)  # > 0: the candidate is better
    price = cfg.complexity_cost * lines_added
    net = gain - price
    delta = c - b
    runs = f"{len(candidate)} run{'s' if len(candidate) > 1 else ''}"
    cost = f", {lines_added:+d} lines cost {price:.3g}" if price else ""
    noisy = sigma is not None and valid_metric(sigma) and sigma > 0
    se = sigma * math.sqrt(1 / len(candidate) + 1 / len(best)) if noisy else 0.0
    if se <= 0 or cfg.z <= 0:  # no noise estimate (or one so small it rounds to 0): the original rule
        if net > cfg.min_effect:
            return Decision("keep", f"keep: {delta:+.4g} ({runs}{cost}; no noise estimate)")
        return Decision("discard", f"discard: {delta:+.4g} ({runs}{cost}; not better)")
    zq = max(cfg.z, cfg.z_first) if len(candidate) == 1 else cfg.z  # group-sequential: a stricter first look
    threshold = max(t_quantile(zq, dof) * se if dof else zq * se, cfg.min_effect)
    z = gain / se
    explain = f"{delta:+.4g} ± {se:.2g} ({z:.1f}σ, {runs}{cost})"
    if net > threshold:
        return Decision("keep", f"keep: {explain}")
    if lines_added < 0 and gain > -threshold and cfg.keep_simplifications:
        return Decision("keep", f"keep: simplification, {-lines_added} fewer lines at equal {spec.name}: {explain}")
    # Uncertain band: a candidate that could still clear the bar with more runs gets them.
    if confirmations_left > 0 and net > cfg.confirm_from * se:
        return Decision("confirm", f"uncertain: {explain}; confirming")
    return Decision("discard", f"discard: {explain}, needs > {threshold:.2g}")


def complexity(source: str) -> int:
    """Non-blank, non-comment lines: the unit of the simplicity criterion."""
    return sum(1 for line in source.splitlines() if line.strip() and not line.strip().startswith("#"))
