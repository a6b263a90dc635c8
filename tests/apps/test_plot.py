"""progress.png: every experiment that ran is drawn, in a style per kind, at integer positions."""
from __future__ import annotations

from pathlib import Path

from autoresearch.apps.plot import STYLES, kind, plot_progress
from autoresearch.core.config import MetricSpec
from autoresearch.core.records import Experiment


def exp(i: int, status: str, metric: float | None, reason: str = "", description: str = "") -> Experiment:
    return Experiment(id=i, tag="t", parent_commit="p", commit="c", agent="search:tpe", status=status,
                      description=description or f"change {i}", metric=metric, reason=reason, finished_at=float(i))


def test_every_kind_of_experiment_is_drawn_and_kept_ones_are_labelled(tmp_path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exps = [exp(1, "keep", 2.46, description="baseline"), exp(2, "discard", 2.50),
            exp(3, "discard", 2.40, reason="discard: guard peak_memory_mb=900 above 1.5x baseline 500"),
            exp(4, "pruned", 2.9), exp(5, "crash", None), exp(6, "rejected", None, reason="conflicts with #7"),
            exp(7, "keep", 2.41, description="search: LEARNING_RATE=0.008"), exp(8, "timeout", None)]
    assert [kind(e) for e in exps] == ["keep", "discard", "guard", "pruned", "crash", None, "keep", "timeout"]
    figures = []
    real_close = plt.close
    plt.close = figures.append  # look at the figure before it is closed
    try:
        out = plot_progress(exps, MetricSpec("val_bpb", "minimize"), tmp_path / "progress.png")
    finally:
        plt.close = real_close
    assert out.stat().st_size > 10_000
    ax = figures[0].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {f"{STYLES[k][3]} (1)" for k in ("guard", "pruned", "crash", "timeout", "discard")} <= set(labels)
    assert "kept (2)" in labels  # the rejected proposal never ran: not drawn
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 7]
    assert ticks and all(float(t).is_integer() for t in ticks)
    notes = [a.get_text() for a in ax.texts]
    assert notes == ["#1 baseline", "#7 search: LEARNING_RATE=0.008"]
    real_close(figures[0])


def test_no_marker_hides_under_the_legend(tmp_path: Path):
    """Found on a README run (seed 1): the pruned run, drawn on the worse edge at the last position,
    sat under the legend in the top right corner; the legend said "pruned (1)" with nothing seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [2.72, 2.80, 2.91, 3.17, 2.69, 2.77, 2.72, 2.94, 2.86, 3.32]
    exps = [exp(1, "keep", values[0], description="baseline"),
            *(exp(i, "discard", v) for i, v in enumerate(values[1:], start=2)), exp(11, "pruned", None)]
    figures = []
    real_close = plt.close
    plt.close = figures.append
    try:
        plot_progress(exps, MetricSpec("val_bpb", "minimize"), tmp_path / "progress.png")
    finally:
        plt.close = real_close
    fig = figures[0]
    ax = fig.axes[0]
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    for points in ax.collections:
        for x, y in points.get_offsets():
            px, py = ax.transData.transform((x, y))
            assert not legend.contains(px, py), f"the marker at ({x}, {y:.3f}) is under the legend"
    real_close(fig)
