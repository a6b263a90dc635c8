"""How much of the gap to a known optimum the offline agents close in N experiments, side by side.

A synthetic task with ten nanoGPT-like constants (learning rate, batch size, depth, width, heads,
weight decay, beta2, warm-up, dropout, gradient clipping) whose `val_bpb` is a known function with
interactions (the best learning rate depends on the batch size and the depth, the best width on
the depth, weight decay and dropout share one regularisation budget), an invalid shape (a head count
that does not divide the width crashes) and noise of σ = NOISE per run. The task has no `[search]`
table, so the default ranges are part of what is measured. Each agent researches it through the
real CLI (`autoresearch run --agent A --seed S --max-experiments N+1`: the baseline plus N
experiments) in a fresh repository per seed; the script then scores the kept best on the
noise-free function: gap closed = (f(baseline) - f(best)) / (f(baseline) - f(optimum)).

The previous default is today's `search` agent of another git revision (`--previous REF`, default
`main`), run from a temporary worktree of it; `tpe` and `cmaes` are run when named in `--agents`.

    python benchmarks/search_yield.py [--seeds 5] [--first-seed 0] [--experiments 20] [--previous main]
                                      [--agents previous,search,search@0] [--jobs 2] [--json]
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOISE = 0.004  # run-to-run σ of val_bpb; the gap baseline -> optimum is ~0.41, about 100σ

def loss(LEARNING_RATE, BATCH_SIZE, DEPTH, N_EMBD, N_HEAD, WEIGHT_DECAY, BETA2, WARMUP_FRAC, DROPOUT, GRAD_CLIP):
    """val_bpb without noise; the optimum is 2.0 (DEPTH 3, N_EMBD 128, N_HEAD 4, BATCH_SIZE 16, ...)."""
    if N_EMBD % N_HEAD:
        raise ValueError(f"N_HEAD={N_HEAD} does not divide N_EMBD={N_EMBD}")
    best_lr = 0.008 * math.sqrt(BATCH_SIZE / 16) * math.sqrt(3 / DEPTH)
    return (2.0
            + 0.1 * math.log2(DEPTH * N_EMBD ** 2 / (3 * 128 ** 2)) ** 2     # model size for the budget
            + 0.05 * math.log2(N_EMBD / DEPTH / (128 / 3)) ** 2              # its shape
            + 1.0 * math.log10(LEARNING_RATE / best_lr) ** 2                 # lr, given batch and depth
            + 0.06 * math.log2(BATCH_SIZE / 16) ** 2
            + 0.02 * math.log2(N_HEAD * 32 / N_EMBD) ** 2                    # head size
            + 0.5 * (2 * WEIGHT_DECAY + DROPOUT - 0.1) ** 2 + 0.2 * DROPOUT  # one regularisation budget
            + 0.08 * math.log10((1 - BETA2) / 0.05) ** 2
            + 3.0 * (WARMUP_FRAC - (0.01 + 2 * LEARNING_RATE)) ** 2          # more warm-up for a higher lr
            + 0.03 * math.log10(GRAD_CLIP / 0.5) ** 2)


BASELINE = {"LEARNING_RATE": 0.004, "BATCH_SIZE": 8, "DEPTH": 2, "N_EMBD": 96, "N_HEAD": 4, "WEIGHT_DECAY": 0.1,
            "BETA2": 0.99, "WARMUP_FRAC": 0.05, "DROPOUT": 0.1, "GRAD_CLIP": 1.0}
OPTIMUM = 2.0
TRAIN = ('"""A synthetic training run: val_bpb is a known function of the constants, plus noise."""\n'
         "import math\nimport os\nimport random\n\n"
         + "".join(f"{k} = {v!r}\n" for k, v in BASELINE.items())
         + "\n\n" + inspect.getsource(loss)
         + "\n\nrandom.seed(os.urandom(8))\n"
         "value = loss(**{k: v for k, v in dict(globals()).items() if k.isupper()})\n"
         f"print(f\"val_bpb: {{value + random.gauss(0, {NOISE}):.6f}}\")\n"
         "print(f\"peak_memory_mb: {BATCH_SIZE * DEPTH * N_EMBD / 10:.1f}\")\n")
CONFIG = """[task]
name = "synthetic"
editable = ["train.py"]
run = "python train.py"
[budget]
seconds = 1
timeout = 30
[metric]
name = "val_bpb"
direction = "minimize"
[sandbox]
enabled = false  # this measures proposals, not isolation
"""


def true_loss(params: dict) -> float:
    try:
        return loss(**{k: params[k] for k in BASELINE})
    except ValueError:
        return math.inf


def make_task(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "train.py").write_text(TRAIN)
    (folder / "autoresearch.toml").write_text(CONFIG)
    (folder / "program.md").write_text("Minimise val_bpb by changing the constants of train.py.\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "synthetic task"]):
        subprocess.run(["git", "-C", str(folder), *args], check=True)
    return folder


def research(src: Path, agent: str, seed: int, experiments: int, work: Path, ahead: int | None = None) -> dict:
    """One research run through the CLI of the code in `src`; the kept best scored without noise.
    `ahead`: the CLI's --ahead (proposals made ahead per slot), else the default."""
    task = make_task(work / f"{agent}-{seed}")
    env = {**os.environ, "PYTHONPATH": str(src), "AUTORESEARCH_HOME": str(work / "home")}
    started = time.time()
    command = [sys.executable, "-m", "autoresearch", "run", str(task), "--agent", agent, "--seed", str(seed),
               "--max-experiments", str(experiments + 1), "--json", *(["--ahead", str(ahead)] if ahead is not None else [])]
    proc = subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          cwd=task)
    if proc.returncode:
        raise SystemExit(f"{agent} seed {seed} failed (exit {proc.returncode}) in {task}:\n{proc.stderr[-3000:]}")
    db = sqlite3.connect(task / ".autoresearch" / "ledger.db")
    rows = db.execute("SELECT status, params FROM experiments ORDER BY id").fetchall()
    db.close()
    kept = [json.loads(p) for s, p in rows if s == "keep"]
    base, best = true_loss(BASELINE), true_loss(kept[-1])
    ran = [s for s, _ in rows[1:] if s in ("keep", "discard", "crash", "timeout", "pruned")]
    return {"agent": agent, "seed": seed, "gap_closed": (base - best) / (base - OPTIMUM), "best": best,
            "experiments": len(ran), "kept": len(kept) - 1, "crashed": ran.count("crash"),
            "statuses": sorted({s for s, _ in rows}), "wall_s": round(time.time() - started, 1)}


