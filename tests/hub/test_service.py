"""The hub's rules in-process (no HTTP), where a test needs to act inside a transaction."""
from __future__ import annotations

import json
import random
from pathlib import Path

from sqlalchemy import select

from autoresearch.core.config import load_config
from autoresearch.hub.models import VERIFIER, Job
from autoresearch.hub.patches import commitment_digest
from autoresearch.hub.service import Hub, Submission
from autoresearch.hub.storage import open_database
from autoresearch.hub.verify import interleaved_order
from autoresearch.hub.views import Views
from tests.hub.conftest import hub_task


def report(hub: Hub, verifier, base_value: float, cand_value: float, rng: random.Random) -> dict:
    """Play a verifier's report of the next job with the given means (noise σ = 0.05)."""
    job = hub.lease(verifier)
    runs = [{"status": "ok", "metric": (base_value if kind == "base" else cand_value) + rng.gauss(0, 0.05),
             "metrics": {}, "wall_s": 0.1} for kind in interleaved_order(job["pairs"])]
    return hub.report(verifier, job["job_id"], job["lease_token"], runs)


def test_views_never_cache_a_head_that_is_not_committed(tmp_path: Path, monkeypatch):
    hub = Hub(load_config(hub_task(tmp_path / "task")), open_database(f"sqlite:///{tmp_path / 'hub.db'}"))
    hub.start()
    views, rng = Views(hub), random.Random(0)
    verifier = hub.authenticate(hub.register("v", kind=VERIFIER)[1], VERIFIER)
    report(hub, verifier, 9.0, 9.0, rng)  # the calibration
    worker = hub.authenticate(hub.register("w")[1])
    best = json.loads(views.best_json())
    files = {"train.py": best["files"]["train.py"].replace("X = 5.0", "X = 4.0")}
    c = hub.commit(worker, commitment_digest(best["commit"], files, "n" * 16))
    claim = hub.reveal(worker, Submission(c.id, "n" * 16, best["commit"], files, "X=4", "t", {}, {}))
    accept = hub._accept

    def read_while_accepting(s, claim, verdict):  # a reader's request arriving mid-transaction
        accept(s, claim, verdict)
        views.best_json()
    monkeypatch.setattr(hub, "_accept", read_while_accepting)
    while "verified" not in report(hub, verifier, 9.0, 4.0, rng)["outcome"]:
        pass
    assert json.loads(views.best_json())["commit"] == claim.candidate_commit
    assert [e["height"] for e in json.loads(views.chain_json())] == [0, 1]



def test_a_verification_under_way_goes_before_new_screenings(tmp_path: Path):
    """Found by benchmarks/hub_swarm.py: honest claims were returned ("the chain moved 4 times")
    because their further pairs queued behind every new claim's screening, so the chain moved
    between their looks again and again."""
    hub = Hub(load_config(hub_task(tmp_path / "task")), open_database(f"sqlite:///{tmp_path / 'hub.db'}"))
    hub.start()
    views, rng = Views(hub), random.Random(1)
    verifier = hub.authenticate(hub.register("v", kind=VERIFIER)[1], VERIFIER)
    report(hub, verifier, 9.0, 9.0, rng)  # the calibration
    best = json.loads(views.best_json())
    text = best["files"]["train.py"]
    claims = []
    for name, old, new in (("e", "X = 5.0", "X = 4.0"), ("a", "SEED = 1", "SEED = 2"),
                           ("b", 'print("score: 9.0")', 'print("score: 8.0")')):
        w = hub.authenticate(hub.register(name)[1])
        files = {"train.py": text.replace(old, new)}
        c = hub.commit(w, commitment_digest(best["commit"], files, "n" * 16))
        claims.append(hub.reveal(w, Submission(c.id, "n" * 16, best["commit"], files, name, "t", {}, {})))
    assert "promising" in report(hub, verifier, 9.0, 4.0, rng)["outcome"]  # e's screening pair
    job = hub.lease(verifier)
    assert job["phase"] == "full" and job["candidate_commit"] == claims[0].candidate_commit


