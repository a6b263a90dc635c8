"""kill -9 of the hub mid-verification loses nothing: leased jobs go back to the queue when their
lease expires, the verifier takes them again, and the chain in the database and the git branch
agree after the restart (start-up moves the branch to the database's head)."""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from autoresearch.repo import gitops
from tests.hub.conftest import (
    RunningHub,
    VerifierThread,
    decided,
    free_port,
    hub_task,
    wait_for,
)

LEASE_S = 3.0


def db_rows(task: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(task / ".autoresearch" / "hub" / "hub.db") as conn:
        return conn.execute(sql).fetchall()


def test_kill9_of_the_hub_mid_verification(tmp_path: Path):
    task = hub_task(tmp_path / "task", sleep_s=0.3)  # runs long enough that 2 s fall inside the verification
    hub = RunningHub(task, free_port(), None, lease_s=LEASE_S).start()
    verifier = VerifierThread(hub, tmp_path / "verifier")
    try:
        alice = hub.client("alice")
        best = alice.get("/best")
        first = alice.claim(best["commit"], {"train.py": best["files"]["train.py"].replace("X = 5.0", "X = 3.0")},
                            "X=3", claimed={"gain": 5.0})
        # Kill at a random moment while a job is leased (the calibration or the claim's own runs).
        wait_for(lambda: db_rows(task, "select id from jobs where state = 'leased'"), what="a leased job")
        time.sleep(random.uniform(0.0, 2.0))
        # The random moment may fall between two jobs (a verifier reports one, then leases the next):
        # the kill lands at the next moment a job is leased.
        leased = wait_for(lambda: db_rows(task, "select id from jobs where state = 'leased'"), poll_s=0.01,
                          what="a leased job after the random delay")
        hub.kill9()
        state = db_rows(task, f"select state from claims where id = {first['claim_id']}")[0][0]
        assert state in ("queued", "verifying"), "the kill should land before the claim is decided"
        hub.start()
        # The claim gets its verdict: a job leased at the kill is finished either under its lease (the
        # verifier lived on and reported to the restarted hub in time) or, once the lease expired, re-queued
        # and run again; nothing leased is left undone.
        assert decided(alice, first["claim_id"], timeout=150)["state"] == "accepted"
        for (job_id,) in leased:  # e.g. the calibration job, which the claim's verdict need not wait for
            wait_for(lambda job_id=job_id: db_rows(task, f"select state from jobs where id = {job_id}")[0][0] == "done",
                     timeout=60, what=f"job {job_id} leased at the kill to be done")
            assert db_rows(task, f"select attempts from jobs where id = {job_id}")[0][0] >= 1
        # Kill again right after an accept, then check the database and git tell the same story.
        best = alice.get("/best")
        second = alice.claim(best["commit"], {"train.py": best["files"]["train.py"].replace("X = 3.0", "X = 2.5")},
                             "X=2.5", claimed={"gain": 0.75})
        assert decided(alice, second["claim_id"], timeout=150)["state"] == "accepted"
        hub.kill9()
        # As if the hub died after recording the accept but before moving the branch: start-up moves it.
        gitops.update_ref(task, "refs/heads/autoresearch/hub", best["commit"])
        hub.start()
        chain = alice.get("/chain")
        assert [e["height"] for e in chain] == [0, 1, 2]
        history = gitops.git(task, "rev-list", "--first-parent", "refs/heads/autoresearch/hub").splitlines()
        assert [e["commit"] for e in reversed(chain)] == history[:3]
        assert db_rows(task, "pragma integrity_check") == [("ok",)]
        assert not db_rows(task, "select id from jobs where state = 'leased' and lease_expires < "
                                 f"{time.time() - 1}")
    finally:
        verifier.stop()
        hub.stop()



def test_rate_limits_survive_a_restart_of_the_hub(tmp_path: Path):
    """The buckets live in the database: spending the registration burst, then restarting the hub,
    gives back only what the time of the restart refills, not a new burst."""
    from autoresearch.hub.server import REGISTER_BURST, REGISTER_RATE
    hub = RunningHub(hub_task(tmp_path / "task"), free_port(), None).start()
    try:
        t0 = time.time()
        codes = [httpx.post(hub.url + "/api/v1/workers", json={"name": f"w{i}"}).status_code
                 for i in range(REGISTER_BURST + 5)]
        # the burst, and what the bucket refilled while they were sent (slow on a loaded machine)
        assert codes.count(201) <= REGISTER_BURST + REGISTER_RATE * (time.time() - t0) + 1, codes
        assert codes[-1] == 429, codes
        spent_at = time.time()
        hub.kill9()
        hub.start()
        after = [httpx.post(hub.url + "/api/v1/workers", json={"name": f"x{i}"}).status_code
                 for i in range(REGISTER_BURST)]
        refilled = REGISTER_RATE * (time.time() - spent_at) + 1
        assert after.count(201) <= refilled < REGISTER_BURST, (after, refilled)
    finally:
        hub.stop()


def test_kill9_of_a_verifier_mid_verification(tmp_path: Path):
    """A verifier killed mid-job: its lease expires, the job is re-queued and another verifier
    finishes it; the claim gets its verdict and the chain in the database and in git agree."""
    task = hub_task(tmp_path / "task", sleep_s=0.3)
    hub = RunningHub(task, free_port(), None, lease_s=LEASE_S).start()
    token_file = task / ".autoresearch" / "hub" / "verifier.token"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    doomed = subprocess.Popen([sys.executable, "-m", "autoresearch", "verifier", "join", hub.url, "--token-file",
                               str(token_file), "--dir", str(tmp_path / "doomed")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    other = None
    try:
        alice = hub.client("alice")
        best = alice.get("/best")
        claim = alice.claim(best["commit"], {"train.py": best["files"]["train.py"].replace("X = 5.0", "X = 3.0")},
                            "X=3", claimed={"gain": 5.0})
        wait_for(lambda: db_rows(task, "select id from jobs where state = 'leased'"), timeout=120,
                 what="a job leased to the doomed verifier")
        time.sleep(random.uniform(0.0, 1.5))
        leased = db_rows(task, "select id from jobs where state = 'leased'")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        assert leased, "the kill should land while a job is leased"
        other = VerifierThread(hub, tmp_path / "other")
        assert decided(alice, claim["claim_id"], timeout=150)["state"] == "accepted"
        for (job_id,) in leased:  # done by the other verifier (a claim's verdict may come before the calibration's)
            wait_for(lambda j=job_id: db_rows(task, f"select state from jobs where id = {j}") == [("done",)], timeout=120,
                     what=f"job #{job_id} to be finished again")
            assert db_rows(task, f"select attempts from jobs where id = {job_id}")[0][0] >= 2
        chain = alice.get("/chain")
        assert [e["height"] for e in chain] == [0, 1]
        history = gitops.git(task, "rev-list", "--first-parent", "refs/heads/autoresearch/hub").splitlines()
        assert [e["commit"] for e in reversed(chain)] == history[:2]
        assert db_rows(task, "select height, \"commit\" from chain order by height") == \
            [(e["height"], e["commit"]) for e in chain]
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(10)
        if other is not None:
            other.stop()
        hub.stop()
