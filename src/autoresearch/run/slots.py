"""Worker slots: the places where experiments run at the same time, each bound to its device.

A GPU slot sees one GPU (`CUDA_VISIBLE_DEVICES`); a CPU slot gets a share of the cores (thread
counts for the usual math libraries). By default one slot per visible GPU, else one CPU slot with
every core: a task that uses the whole machine (the reference GPT) keeps it. `--slots N` on a CPU
machine splits the cores into N slots, for tasks whose experiments use a core or two each.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "AUTORESEARCH_THREADS")


@dataclass(frozen=True)
class Slot:
    name: str  # gpu0, cpu1, ray2: shown in the live view and recorded with every run
    env: dict[str, str] = field(default_factory=dict)  # added to the experiment's environment
    cpus: float = 1.0  # what one experiment of this slot asks for (resource requests on Ray)
    gpus: float = 0.0


def cpu_count() -> int:
    """The cores this process may use (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs experiments may use: `CUDA_VISIBLE_DEVICES` when set, else what nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [g.strip() for g in visible.split(",") if g.strip()]
        return [] if ids[:1] == ["-1"] else ids
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()] if out.returncode == 0 else []


def local_slots(count: int | None = None, gpus: list[str] | None = None, cores: int | None = None) -> list[Slot]:
    """`count` slots (default: one per GPU, else one) on this machine's GPUs, else its CPU cores."""
    if count is not None and count < 1:
        raise ValueError(f"slots must be at least 1, not {count}")
    gpus = visible_gpus() if gpus is None else gpus
    cores = cores or cpu_count()
    if gpus:
        n = count or len(gpus)
        threads = str(max(1, cores // n))
        return [Slot(f"gpu{gpus[i % len(gpus)]}" + (f".{i // len(gpus)}" if n > len(gpus) else ""),
                     {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)], **{v: threads for v in THREAD_VARS}},
                     cpus=max(1, cores // n), gpus=1.0) for i in range(n)]
    n = count or 1
    threads = max(1, cores // n)
    env = {v: str(threads) for v in THREAD_VARS} if n > 1 else {}  # one slot: the libraries' own defaults
    return [Slot(f"cpu{i}", dict(env), cpus=threads) for i in range(n)]