def claim_of(hub: Hub, worker, old: str, new: str, claimed: dict | None = None):
    best = json.loads(Views(hub).best_json())
    files = {"train.py": best["files"]["train.py"].replace(old, new)}
    c = hub.commit(worker, commitment_digest(best["commit"], files, "n" * 16))
    return hub.reveal(worker, Submission(c.id, "n" * 16, best["commit"], files, new, "t", claimed or {}, {}))


def verify_until_decided(hub: Hub, verifier, claim_id: int, base: float, cand: float, rng) -> dict:
    """Report every queued job with the given means until the claim is decided; its row."""
    from autoresearch.hub.models import Claim
    while True:
        with hub.sessions() as s:
            c = s.get(Claim, claim_id)
            if c.state in ("accepted", "rejected"):
                return {"state": c.state, "runs": c.verifier_runs, "check": c.check, "reason": c.reason}
        report(hub, verifier, base, cand, rng)


def runs_claimed(rng, base: float, cand: float, k: int = 4) -> dict:
    return {"base_runs": [base + rng.gauss(0, 0.05) for _ in range(k)],
            "candidate_runs": [cand + rng.gauss(0, 0.05) for _ in range(k)]}


def with_a_record(hub: Hub, name: str, monkeypatch, audit: bool = False):
    """A new worker with a record, as two accepted claims verified in full leave it (its claims get
    the cheap check); `audit`: every claim of it is drawn for an audit, else none is."""
    from autoresearch.hub import service
    from autoresearch.hub.models import Worker
    worker = hub.authenticate(hub.register(name)[1])
    with hub.sessions.begin() as s:
        w = s.get(Worker, worker.id)
        w.accepted = w.clean_streak = w.full_streak = service.REPUTABLE_AFTER
    monkeypatch.setattr(service.secrets, "randbelow", lambda n: 0 if audit else 1)
    return worker


def test_a_clean_record_earns_the_cheap_check_and_a_mismatch_takes_it_away(tmp_path: Path, monkeypatch):
    from autoresearch.hub import service
    hub = Hub(load_config(hub_task(tmp_path / "task")), open_database(f"sqlite:///{tmp_path / 'hub.db'}"))
    hub.start()
    rng = random.Random(2)
    verifier = hub.authenticate(hub.register("v", kind=VERIFIER)[1], VERIFIER)
    report(hub, verifier, 9.0, 9.0, rng)  # the calibration
    monkeypatch.setattr(service.secrets, "randbelow", lambda n: 1)  # no audit drawn
    alice = hub.authenticate(hub.register("alice")[1])
    steps = [("X = 5.0", "X = 4.5"), ("X = 4.5", "X = 4.0"), ("X = 4.0", "X = 3.5"), ("X = 3.5", "X = 3.0")]
    out = []
    for old, new in steps:
        x0, x1 = float(old[4:]), float(new[4:])
        claim = claim_of(hub, alice, old, new, runs_claimed(rng, (x0 - 2) ** 2, (x1 - 2) ** 2))
        out.append(verify_until_decided(hub, verifier, claim.id, (x0 - 2) ** 2, (x1 - 2) ** 2, rng))
    assert [o["state"] for o in out] == ["accepted"] * 4, out
    assert [o["check"] for o in out] == ["full", "full", "cheap", "cheap"], out
    assert out[0]["runs"] >= 2 * 3 and out[2]["runs"] == out[3]["runs"] == 2  # one pair each once reputable
    # A lie: a no-op claimed with made-up runs of a big gain. Whether the cheap check lets it through
    # or not, the verifier's pair must show it better; here it shows it worse: the full test, a
    # mismatch, the record gone for good.
    lie = claim_of(hub, alice, "SEED = 1", "SEED = 2", runs_claimed(rng, 1.0, 0.0))
    verdict = verify_until_decided(hub, verifier, lie.id, 1.0, 1.1, rng)
    assert verdict["state"] == "rejected" and "flagged" in verdict["reason"], verdict
    claim = claim_of(hub, alice, "X = 3.0", "X = 2.5", runs_claimed(rng, 1.0, 0.25))
    again = verify_until_decided(hub, verifier, claim.id, 1.0, 0.25, rng)
    assert again["state"] == "accepted" and again["check"] == "full" and again["runs"] >= 6, again


