"""Keeping devices busy (issue 6): busy fraction per slot, and throughput scaling with slots.

Busy fraction: a task whose experiment takes RUN seconds (sleep), an agent that thinks RUN
seconds before every proposal and changes one of eight constants, in turn, to a random value (so
that a proposal made ahead still applies after another experiment is kept: a conflicting one
would be discarded unrun and its slot would wait for the next thought). The serial loop (`ahead = 0`, as the original autoresearch)
and the pipelined one (`ahead = 1`) run the same number of experiments; printed side by side is the
share of wall time each slot spends in runs (from the start of the first proposal's run to the
end of the last one; the baseline is left out), and the gap between a run's end and the next start.
Target: >= 98% per slot pipelined (serial: ~50%).

Scaling: a CPU-bound experiment (a fixed amount of pure-Python arithmetic, ~WORK seconds on an
idle core: under contention it takes longer, so a shared core shows) with the same agent thinking
no time at all (its task starts at the optimum: every experiment is one run, then a discard), run
with 1 slot and with W slots on W cores, in interleaved rounds; printed is experiments per hour and the ratio to W times
the one-slot rate. Target: >= 0.9. `--backend ray` runs the same on a local Ray cluster.

    python benchmarks/parallel.py [--run 2] [--experiments 15] [--workers 2] [--backend local|ray]
"""
from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autoresearch.agents.base import Proposal
from autoresearch.core.config import ParallelConfig, load_config
from autoresearch.repo.gitops import init_repo
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits

N_CONSTANTS = 8
SLEEP_TRAIN = "import os, time\n\n" + "".join(f"C{i} = 5.0\n\n# ---\n\n" for i in range(N_CONSTANTS)) + f"""\
time.sleep(float(os.environ["RUN_S"]))
print(f"score: {{sum((c - 1.0) ** 2 for c in ({', '.join(f'C{i}' for i in range(N_CONSTANTS))})):.6f}}")
"""
# The constants start at the optimum: every proposal is a discard, so no candidate is ever re-run
# on a new best and the count measures the machinery, not the luck of the research.
CPU_TRAIN = SLEEP_TRAIN.replace('time.sleep(float(os.environ["RUN_S"]))', """acc = 0
for i in range(int(os.environ["WORK_ITERS"])):  # a fixed amount of work: under contention it takes longer
    acc += i * i % 7""").replace("(c - 1.0)", "(c - 5.0)")
SEARCH = "\n".join(f"C{i} = {{ low = 0.0, high = 6.0 }}" for i in range(N_CONSTANTS))
CONFIG = """[task]
editable = ["train.py"]
run = "python train.py"
[budget]
seconds = 1
timeout = 120
[metric]
name = "score"
[search]
{search}
[env]
{env}
[sandbox]
enabled = false
"""


class SweepAgent:
    """Thinks `seconds` (an LLM's latency), then sets the next constant in turn to a random value."""

    name = "sweep"

    def __init__(self, seconds: float, seed: int, offset: int = 0):
        self.seconds, self.rng, self.turn = seconds, random.Random(seed), offset

    def propose(self, ctx):
        time.sleep(self.seconds)
        name, value = f"C{self.turn % N_CONSTANTS}", round(self.rng.uniform(0.0, 6.0), 3)
        self.turn += 1
        text = re.sub(rf"^{name} = .*$", f"{name} = {value}", ctx.files["train.py"], flags=re.M)
        return Proposal(f"{name} = {value}", {"train.py": text})


def make_task(root: Path, train: str, env: str, search: str) -> Path:
    root.mkdir(parents=True)
    (root / "train.py").write_text(train)
    (root / "autoresearch.toml").write_text(CONFIG.format(env=env, search=search))
    init_repo(root)
    return root


def research(root: Path, agents, parallel: ParallelConfig, experiments: int) -> tuple[Research, list]:
    config = load_config(root)
    r = Research(config, agents, tag="bench", parallel=parallel)
    r.open()
    r.run(Limits(max_experiments=experiments + 1))  # + the baseline
    # Left out: the baseline's own block of runs (its first run and the noise runs back to back). Runs
    # of the baseline made later, as the best re-measured beside a candidate, keep a slot busy too.
    runs = [run for run in r.ledger.all_runs("bench") if not (run.experiment_id == 1 and run.kind in ("primary", "noise"))]
    return r, runs


def occupancy(runs) -> dict:
    """Per slot: the share of the steady-state window spent in runs, and the gaps between one run's
    end and the next start. The window leaves out filling (until every slot has started) and draining
    (once a slot has run out of work for good: the experiment limit, not the scheduler, idles it)."""
    slots = sorted({r.slot for r in runs})
    start = max(min(r.started_at for r in runs if r.slot == s) for s in slots)
    end = min(max(r.created_at for r in runs if r.slot == s) for s in slots)
    out = {}
    for slot in slots:
        mine = sorted((r for r in runs if r.slot == slot), key=lambda r: r.started_at)
        busy = sum(max(0.0, min(r.created_at, end) - max(r.started_at, start)) for r in mine)
        gaps = [b.started_at - a.created_at for a, b in zip(mine, mine[1:])]
        out[slot] = dict(runs=len(mine), busy=busy / (end - start), window=end - start,
                         gap_median=statistics.median(gaps) if gaps else 0.0, gap_max=max(gaps, default=0.0))
    return out


