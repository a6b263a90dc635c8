"""progress.png: every experiment as a dot, the kept ones joined as the best-so-far line."""
from __future__ import annotations

from pathlib import Path

from autoresearch.core.config import MetricSpec
from autoresearch.core.records import Experiment

COLORS = {"keep": "#2ca02c", "discard": "#9e9e9e", "crash": "#d62728", "timeout": "#ff7f0e", "pruned": "#9467bd"}
MARKERS = {"crash": "x", "timeout": "x", "pruned": "v"}  # no metric: drawn on the worse edge
LABEL_CHARS = 40


def plot_progress(experiments: list[Experiment], spec: MetricSpec, out: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # In the order of the decisions: with parallel slots, an experiment may be decided after later ones.
    runs = sorted((e for e in experiments if e.status in COLORS), key=lambda e: (e.finished_at or 0.0, e.id))
    if not runs:
        raise ValueError("no finished experiments to plot yet")
    fig, ax = plt.subplots(figsize=(12, 6), dpi=120)
    measured = [e.metric for e in runs if e.metric is not None]
    low, high = (min(measured), max(measured)) if measured else (0.0, 1.0)
    # Failed runs have no metric: show them on the worse edge of the plot so they are still seen.
    edge = high + 0.05 * (high - low or 1.0) if spec.direction == "minimize" else low - 0.05 * (high - low or 1.0)
    for status, color in COLORS.items():
        xs = [i for i, e in enumerate(runs) if e.status == status]
        ys = [runs[i].metric if runs[i].metric is not None else edge for i in xs]
        if xs:
            ax.scatter(xs, ys, s=22 if status != "keep" else 40, c=color, label=f"{status} ({len(xs)})",
                       marker=MARKERS.get(status, "o"), zorder=3, alpha=0.85)
    kept = [(i, e) for i, e in enumerate(runs) if e.status == "keep" and e.metric is not None]
    if kept:
        xs = [i for i, _ in kept] + [len(runs) - 1]
        ys = [e.metric for _, e in kept] + [kept[-1][1].metric]
        ax.step(xs, ys, where="post", color=COLORS["keep"], linewidth=1.8, zorder=2, label="best so far")
        for i, e in kept:
            label = e.description if len(e.description) <= LABEL_CHARS else e.description[:LABEL_CHARS - 1] + "…"
            ax.annotate(label, (i, e.metric), textcoords="offset points", xytext=(4, 6), fontsize=7,
                        rotation=20, color="#1b5e20")
    arrow = "lower" if spec.direction == "minimize" else "higher"
    ax.set_xlabel("experiment (in the order decided)")
    ax.set_ylabel(f"{spec.name} ({arrow} is better)")
    n_keep = sum(1 for e in runs if e.status == "keep")
    ax.set_title(title or f"autoresearch progress: {len(runs)} experiments, {n_keep} kept")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right" if spec.direction == "minimize" else "lower right", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
