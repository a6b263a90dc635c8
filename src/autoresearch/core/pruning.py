"""The pruning rule: can a running candidate still plausibly beat the best? (pure; no I/O)

At a progress point t of the candidate (t >= [prune] min_share), with value v of the compared
progress metric, the candidate is stopped when v is worse than the best's *worst* run at t by more
than

    k_eff · σ(t) · sqrt(1 + 1/n)  +  slack · remaining(t)

- σ(t) is the run-to-run spread of the curves at t, pooled over every commit with two or more
  recorded curves (the baseline's noise runs, confirmed candidates), with dof = Σ(n − 1); k_eff is
  Student's t at the normal quantile k for those dof, so few repeated curves give a wide bar (the
  judge's t_quantile: with the baseline's 3 runs alone, k = 3 becomes about 15); sqrt(1 + 1/n)
  makes it the spread of a difference between one run and the best's n runs at t (a best kept
  on one lucky run has a lucky curve too).
- remaining(t) is how much the best's mean curve still improves from t to its last point. Curves
  of different settings cross (a larger learning rate or model is often behind mid-run and ahead
  at the end): the allowance is largest early and vanishes at the end of the budget.

Without a noise estimate (no repeated curves, or a spread of exactly 0) or without a best curve
that covers t, nothing is pruned: when in doubt, the run goes on and the final metric decides.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from autoresearch.core.config import PruneConfig
from autoresearch.core.judge import pooled_sigma, t_quantile
from autoresearch.core.metrics import valid_metric
from autoresearch.core.progress import value_at

Series = list[tuple[float, float]]  # (t, value) of one run's compared progress metric


@dataclass(frozen=True)
class Verdict:
    """Why a candidate is stopped at t: every number of the rule, for the record."""

    name: str
    t: float
    value: float
    worst: float  # the best's worst run at t
    k_eff: float
    sigma: float
    dof: int
    slack: float
    remaining: float
    bar: float  # worst ± (k_eff·σ·sqrt(1 + 1/n) + slack·remaining)
    runs: int  # n: the best's runs at t
    minimize: bool

    @property
    def reason(self) -> str:
        sign, cmp = ("+", ">") if self.minimize else ("-", "<")
        allowance = f" {sign} {self.slack:g} x {self.remaining:.3g} (the best's drop still to come)" \
            if self.slack and self.remaining else ""
        return (f"pruned at {self.t:.0%} of the budget: {self.name} {self.value:.4g} {cmp} {self.worst:.4g} "
                f"(the best's worst of {self.runs} run{'s' * (self.runs != 1)}) {sign} {self.k_eff:.3g} x "
                f"{self.sigma * math.sqrt(1 + 1 / self.runs):.2g} (noise, {self.dof} dof)"
                f"{allowance}")


def curve_noise(groups: list[list[Series]], t: float) -> tuple[float | None, int]:
    """The run-to-run σ of the curves at t, pooled over groups of repeated runs of one commit."""
    values = [[v for v in (value_at(s, t) for s in group) if v is not None] for group in groups]
    return pooled_sigma(values)


def check(cfg: PruneConfig, name: str, minimize: bool, t: float, value: float, best: list[Series],
          groups: list[list[Series]]) -> Verdict | None:
    """The verdict on a candidate at (t, value) against the best's curves, or None: it goes on."""
    if t < cfg.min_share or not valid_metric(value):
        return None
    at_t = [v for v in (value_at(s, t) for s in best) if v is not None]
    if not at_t:
        return None
    sigma, dof = curve_noise(groups, t)
    if sigma is None or not sigma > 0 or not valid_metric(sigma):
        return None
    sign = 1.0 if minimize else -1.0  # sign * (a - b) > 0: a is worse than b
    worst = max(at_t, key=lambda v: sign * v)
    ends = [s[-1][1] for s in best if s]
    remaining = max(0.0, sign * (sum(at_t) / len(at_t) - sum(ends) / len(ends)))
    k_eff = t_quantile(cfg.k, dof) if cfg.k > 0 else 0.0
    margin = k_eff * sigma * math.sqrt(1 + 1 / len(at_t)) + cfg.slack * remaining
    if not math.isfinite(margin) or sign * (value - worst) <= margin:
        return None
    return Verdict(name=name, t=t, value=value, worst=worst, k_eff=k_eff, sigma=sigma, dof=dof, slack=cfg.slack,
                   remaining=remaining, bar=worst + sign * margin, runs=len(at_t), minimize=minimize)
