"""The judge of paired re-executions: is a claimed improvement real on the verifier's hardware?

A verifier runs the candidate and its base interleaved (base, candidate, candidate, base, ...), so
slow drift of the machine hits both alike; the evidence is the list of paired differences
d = gain of candidate over base. The hub accepts a claim only when the mean difference beats
`t · σ_d / sqrt(n)` (one-sided, level `p_value` split over the looks at which acceptance is
possible, Bonferroni) and `min_effect`, where σ_d is the spread of paired differences pooled over
every verification so far (core/judge.pooled_sigma, Student-t via core/judge.t_quantile: the
local loop's rule on differences). A base-against-base calibration job gives σ_d its first
degrees of freedom.

Cheap first: every claim starts with one screening pair; one that is not better there is rejected
at once. Promising claims get more pairs at the next look. Adaptive replication: a worker with
`reputable_streak` accepted claims in a row and no mismatch may be accepted from the first look;
others need `min_pairs_new` pairs. A mismatch (the worker claimed far more gain than the verifier
measured) resets the streak and flags the worker.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from autoresearch.core.judge import pooled_sigma, t_quantile

P_VALUE = 0.001  # one-sided, per claim: 200 no-op claims expect 0.2 false accepts (p = 0.01 would expect 2)
LOOKS = (1, 4, 8)  # pairs after which the judge decides or asks for more (benchmarks/hub_swarm.py)
MIN_PAIRS_NEW = 3  # a worker without a clean record is accepted only on at least this many pairs
REPUTABLE_STREAK = 3  # accepted claims in a row, no mismatch: the first look may accept
FLAG_SIGMAS = 4.0  # claimed gain above the verified one by more than this many standard errors ...
FLAG_RELATIVE = 0.5  # ... plus this share of the verified gain (hardware differs): a mismatch
CALIBRATION_PAIRS = 6  # base-against-base pairs of a calibration job
MIN_NOISE_DOF = 4  # below this many degrees of freedom of σ_d, a calibration job is queued


@dataclass(frozen=True)
class Policy:
    direction: Literal["minimize", "maximize"] = "minimize"
    min_effect: float = 0.0
    p_value: float = P_VALUE
    looks: tuple[int, ...] = LOOKS
    min_pairs_new: int = MIN_PAIRS_NEW
    reputable_streak: int = REPUTABLE_STREAK


@dataclass(frozen=True)
class Verdict:
    action: Literal["accept", "reject", "more"]
    reason: str
    gain: float | None = None  # mean paired difference (> 0: the candidate is better)
    se: float | None = None
    more_pairs: int = 0
    mismatch: bool = False


def differences(direction: str, pairs: list[tuple[float, float]]) -> list[float]:
    """(base, candidate) values -> the candidate's gain in each pair."""
    sign = 1.0 if direction == "minimize" else -1.0
    return [sign * (b - c) for b, c in pairs]


def judge(policy: Policy, pairs: list[tuple[float, float]], noise: list[list[float]], *, reputable: bool,
          claimed_gain: float | None = None) -> Verdict:
    """The verdict on a claim's pairs so far, given the paired differences of earlier verifications
    (`noise`, one list per job) for σ_d."""
    d = differences(policy.direction, pairs)
    n = len(d)
    if n == 0:
        return Verdict("more", "no pairs yet", more_pairs=policy.looks[0])
    mean = math.fsum(d) / n
    sigma, dof = pooled_sigma([*noise, d])
    se = sigma / math.sqrt(n) if sigma else None
    min_pairs = 1 if reputable else policy.min_pairs_new
    looks = [k for k in policy.looks if k >= min_pairs] or [policy.looks[-1]]
    z = NormalDist().inv_cdf(1 - policy.p_value / len(looks))
    threshold = max(t_quantile(z, dof) * se, policy.min_effect) if se else math.inf
    runs = f"{n} pair{'s' * (n != 1)}"
    explain = f"gain {mean:+.4g} ± {se:.2g} ({mean / se:.1f}σ, {runs})" if se else f"gain {mean:+.4g} ({runs})"
    nxt = next((k for k in policy.looks if k > n), None)
    if mean <= 0:
        return _final("reject", f"not better on the verifier: {explain}", mean, se, claimed_gain)
    if n >= min_pairs and mean > threshold:
        return _final("accept", f"verified: {explain} > {threshold:.2g}", mean, se, claimed_gain)
    if nxt is None:
        bar = f"needs > {threshold:.2g}" if se else "no noise estimate"
        return _final("reject", f"not significant: {explain}, {bar}", mean, se, claimed_gain)
    return Verdict("more", f"promising: {explain}; {nxt - n} more pair(s)", mean, se, more_pairs=nxt - n)


def _final(action: str, reason: str, gain: float, se: float | None, claimed: float | None) -> Verdict:
    mismatch = claimed is not None and math.isfinite(claimed) and \
        claimed > gain + FLAG_SIGMAS * (se or 0.0) + FLAG_RELATIVE * abs(gain)
    if mismatch:
        reason += f"; flagged: claimed gain {claimed:+.4g} is far above the verified {gain:+.4g}"
    return Verdict(action, reason, gain, se, mismatch=mismatch)  # type: ignore[arg-type]


def interleaved_order(pairs: int) -> list[str]:
    """Which runs a verifier makes, in order: ABBA blocks, so a linear drift cancels out."""
    order: list[str] = []
    for i in range(pairs):
        order += ["base", "candidate"] if i % 2 == 0 else ["candidate", "base"]
    return order
