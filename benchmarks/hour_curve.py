"""The README's main command for an hour, today's code beside a previous revision's, side by side.

Each side is `autoresearch run nanogpt --max-hours H --seed S --json` on its own research repository
made from its own revision's shipped example (the default agent, judge, pruner and config of that
revision: what a new user got), started at the same moment so that the machine's load hits both
alike, each pinned to its own half of the cores (on 2 cores: one each, so neither side's threads
fight the other's). The previous revision runs from a temporary git worktree with the same Python
environment.
The script then reads both ledgers and prints the best-so-far val_bpb against wall-clock time, the
first real keep (a kept change after the baseline) and how many experiments it took, and draws
both curves into a PNG.

    python benchmarks/hour_curve.py [--hours 1] [--previous 22b0f29] [--seed 0] [--nice 0]
                                    [--png docs/hour_curve.png] [--json]
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
MARKS_MIN = (5, 10, 20, 30, 45, 60)  # minutes at which the curves are printed


def start(name: str, src: Path, work: Path, hours: float, seed: int, nice: int,
          cpus: set[int]) -> tuple[subprocess.Popen, Path]:
    """One side: its research repository from its own example, its run started in the background on
    the cores `cpus` (its slot sees only those: one thread per core, no fight over the other side's)."""
    home = work / name
    env = {**os.environ, "PYTHONPATH": str(src), "AUTORESEARCH_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "autoresearch", "new", "nanogpt", str(home / "nanogpt")], env=env,
                   check=True, capture_output=True)
    log = open(work / f"{name}.jsonl", "w")
    cmd = [sys.executable, "-m", "autoresearch", "run", str(home / "nanogpt"), "--max-hours", str(hours),
           "--seed", str(seed), "--json"]
    proc = subprocess.Popen(["nice", "-n", str(nice), *cmd], env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    return proc, home / "nanogpt"


def curve(task: Path) -> dict:
    """Best-so-far val_bpb against minutes since the research began, from the ledger."""
    db = sqlite3.connect(task / ".autoresearch" / "ledger.db")
    rows = db.execute("SELECT id, status, metric, agent, description, created_at, finished_at FROM experiments "
                      "ORDER BY id").fetchall()
    db.close()
    if not rows:
        return {"points": [], "experiments": 0}
    t0 = rows[0][5]
    measured = [r for r in rows if r[1] in ("keep", "discard", "crash", "timeout", "pruned")]
    keeps = sorted((r for r in rows if r[1] == "keep" and r[2] is not None), key=lambda r: r[6])
    points, best = [], None
    for r in keeps:
        best = r[2] if best is None else min(best, r[2])
        points.append(((r[6] - t0) / 60, best))
    first_real = next(((i, r) for i, r in enumerate(measured) if r[1] == "keep" and r[3] != "baseline"), None)
    return {"points": points, "experiments": len(measured), "baseline": keeps[0][2] if keeps else None,
            "best": best, "kept": len(keeps) - 1,
            "first_real_keep": None if first_real is None else {
                "experiment": first_real[0], "minutes": round((first_real[1][6] - t0) / 60, 1),
                "val_bpb": first_real[1][2], "what": first_real[1][4][:80]},
            "statuses": {s: sum(1 for r in measured if r[1] == s) for s in {r[1] for r in measured}}}


def at(points: list, minute: float) -> float | None:
    values = [v for t, v in points if t <= minute]
    return values[-1] if values else None


def plot(results: dict, hours: float, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for name, r in results.items():
        if r["points"]:
            xs = [t for t, _ in r["points"]] + [hours * 60]  # the best holds to the end of the run
            ys = [v for _, v in r["points"]] + [r["points"][-1][1]]
            ax.step(xs, ys, where="post", label=f"{name} ({r['experiments']} experiments, {r['kept']} kept)")
    ax.set_xlabel("minutes since the research began")
    ax.set_ylabel("best val_bpb so far (lower is better)")
    ax.set_title("autoresearch run nanogpt on CPU: today's default beside the previous one")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--previous", default="22b0f29", help="the previous default's git revision")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nice", type=int, default=0, help="niceness of both runs (a shared machine: 19)")
    parser.add_argument("--png", default=str(ROOT / "docs" / "hour_curve.png"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="autoresearch-hour-"))
    previous = work / "previous-src"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(previous), args.previous],
                   check=True)
    try:
        cores = sorted(os.sched_getaffinity(0))
        half = max(1, len(cores) // 2)  # each side its own half of the cores (both, on a 1-core machine)
        mine, theirs = set(cores[:half]), set(cores[half:] or cores)
        sides = {"today": start("today", ROOT / "src", work, args.hours, args.seed, args.nice, mine),
                 f"previous ({args.previous})": start("previous", previous / "src", work, args.hours, args.seed,
                                                      args.nice, theirs)}
        deadline = time.time() + args.hours * 3600 + 900  # the last experiment may still be judged
        for proc, _ in sides.values():
            try:
                proc.wait(timeout=max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait()
        results = {name: curve(task) for name, (_, task) in sides.items()}
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(previous)], check=False)
    plot(results, args.hours, Path(args.png))
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"work folder {work}; chart {args.png}")
    print("minute | " + " | ".join(results))
    for m in MARKS_MIN:
        if m <= args.hours * 60:
            print(f"{m:>6} | " + " | ".join(f"{at(r['points'], m) or float('nan'):.4f}" for r in results.values()))
    for name, r in results.items():
        print(f"{name}: baseline {r['baseline']}, best {r['best']}, {r['experiments']} experiments, {r['kept']} kept, "
              f"first real keep {r['first_real_keep']}, statuses {r['statuses']}")


if __name__ == "__main__":
    main()
