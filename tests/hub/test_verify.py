"""The paired judge: noise is not a gain, a real gain is accepted, the screening saves runs, and a
clean record earns a cheaper check that still rejects what the verifier does not see."""
from __future__ import annotations

import random

import numpy as np

from autoresearch.hub.verify import (
    CALIBRATION_PAIRS,
    FUTILITY,
    SCREEN_SLACK,
    Claimed,
    Policy,
    claimed_evidence,
    full_test_bar,
    full_test_operating,
    interleaved_order,
    judge,
)

SIGMA = 1.0  # run-to-run noise; a paired difference has σ_d = √2·SIGMA
POLICY = Policy(direction="minimize")


def calibration(rng: random.Random, jobs: int = 1) -> list[list[float]]:
    """Base-against-base differences of one calibration job's pairs per job, as the hub measures them (a
    worker with a record has had several claims verified in full: more jobs, more dof)."""
    return [[rng.gauss(0, SIGMA) - rng.gauss(0, SIGMA) for _ in range(CALIBRATION_PAIRS)] for _ in range(jobs)]


def local_runs(rng: random.Random, true_gain: float, k: int = 4) -> Claimed:
    """What an honest worker claims: its own k runs of base and of candidate."""
    return claimed_evidence("minimize", {"base_runs": [10 + rng.gauss(0, SIGMA) for _ in range(k)],
                                         "candidate_runs": [10 - true_gain + rng.gauss(0, SIGMA) for _ in range(k)]})


def verify_claim(rng: random.Random, true_gain: float, claimed: Claimed | None = None,
                 cheap: bool = False) -> tuple[str, int]:
    """Run the judge's looks against simulated pairs: (final action, pairs used)."""
    return verify_traced(rng, true_gain, claimed, cheap)[:2]


def verify_traced(rng: random.Random, true_gain: float, claimed: Claimed | None = None,
                  cheap: bool = False) -> tuple[str, int, bool]:
    """As verify_claim, plus whether the claim went on to the full test. As in the hub, a claim
    stays under the cheap check while the judge's verdicts say so (`cheap`), and never returns to it."""
    noise, pairs, used = calibration(rng, 10 if cheap else 1), [], 0
    more = POLICY.looks[0]
    while True:
        for _ in range(more):
            base = 10 + rng.gauss(0, SIGMA)
            pairs.append((base, 10 - true_gain + rng.gauss(0, SIGMA)))
        v = judge(POLICY, pairs, noise, claimed=claimed, cheap=cheap)
        if v.action != "more":
            return v.action, used + len(pairs), not v.cheap
        if v.fresh:  # as the hub does: the cheap check's pairs set aside, the full test on new ones
            used, pairs = used + len(pairs), []
        cheap, more = cheap and v.cheap, v.more_pairs


def test_no_op_claims_are_not_accepted_and_mostly_cost_one_pair():
    rng = random.Random(1)
    results = [verify_claim(rng, 0.0) for _ in range(400)]
    assert sum(a == "accept" for a, _ in results) <= 2  # p = 0.00025 per claim: 0.1 expected in 400
    assert sum(n == 1 for _, n in results) >= 0.25 * len(results)  # 31% stop at the screening pair
    assert sum(n for _, n in results) / len(results) < 3.5  # the rest mostly stop at the next look (futility)


def test_three_sigma_improvements_are_accepted_at_least_nine_times_in_ten():
    rng = random.Random(2)
    accepted = sum(verify_claim(rng, 3 * SIGMA)[0] == "accept" for _ in range(400))
    assert accepted >= 0.9 * 400  # with the first calibration's 5 dof only


def test_a_clean_record_earns_a_cheaper_check():
    rng = random.Random(3)
    new = [verify_claim(rng, 3 * SIGMA) for _ in range(200)]
    cheap = [verify_claim(rng, 3 * SIGMA, local_runs(rng, 3 * SIGMA), cheap=True) for _ in range(200)]
    assert min(n for a, n in new if a == "accept") >= POLICY.min_pairs_new
    assert sum(a == "accept" for a, _ in cheap) >= sum(a == "accept" for a, _ in new) - 4
    assert sum(n for _, n in cheap) / 200 < 1.7 and sum(n for _, n in new) / 200 > 5  # pairs per claim


