"""The paired judge: noise is not a gain, a real gain is accepted, and the screening saves runs."""
from __future__ import annotations

import random

from autoresearch.hub.verify import Policy, interleaved_order, judge

SIGMA = 1.0
POLICY = Policy(direction="minimize")


def calibration(rng: random.Random) -> list[list[float]]:
    """Base-against-base differences of six pairs, as a calibration job measures them."""
    return [[rng.gauss(0, SIGMA) - rng.gauss(0, SIGMA) for _ in range(6)]]


def verify_claim(rng: random.Random, true_gain: float, reputable: bool = False) -> tuple[str, int]:
    """Run the judge's looks against simulated pairs: (final action, pairs used)."""
    noise, pairs = calibration(rng), []
    more = POLICY.looks[0]
    while True:
        for _ in range(more):
            base = 10 + rng.gauss(0, SIGMA)
            pairs.append((base, 10 - true_gain + rng.gauss(0, SIGMA)))
        v = judge(POLICY, pairs, noise, reputable=reputable)
        if v.action != "more":
            return v.action, len(pairs)
        more = v.more_pairs


def test_no_op_claims_are_not_accepted_and_mostly_cost_one_pair():
    rng = random.Random(1)
    results = [verify_claim(rng, 0.0) for _ in range(400)]
    assert sum(a == "accept" for a, _ in results) <= 2  # p = 0.001 per claim: 0.4 expected in 400
    assert sum(n == 1 for _, n in results) >= 0.4 * len(results)  # about half stop at the screening pair


def test_three_sigma_improvements_are_accepted():
    rng = random.Random(2)
    accepted = sum(verify_claim(rng, 3 * SIGMA)[0] == "accept" for _ in range(200))
    assert accepted >= 0.88 * 200  # with the first calibration's 5 dof only


def test_a_clean_record_earns_a_cheaper_check():
    rng = random.Random(3)
    new = [verify_claim(rng, 10 * SIGMA)[1] for _ in range(50)]
    trusted = [verify_claim(rng, 10 * SIGMA, reputable=True)[1] for _ in range(50)]
    assert min(new) >= POLICY.min_pairs_new and sum(trusted) / 50 < sum(new) / 50


def test_a_claimed_gain_far_above_the_verified_one_is_flagged():
    rng = random.Random(4)
    pairs = [(10 + rng.gauss(0, 0.1), 9 + rng.gauss(0, 0.1)) for _ in range(3)]
    noise = [[rng.gauss(0, 0.14) for _ in range(6)]]
    assert judge(POLICY, pairs, noise, reputable=False, claimed_gain=1.0).mismatch is False
    v = judge(POLICY, pairs, noise, reputable=False, claimed_gain=50.0)
    assert v.action == "accept" and v.mismatch and "flagged" in v.reason


def test_runs_are_interleaved_abba():
    assert interleaved_order(3) == ["base", "candidate", "candidate", "base", "base", "candidate"]
