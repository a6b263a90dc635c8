"""The README's main command over several seeds: does it keep a real improvement within its first
10 experiments?

Each seed is `autoresearch run nanogpt --max-experiments N --seed S --json` exactly as a new user
runs it (the shipped example copied into a fresh `AUTORESEARCH_HOME`, the default agent, judge and
pruner, all cores), one seed after the other so that no two runs share the machine. `N` counts the
baseline, so the default 11 is the baseline and 10 experiments. The script reads each ledger and
prints, per seed: the baseline, the first kept change after it (which experiment, the judge's
reason: a keep is a change beyond the noise bar), the best at the end, and the wall time.

    python benchmarks/readme_seeds.py [--seeds 1 2 3] [--max-experiments 11] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ("keep", "discard", "crash", "timeout", "pruned")  # statuses of experiments that ran


def one_seed(work: Path, seed: int, max_experiments: int) -> dict:
    home = work / f"seed{seed}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "AUTORESEARCH_HOME": str(home)}
    started = time.time()
    with open(work / f"seed{seed}.jsonl", "w") as log:
        subprocess.run([sys.executable, "-m", "autoresearch", "run", "nanogpt", "--max-experiments",
                        str(max_experiments), "--seed", str(seed), "--json"], env=env, stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    wall = time.time() - started
    db = sqlite3.connect(home / "nanogpt" / ".autoresearch" / "ledger.db")
    rows = db.execute("SELECT id, status, metric, agent, description, reason FROM experiments ORDER BY id").fetchall()
    db.close()
    measured = [r for r in rows if r[1] in MEASURED]
    baseline = next((r for r in measured if r[3] == "baseline"), None)
    experiments = [r for r in measured if r[3] != "baseline"]
    first = next(((i + 1, r) for i, r in enumerate(experiments) if r[1] == "keep"), None)
    keeps = [r[2] for r in measured if r[1] == "keep" and r[2] is not None]
    return {"seed": seed, "wall_min": round(wall / 60, 1), "experiments": len(experiments),
            "baseline": baseline[2] if baseline else None, "best": min(keeps) if keeps else None,
            "kept": sum(1 for r in experiments if r[1] == "keep"),
            "statuses": {s: sum(1 for r in experiments if r[1] == s) for s in sorted({r[1] for r in experiments})},
            "first_keep": None if first is None else {"experiment": first[0], "val_bpb": first[1][2],
                                                      "what": first[1][4][:80], "reason": first[1][5][:120]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--max-experiments", type=int, default=11, help="runs, the baseline included")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="autoresearch-seeds-"))
    results = []
    for seed in args.seeds:
        results.append(one_seed(work, seed, args.max_experiments))
        if not args.json:
            r = results[-1]
            first = r["first_keep"]
            print(f"seed {seed}: baseline {r['baseline']:.4f}, best {r['best']:.4f} after {r['experiments']} "
                  f"experiments ({r['statuses']}), {r['wall_min']} min; first keep: "
                  + (f"experiment {first['experiment']} ({first['what']}): {first['reason']}" if first else "none"),
                  flush=True)
    hits = sum(1 for r in results if r["first_keep"])
    if args.json:
        print(json.dumps({"work": str(work), "seeds": results, "with_a_keep": hits}, indent=1))
    else:
        print(f"{hits} of {len(results)} seeds kept a real improvement within "
              f"{args.max_experiments - 1} experiments; ledgers under {work}")


if __name__ == "__main__":
    main()