def test_the_cheap_check_accepts_no_noise_that_the_worker_did_not_measure_as_a_gain():
    """An honest worker whose local keep was noise: its own runs do not show a 0.001-significant
    gain, so the cheap check does not accept it, and the full test rejects it."""
    rng = random.Random(5)
    results = [verify_claim(rng, 0.0, local_runs(rng, 0.0), cheap=True) for _ in range(400)]
    assert sum(a == "accept" for a, _ in results) <= 2


def test_the_cheap_check_escalates_a_claim_the_verifier_contradicts():
    """A reputable worker that lies (claims a 3σ gain for a no-op, with made-up runs): the cheap
    check lets some through (the residual risk docs/hub.md states, bounded because a rejection
    resets the record); the rest go on to the full test, which rejects them all."""
    rng = random.Random(6)
    lies = Claimed(gain=3 * SIGMA, pairs=8)
    results = [verify_claim(rng, 0.0, lies, cheap=True) for _ in range(400)]
    slipped = sum(a == "accept" for a, _ in results)
    assert 0.1 * 400 < slipped < 0.4 * 400
    assert sum(verify_claim(rng, 0.0, lies)[0] == "accept" for _ in range(400)) <= 2


def test_a_claimed_gain_far_above_the_verified_one_is_flagged():
    rng = random.Random(4)
    pairs = [(10 + rng.gauss(0, 0.1), 9 + rng.gauss(0, 0.1)) for _ in range(3)]
    noise = [[rng.gauss(0, 0.14) for _ in range(6)]]
    assert judge(POLICY, pairs, noise, claimed=Claimed(1.0)).mismatch is False
    v = judge(POLICY, pairs, noise, claimed=Claimed(50.0))
    assert v.action == "accept" and v.mismatch and "flagged" in v.reason


def test_claimed_runs_are_weighed_and_a_bare_number_is_not():
    assert claimed_evidence("minimize", {"gain": 2.0}) == Claimed(2.0, 0.0)
    c = claimed_evidence("maximize", {"base_runs": [1.0, 1.0], "candidate_runs": [2.0] * 200, "gain": 9.0})
    assert c.gain == 1.0 and 3.9 < c.pairs <= 8
    assert claimed_evidence("minimize", {"base_runs": "x", "gain": float("nan")}) is None


def test_runs_are_interleaved_abba():
    assert interleaved_order(3) == ["base", "candidate", "candidate", "base", "base", "candidate"]


def test_a_forged_gain_is_rejected_on_its_screening_pair():
    """A no-op claimed as a 10σ gain: the first pair contradicts it, so no more pairs are spent."""
    rng = random.Random(7)
    results = [verify_claim(rng, 0.0, Claimed(10 * SIGMA)) for _ in range(200)]
    assert all(a == "reject" for a, _ in results) and sum(n == 1 for _, n in results) >= 0.9 * 200


def test_an_honest_claim_rarely_falls_through_the_cheap_check_to_the_full_test():
    """A reputable worker's 3σ claim whose first verifier pair came out low (or whose own runs fell
    short of the combined bar) gets another pair, not the full test at once: the full test (4-5
    pairs) was the price of 10% of honest cheap checks with one look at 0.5 se, 1.45 pairs a claim."""
    rng = random.Random(8)
    results = [verify_traced(rng, 3 * SIGMA, local_runs(rng, 3 * SIGMA), cheap=True) for _ in range(2000)]
    assert sum(full for _, _, full in results) <= 0.03 * 2000
    assert sum(a == "accept" for a, _, _ in results) >= 0.98 * 2000
    assert sum(n for _, n, _ in results) / 2000 < 1.3  # pairs per claim (1.45 with one look)


def test_a_second_cheap_pair_lets_no_more_lies_through():
    """The three looks split the risk of one: a lying worker's no-op (claimed as a 3σ gain with made-up
    runs) passes the cheap check no more often than P(z > 0.5) = 31%, the one-look design's rate."""
    rng = random.Random(9)
    lies = Claimed(gain=3 * SIGMA, pairs=8)
    results = [verify_traced(rng, 0.0, lies, cheap=True) for _ in range(3000)]
    slipped = sum(a == "accept" for a, _, _ in results) / 3000
    assert slipped < 0.33
    assert not any(a == "accept" and full for a, _, full in results)  # the full test lets none through


