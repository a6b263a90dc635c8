"""The hub end to end on SQLite and PostgreSQL: register, commit-then-reveal, screening and
paired verification on a real verifier, the chain advancing in the database and in git."""
from __future__ import annotations

from pathlib import Path

import pytest

from autoresearch.repo import gitops
from tests.hub.conftest import decided


def test_honest_improvement_is_verified_and_advances_the_chain(hub):
    alice = hub.client("alice")
    best = alice.get("/best")
    assert best["height"] == 0
    old_tag = alice.http.get("/api/v1/best").headers["etag"]
    assert alice.http.get("/api/v1/best", headers={"If-None-Match": old_tag}).status_code == 304  # a poll: no body
    files = {"train.py": best["files"]["train.py"].replace("X = 5.0", "X = 4.0")}
    reply = alice.claim(best["commit"], files, "X=4", claimed={"gain": 5.0})
    claim = decided(alice, reply["claim_id"])
    assert claim["state"] == "accepted", claim
    assert 4.5 < claim["verified_gain"] < 5.5  # (5-2)^2 - (4-2)^2 on the verifier, within the noise
    new = alice.get("/best")
    assert new["height"] == 1 and "X = 4.0" in new["files"]["train.py"]
    moved = alice.http.get("/api/v1/best", headers={"If-None-Match": old_tag})  # the chain moved: the new body
    assert moved.status_code == 200 and moved.json() == new and moved.headers["etag"] != old_tag
    chain = alice.get("/chain")
    assert [e["height"] for e in chain] == [0, 1] and chain[1]["parent"] == best["commit"]
    assert "-X = 5.0" in chain[1]["diff"] and "+X = 4.0" in chain[1]["diff"]
    assert gitops.rev_parse(hub.task, "refs/heads/autoresearch/hub") == chain[1]["commit"]
    board = alice.get("/leaderboard")
    assert board[0]["worker"] == "alice" and board[0]["accepted"] == 1
    page = alice.http.get("/").text
    assert "alice" in page and "X=4" in page and "+X = 4.0" in page
    if hub.db is None:  # the page does not depend on the database: one browser run is enough
        check_page_in_a_browser(hub)


def check_page_in_a_browser(hub):
    """The public page renders the chain, the curve, claims, leaderboard and tried list (Chromium)."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("no /usr/bin/chromium")
    bob = hub.client("bob")
    best = bob.get("/best")
    accepted = bob.claim(best["commit"], {"train.py": best["files"]["train.py"].replace("X = 4.0", "X = 3.5")},
                         "X=3.5 <script>alert(1)</script>")
    assert decided(bob, accepted["claim_id"])["state"] == "accepted"
    bob.tried(bob.get("/best")["commit"], "X=9 was worse", "ab" * 32, 49.0)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(hub.url + "/")
        assert page.locator("tr.chain-entry").count() == 3
        assert page.locator("#curve circle").count() == 3
        assert "X=3.5 <script>" in page.locator("tr.chain-entry").first.inner_text()  # shown as text
        assert page.locator("tr.leader").first.inner_text().startswith("1")
        assert "X=9 was worse" in page.locator("#tried + table").inner_text()
        page.locator("tr.chain-entry details summary").first.click()
        assert "+X = 3.5" in page.locator("tr.chain-entry pre.diff").first.inner_text()
        assert page.evaluate("getComputedStyle(document.body).maxWidth") != "none"  # the shipped stylesheet
        browser.close()
    assert dialogs == []  # the worker's description did not run as script
