"""Noise-aware keep/discard versus the naive rule, through the real research loop.

A synthetic task whose metric is `1 - 3σ·IMPROVEMENTS + N(0, σ²)`, σ calibrated to the reference
GPT task's run-to-run spread (docs/benchmarks.md). A scripted agent proposes a shuffled mix of
no-op changes (a constant the metric ignores) and true 3σ improvements. Each mix is judged
twice, by the default noise-aware judge and by the naive rule (keep if lower, once), and the
script prints side by side: false-keep rate of no-ops, keep rate of 3σ improvements, and the
extra runs spent on noise estimation and confirmation as a fraction of all runs.

    python benchmarks/judge_noise.py [--noops 150] [--improvements 50] [--sigma 0.01] [--seed 0]
"""
from __future__ import annotations

import argparse
import random
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
        name = "NOOP" if kind == "noop" else "IMPROVEMENTS"
        # A fresh NOOP value every time, so that no two proposals are the same diff.
        value = consts[name] + (len(self.kinds) if kind == "noop" else 1)
        return Proposal(description=f"{kind}: {name}={value}", edits={"train.py": set_constants(source, {name: value})})


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
    runs = research.ledger.db.execute("SELECT kind, COUNT(*) FROM runs GROUP BY kind").fetchall()
    research.close()
    by_kind = {k: [e.status == "keep" for e, kk in zip(exps, agent.kinds) if kk == k] for k in ("noop", "improve")}
    counts = dict(runs)
    total = sum(counts.values())
    return {"false_keep": sum(by_kind["noop"]) / len(by_kind["noop"]),
            "true_keep": sum(by_kind["improve"]) / len(by_kind["improve"]),
            "extra_runs": (total - counts.get("primary", 0)) / total, "runs": total,
            "noise_runs": counts.get("noise", 0), "confirm_runs": counts.get("confirm", 0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--noops", type=int, default=150)
    ap.add_argument("--improvements", type=int, default=50)
    ap.add_argument("--sigma", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    plan = ["noop"] * args.noops + ["improve"] * args.improvements
    random.Random(args.seed).shuffle(plan)
    with tempfile.TemporaryDirectory() as tmp:
        aware = trial(plan, JudgeConfig(), args.sigma, Path(tmp), "aware")
        naive = trial(plan, JudgeConfig(noise_runs=1, z=0.0, max_confirm=0), args.sigma, Path(tmp), "naive")
    print(f"{args.noops} no-op and {args.improvements} true 3σ candidates, σ = {args.sigma}")
    print(f"{'':34}{'noise-aware':>14}{'naive':>10}{'target':>10}")
    print(f"{'false-keep rate of no-ops':34}{aware['false_keep']:>14.1%}{naive['false_keep']:>10.1%}{'<= 5%':>10}")
    print(f"{'keep rate of 3σ improvements':34}{aware['true_keep']:>14.1%}{naive['true_keep']:>10.1%}{'>= 90%':>10}")
    print(f"{'extra runs / all runs':34}{aware['extra_runs']:>14.1%}{naive['extra_runs']:>10.1%}")
    print(f"{'runs (noise, confirmation)':34}{aware['runs']:>7} ({aware['noise_runs']}, {aware['confirm_runs']})"
          f"{naive['runs']:>10}")


if __name__ == "__main__":
    main()