def test_an_audit_is_the_full_test(tmp_path: Path, monkeypatch):
    from autoresearch.hub import service
    hub = Hub(load_config(hub_task(tmp_path / "task")), open_database(f"sqlite:///{tmp_path / 'hub.db'}"))
    hub.start()
    rng = random.Random(3)
    verifier = hub.authenticate(hub.register("v", kind=VERIFIER)[1], VERIFIER)
    report(hub, verifier, 9.0, 9.0, rng)
    alice = with_a_record(hub, "alice", monkeypatch, audit=True)
    claim = claim_of(hub, alice, "X = 5.0", "X = 4.0", runs_claimed(rng, 9.0, 4.0))
    verdict = verify_until_decided(hub, verifier, claim.id, 9.0, 4.0, rng)
    assert verdict["check"] == "audit" and verdict["runs"] >= 2 * service.verify.MIN_PAIRS_NEW, verdict


def test_a_rebased_claim_keeps_the_pairs_of_its_unchanged_edit(tmp_path: Path, monkeypatch):
    """Found by benchmarks/hub_swarm.py: a claim lost its pairs each time the chain moved under it
    (elsewhere in the file) and was returned after four moves, though its edit never changed."""
    from autoresearch.hub import service
    from autoresearch.hub.models import Claim
    hub = Hub(load_config(hub_task(tmp_path / "task")), open_database(f"sqlite:///{tmp_path / 'hub.db'}"))
    hub.start()
    rng = random.Random(4)
    verifier = hub.authenticate(hub.register("v", kind=VERIFIER)[1], VERIFIER)
    report(hub, verifier, 9.0, 9.0, rng)
    slow = claim_of(hub, hub.authenticate(hub.register("slow")[1]), "X = 5.0", "X = 4.0")
    assert "promising" in report(hub, verifier, 9.0, 4.0, rng)["outcome"]  # its screening pair
    fast = with_a_record(hub, "fast", monkeypatch)
    quick = claim_of(hub, fast, "SEED = 1", "SEED = 2", runs_claimed(rng, 9.0, 8.0))
    with hub.sessions.begin() as s:  # its pair goes first
        for job in s.scalars(select(Job).where(Job.claim_id == quick.id)):
            job.priority = 1e12
    assert "cheap check" in report(hub, verifier, 9.0, 8.0, rng)["outcome"]
    verdict = verify_until_decided(hub, verifier, slow.id, 8.0, 3.0, rng)  # on the new head now
    with hub.sessions() as s:
        c = s.get(Claim, slow.id)
        assert c.base_commit != slow.base_commit and c.rebases == 0
    assert verdict["state"] == "accepted" and verdict["runs"] == 2 * service.verify.MIN_PAIRS_NEW, verdict


def test_the_edit_hash_ignores_where_the_edit_lands():
    from autoresearch.hub.patches import edit_hash
    base = {"train.py": "A = 1\nB = 1\nC = 1\n"}
    moved = {"train.py": "A = 2\nB = 1\nC = 1\n"}
    assert edit_hash(base, {"train.py": "A = 1\nB = 1\nC = 3\n"}) == \
        edit_hash(moved, {"train.py": "A = 2\nB = 1\nC = 3\n"})
    assert edit_hash(base, {"train.py": "A = 1\nB = 1\nC = 3\n"}) != edit_hash(base, {"train.py": "A = 1\nB = 1\nC = 4\n"})


