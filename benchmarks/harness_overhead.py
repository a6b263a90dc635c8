"""Harness overhead per experiment: everything but the experiment's process and the agent's thinking.

Runs N experiments (default 120) of a trivial task whose run command takes a few milliseconds,
with the `random` agent, and prints the overhead per experiment and as a fraction of wall time.
Target (issue 3): at most 0.2 s per experiment.

    python benchmarks/harness_overhead.py [--experiments 120]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from autoresearch.agents import make_agent
from autoresearch.core.config import load_config
from autoresearch.repo.gitops import init_repo
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits

TRAIN = "X = 5.0\nWIDTH = 3\n"
CONFIG = """[task]
editable = ["train.py"]
run = "sed -n 's/^X = /score: /p' train.py"
[budget]
seconds = 1
timeout = 10
[metric]
name = "score"
[search]
X = { low = -5.0, high = 10.0 }
WIDTH = { low = 1, high = 12 }
"""
TARGET_S = 0.2


class TimedAgent:
    """Wraps an agent to measure its thinking time, which is not harness overhead."""

    def __init__(self, agent):
        self.inner, self.name, self.seconds = agent, agent.name, 0.0

    def propose(self, ctx):
        t = time.perf_counter()
        try:
            return self.inner.propose(ctx)
        finally:
            self.seconds += time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", type=int, default=120)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "trivial"
        root.mkdir()
        (root / "train.py").write_text(TRAIN)
        (root / "autoresearch.toml").write_text(CONFIG)
        init_repo(root)  # the task is a git repository of its own
        config = load_config(root)
        agent = TimedAgent(make_agent("random", config, seed=0))
        research = Research(config, agent, tag="bench")
        research.open()
        t0 = time.perf_counter()
        research.run(Limits(max_experiments=args.experiments))
        wall = time.perf_counter() - t0
        exps = research.ledger.experiments("bench")
        research.close()
    in_process = sum(e.wall_s or 0.0 for e in exps)
    overhead = wall - in_process - agent.seconds
    per = overhead / max(len(exps), 1)
    print(f"experiments:              {len(exps)} (the baseline included)")
    print(f"wall time:                {wall:.2f} s")
    print(f"  experiment processes:   {in_process:.2f} s ({in_process / wall:.1%})")
    print(f"  agent thinking:         {agent.seconds:.2f} s ({agent.seconds / wall:.1%})")
    print(f"  harness overhead:       {overhead:.2f} s ({overhead / wall:.1%})")
    print(f"overhead per experiment:  {per * 1000:.0f} ms (target <= {TARGET_S * 1000:.0f} ms: "
          f"{'PASS' if per <= TARGET_S else 'FAIL'})")


if __name__ == "__main__":
    main()