def busy_fraction(tmp: Path, run_s: float, experiments: int, slots: int) -> None:
    print(f"\n== busy fraction: runs of {run_s:g}s, agents thinking {run_s:g}s per proposal, "
          f"{experiments} experiments, {slots} slot(s) ==")
    rows = []
    for label, ahead in (("serial (ahead=0)", 0), ("pipelined (ahead=1)", 1), ("pipelined (ahead=2)", 2)):
        root = make_task(tmp / f"busy-{ahead}", SLEEP_TRAIN, f'RUN_S = "{run_s}"', SEARCH)
        agents = [SweepAgent(run_s, seed=i, offset=i * N_CONSTANTS // slots) for i in range(slots)]
        r, runs = research(root, agents, ParallelConfig(slots=slots, ahead=ahead), experiments)
        r.close()
        for slot, o in occupancy(runs).items():
            rows.append((label, slot, o))
    print(f"{'loop':22} {'slot':6} {'runs':>5} {'window':>8} {'busy':>8} {'gap median':>11} {'gap max':>9}")
    for label, slot, o in rows:
        print(f"{label:22} {slot:6} {o['runs']:5d} {o['window']:7.1f}s {o['busy']:8.1%} "
              f"{o['gap_median'] * 1000:9.0f}ms {o['gap_max'] * 1000:7.0f}ms")
    worst = min(o["busy"] for label, _, o in rows if label.endswith("(ahead=2)"))
    print(f"default (ahead=2), worst slot: {worst:.1%} busy (target >= 98%: {'PASS' if worst >= 0.98 else 'FAIL'})")


def calibrate(seconds: float) -> int:
    """Iterations of CPU_TRAIN's loop that take about `seconds` on one core here."""
    n = 3_000_000
    code = 'import time\nt = time.perf_counter()\nfor i in range(%d):\n    acc = i * i %% 7\nprint(time.perf_counter() - t)'
    took = float(subprocess.run([sys.executable, "-c", code % n], capture_output=True, text=True).stdout)
    return int(n * seconds / took)


def raw_rate(root: Path, iters: int, w: int, repeats: int = 2) -> float:
    """Experiments per hour of `w` copies of the run command started side by side, no harness: the
    machine's own ceiling for W slots."""
    env = {**os.environ, "WORK_ITERS": str(iters)}
    t0 = time.perf_counter()
    for _ in range(repeats):
        procs = [subprocess.Popen([sys.executable, "train.py"], cwd=root, env=env, stdout=subprocess.DEVNULL)
                 for _ in range(w)]
        for proc in procs:
            proc.wait()
    return w * repeats / (time.perf_counter() - t0) * 3600


def scaling(tmp: Path, work_s: float, experiments: int, workers: int, backend: str, address: str | None,
            rounds: int) -> None:
    iters = calibrate(work_s)
    print(f"\n== scaling: CPU-bound experiments (a fixed amount of arithmetic: ~{work_s:g}s on an idle core), "
          f"an agent that does not think, backend {backend}, {rounds} interleaved rounds ==")
    if backend == "ray" and address is None:  # one cluster for every measurement, warmed up
        import ray

        from autoresearch.run.ray_backend import _local_cluster_env
        _local_cluster_env()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        time.sleep(10)  # Ray's own processes are busy for a few seconds after start
    runs_done = {1: 0, workers: 0}
    seconds = {1: 0.0, workers: 0.0}
    raw = {1: [], workers: []}
    for k in range(rounds):  # this machine's speed drifts (shared host): alternate, then compare totals
        for w in (1, workers):
            root = make_task(tmp / f"scale-{backend}-{k}-{w}", CPU_TRAIN, f'WORK_ITERS = "{iters}"', SEARCH)
            parallel = ParallelConfig(slots=w, ahead=2, backend=backend, address=address, cpus_per_slot=1.0)
            r, runs = research(root, [SweepAgent(0.0, seed=w)], parallel, experiments * w)
            r.close()
            window = max(x.created_at for x in runs) - min(x.started_at for x in runs)
            runs_done[w] += len(runs)
            seconds[w] += window
            raw[w].append(raw_rate(root, iters, w))
            print(f"round {k + 1}, {w} slot(s): {len(runs)} runs in {window:.1f}s = {len(runs) / window * 3600:,.0f} "
                  f"experiments/hour (mean run {statistics.fmean(x.wall_s or 0.0 for x in runs):.2f}s); "
                  f"the bare commands: {raw[w][-1]:,.0f}/hour")
    rate = {w: runs_done[w] / seconds[w] * 3600 for w in runs_done}
    ratio = rate[workers] / (workers * rate[1])
    ceiling = statistics.fmean(raw[workers]) / (workers * statistics.fmean(raw[1]))
    print(f"autoresearch: {rate[1]:,.0f}/hour with 1 slot, {rate[workers]:,.0f}/hour with {workers}")
    print(f"{workers} slots vs {workers} x 1 slot: {ratio:.3f} (target >= 0.9: {'PASS' if ratio >= 0.9 else 'FAIL'}); "
          f"the bare commands side by side on this machine: {ceiling:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=float, default=2.0, help="experiment (and thinking) seconds, busy part")
    ap.add_argument("--experiments", type=int, default=15, help="experiments per configuration (per slot)")
    ap.add_argument("--workers", type=int, default=2, help="slots for the scaling part (at most the cores)")
    ap.add_argument("--work", type=float, default=2.0, help="seconds of CPU work per experiment, scaling part")
    ap.add_argument("--backend", choices=("local", "ray"), default="local")
    ap.add_argument("--address", help="Ray cluster address (default: start a local one)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the scaling part")
    ap.add_argument("--only", choices=("busy", "scaling"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "busy"):
            busy_fraction(Path(tmp), args.run, args.experiments, 1)
            busy_fraction(Path(tmp) / "two", args.run, args.experiments, args.workers)
        if args.only in (None, "scaling"):
            scaling(Path(tmp), args.work, args.experiments, args.workers, args.backend, args.address, args.rounds)


if __name__ == "__main__":
    main()