def test_credit_is_a_share_of_the_advance_and_the_earliest_commitment_earns_it(tmp_path: Path):
    """Copying a leader earns nothing: the copy is refused and has no credit. Among equal patches
    the earliest commitment wins, even one revealed after the other was accepted."""
    from autoresearch.hub.service import HubError
    hub = Hub(load_config(hub_task(tmp_path / "task")), open_database(f"sqlite:///{tmp_path / 'hub.db'}"))
    hub.start()
    views, rng = Views(hub), random.Random(5)
    verifier = hub.authenticate(hub.register("v", kind=VERIFIER)[1], VERIFIER)
    report(hub, verifier, 9.0, 9.0, rng)
    alice, bob, carol = (hub.authenticate(hub.register(n)[1]) for n in ("alice", "bob", "carol"))
    best = json.loads(views.best_json())
    files = {"train.py": best["files"]["train.py"].replace("X = 5.0", "X = 4.0")}
    early = hub.commit(bob, commitment_digest(best["commit"], files, "b" * 16))  # bob found it first, waits
    first = claim_of(hub, alice, "X = 5.0", "X = 4.0")
    verify_until_decided(hub, verifier, first.id, 9.0, 4.0, rng)
    second = claim_of(hub, alice, "X = 4.0", "X = 3.0")
    verify_until_decided(hub, verifier, second.id, 4.0, 1.0, rng)
    late = hub.commit(carol, commitment_digest(best["commit"], files, "c" * 16))  # a copy of the published diff
    try:
        hub.reveal(carol, Submission(late.id, "c" * 16, best["commit"], files, "copy", "t", {}, {}))
        raise AssertionError("a copy was admitted")
    except HubError as e:
        assert e.status == 409 and "duplicate" in e.message and "yours" not in e.message
    try:
        hub.reveal(bob, Submission(early.id, "b" * 16, best["commit"], files, "mine", "t", {}, {}))
        raise AssertionError("a duplicate was admitted")
    except HubError as e:
        assert e.status == 409 and "credit is yours" in e.message
    views._timed.clear()
    board = {r["worker"]: r for r in views.leaderboard()}
    assert board["carol"]["credit"] == 0.0
    assert abs(board["bob"]["credit"] - 5 / 8) < 0.05 and abs(board["alice"]["credit"] - 3 / 8) < 0.05, board
    assert [r["worker"] for r in views.leaderboard()][:2] == ["bob", "alice"]


def test_a_flagged_worker_s_cheaply_accepted_claims_are_tested_again(tmp_path: Path, monkeypatch):
    """A worker builds a record, slips a claim through the cheap check, then is caught lying: the
    slipped claim is tested again in full on its chain parent, refuted, and earns no credit."""
    from autoresearch.hub import service
    from autoresearch.hub.models import Claim
    hub = Hub(load_config(hub_task(tmp_path / "task")), open_database(f"sqlite:///{tmp_path / 'hub.db'}"))
    hub.start()
    views, rng = Views(hub), random.Random(7)
    verifier = hub.authenticate(hub.register("v", kind=VERIFIER)[1], VERIFIER)
    report(hub, verifier, 9.0, 9.0, rng)
    monkeypatch.setattr(service.secrets, "randbelow", lambda n: 1)  # no audit drawn
    eve = hub.authenticate(hub.register("eve")[1])
    for old, new, b, c in (("X = 5.0", "X = 4.5", 9.0, 6.25), ("X = 4.5", "X = 4.0", 6.25, 4.0)):
        verify_until_decided(hub, verifier, claim_of(hub, eve, old, new, runs_claimed(rng, b, c)).id, b, c, rng)
    # Noise claimed as a gain; this verifier pair happens to agree (the residual risk).
    slipped = claim_of(hub, eve, "SEED = 1", "SEED = 2", runs_claimed(rng, 4.0, 3.9))
    assert verify_until_decided(hub, verifier, slipped.id, 4.0, 3.85, rng)["check"] == "cheap"
    bob = hub.authenticate(hub.register("bob")[1])
    verify_until_decided(hub, verifier, claim_of(hub, bob, "X = 4.0", "X = 3.0").id, 4.0, 1.0, rng)
    caught = claim_of(hub, eve, "X = 3.0", "X = 3.0 + 0", runs_claimed(rng, 1.0, 0.0))
    assert "flagged" in verify_until_decided(hub, verifier, caught.id, 1.0, 1.0, rng)["reason"]
    for _ in range(20):  # the re-verification of the slipped claim: no gain any more
        job = hub.lease(verifier)
        if job is None:
            break
        assert job["phase"] == "reverify" and job["candidate_commit"] == slipped.candidate_commit
        runs = [{"status": "ok", "metric": 4.0 + rng.gauss(0, 0.05), "metrics": {}, "wall_s": 0.1}
                for _ in interleaved_order(job["pairs"])]
        hub.report(verifier, job["job_id"], job["lease_token"], runs)
    with hub.sessions() as s:
        assert s.get(Claim, slipped.id).check == "refuted"
    from autoresearch.hub.models import ChainEntry
    with hub.sessions() as s:
        gains = {e.claim_id: e.gain for e in s.scalars(select(ChainEntry)) if e.claim_id}
    real = sum(g for cid, g in gains.items() if cid != slipped.id)
    bob_share = max(gains.values(), key=lambda g: g) / real  # bob's 3.0 is the largest gain here
    board = {r["worker"]: r for r in views.leaderboard()}
    assert gains[slipped.id] > 0 and abs(board["bob"]["credit"] - bob_share) < 1e-3, (board["bob"], bob_share)
    assert abs(board["eve"]["credit"] + board["bob"]["credit"] - 1.0) < 1e-3  # the refuted commit earns nobody


