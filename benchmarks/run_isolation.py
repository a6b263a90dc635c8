"""What isolation costs per run: the runner's `true` plain, in a cgroup, sandboxed, and both.

Each round runs one of each, interleaved (the machine is noisy; side by side is fair), through
`runner.run_command` as the harness does, and prints the median per configuration and its ratio
to the plain run. Started as root, the sandbox runs experiments as `nobody` (setpriv), as it does
in a research run.

    python benchmarks/run_isolation.py [--rounds 30]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from autoresearch.run import cgroups
from autoresearch.run.runner import clean_env, run_command
from autoresearch.run.sandbox import SandboxPolicy, describe, sandbox_available

GROUP = "autoresearch-bench"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    configs = {"plain": (None, None)}
    if cgroups.available():
        configs["cgroup"] = (None, GROUP)
    if sandbox_available():
        configs["sandbox"] = (SandboxPolicy(), None)
        if cgroups.available():
            configs["sandbox + cgroup"] = (SandboxPolicy(), GROUP)
    times: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        work = repo / "wt"
        work.mkdir(parents=True)
        env = clean_env()
        for i in range(args.rounds + 1):
            for name, (policy, group) in configs.items():
                t = time.perf_counter()
                r = run_command("true", work, env=env, timeout_s=30, log_path=Path(tmp) / "log", sandbox=policy,
                                cgroup=group, limits=cgroups.ResourceLimits(memory_mb=1024, processes=256))
                if r.status != "ok":
                    raise SystemExit(f"{name}: {r.status} {r.log_tail}")
                if i:  # the first round warms caches and probes
                    times[name].append(time.perf_counter() - t)
    cgroups.remove_group(GROUP)
    print(f"{args.rounds} interleaved rounds of `true` through runner.run_command (uid {os.geteuid()}; "
          f"{describe(SandboxPolicy()) if sandbox_available() else 'no bwrap'})")
    plain = statistics.median(times["plain"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:18} median {median * 1000:6.1f} ms   x{median / plain:4.2f} of plain")


if __name__ == "__main__":
    main()
