"""A simulated swarm against a real hub on loopback: how often junk is accepted, how often true
improvements are, what verification costs, and how fast the hub serves reads.

    PYTHONPATH=src python benchmarks/hub_swarm.py [--clients 50] [--junk 200] [--honest 16]

Starts `autoresearch hub serve` (SQLite) on a noisy toy task with a trusted evaluator (score =
sum of A_i^2 + N(0, 0.05), 20 constants), two verifiers through the real harness, then:
1. reads: `--clients` threads each make a bounded loop of GET /best and GET /chain;
2. claims: `--clients` threads, each its own registered worker, submit a mix of honest true
   3-sigma improvements (one constant each, so they merge on rebase), noisy no-op changes claimed
   as small gains, forged claims (a no-op claimed as a huge gain, or a patch printing a perfect
   score), waiting for each verdict before the next (bounded request loops).
Prints one JSON object with the rates and costs.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from autoresearch.hub.client import HubClient, HubRefused
from tests.hub.conftest import RunningHub, VerifierThread, free_port

CONSTANTS, SIGMA = 20, 0.05
THREE_SIGMA = math.sqrt(1.0 - 3 * SIGMA)  # A_i = 1 -> this value gains exactly 3 sigma
PREPARE = textwrap.dedent(f'''\
    import json, os, random
    model = json.load(open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "model.json")))
    print(f"score: {{sum(v * v for v in model.values()) + random.SystemRandom().gauss(0, {SIGMA}):.6f}}")
''')
TRAIN = "import json\n" + "".join(f"A{i} = 1.0\n" for i in range(CONSTANTS)) + \
    "json.dump({k: v for k, v in globals().items() if k.startswith('A')}, open('model.json', 'w'))\n" + \
    'print("score: 20.0")\n'
CONFIG = textwrap.dedent('''\
    [task]
    name = "swarm"
    editable = ["train.py"]
    frozen = ["prepare.py"]
    run = "python train.py"
    [budget]
    seconds = 5
    timeout = 30
    [metric]
    name = "score"
    [evaluate]
    command = "python prepare.py"
''')


def make_task(root: Path) -> Path:
    root.mkdir(parents=True)
    for name, text in (("train.py", TRAIN), ("prepare.py", PREPARE), ("autoresearch.toml", CONFIG),
                       ("program.md", "minimise score\n")):
        (root / name).write_text(text)
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b", "commit",
                                                            "-qm", "task"]):
        subprocess.run(["git", "-C", str(root), *cmd], check=True)
    return root


def reads(url: str, clients: int, per_client: int) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()

    def loop():
        mine = []
        with httpx.Client(base_url=url) as http:
            for i in range(per_client):
                t = time.perf_counter()
                assert http.get("/api/v1/best" if i % 2 else "/api/v1/chain").status_code == 200
                mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)
    threads = [threading.Thread(target=loop) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    return {"requests": len(latencies), "requests_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2)}


def plan(clients: int, junk: int, honest: int, rng: random.Random) -> list[list[tuple[str, int]]]:
    """Each client's claims, as (kind, index). Honest clients make two true improvements each."""
    n_honest = max(1, honest // 2)
    work: list[list[tuple[str, int]]] = [[("honest", 2 * c), ("honest", 2 * c + 1)] for c in range(n_honest)]
    kinds = ["noop", "forged", "printed"]
    junk_clients = clients - n_honest
    for c in range(junk_clients):
        work.append([(rng.choice(kinds), c * 1000 + j) for j in range(junk // junk_clients + (c < junk % junk_clients))])
    return work


def patch(kind: str, index: int, text: str) -> tuple[dict, str, dict]:
    if kind == "honest":
        name = f"A{index}"
        return ({"train.py": text.replace(f"{name} = 1.0\n", f"{name} = {THREE_SIGMA!r}\n")}, f"{name}: 3 sigma",
                {"gain": 3 * SIGMA})
    if kind == "noop":
        return {"train.py": text + f"# tweak {index}\n"}, f"noop {index}", {"gain": SIGMA}
    if kind == "forged":
        return {"train.py": text + f"# forged {index}\n"}, f"forged {index}", {"gain": 10.0}
    return ({"train.py": text.replace('print("score: 20.0")', f'print("score: 0.{index}")')}, f"printed {index}",
            {"gain": 20.0})


def client_loop(url: str, name: str, claims: list[tuple[str, int]], results: list, lock: threading.Lock) -> None:
    c = HubClient(url, timeout_s=60)
    for _ in range(100):
        try:
            c.register(name)
            break
        except HubRefused as e:
            if e.status != 429:
                raise
            time.sleep(1.0)
    for kind, index in claims:
        best = c.get("/best")
        files, description, claimed = patch(kind, index, best["files"]["train.py"])
        try:
            reply = c.claim(best["commit"], files, description, claimed=claimed)
        except HubRefused as e:
            with lock:
                results.append({"kind": kind, "state": "refused", "reason": e.error, "runs": 0})
            continue
        while True:
            state = c.get(f"/claims/{reply['claim_id']}")
            if not state["open"]:
                break
            time.sleep(0.5)
        with lock:
            results.append({"kind": kind, "state": state["state"], "reason": state["reason"],
                            "runs": state["verifier_runs"]})
    c.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--junk", type=int, default=200)
    p.add_argument("--honest", type=int, default=16)
    p.add_argument("--verifiers", type=int, default=2)
    p.add_argument("--reads", type=int, default=200, help="requests per client in the read phase")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hub-swarm-"))
    hub = RunningHub(make_task(tmp / "task"), free_port(), None).start()
    verifiers = [VerifierThread(hub, tmp / f"verifier{i}") for i in range(args.verifiers)]
    try:
        read_stats = reads(hub.url, args.clients, args.reads)
        results: list[dict] = []
        lock = threading.Lock()
        work = plan(args.clients, args.junk, args.honest, random.Random(0))
        t0 = time.time()
        threads = [threading.Thread(target=client_loop, args=(hub.url, f"c{i}", w, results, lock))
                   for i, w in enumerate(work)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t0
        chain = HubClient(hub.url).get("/chain")
        report(args, read_stats, results, wall, chain)
    finally:
        for v in verifiers:
            v.stop()
        hub.stop()


def report(args, read_stats: dict, results: list[dict], wall: float, chain: list) -> None:
    by_kind: dict[str, list[dict]] = {}
    for r in results:
        by_kind.setdefault(r["kind"], []).append(r)
    junk = [r for r in results if r["kind"] != "honest"]
    honest = by_kind.get("honest", [])
    accepted_honest = [r for r in honest if r["state"] == "accepted"]
    verified_junk = [r for r in junk if r["state"] != "refused"]
    out = {
        "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "clients": args.clients, "verifiers": args.verifiers, "read_phase": read_stats,
        "junk_claims": len(junk), "junk_accepted": sum(r["state"] == "accepted" for r in junk),
        "junk_refused_at_the_gate": sum(r["state"] == "refused" for r in junk),
        "by_kind": {k: {s: sum(r["state"] == s for r in v) for s in ("accepted", "rejected", "refused")}
                    for k, v in by_kind.items()},
        "honest_3sigma_claims": len(honest), "honest_accepted": len(accepted_honest),
        "honest_acceptance_rate": round(len(accepted_honest) / len(honest), 3) if honest else None,
        "verifier_runs_per_accepted_claim": round(sum(r["runs"] for r in honest) / max(1, len(accepted_honest)), 2),
        "verifier_runs_per_verified_junk_claim": round(sum(r["runs"] for r in verified_junk) /
                                                       max(1, len(verified_junk)), 2),
        "chain_height": chain[-1]["height"], "claims_phase_s": round(wall, 1),
        "honest_refusals": [r["reason"] for r in honest if r["state"] != "accepted"][:5],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