def _two_cheap_claims_in_flight(tmp_path: Path, monkeypatch, seed: int):
    """A reputable worker's two claims (X and SEED), each leased to its own verifier at once."""
    hub = Hub(load_config(hub_task(tmp_path / "task")), open_database(f"sqlite:///{tmp_path / 'hub.db'}"))
    hub.start()
    rng = random.Random(seed)
    one, two = (hub.authenticate(hub.register(n, kind=VERIFIER)[1], VERIFIER) for n in ("v1", "v2"))
    report(hub, one, 9.0, 9.0, rng)  # the calibration
    alice = with_a_record(hub, "alice", monkeypatch)
    a = claim_of(hub, alice, "X = 5.0", "X = 4.0", runs_claimed(rng, 9.0, 4.0))
    b = claim_of(hub, alice, "SEED = 1", "SEED = 2", runs_claimed(rng, 9.0, 8.0))
    jobs = hub.lease(one), hub.lease(two)
    return hub, rng, (one, two), jobs, a, b


def _play(hub: Hub, verifier, job: dict, base: float, cand: float, rng: random.Random) -> dict:
    runs = [{"status": "ok", "metric": (base if kind == "base" else cand) + rng.gauss(0, 0.05), "metrics": {},
             "wall_s": 0.1} for kind in interleaved_order(job["pairs"])]
    return hub.report(verifier, job["job_id"], job["lease_token"], runs)


def test_a_claim_verified_beside_a_cheap_check_runs_on_top_of_it(tmp_path: Path, monkeypatch):
    """Found by benchmarks/hub_swarm.py: with two verifiers, a cheap check whose neighbour was
    accepted first paid a second pair on the new head (rebases cost record holders 0.2-0.4 runs
    a claim). Its pair now runs on top of the neighbour's candidate: accepted on one pair."""
    from autoresearch.hub.models import Claim
    hub, rng, (one, two), (job_a, job_b), a, b = _two_cheap_claims_in_flight(tmp_path, monkeypatch, 11)
    assert job_a["base_commit"] == a.base_commit and job_b["base_commit"] == a.candidate_commit
    assert job_b["base_files"]["train.py"].count("X = 4.0") == 1  # the verifier runs b on top of a
    assert "cheap check" in _play(hub, one, job_a, 9.0, 4.0, rng)["outcome"]
    assert "cheap check" in _play(hub, two, job_b, 4.0, 3.0, rng)["outcome"]
    chain = json.loads(Views(hub).chain_json())
    with hub.sessions() as s:
        claim_b = s.get(Claim, b.id)
        assert claim_b.state == "accepted" and claim_b.verifier_runs == 2, claim_b.reason
    assert [e["height"] for e in chain] == [0, 1, 2] and chain[2]["parent"] == chain[1]["commit"], chain