def previous_checkout(ref: str, work: Path) -> Path:
    path = work / "previous"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(path), ref], check=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first-seed .. first-seed+seeds-1 (tune on one range, report another)")
    parser.add_argument("--experiments", type=int, default=20)
    parser.add_argument("--previous", default="main", help="git revision whose `search` agent is the previous default")
    parser.add_argument("--agents", default="previous,search",
                        help="comma-separated: previous, search, tpe, cmaes; NAME@K runs it with --ahead K")
    parser.add_argument("--jobs", type=int, default=1, help="seeds researched at once (each run is one process)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="search-yield-") as tmp:
        work = Path(tmp)
        previous = None
        try:
            for name in args.agents.split(","):
                base, _, ahead = name.partition("@")
                if base == "previous":
                    previous = previous or previous_checkout(args.previous, work)
                src, agent = (previous / "src", "search") if base == "previous" else (ROOT / "src", base)
                seeds = range(args.first_seed, args.first_seed + args.seeds)
                with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                    results[name] = list(pool.map(lambda seed: research(
                        src, agent, seed, args.experiments, work / name, int(ahead) if ahead else None), seeds))
        finally:
            if previous is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(previous)], check=False)
    summary = {name: {"median_gap_closed": statistics.median(r["gap_closed"] for r in rs),
                      "mean_gap_closed": statistics.fmean(r["gap_closed"] for r in rs),
                      "mean_se": statistics.stdev(r["gap_closed"] for r in rs) / math.sqrt(len(rs)) if len(rs) > 1 else 0.0,
                      "gap_closed": [round(r["gap_closed"], 3) for r in rs],
                      "experiments": [r["experiments"] for r in rs], "crashed": sum(r["crashed"] for r in rs),
                      "wall_s": round(sum(r["wall_s"] for r in rs), 1)} for name, rs in results.items()}
    if args.json:
        print(json.dumps({"summary": summary, "runs": results}, indent=1))
        return
    print(f"gap closed after {args.experiments} experiments, {args.seeds} seeds (previous = {args.previous}):")
    for name, s in summary.items():
        label = f"previous ({args.previous})" if name == "previous" else name
        print(f"  {label:16} median {100 * s['median_gap_closed']:5.1f}%   mean {100 * s['mean_gap_closed']:5.1f} "
              f"± {100 * s['mean_se']:.1f}%   per seed "
              f"{' '.join(f'{100 * g:5.1f}' for g in s['gap_closed'])}   experiments run {s['experiments']}   "
              f"crashes {s['crashed']}   {s['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
