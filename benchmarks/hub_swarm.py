"""A simulated swarm against a real hub on loopback: how often junk is accepted, how often true
improvements are, what verification costs, and how fast the hub serves reads.

    PYTHONPATH=src python benchmarks/hub_swarm.py [--clients 50] [--junk 200] [--honest 8] [--lifetime 8]

Starts `autoresearch hub serve` (SQLite) on a noisy toy task with a trusted evaluator (score =
sum of A_i^2 + N(0, 0.05), 64 constants or one per honest improvement), two verifiers through the real harness, then:
1. claims: `--clients` threads, each its own registered worker. `--honest` of them make
   `--lifetime` true 3-sigma improvements each (one constant each, so they merge on rebase), with
   their own measured runs in the claim (4 of base, 4 of candidate); the others make `--junk`
   junk claims in all: no-op changes claimed as small gains, forged claims (a no-op claimed as a
   huge gain), patches that print a perfect score, seed-only changes. Each waits for each verdict
   before the next (bounded request loops).
2. reads, on the chain the claims built: `--clients` connections (in READ_PROCESSES processes,
   plain http.client with keep-alive, so the load generator is not what is measured) each make a
   bounded loop, side by side in one run: GET /best and /chain with their bodies; the same as
   polls naming the ETag they hold (304); and GET /task, an ordinary FastAPI route (a sync
   function returning a dict, serialised each time) as the reference the pre-serialised path is
   compared with.
Prints one JSON object with the rates and costs: verifier runs per accepted claim split by the
check it got (new workers: the full test; reputable ones: the cheap check or an audit), by a
worker's claim number (its first claims pay for its record), and amortised over the first L
claims of each honest worker (what a lifetime of L claims costs), for L = 2, 4, 8, ... `--lifetime`.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import random
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from autoresearch.hub.client import HubClient, HubRefused
from tests.hub.conftest import RunningHub, VerifierThread, free_port

MIN_CONSTANTS, SIGMA = 64, 0.05  # constants A_i: at least this many, one per honest improvement
LOCAL_RUNS = 4  # an honest worker's own runs of base and of candidate, sent with the claim (--local-runs)
READ_PROCESSES = 4  # load-generating processes (each with its share of the client connections)
THREE_SIGMA = math.sqrt(1.0 - 3 * SIGMA)  # A_i = 1 -> this value gains exactly 3 sigma
PREPARE = textwrap.dedent(f'''\
    import json, os, random
    model = json.load(open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "model.json")))
    print(f"score: {{sum(v * v for v in model.values()) + random.SystemRandom().gauss(0, {SIGMA}):.6f}}")
''')
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


def train_py(constants: int) -> str:
    return ("import json\nSEED = 0\n" + "".join(f"A{i} = 1.0\n" for i in range(constants)) +
            "json.dump({k: v for k, v in globals().items() if k.startswith('A')}, open('model.json', 'w'))\n" +
            'print("score: 20.0")\n')


def make_task(root: Path, constants: int) -> Path:
    root.mkdir(parents=True)
    for name, text in (("train.py", train_py(constants)), ("prepare.py", PREPARE), ("autoresearch.toml", CONFIG),
                       ("program.md", "minimise score\n")):
        (root / name).write_text(text)
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b", "commit",
                                                            "-qm", "task"]):
        subprocess.run(["git", "-C", str(root), *cmd], check=True)
    return root


def _read_loop(port: int, path: str, per_client: int, tags: dict[str, str]) -> list[float]:
    """One keep-alive connection's bounded loop; `tags`: the ETag to send per path (a poll)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    for i in range(per_client):
        target = path if path != "best+chain" else ("/api/v1/best" if i % 2 else "/api/v1/chain")
        headers = {"If-None-Match": tags[target]} if target in tags else {}
        t = time.perf_counter()
        conn.request("GET", target, headers=headers)
        r = conn.getresponse()
        r.read()
        out.append(time.perf_counter() - t)
        assert r.status == (304 if headers else 200), (target, r.status)
    conn.close()
    return out


def _read_process(args: tuple) -> list[float]:
    port, path, threads, per_client, tags = args
    results: list[list[float]] = [[] for _ in range(threads)]

    def one(i: int) -> None:
        results[i] = _read_loop(port, path, per_client, tags)
    ts = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return [x for r in results for x in r]


