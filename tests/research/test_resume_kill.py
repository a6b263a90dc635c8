"""Kill -9 the tool at random moments, many times: nothing reported is lost, state stays consistent."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from autoresearch.core.records import FINISHED
from autoresearch.store.ledger import Ledger
from tests.scripted import check_consistency

KILLS = int(os.environ.get("AUTORESEARCH_TEST_KILLS", "20"))


def _run(task: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "autoresearch", "run", str(task), "--agent", "random", "--tag", "t",
           "--json", "--budget", "1", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_at_random_points_then_resume(toy_task: Path):
    rng = random.Random(1234)
    reported: dict[int, str] = {}
    for i in range(KILLS):
        proc = _run(toy_task, "--seed", str(i))
        # every other kill counts from the first output, so that some land in a running research even
        # on a loaded machine (where imports alone take seconds); the others can hit the start itself
        first = proc.stdout.readline() if i % 2 else ""
        time.sleep(rng.uniform(0.05, 2.5))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        for line in [first, *out.splitlines()]:
            if line.startswith("{"):
                event = json.loads(line)
                if event["event"] == "finished":
                    reported[event["id"]] = event["status"]
    assert reported, "the kills came too early for any experiment to finish"
    ledger = Ledger(toy_task / ".autoresearch" / "ledger.db")
    decided_before = {e.id for e in ledger.experiments("t", FINISHED)}
    ledger.close()
    # A clean run after all that resumes and finishes normally.
    proc = _run(toy_task, "--max-experiments", "3")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    ledger = Ledger(toy_task / ".autoresearch" / "ledger.db")
    exps = {e.id: e for e in ledger.experiments("t")}
    ledger.close()
    for exp_id, status in reported.items():  # everything that was reported is in the ledger as reported
        assert exps[exp_id].status == status
    assert not [e.id for e in exps.values() if e.status == "running"]
    # Rejected proposals (duplicates of earlier ones) are not runs; the clean run made new decisions.
    assert {e.id for e in exps.values() if e.status in FINISHED} - decided_before, out
    check_consistency(toy_task)
