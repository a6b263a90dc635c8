"""The judge of paired re-executions: is a claimed improvement real on the verifier's hardware?

A verifier runs the candidate and its base interleaved (base, candidate, candidate, base, ...), so
slow drift of the machine hits both alike; the evidence is the list of paired differences
d = gain of candidate over base. σ_d, the spread of paired differences, is pooled over every
verification so far (core/judge.pooled_sigma, Student-t via core/judge.t_quantile: the local
loop's rule on differences); a base-against-base calibration job gives it its first degrees of
freedom.

The full test (every claim of a worker without a record, and audits): one screening pair, then
looks at `looks` pairs. A claim is accepted at a look of at least `min_pairs_new` pairs when the
mean difference beats `t · c · σ_d / sqrt(n)` and `min_effect`, with `c` from `full_test_bar`:
the bar at which the whole sequential test (screening, futility, every look) accepts a no-op with
probability `p_value` in all, exact for known σ_d (a Bonferroni split would spend only part of
`p_value`, since the looks share their pairs, and pay for it in pairs); `t` widens it while σ_d
is young. It is rejected at once when it is clearly not better: at the screening pair, a mean
below `-SCREEN_SLACK` standard errors (one unlucky pair does not sink a real gain); at each later
look, a mean below `FUTILITY` standard errors (clearly short of the bar); at any look before the
last, a claimed gain that the pairs contradict (a mismatch, below). No-op claims mostly cost one
or three pairs, true 3σ gains almost never stop there (tests/hub/test_verify.py).

The cheap check (adaptive replication, BOINC-style): a reputable worker's claim (service.py says
who) carries its own measured runs of base and candidate. Those are trusted as evidence, but only
when the verifier's own pair(s) agree with them: the verifier sees the candidate better (mean above
`CHEAP_MARGINS[n - 1]` standard errors after n pairs; a claim that fails on that or on the combined
bar below, without being worse or contradicted, gets another pair, up to three, before the full
test: the same risk split over three looks, so that an honest claim rarely pays the full test while
a lying worker's no-op passes no more often than with one look),
its gain is not below the claimed one by more than `AGREE_Z` standard errors of the two together,
and the claimed runs (at most `MAX_CLAIMED_PAIRS` of them count) plus the verifier's pairs pass
the same test at `CHEAP_P` with the verifier's σ_d. A claim that fails the cheap check is not
rejected: it goes on to the full test, on new pairs (`Verdict.fresh`: the ones drawn until the
cheap check gave up are selected low), whose final verdict flags a worker that claimed far more
than the verifier measured; one the pairs so far contradict is rejected and flagged at once.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from autoresearch.core.judge import pooled_sigma, t_quantile
from autoresearch.core.metrics import valid_metric

# A no-op claim's chance of acceptance by the full test, all its looks together. A swarm run sends
# about 100 no-op and seed-only claims that pass the gate: at 0.00025 it accepts none in 97 runs of
# 100 (at 0.001, Bonferroni-split, 92: the swarm of 2026-12-04 accepted one).
P_VALUE = 0.00025
# Pairs after which the judge decides or asks for more: the screening pair, then every pair from 3
# to 6, where a 3σ gain mostly crosses the bar (4.2 pairs on average, 99% accepted, against 4.6
# for looks at 3, 5, 8, 12 at the same risk; tests/hub/test_verify.py).
LOOKS = (1, 3, 4, 5, 6, 8, 10)
MIN_PAIRS_NEW = 3  # the full test accepts on at least this many pairs (fewer would let one outlier run decide)
SCREEN_SLACK = 0.5  # the screening pair rejects below -0.5 se: 1 in 160 true 3σ gains lost there (1 in 60 at 0), 31% of no-ops
FUTILITY = 1.0  # at each look after the first, a mean below this many standard errors is rejected: 84% of no-ops at 3 pairs, 0.4% of 3σ gains
FLAG_SIGMAS = 4.0  # claimed gain above the verified one by more than this many standard errors ...
FLAG_RELATIVE = 0.5  # ... plus this share of the verified gain (hardware differs): a mismatch
# The cheap check's own level: its risk is bounded by how often a lying worker's no-op passes
# (CHEAP_MARGINS) and by what a record costs, not by this; 0.001 keeps an honest claim's
# disagreement at 1 in 1000 and its combined bar where the record's costs were measured.
CHEAP_P = 0.001
AGREE_Z = NormalDist().inv_cdf(1 - CHEAP_P)  # an honest claim disagrees 1 time in 1000
# Cheap check: after its 1st, 2nd and 3rd pair, the verifier's mean must show the candidate better
# by this many of its standard errors. With one look (at 0.5), 10% of honest 3σ claims paid the
# full test (4-5 pairs: a first pair low, or the worker's own runs short of the combined bar), 1.45
# pairs a claim; with these three, 1.8% do, 1.20 pairs a claim, while a lying worker's no-op passes
# 30% of the time either way (simulated in tests/hub/test_verify.py).
CHEAP_MARGINS = (0.7, 1.1, 1.3)
MAX_CLAIMED_PAIRS = 8  # a worker's own runs count as at most this many pairs: the verifier's pair weighs ≥ 1/9
# Base-against-base pairs of a calibration job. A young σ_d widens the bar by Student's t, and at
# p = 0.00025 that is dear: a 3σ gain costs 7.3 pairs with the 5 dof of 6 pairs, 6.3 with the 11
# of 12 (4.3 with 100). A hub pays these runs once, its claims every time.
CALIBRATION_PAIRS = 12
MIN_NOISE_DOF = 4  # below this many degrees of freedom of σ_d, a calibration job is queued


@dataclass(frozen=True)
class Policy:
    direction: Literal["minimize", "maximize"] = "minimize"
    min_effect: float = 0.0
    p_value: float = P_VALUE
    looks: tuple[int, ...] = LOOKS
    min_pairs_new: int = MIN_PAIRS_NEW


@dataclass(frozen=True)
class Claimed:
    """What the worker says it measured: its gain and how many pairs its runs are worth."""

    gain: float
    pairs: float = 0.0  # 0: a bare number, no runs to weigh


@dataclass(frozen=True)
class Verdict:
    action: Literal["accept", "reject", "more"]
    reason: str
    gain: float | None = None  # mean paired difference (> 0: the candidate is better)
    se: float | None = None
    more_pairs: int = 0
    mismatch: bool = False
    cheap: bool = False  # accepted by the cheap check (or, with "more", still under it), not the full test
    fresh: bool = False  # the cheap check gave up: the full test starts on new pairs (the hub sets these aside)


def differences(direction: str, pairs: list[tuple[float, float]]) -> list[float]:
    """(base, candidate) values -> the candidate's gain in each pair."""
    sign = 1.0 if direction == "minimize" else -1.0
    return [sign * (b - c) for b, c in pairs]