def reads(port: int, clients: int, per_client: int) -> dict:
    """Three read loads, one after the other in one run, each over `clients` keep-alive connections."""
    tags = {p: http_get_tag(port, p) for p in ("/api/v1/best", "/api/v1/chain")}
    loads = {"best_and_chain": ("best+chain", {}), "best_and_chain_polls_304": ("best+chain", tags),
             "task_plain_fastapi_route": ("/api/v1/task", {})}
    out = {}
    with multiprocessing.Pool(READ_PROCESSES) as pool:
        for name, (path, etags) in loads.items():
            share = [clients // READ_PROCESSES + (i < clients % READ_PROCESSES) for i in range(READ_PROCESSES)]
            t0 = time.perf_counter()
            parts = pool.map(_read_process, [(port, path, n, per_client, etags) for n in share])
            wall = time.perf_counter() - t0
            latencies = sorted(x for p in parts for x in p)
            out[name] = {"requests": len(latencies), "requests_per_s": round(len(latencies) / wall, 1),
                         "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
                         "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2)}
    return out


def http_get_tag(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.headers["ETag"]


def plan(clients: int, junk: int, honest: int, lifetime: int, rng: random.Random) -> list[list[tuple[str, int]]]:
    """Each client's claims, as (kind, index): honest clients `lifetime` true improvements each."""
    work: list[list[tuple[str, int]]] = [[("honest", lifetime * c + j) for j in range(lifetime)] for c in range(honest)]
    kinds = ["noop", "forged", "printed", "seed"]
    junk_clients = clients - honest
    for c in range(junk_clients):
        work.append([(rng.choice(kinds), c * 1000 + j) for j in range(junk // junk_clients + (c < junk % junk_clients))])
    return work


def patch(kind: str, index: int, text: str, rng: random.Random, local_runs: int = LOCAL_RUNS) -> tuple[dict, str, dict]:
    if kind == "honest":
        name = f"A{index}"
        base = [20.0 + rng.gauss(0, SIGMA) for _ in range(local_runs)]
        cand = [20.0 - 3 * SIGMA + rng.gauss(0, SIGMA) for _ in range(local_runs)]
        return ({"train.py": text.replace(f"{name} = 1.0\n", f"{name} = {THREE_SIGMA!r}\n")}, f"{name}: 3 sigma",
                {"gain": sum(base) / local_runs - sum(cand) / local_runs, "base_runs": base, "candidate_runs": cand})
    if kind == "noop":
        return {"train.py": text + f"# tweak {index}\n"}, f"noop {index}", {"gain": SIGMA}
    if kind == "forged":
        return {"train.py": text + f"# forged {index}\n"}, f"forged {index}", {"gain": 10.0}
    if kind == "seed":
        return {"train.py": text.replace("SEED = 0\n", f"SEED = {index + 1}\n")}, f"seed {index}", {"gain": 2 * SIGMA}
    return ({"train.py": text.replace('print("score: 20.0")', f'print("score: 0.{index}")')}, f"printed {index}",
            {"gain": 20.0})


def client_loop(url: str, name: str, claims: list[tuple[str, int]], results: list, lock: threading.Lock,
                local_runs: int = LOCAL_RUNS) -> None:
    c, rng = HubClient(url, timeout_s=60), random.Random(name)
    for _ in range(100):
        try:
            c.register(name)
            break
        except HubRefused as e:
            if e.status != 429:
                raise
            time.sleep(1.0)
    for number, (kind, index) in enumerate(claims):
        best = c.get("/best")
        files, description, claimed = patch(kind, index, best["files"]["train.py"], rng, local_runs)
        try:
            reply = c.claim(best["commit"], files, description, claimed=claimed)
        except HubRefused as e:
            with lock:
                results.append({"kind": kind, "state": "refused", "reason": e.error, "runs": 0, "client": name,
                                "check": None, "number": number})
            continue
        while True:
            state = c.get(f"/claims/{reply['claim_id']}")
            if not state["open"]:
                break
            time.sleep(0.5)
        with lock:
            results.append({"kind": kind, "state": state["state"], "reason": state["reason"],
                            "runs": state["verifier_runs"], "client": name, "check": state["check"],
                            "number": number})
    c.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--junk", type=int, default=200)
    p.add_argument("--honest", type=int, default=8, help="honest clients")
    p.add_argument("--lifetime", type=int, default=8, help="true improvements each honest client claims")
    p.add_argument("--verifiers", type=int, default=2)
    p.add_argument("--reads", type=int, default=200, help="requests per client in the read phase")
    p.add_argument("--local-runs", type=int, default=LOCAL_RUNS,
                   help="an honest worker's own runs of base and of candidate sent with each claim")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hub-swarm-"))
    constants = max(MIN_CONSTANTS, args.honest * args.lifetime)
    hub = RunningHub(make_task(tmp / "task", constants), free_port(), None).start()
    verifiers = [VerifierThread(hub, tmp / f"verifier{i}") for i in range(args.verifiers)]
    try:
        results: list[dict] = []
        lock = threading.Lock()
        work = plan(args.clients, args.junk, args.honest, args.lifetime, random.Random(0))
        t0 = time.time()
        threads = [threading.Thread(target=client_loop, args=(hub.url, f"c{i}", w, results, lock, args.local_runs))
                   for i, w in enumerate(work)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t0
        chain = HubClient(hub.url).get("/chain")
        read_stats = reads(hub.port, args.clients, args.reads)  # after the claims: a chain of real length
        report(args, read_stats, results, wall, chain)
    finally:
        for v in verifiers:
            v.stop()
        hub.stop()


def per_accepted(rows: list[dict]) -> dict:
    """Verifier runs of these claims per accepted one, and per side (a pair is one run of each)."""
    accepted = sum(r["state"] == "accepted" for r in rows)
    runs = sum(r["runs"] for r in rows)
    return {"claims": len(rows), "accepted": accepted, "runs_per_accepted": round(runs / max(1, accepted), 2),
            "runs_of_each_per_accepted": round(runs / 2 / max(1, accepted), 2)}


def report(args, read_stats: dict, results: list[dict], wall: float, chain: list) -> None:
    by_kind: dict[str, list[dict]] = {}
    for r in results:
        by_kind.setdefault(r["kind"], []).append(r)
    junk = [r for r in results if r["kind"] != "honest"]
    honest = by_kind.get("honest", [])
    accepted_honest = [r for r in honest if r["state"] == "accepted"]
    verified_junk = [r for r in junk if r["state"] != "refused"]
    lifetimes = {}
    for r in honest:
        lifetimes.setdefault(r["client"], []).append(r)
    out = {
        "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "clients": args.clients, "verifiers": args.verifiers, "local_runs": args.local_runs, "reads": read_stats,
        "junk_claims": len(junk), "junk_accepted": sum(r["state"] == "accepted" for r in junk),
        "junk_refused_at_the_gate": sum(r["state"] == "refused" for r in junk),
        "by_kind": {k: {s: sum(r["state"] == s for r in v) for s in ("accepted", "rejected", "refused")}
                    for k, v in by_kind.items()},
        "honest_3sigma_claims": len(honest), "honest_accepted": len(accepted_honest),
        "honest_acceptance_rate": round(len(accepted_honest) / len(honest), 3) if honest else None,
        "honest_cost_by_check": {check: per_accepted([r for r in honest if r["check"] == check])
                                 for check in sorted({str(r["check"]) for r in honest})},
        "honest_cost_amortised_over_a_lifetime": per_accepted(honest),
        # how many claims of each check took 1, 2, 3, ... runs of each side: where the cost lies
        "honest_runs_of_each_histogram": {check: dict(sorted(Counter(r["runs"] // 2 for r in honest
                                                                     if str(r["check"]) == check).items()))
                                          for check in sorted({str(r["check"]) for r in honest})},
        # the n-th claim of a worker, and the first L claims together: what a lifetime of L costs
        "honest_cost_by_claim_number": [per_accepted([r for r in honest if r["number"] == n])["runs_of_each_per_accepted"]
                                        for n in range(args.lifetime)],
        "honest_cost_amortised_over_the_first": {
            length: per_accepted([r for r in honest if r["number"] < length])["runs_of_each_per_accepted"]
            for length in sorted({*(2 ** k for k in range(1, 12) if 2 ** k < args.lifetime), args.lifetime})},
        "honest_cost_per_lifetime": sorted(per_accepted(v)["runs_of_each_per_accepted"] for v in lifetimes.values()),
        "verifier_runs_per_verified_junk_claim": round(sum(r["runs"] for r in verified_junk) /
                                                       max(1, len(verified_junk)), 2),
        "chain_height": chain[-1]["height"], "claims_phase_s": round(wall, 1),
        "honest_refusals": [r["reason"] for r in honest if r["state"] != "accepted"][:8],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