def test_a_claim_on_top_of_a_rejected_one_moves_back_onto_the_head(tmp_path: Path, monkeypatch):
    from autoresearch.hub.models import Claim
    hub, rng, (one, two), (job_a, job_b), a, b = _two_cheap_claims_in_flight(tmp_path, monkeypatch, 12)
    assert job_b["base_commit"] == a.candidate_commit
    assert "cheap check" in _play(hub, two, job_b, 4.0, 3.0, rng)["outcome"]  # b's verdict comes first
    _play(hub, one, job_a, 9.0, 9.5, rng)  # a is no better on the verifier: rejected
    verdict = verify_until_decided(hub, one, b.id, 9.0, 8.0, rng)
    with hub.sessions() as s:
        assert s.get(Claim, a.id).state == "rejected"
        claim_b = s.get(Claim, b.id)
        assert verdict["state"] == "accepted" and claim_b.base_commit == a.base_commit, verdict
        assert "X = 5.0" in claim_b.files["train.py"] and "SEED = 2" in claim_b.files["train.py"]
    chain = json.loads(Views(hub).chain_json())
    assert [e["height"] for e in chain] == [0, 1] and chain[1]["parent"] == a.base_commit, chain


def test_a_cheap_check_with_one_low_pair_gets_a_second_pair_not_the_full_test(tmp_path: Path, monkeypatch):
    """Found by benchmarks/hub_swarm.py: one honest cheap check in ten paid the full test (4-5 pairs)
    when its first pair came out low. It now gets one more pair under the cheap check."""
    from autoresearch.hub.models import Claim
    hub = Hub(load_config(hub_task(tmp_path / "task")), open_database(f"sqlite:///{tmp_path / 'hub.db'}"))
    hub.start()
    rng = random.Random(13)
    verifier = hub.authenticate(hub.register("v", kind=VERIFIER)[1], VERIFIER)
    report(hub, verifier, 9.0, 9.0, rng)  # the calibration: σ_d ≈ 0.04 here
    alice = with_a_record(hub, "alice", monkeypatch)
    claim = claim_of(hub, alice, "X = 5.0", "X = 4.9", {"base_runs": [9.0] * 4, "candidate_runs": [8.85] * 4})

    def exact(job: dict, gain: float) -> list[dict]:  # runs without noise: the candidate `gain` below its base
        return [{"status": "ok", "metric": 9.0 - gain * (kind == "candidate"), "metrics": {}, "wall_s": 0.1}
                for kind in interleaved_order(job["pairs"])]

    job = hub.lease(verifier)
    outcome = hub.report(verifier, job["job_id"], job["lease_token"], exact(job, 0.02))["outcome"]
    assert "one more pair" in outcome, outcome
    job = hub.lease(verifier)
    assert job["pairs"] == 1, job
    outcome = hub.report(verifier, job["job_id"], job["lease_token"], exact(job, 0.15))["outcome"]
    with hub.sessions() as s:
        c = s.get(Claim, claim.id)
        assert (c.state, c.check, c.verifier_runs) == ("accepted", "cheap", 4), (c.state, c.check, outcome)


def test_a_claim_s_pairs_over_several_jobs_count_as_one_group_of_replicates(tmp_path: Path):
    """σ_d's degrees of freedom decide how wide Student's t makes the bar: a claim verified in a
    one-pair screening job and then further jobs gives n - 1 of them, not the sum over its jobs."""
    from autoresearch.hub.verify import CALIBRATION_PAIRS, pooled_sigma
    hub = Hub(load_config(hub_task(tmp_path / "task")), open_database(f"sqlite:///{tmp_path / 'hub.db'}"))
    hub.start()
    rng = random.Random(4)
    verifier = hub.authenticate(hub.register("v", kind=VERIFIER)[1], VERIFIER)
    report(hub, verifier, 9.0, 9.0, rng)  # the calibration
    claim = claim_of(hub, hub.authenticate(hub.register("w")[1]), "X = 5.0", "X = 4.0")
    row = verify_until_decided(hub, verifier, claim.id, 9.0, 8.8, rng)
    with hub.sessions() as s:
        jobs = len(s.scalars(select(Job).where(Job.claim_id == claim.id)).all())
        _, dof = pooled_sigma(hub._noise(s))
    assert row["state"] == "accepted" and jobs >= 2
    assert dof == CALIBRATION_PAIRS - 1 + row["runs"] // 2 - 1


