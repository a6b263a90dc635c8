"""Run-to-run noise of the nanogpt task: the same train.py, N times, same budget.

    python benchmarks/nanogpt_noise.py --runs 5 --budget 60 [--task examples/nanogpt] [--out noise.md]

Prepares the data if needed (`python prepare.py`), then runs `python train.py` sequentially and
prints each run's val_bpb, steps and throughput, the mean, standard deviation (n - 1), min and
max, and a markdown snippet (also written to --out when given). The load average before each run
is recorded: on a shared machine, contention is the main source of noise.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def summary(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    if "---" not in lines:
        return {}
    tail = lines[len(lines) - lines[::-1].index("---"):]
    return dict(line.split(": ", 1) for line in tail if ": " in line)


def load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--budget", type=float, default=60.0, help="training seconds per run")
    ap.add_argument("--task", type=Path, default=REPO / "examples" / "nanogpt")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown snippet here")
    a = ap.parse_args()

    env = {**os.environ, "AUTORESEARCH_TIME_BUDGET": f"{a.budget:g}", "PYTHONDONTWRITEBYTECODE": "1"}
    prep = subprocess.run([a.python, "prepare.py"], cwd=a.task, env=env, capture_output=True, text=True)
    if prep.returncode != 0:
        print(prep.stderr, file=sys.stderr)
        return 1

    rows = []
    for i in range(1, a.runs + 1):
        before = load()
        t0 = time.time()
        proc = subprocess.run([a.python, "train.py"], cwd=a.task, env=env, capture_output=True, text=True,
                              timeout=3 * a.budget + 120)
        s = summary(proc.stdout)
        row = {"run": i, "rc": proc.returncode, "wall": time.time() - t0, "load": before, **s}
        rows.append(row)
        if proc.returncode != 0 or "val_bpb" not in s:
            print(f"run {i}: FAILED (rc {proc.returncode})\n{proc.stderr[-2000:]}", file=sys.stderr, flush=True)
            continue
        print(f"run {i}: val_bpb {float(s['val_bpb']):.4f} | steps {s['num_steps']} | "
              f"tokens/s {float(s['tokens_per_sec']):,.0f} | load {before:.2f} | wall {row['wall']:.1f}s", flush=True)

    ok = [r for r in rows if r["rc"] == 0 and "val_bpb" in r]
    if not ok:
        print("no run finished", file=sys.stderr)
        return 1
    bpb = [float(r["val_bpb"]) for r in ok]
    steps = [int(r["num_steps"]) for r in ok]
    std = statistics.stdev(bpb) if len(bpb) > 1 else 0.0
    steps_std = statistics.stdev(steps) if len(steps) > 1 else 0.0
    print(f"val_bpb: mean {statistics.mean(bpb):.4f} | std {std:.4f} | min {min(bpb):.4f} | max {max(bpb):.4f} "
          f"| steps mean {statistics.mean(steps):.0f} (std {steps_std:.0f}) | {len(ok)}/{len(rows)} runs finished")

    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = "?"
    md = [
        f"### nanogpt run-to-run noise ({len(ok)} runs, {a.budget:g} s budget)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.processor() or platform.platform()}; "
        f"torch {torch_version}; {time.strftime('%Y-%m-%d')}. Identical `train.py` (shipped defaults) each run.",
        "",
        "| run | val_bpb | steps | tokens/s | peak MB | load avg before |",
        "|---:|---:|---:|---:|---:|---:|",
        *(f"| {r['run']} | {float(r['val_bpb']):.4f} | {r['num_steps']} | {float(r['tokens_per_sec']):,.0f} | "
          f"{float(r['peak_memory_mb']):.0f} | {r['load']:.2f} |" for r in ok),
        "",
        f"val_bpb mean **{statistics.mean(bpb):.4f}**, std {std:.4f}, min {min(bpb):.4f}, max {max(bpb):.4f}; "
        f"steps mean {statistics.mean(steps):.0f} (std {steps_std:.0f}).",
        *(["", f"{len(rows) - len(ok)} run(s) failed."] if len(ok) < len(rows) else []),
    ]
    text = "\n".join(md) + "\n"
    print("\n" + text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
