"""The hub end to end on SQLite and PostgreSQL: register, commit-then-reveal, screening and
paired verification on a real verifier, the chain advancing in the database and in git."""
from __future__ import annotations

from autoresearch.repo import gitops
from tests.hub.conftest import decided


def test_honest_improvement_is_verified_and_advances_the_chain(hub):
    alice = hub.client("alice")
    best = alice.get("/best")
    assert best["height"] == 0
    files = {"train.py": best["files"]["train.py"].replace("X = 5.0", "X = 4.0")}
    reply = alice.claim(best["commit"], files, "X=4", claimed={"gain": 5.0})
    claim = decided(alice, reply["claim_id"])
    assert claim["state"] == "accepted", claim
    assert 4.5 < claim["verified_gain"] < 5.5  # (5-2)^2 - (4-2)^2 on the verifier, within the noise
    new = alice.get("/best")
    assert new["height"] == 1 and "X = 4.0" in new["files"]["train.py"]
    chain = alice.get("/chain")
    assert [e["height"] for e in chain] == [0, 1] and chain[1]["parent"] == best["commit"]
    assert "-X = 5.0" in chain[1]["diff"] and "+X = 4.0" in chain[1]["diff"]
    assert gitops.rev_parse(hub.task, "refs/heads/autoresearch/hub") == chain[1]["commit"]
    board = alice.get("/leaderboard")
    assert board[0]["worker"] == "alice" and board[0]["accepted"] == 1
    page = alice.http.get("/").text
    assert "alice" in page and "X=4" in page and "+X = 4.0" in page