def test_a_claim_leased_beside_a_cheap_check_s_second_look_runs_on_top_of_it(tmp_path: Path, monkeypatch):
    """A cheap check's further look is as likely to end in an accept as its first pair: a claim
    leased meanwhile runs on top of it too, not on a head about to move (one more pair there)."""
    hub = Hub(load_config(hub_task(tmp_path / "task")), open_database(f"sqlite:///{tmp_path / 'hub.db'}"))
    hub.start()
    rng = random.Random(14)
    one, two = (hub.authenticate(hub.register(n, kind=VERIFIER)[1], VERIFIER) for n in ("v1", "v2"))
    report(hub, one, 9.0, 9.0, rng)  # the calibration
    alice = with_a_record(hub, "alice", monkeypatch)
    a = claim_of(hub, alice, "X = 5.0", "X = 4.9", {"base_runs": [9.0] * 4, "candidate_runs": [8.85] * 4})
    job = hub.lease(one)
    runs = [{"status": "ok", "metric": 9.0 - 0.02 * (kind == "candidate"), "metrics": {}, "wall_s": 0.1}
            for kind in interleaved_order(job["pairs"])]
    assert "one more pair" in hub.report(one, job["job_id"], job["lease_token"], runs)["outcome"]
    second = hub.lease(one)
    assert second["phase"] == "full" and second["pairs"] == 1
    b = claim_of(hub, alice, "SEED = 1", "SEED = 2", runs_claimed(rng, 9.0, 8.0))
    job_b = hub.lease(two)
    assert job_b["base_commit"] == a.candidate_commit and b.id != a.id


def test_a_claim_the_cheap_check_gave_up_on_is_judged_in_full_on_new_pairs(tmp_path: Path, monkeypatch):
    """Found by benchmarks/hub_swarm.py: the pairs drawn until the cheap check gave up are the low
    ones, and judged on them in the full test an honest claim was rejected (its worker's record
    reset). They are set aside: the full test runs on new pairs, and σ_d still has them."""
    from autoresearch.hub import service
    from autoresearch.hub.models import Claim, Pair
    hub = Hub(load_config(hub_task(tmp_path / "task")), open_database(f"sqlite:///{tmp_path / 'hub.db'}"))
    hub.start()
    rng = random.Random(16)
    verifier = hub.authenticate(hub.register("v", kind=VERIFIER)[1], VERIFIER)
    report(hub, verifier, 9.0, 9.0, rng)  # the calibration
    alice = with_a_record(hub, "alice", monkeypatch)
    claim = claim_of(hub, alice, "X = 5.0", "X = 4.9", {"base_runs": [9.0] * 4, "candidate_runs": [8.85] * 4})
    gains = iter([0.0, 0.0, 0.0] + [0.3] * 20)  # three unlucky pairs, then what the edit really gains
    outcomes = []
    while True:
        with hub.sessions() as s:
            if s.get(Claim, claim.id).state in ("accepted", "rejected"):
                break
        job = hub.lease(verifier)
        gain = next(gains)
        runs = [{"status": "ok", "metric": 9.0 - gain * (kind == "candidate") + rng.gauss(0, 0.01), "metrics": {},
                 "wall_s": 0.1} for kind in interleaved_order(job["pairs"])]
        outcomes.append(hub.report(verifier, job["job_id"], job["lease_token"], runs)["outcome"])
    assert any("on new pairs" in o for o in outcomes), outcomes
    with hub.sessions() as s:
        c = s.get(Claim, claim.id)
        set_aside = s.scalars(select(Pair).where(Pair.claim_id == claim.id, Pair.edit_hash == service.SET_ASIDE)).all()
        assert c.state == "accepted" and c.check == "full" and len(set_aside) == 3, (c.state, c.reason, outcomes)
