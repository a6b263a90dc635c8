"""progress.png: every experiment that ran as a marker, the kept ones joined as the best-so-far line.

Invariant: each experiment that ran (kept, discarded, broke a guard or the budget, pruned, crashed,
timed out) is one marker at its integer position in the order decided, in a style of its own, and
every kept one is labelled with its id and description. Runs without a metric sit on the worse edge
of the plot. Proposals that never ran (rejected) are not experiments and are not drawn.
"""
from __future__ import annotations

from pathlib import Path

from autoresearch.core.config import MetricSpec
from autoresearch.core.records import Experiment

# kind -> (colour, marker, size, legend label)
STYLES = {"keep": ("#2ca02c", "o", 44, "kept"), "discard": ("#9e9e9e", "o", 22, "discarded"),
          "guard": ("#9467bd", "s", 26, "broke a guard or the budget"), "pruned": ("#17becf", "v", 28, "pruned"),
          "crash": ("#d62728", "x", 30, "crashed"), "timeout": ("#ff7f0e", "x", 30, "timed out")}
GUARD_REASONS = ("discard: guard", "discard: over budget")
LABEL_CHARS = 40


def kind(exp: Experiment) -> str | None:
    """How an experiment is drawn (a key of STYLES), or None when it never ran."""
    if exp.status == "discard" and exp.reason.startswith(GUARD_REASONS):
        return "guard"
    return exp.status if exp.status in STYLES else None


def plot_progress(experiments: list[Experiment], spec: MetricSpec, out: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    # In the order of the decisions: with parallel slots, an experiment may be decided after later ones.
    runs = sorted((e for e in experiments if kind(e)), key=lambda e: (e.finished_at or 0.0, e.id))
    if not runs:
        raise ValueError("no finished experiments to plot yet")
    fig, ax = plt.subplots(figsize=(12, 6), dpi=120)
    measured = [e.metric for e in runs if e.metric is not None]
    low, high = (min(measured), max(measured)) if measured else (0.0, 1.0)
    # Failed runs have no metric: show them on the worse edge of the plot so they are still seen.
    edge = high + 0.05 * (high - low or 1.0) if spec.direction == "minimize" else low - 0.05 * (high - low or 1.0)
    x = {e.id: i for i, e in enumerate(runs, start=1)}
    for name, (color, marker, size, label) in STYLES.items():
        group = [e for e in runs if kind(e) == name]
        if group:
            ax.scatter([x[e.id] for e in group], [e.metric if e.metric is not None else edge for e in group],
                       s=size, c=color, marker=marker, label=f"{label} ({len(group)})", zorder=3, alpha=0.85)
    _best_line(ax, runs, x)
    arrow = "lower" if spec.direction == "minimize" else "higher"
    ax.set_xlabel("experiment (in the order decided)")
    ax.set_ylabel(f"{spec.name} ({arrow} is better)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, len(runs) + 0.5)
    n_keep = sum(1 for e in runs if e.status == "keep")
    ax.set_title(title or f"autoresearch progress: {len(runs)} experiments, {n_keep} kept")
    ax.grid(alpha=0.3)
    # Beside the axes, not on them: inside, it can hide a marker (a failed run sits on the edge).
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _best_line(ax, runs: list[Experiment], x: dict[int, int]) -> None:
    kept = [e for e in runs if e.status == "keep" and e.metric is not None]
    if not kept:
        return
    color = STYLES["keep"][0]
    ax.step([x[e.id] for e in kept] + [len(runs)], [e.metric for e in kept] + [kept[-1].metric], where="post",
            color=color, linewidth=1.8, zorder=2, label="best so far")
    for e in kept:
        text = f"#{e.id} {e.description}"
        label = text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"
        ax.annotate(label, (x[e.id], e.metric), textcoords="offset points", xytext=(4, 6), fontsize=7,
                    rotation=20, color="#1b5e20")
