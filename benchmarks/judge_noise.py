"""Noise-aware keep/discard versus the naive rule, through the real research loop.

A synthetic task whose metric is `1 - 3σ·IMPROVEMENTS + N(0, σ²)`, σ calibrated to the reference
GPT task's run-to-run spread (docs/benchmarks.md). A scripted agent proposes a shuffled mix of
no-op changes (a constant the metric ignores) and true 3σ improvements. Each mix is judged
three times: by today's default judge, by the default judge of an earlier commit (`--before`, run
from a temporary git worktree of that commit, in a subprocess), and by the naive rule (keep if
lower, once). The script prints side by side: false-keep rate of no-ops, keep rate of 3σ
improvements, and runs per candidate (every run counted: noise, confirmation, re-runs of the best).

    python benchmarks/judge_noise.py [--noops 150] [--improvements 50] [--sigma 0.01] [--seed 0]
                                     [--seeds 1] [--before 0c94869] [--no-naive]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from autoresearch.agents.base import Context, NoProposal, Proposal
from autoresearch.agents.source_constants import find_constants, set_constants
from autoresearch.core.config import JudgeConfig, load_config
from autoresearch.repo.gitops import init_repo
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits

TRAIN = """import os, random
IMPROVEMENTS = 0
NOOP = 0
SIGMA = {sigma}
random.seed(os.urandom(8))
print(f"score: {{1.0 - 3 * SIGMA * IMPROVEMENTS + random.gauss(0, SIGMA):.8f}}")
"""
CONFIG = """[task]
editable = ["train.py"]
run = "python train.py"
[budget]
seconds = 1
timeout = 30
overrun = 30  # this measures the judge: a run slowed by a loaded machine is not cut as over budget
[metric]
name = "score"
[parallel]
ahead = 0  # serial: each proposal is made on the best of its time, so the judge alone decides
"""


class MixAgent:
    """Proposes the planned sequence: 'noop' bumps NOOP, 'improve' bumps IMPROVEMENTS."""

    name = "mix"

    def __init__(self, plan: list[str]):
        self.plan = list(plan)
        self.kinds: list[str] = []

    def propose(self, ctx: Context) -> Proposal:
        if not self.plan:
            raise NoProposal("plan done")
        kind = self.plan.pop(0)
        self.kinds.append(kind)
        source = ctx.files["train.py"]
        consts = {n: c.value for n, c in find_constants(source).items()}
        # A fresh NOOP value every time, so that no two proposals are the same diff (an improvement
        # proposed again after one was discarded would otherwise be rejected as a duplicate).
        values = {"NOOP": consts["NOOP"] + len(self.kinds)}
        if kind == "improve":
            values["IMPROVEMENTS"] = consts["IMPROVEMENTS"] + 1
        return Proposal(description=f"{kind}: {values}", edits={"train.py": set_constants(source, values)})


def trial(plan: list[str], judge: JudgeConfig, sigma: float, tmp: Path, name: str) -> dict:
    root = tmp / name
    root.mkdir()
    (root / "train.py").write_text(TRAIN.format(sigma=sigma))
    (root / "autoresearch.toml").write_text(CONFIG)
    init_repo(root)  # the task is a git repository of its own
    config = load_config(root)
    config.judge = judge
    agent = MixAgent(plan)
    research = Research(config, agent, tag="bench")
    research.open()
    research.run(Limits())
    exps = [e for e in research.ledger.experiments("bench") if e.agent == "mix"]
    runs = list(research.ledger.db.execute("SELECT kind, COUNT(*) FROM runs GROUP BY kind"))
    research.close()
    by_kind = {k: [e.status == "keep" for e, kk in zip(exps, agent.kinds) if kk == k] for k in ("noop", "improve")}
    counts = dict(runs)
    total = sum(counts.values())
    result = {"false_keep": sum(by_kind["noop"]) / len(by_kind["noop"]),
            "true_keep": sum(by_kind["improve"]) / len(by_kind["improve"]),
            "extra_runs": (total - counts.get("primary", 0)) / total, "runs": total, "per_candidate": total / len(exps),
            "noise_runs": counts.get("noise", 0), "confirm_runs": counts.get("confirm", 0),
            "cut": sum(1 for e in exps if "failed" in e.reason or "over budget" in e.reason)}
    print(f"{name}: {result}", file=sys.stderr, flush=True)
    return result


REPO = Path(__file__).resolve().parent.parent
BEFORE = "0c94869"  # the last commit with the fixed-design judge (z = 2, confirm all better, no drift check)


def before(ref: str, args: argparse.Namespace, seeds: list[int], tmp: Path) -> list[dict]:
    """This benchmark's default-judge trial for each seed, run by the code of commit `ref`."""
    tree = tmp / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(tree), ref], check=True)
    try:
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        results = []
        for seed in seeds:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--only-default", "--noops", str(args.noops),
                   "--improvements", str(args.improvements), "--sigma", str(args.sigma), "--seed", str(seed)]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)


