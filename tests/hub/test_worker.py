"""A volunteer's worker: the normal research loop against the hub's best; each local keep becomes a
claim the verifier accepts, each discard a tried-and-failed entry; the next round starts on the
new best."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from autoresearch.hub.client import HubClient
from autoresearch.hub.worker import EVIDENCE_RUNS, HubWorker
from autoresearch.research.scheduler import Limits
from tests.hub.conftest import (
    RunningHub,
    decided,
    free_port,
    hub_task,
    wait_for,
)
from tests.scripted import ScriptedAgent, replace

SRC = str(Path(__file__).resolve().parents[2] / "src")


def cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autoresearch", *args], env={**os.environ, "PYTHONPATH": SRC},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_a_worker_round_submits_keeps_and_publishes_discards(tmp_path: Path):
    """Through the Python API, with a scripted agent; the verifier is `autoresearch verifier join`."""
    hub = RunningHub(hub_task(tmp_path / "task"), free_port(), None).start()
    token_file = hub.task / ".autoresearch" / "hub" / "verifier.token"
    verifier = cli("verifier", "join", hub.url, "--token-file", str(token_file), "--dir", str(tmp_path / "verifier"))
    agent = ScriptedAgent([("worse: X=9", replace("X = 5.0", "X = 9.0")), ("better: X=3", replace("X = 5.0", "X = 3.0"))])
    worker = HubWorker(hub.url, tmp_path / "worker", lambda config: [agent], name="dana")
    try:
        worker.open()
        worker.run_round(Limits(max_experiments=3))
        assert len(worker.claims) == 1
        claim = decided(HubClient(hub.url), worker.claims[0]["claim_id"])
        assert claim["state"] == "accepted" and claim["worker"] == "dana" and claim["claimed_gain"] > 3
        with sqlite3.connect(hub.task / ".autoresearch" / "hub" / "hub.db") as conn:  # the evidence it carried
            claimed = json.loads(conn.execute("select claimed from claims where id = ?", (claim["id"],)).fetchone()[0])
        assert min(len(claimed["base_runs"]), len(claimed["candidate_runs"])) >= EVIDENCE_RUNS, claimed
        tried = HubClient(hub.url).get("/tried")
        assert [t["description"] for t in tried if not t["verified"]] == ["worse: X=9"]
        # The next round researches on the accepted best.
        agent.steps = [("noop", lambda files: {"train.py": files["train.py"] + "\n"})]
        worker.run_round(Limits(max_experiments=2))
        assert "X = 3.0" in agent.contexts[-1].files["train.py"]
        wait_for(lambda: HubClient(hub.url).get("/best")["height"] == 1, what="the chain at height 1")
        # The command line: one round of the random agent, a JSON summary at the end.
        joined = cli("worker", "join", hub.url, "--dir", str(tmp_path / "cli-worker"), "--agent", "random",
                     "--rounds", "1", "--max-experiments", "2", "--name", "erin", "--json")
        out, _ = joined.communicate(timeout=120)
        assert joined.returncode == 0, out
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["event"] == "done" and summary["rounds"] == 1
    finally:
        worker.close()
        verifier.terminate()
        verifier.wait(30)
        hub.stop()
