"""The hub's rules in-process (no HTTP), where a test needs to act inside a transaction."""
from __future__ import annotations

import json
import random
from pathlib import Path

from autoresearch.core.config import load_config
from autoresearch.hub.models import VERIFIER
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