def mix(args: argparse.Namespace, seed: int) -> list[str]:
    plan = ["noop"] * args.noops + ["improve"] * args.improvements
    random.Random(seed).shuffle(plan)
    return plan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--noops", type=int, default=150)
    ap.add_argument("--improvements", type=int, default=50)
    ap.add_argument("--sigma", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0, help="the first seed (the mix's order; the noise is fresh)")
    ap.add_argument("--seeds", type=int, default=1, help="how many seeds, from --seed on; each a mix of its own")
    ap.add_argument("--before", default=BEFORE, help="git commit whose default judge is the 'before' column ('': none)")
    ap.add_argument("--no-naive", action="store_true", help="leave out the naive rule's column")
    ap.add_argument("--only-default", action="store_true", help=argparse.SUPPRESS)  # for the 'before' subprocess
    args = ap.parse_args()
    seeds = list(range(args.seed, args.seed + args.seeds))
    with tempfile.TemporaryDirectory() as tmp:
        if args.only_default:
            print(json.dumps(trial(mix(args, args.seed), JudgeConfig(), args.sigma, Path(tmp), "default")))
            return
        cols: list[tuple[str, list[dict]]] = []
        now = []
        for seed in seeds:
            now.append(trial(mix(args, seed), JudgeConfig(), args.sigma, Path(tmp), f"aware-{seed}"))
        cols.append(("today", now))
        if args.before:
            cols.append((f"{args.before}", before(args.before, args, seeds, Path(tmp))))
        if not args.no_naive:
            naive = JudgeConfig(noise_runs=1, z=0.0, max_confirm=0, drift_check=False, recheck=False)
            cols.append(("naive", [trial(mix(args, s), naive, args.sigma, Path(tmp), f"naive-{s}") for s in seeds]))
    print(f"{args.noops} no-op and {args.improvements} true 3σ candidates, σ = {args.sigma}, seeds {seeds}")
    rows = [("false-keep rate of no-ops", "false_keep", "{:.1%}", "<= 5%"),
            ("keep rate of 3σ improvements", "true_keep", "{:.1%}", ">= 90%"),
            ("runs per candidate", "per_candidate", "{:.2f}", "<= 1.6"),
            ("runs (noise, confirmation)", "runs", "{:.0f}", ""),
            ("candidates cut (failed runs)", "cut", "{:.0f}", "")]
    for i, seed in enumerate(seeds if len(seeds) > 1 else []):
        print(f"seed {seed}: " + "; ".join(f"{name} " + " ".join(fmt.format(r[i][key]) for _, key, fmt, _ in rows[:3])
                                         for name, r in cols))
    label = "mean [min, max] over seeds" if len(seeds) > 1 else ""
    print(f"{label:30}" + "".join(f"{name:>24}" for name, _ in cols) + f"{'target':>10}")
    for text, key, fmt, target in rows:
        cells = []
        for _, results in cols:
            xs = [r.get(key, math.nan) for r in results]  # an older commit's trial may not count `cut`
            cell = fmt.format(sum(xs) / len(xs))
            cells.append(cell + (f" [{fmt.format(min(xs))}, {fmt.format(max(xs))}]" if len(xs) > 1 else ""))
        print(f"{text:30}" + "".join(f"{c:>24}" for c in cells) + f"{target:>10}")
    if args.before:
        old = cols[1][1]
        print(f"{'ratio of runs, today/before':30}{sum(r['runs'] for r in now) / sum(r['runs'] for r in old):>24.2f}")


if __name__ == "__main__":
    main()