def claimed_evidence(direction: str, claimed: dict[str, Any]) -> Claimed | None:
    """The worker's claimed runs of base and candidate as evidence; a bare `gain` number without
    runs is kept for the mismatch test only (worth no pairs)."""
    sign = 1.0 if direction == "minimize" else -1.0
    runs = [claimed.get("base_runs"), claimed.get("candidate_runs")]
    if all(isinstance(r, list) for r in runs):
        base, cand = ([float(v) for v in r if isinstance(v, (int, float)) and valid_metric(v)] for r in runs)
        if base and cand:
            pairs = min(2 / (1 / len(base) + 1 / len(cand)), MAX_CLAIMED_PAIRS)
            return Claimed(sign * (math.fsum(base) / len(base) - math.fsum(cand) / len(cand)), pairs)
    gain = claimed.get("gain")
    if isinstance(gain, (int, float)) and math.isfinite(gain):
        return Claimed(float(gain))
    return None


def judge(policy: Policy, pairs: list[tuple[float, float]], noise: list[list[float]], *,
          claimed: Claimed | None = None, cheap: bool = False) -> Verdict:
    """The verdict on a claim's pairs so far, given the paired differences of earlier verifications
    (`noise`, one list per job) for σ_d. `cheap`: the worker is reputable and this claim was not
    drawn for an audit, so the cheap check may accept it."""
    d = differences(policy.direction, pairs)
    n = len(d)
    if n == 0:
        return Verdict("more", "no pairs yet", more_pairs=policy.looks[0])
    mean = math.fsum(d) / n
    sigma, dof = pooled_sigma([*noise, d])
    if dof < MIN_NOISE_DOF:  # a σ_d from a pair or two can be a tenth of the truth: judged by it, an honest
        sigma = None         # first claim was flagged as a forger at "20σ" (benchmarks/hub_swarm.py)
    se = sigma / math.sqrt(n) if sigma else None
    runs = f"{n} pair{'s' * (n != 1)}"
    explain = f"gain {mean:+.4g} ± {se:.2g} ({mean / se:.1f}σ, {runs})" if se else f"gain {mean:+.4g} ({runs})"
    note = ""
    if cheap and claimed is not None and sigma:
        why_not = cheap_check(policy, mean, n, sigma, dof, claimed)
        if why_not is None:
            return Verdict("accept", f"verified by the cheap check (a worker with a clean record): {explain} agrees "
                           f"with its claimed {claimed.gain:+.4g}", mean, se, cheap=True)
        another_look = n < len(CHEAP_MARGINS) and claimed.pairs > 0 and mean > -SCREEN_SLACK * se
        if another_look and not _disagrees(mean, n, sigma, claimed) and \
                not _contradicted(claimed.gain, mean, _spread(se, sigma, claimed)):
            return Verdict("more", f"cheap check: {why_not}; one more pair", mean, se, more_pairs=1, cheap=True)
        if not _contradicted(claimed.gain, mean, _spread(se, sigma, claimed)):
            # The pairs drawn until the cheap check gave up are selected low; judged on them, an honest
            # claim met the full test's futility bound about 1 time in 60 (its worker's record reset).
            return Verdict("more", f"cheap check failed ({why_not}: {explain}): the full test, on new pairs",
                           mean, se, more_pairs=policy.looks[0], fresh=True)
        note = f"; cheap check failed ({why_not}): full test"
    z = full_test_bar(policy.p_value, policy.looks, policy.min_pairs_new)
    threshold = max(t_quantile(z, dof) * se, policy.min_effect) if se else math.inf
    nxt = next((k for k in policy.looks if k > n), None)
    gained = claimed.gain if claimed is not None else None
    spread = _spread(se, sigma, claimed)  # how far an honest claim's gain may lie from the verified one
    if se is None and nxt is not None:  # no σ_d yet (the calibration job has not reported): nothing to judge by
        return Verdict("more", f"no noise estimate yet: {explain}; {nxt - n} more pair(s)", mean, None,
                       more_pairs=nxt - n, cheap=cheap)
    if mean <= (-SCREEN_SLACK * se if n == 1 and se else 0.0):
        return _final("reject", f"not better on the verifier: {explain}{note}", mean, se, gained, spread)
    if n > 1 and n in policy.looks and se and mean < FUTILITY * se:
        return _final("reject", f"clearly short of the bar: {explain}{note}", mean, se, gained, spread)
    if n >= policy.min_pairs_new and mean > threshold:
        return _final("accept", f"verified: {explain} > {threshold:.2g}{note}", mean, se, gained, spread)
    if nxt is None:
        bar = f"needs > {threshold:.2g}" if se else "no noise estimate"
        return _final("reject", f"not significant: {explain}, {bar}{note}", mean, se, gained, spread)
    if _contradicted(gained, mean, spread):  # forged: no more pairs spent on finding out by how much
        return _final("reject", f"the claim is contradicted: {explain}{note}", mean, se, gained, spread)
    return Verdict("more", f"promising: {explain}; {nxt - n} more pair(s){note}", mean, se, more_pairs=nxt - n)