def test_a_negative_first_pair_gets_no_second_cheap_look():
    """Below -SCREEN_SLACK standard errors the cheap check gives up at once: the full test follows."""
    noise = calibration(random.Random(10), 10)
    v = judge(POLICY, [(10.0, 13.0)], noise, claimed=Claimed(3 * SIGMA, 8), cheap=True)
    assert v.action == "more" and v.fresh and not v.cheap
    v = judge(POLICY, [(10.0, 13.0)], noise, claimed=Claimed(3 * SIGMA, 8))
    assert v.action == "reject"  # as a full test's screening pair it rejects


def test_a_bare_claimed_number_fails_the_cheap_check_at_once():
    """Without measured runs there is nothing to agree with: the full test, no further cheap look."""
    noise = calibration(random.Random(11), 10)
    v = judge(POLICY, [(10.0, 9.0)], noise, claimed=Claimed(1.0), cheap=True)
    assert not v.cheap and "no measured runs" in v.reason


def test_a_claim_judged_before_any_noise_estimate_is_neither_flagged_nor_rejected():
    """Found by benchmarks/hub_swarm.py: with two verifiers, a claim's first pair can be reported
    before the calibration job's; without σ_d an honest claim was taken for a forged one (its
    claimed gain above 1.5 x the one pair's) and its worker flagged for good."""
    v = judge(POLICY, [(10.0, 9.9)], [], claimed=Claimed(0.18, 4))
    assert v.action == "more" and not v.mismatch and v.more_pairs == POLICY.looks[1] - 1, v
    v = judge(POLICY, [(10.0, 10.1)], [], claimed=Claimed(0.18, 4), cheap=True)
    assert v.action == "more" and not v.mismatch, v


def simulated_full_test(bar: float, looks: tuple[int, ...], gain: float, claims: int, seed: int) -> tuple[float, float]:
    """The full test's design played on `claims` simulated claims (σ_d known = 1): (accept rate, pairs)."""
    d = np.random.default_rng(seed).standard_normal((claims, looks[-1])) + gain
    z = np.cumsum(d, axis=1) / np.sqrt(np.arange(1, looks[-1] + 1))
    open_, accepted, pairs = z[:, 0] > -SCREEN_SLACK, np.zeros(claims, bool), np.where(z[:, 0] > -SCREEN_SLACK, 0, 1)
    for n in looks[1:]:
        accept, stop = open_ & (z[:, n - 1] > bar), open_ & ((z[:, n - 1] < FUTILITY) | (n == looks[-1]))
        accepted |= accept
        pairs = np.where(accept | stop, n, pairs)
        open_ &= ~(accept | stop)
    return accepted.mean(), pairs.mean()


def test_the_full_test_s_risk_and_cost_are_computed_as_a_simulation_finds_them():
    looks = Policy().looks
    bar = full_test_bar(0.02, looks, Policy().min_pairs_new)
    for gain, seed in ((0.0, 5), (3 / np.sqrt(2), 6)):  # a no-op; a 3σ gain (σ_d = √2 σ)
        computed = full_test_operating(bar, looks, Policy().min_pairs_new, gain)
        simulated = simulated_full_test(bar, looks, gain, 400_000, seed)
        assert abs(computed[0] - simulated[0]) < 0.03 * max(computed[0], 1 - computed[0]) + 0.0006, (computed, simulated)
        assert abs(computed[1] - simulated[1]) < 0.02, (computed, simulated)
    assert abs(full_test_operating(bar, looks, Policy().min_pairs_new)[0] - 0.02) < 1e-4


def test_the_judge_accepts_no_ops_at_its_p_value_in_all_not_a_fraction_of_it():
    """The bar is exact for the sequential test: a Bonferroni split over the six accept looks
    accepted about half as many no-ops as p allows, for more pairs on every real gain."""
    policy, rng = Policy(direction="minimize", p_value=0.02), random.Random(7)
    noise, accepted = calibration(rng, 40), 0  # a long-running hub: σ_d nearly known
    for _ in range(3000):
        pairs, more = [], policy.looks[0]
        while True:
            pairs += [(10 + rng.gauss(0, SIGMA), 10 + rng.gauss(0, SIGMA)) for _ in range(more)]
            v = judge(policy, pairs, noise)
            if v.action != "more":
                break
            more = v.more_pairs
        accepted += v.action == "accept"
    assert 0.7 * 60 <= accepted <= 1.3 * 60  # 3000 claims × 0.02


