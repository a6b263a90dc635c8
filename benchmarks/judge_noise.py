"""Noise-aware keep/discard versus the naive rule, through the real research loop.

A synthetic task whose metric is `1 - 3σ·IMPROVEMENTS + N(0, σ²)`, σ calibrated to the reference
GPT task's run-to-run spread (docs/benchmarks.md). A scripted agent proposes a shuffled mix of
no-op changes (a constant the metric ignores) and true 3σ improvements. Each mix is judged
three times: by today's default judge, by the default judge of an earlier commit (`--before`, run
from a temporary git worktree of that commit, in a subprocess), and by the naive rule (keep if
lower, once). The script prints side by side: false-keep rate of no-ops, keep rate of 3σ
improvements, and runs per candidate (every run counted: noise, confirmation, re-runs of the best).

    python benchmarks/judge_noise.py [--noops 150] [--improvements 50] [--sigma 0.01] [--seed 0]
                                     [--before 0c94869]
"""
from __future__ import annotations

import argparse
import json
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
            "noise_runs": counts.get("noise", 0), "confirm_runs": counts.get("confirm", 0)}
    print(f"{name}: {result}", file=sys.stderr, flush=True)
    return result


REPO = Path(__file__).resolve().parent.parent
BEFORE = "0c94869"  # the last commit with the fixed-design judge (z = 2, confirm all better, no drift check)


def before(ref: str, args: argparse.Namespace, tmp: Path) -> dict:
    """This benchmark's default-judge trial, run by the code of commit `ref`."""
    tree = tmp / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(tree), ref], check=True)
    try:
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--only-default", "--noops", str(args.noops),
               "--improvements", str(args.improvements), "--sigma", str(args.sigma), "--seed", str(args.seed)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--noops", type=int, default=150)
    ap.add_argument("--improvements", type=int, default=50)
    ap.add_argument("--sigma", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--before", default=BEFORE, help="git commit whose default judge is the 'before' column")
    ap.add_argument("--only-default", action="store_true", help=argparse.SUPPRESS)  # for the 'before' subprocess
    args = ap.parse_args()
    plan = ["noop"] * args.noops + ["improve"] * args.improvements
    random.Random(args.seed).shuffle(plan)
    with tempfile.TemporaryDirectory() as tmp:
        if args.only_default:
            print(json.dumps(trial(plan, JudgeConfig(), args.sigma, Path(tmp), "default")))
            return
        now = trial(plan, JudgeConfig(), args.sigma, Path(tmp), "aware")
        old = before(args.before, args, Path(tmp))
        naive = trial(plan, JudgeConfig(noise_runs=1, z=0.0, max_confirm=0, drift_check=False), args.sigma,
                      Path(tmp), "naive")
    cols = [("today", now), (f"{args.before}", old), ("naive", naive)]
    print(f"{args.noops} no-op and {args.improvements} true 3σ candidates, σ = {args.sigma}")
    print(f"{'':30}" + "".join(f"{name:>12}" for name, _ in cols) + f"{'target':>10}")
    rows = [("false-keep rate of no-ops", "false_keep", "{:.1%}", "<= 5%"),
            ("keep rate of 3σ improvements", "true_keep", "{:.1%}", ">= 90%"),
            ("runs per candidate", "per_candidate", "{:.2f}", "<= 1.6"),
            ("runs (noise, confirmation)", "runs", "{}", "")]
    for label, key, fmt, target in rows:
        print(f"{label:30}" + "".join(f"{fmt.format(r[key]):>12}" for _, r in cols) + f"{target:>10}")
    print(f"{'ratio of runs, today/before':30}{now['runs'] / old['runs']:>12.2f}")


if __name__ == "__main__":
    main()