# Grid of the running sum of paired differences (in σ_d) for `full_test_operating`: fine enough
# that the computed risk is within 1% of a 2,000,000-claim simulation, coarse enough that one
# evaluation takes about 4 ms (the bar, 40 of them, is computed once per policy).
GRID_STEP = 0.02
GRID_SPAN = 9.0  # the normal step kernel is cut at ±GRID_SPAN σ: what lies beyond is below 1e-18


def full_test_operating(bar: float, looks: tuple[int, ...], min_pairs: int, gain: float = 0.0) -> tuple[float, float]:
    """(P(accept), expected pairs) of the full test with accept bar `bar` (in standard errors) for a
    claim whose true gain is `gain` σ_d, σ_d known: the density of the running sum carried from pair
    to pair on a grid, screening, futility and acceptance taking their share at each look
    (the recursive integration of group-sequential designs)."""
    last = looks[-1]
    kernel_x = np.arange(-GRID_SPAN, GRID_SPAN + GRID_STEP / 2, GRID_STEP)
    kernel = np.exp(-0.5 * kernel_x ** 2) * GRID_STEP / math.sqrt(2 * math.pi)
    lo, hi = -GRID_SPAN - 2.0, gain * last + (bar + GRID_SPAN) * math.sqrt(last)
    x = np.arange(lo, hi, GRID_STEP)
    density = np.exp(-0.5 * (x - gain) ** 2) / math.sqrt(2 * math.pi)  # the sum after the first pair
    accepted = pairs = 0.0
    for n in range(1, last + 1):
        if n > 1:  # one more pair: the sum moves by N(gain, 1)
            density = np.convolve(density, kernel, mode="same")
            density = np.interp(x - gain, x, density, left=0.0, right=0.0)
        if n == 1:
            stop = x <= -SCREEN_SLACK
        elif n in looks:
            stop = x < FUTILITY * math.sqrt(n)
        else:
            stop = np.zeros_like(x, dtype=bool)
        if n >= min_pairs and n in looks:
            accept = x > bar * math.sqrt(n)
            accepted += float(density[accept].sum() * GRID_STEP)
            stop = stop | accept
        if n == last:
            stop = np.ones_like(x, dtype=bool)
        pairs += n * float(density[stop].sum() * GRID_STEP)
        density = np.where(stop, 0.0, density)
    return accepted, pairs