def test_an_honest_worker_with_lucky_runs_and_unlucky_pairs_is_not_flagged():
    """Found by benchmarks/hub_swarm.py: a true 3σ gain (σ = 0.05) whose own 4 + 4 runs said +0.20
    and whose two verifier pairs said -0.003 was flagged as a forger, because the flag allowed for
    the verifier's standard error only; a flagged worker loses the cheap check for good and has
    every cheap accept tested again (19 claims, 109 pairs in that run). It is not flagged."""
    rng = random.Random(8)
    noise = [[rng.gauss(0, 0.05) - rng.gauss(0, 0.05) for _ in range(CALIBRATION_PAIRS)] for _ in range(10)]
    claimed = claimed_evidence("minimize", {"base_runs": [20.028, 19.983, 19.967, 20.052],
                                            "candidate_runs": [19.819, 19.767, 19.753, 19.846]})
    pairs = [(118.591, 118.604), (118.656, 118.648)]
    assert judge(POLICY, pairs[:1], noise, claimed=claimed, cheap=True).action == "more"
    v = judge(POLICY, pairs, noise, claimed=claimed, cheap=True)
    assert v.action == "more" and v.fresh and not v.mismatch, v  # the full test, on new pairs
    v = judge(POLICY, pairs, noise, claimed=claimed)  # judged by the full test on these very pairs
    assert v.action == "reject" and not v.mismatch, v
    assert judge(POLICY, pairs, noise, claimed=Claimed(1.0, claimed.pairs), cheap=True).mismatch  # a forger still is


def test_honest_claims_are_almost_never_flagged():
    rng, flagged = random.Random(9), 0
    for _ in range(3000):
        noise, pairs, more, cheap = calibration(rng, 10), [], POLICY.looks[0], True
        claimed = local_runs(rng, 3 * SIGMA)
        while True:
            pairs += [(10 + rng.gauss(0, SIGMA), 10 - 3 * SIGMA + rng.gauss(0, SIGMA)) for _ in range(more)]
            v = judge(POLICY, pairs, noise, claimed=claimed, cheap=cheap)
            if v.action != "more":
                break
            cheap, more = cheap and v.cheap, v.more_pairs
        flagged += v.mismatch
    assert flagged == 0  # 4σ of both standard errors: about 1 in 30,000 honest verdicts


def test_a_noise_estimate_of_a_few_pairs_neither_flags_nor_rejects():
    """Found by benchmarks/hub_swarm.py: a claim's screening pair judged while the calibration job
    was still running, with σ_d from another claim's three pairs (0.003 where the truth is 0.07):
    its honest worker was flagged, "contradicted at 20σ", on its first claim. Below MIN_NOISE_DOF
    the judge asks for more pairs instead."""
    noise = [[0.1200, 0.1206, 0.1151]]  # one claim's pairs so far: 2 degrees of freedom
    v = judge(POLICY, [(63.785884, 63.724431)], noise, claimed=Claimed(0.1818, 4.0))
    assert v.action == "more" and not v.mismatch, v
    v = judge(POLICY, [(63.785884, 63.724431)], noise, claimed=Claimed(0.1818, 4.0), cheap=True)
    assert v.action == "more" and v.cheap, v  # and a reputable worker's claim keeps its cheap check


def test_an_honest_claim_that_falls_through_the_cheap_check_is_still_accepted():
    """Found by benchmarks/hub_swarm.py: 2-3 honest claims in 128 were rejected, each resetting its
    worker's record (two full tests, ~10 pairs, to earn it again): the cheap check's pairs, drawn
    until it gave up and so selected low, met the full test's futility bound. The full test now
    starts on new pairs."""
    rng = random.Random(15)
    results = [verify_traced(rng, 3 * SIGMA, local_runs(rng, 3 * SIGMA), cheap=True) for _ in range(6000)]
    fell = [a for a, _, full in results if full]
    assert len(fell) >= 40 and sum(a == "reject" for a in fell) <= 0.1 * len(fell), (len(fell), fell.count("reject"))