@functools.lru_cache(maxsize=64)
def full_test_bar(p_value: float, looks: tuple[int, ...], min_pairs: int) -> float:
    """The accept bar, in standard errors, at which the full test accepts a no-op claim with
    probability `p_value`, all looks together (σ_d known; `judge` widens it by Student's t)."""
    lo, hi = NormalDist().inv_cdf(1 - p_value), NormalDist().inv_cdf(1 - p_value / len(looks))  # one look .. Bonferroni
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if full_test_operating(mid, looks, min_pairs)[0] > p_value else (lo, mid)
    return hi


def cheap_check(policy: Policy, mean: float, n: int, sigma: float, dof: int, claimed: Claimed) -> str | None:
    """None when the verifier's `n` pairs (mean `mean`) agree with the claimed evidence and both
    together pass the test; otherwise why not."""
    if claimed.pairs <= 0:
        return "the claim has no measured runs to agree with"
    if mean <= CHEAP_MARGINS[min(n, len(CHEAP_MARGINS)) - 1] * sigma / math.sqrt(n):
        return f"not clearly better on the verifier ({mean:+.4g})"
    if _disagrees(mean, n, sigma, claimed):
        return f"the verifier's {mean:+.4g} is far below the claimed {claimed.gain:+.4g}"
    total = claimed.pairs + n
    combined = (claimed.pairs * claimed.gain + n * mean) / total
    bar = max(t_quantile(AGREE_Z, dof) * sigma / math.sqrt(total), policy.min_effect)
    if combined <= bar:
        return f"claimed and verified together {combined:+.4g}, needs > {bar:.2g}"
    return None


def _disagrees(mean: float, n: int, sigma: float, claimed: Claimed) -> bool:
    """The verifier's gain below the claimed one by more than AGREE_Z standard errors of the two."""
    return mean < claimed.gain - AGREE_Z * math.hypot(sigma / math.sqrt(claimed.pairs), sigma / math.sqrt(n))


def _spread(se: float | None, sigma: float | None, claimed: Claimed | None) -> float:
    """The standard error of (claimed gain - verified gain) for an honest claim: the verifier's and,
    when the claim carries runs, its own (σ_d over the pairs they are worth). Without the second,
    a worker whose 4 + 4 runs came out lucky and whose verifier pairs came out unlucky was flagged
    as a forger (benchmarks/hub_swarm.py, 2026-12-04: +0.20 claimed, -0.003 ± 0.048 verified)."""
    own = sigma / math.sqrt(claimed.pairs) if claimed is not None and claimed.pairs > 0 and sigma else 0.0
    return math.hypot(se or 0.0, own)


def _contradicted(claimed: float | None, gain: float, spread: float) -> bool:
    """A mismatch: the claimed gain far above the verified one, even allowing for other hardware."""
    return claimed is not None and math.isfinite(claimed) and spread > 0 and \
        claimed > gain + FLAG_SIGMAS * spread + FLAG_RELATIVE * abs(gain)


def _final(action: str, reason: str, gain: float, se: float | None, claimed: float | None, spread: float) -> Verdict:
    mismatch = _contradicted(claimed, gain, spread)
    if mismatch:
        reason += f"; flagged: claimed gain {claimed:+.4g} is far above the verified {gain:+.4g}"
    return Verdict(action, reason, gain, se, mismatch=mismatch)  # type: ignore[arg-type]


def interleaved_order(pairs: int) -> list[str]:
    """Which runs a verifier makes, in order: ABBA blocks, so a linear drift cancels out."""
    order: list[str] = []
    for i in range(pairs):
        order += ["base", "candidate"] if i % 2 == 0 else ["candidate", "base"]
    return order
