"""Pruning in the loop: a candidate's progress, read live, against the best's recorded curves.

Every run gets a `Watch` (Pruner.watch): its `feed` takes the run's output lines (runner.py's
on_output, from the reader thread; the Ray backend forwards the worker's lines the same way) and
collects the run's curve, which the Measurer records with the run. A candidate's primary run is
watched *against its best*: the best's curves and the research run's repeated curves (for the
noise) are read from the ledger once, at the start, and each new progress point is checked by the
rule in core/pruning.py. Once it says so, `should_stop` turns true, the runner kills the run's whole
process tree as for any stop, and the Measurer records the run and the experiment as `pruned`
with the verdict's reason. The baseline and the best's own runs are never watched against
anything, so they are never stopped.
"""
from __future__ import annotations

from autoresearch.core.config import TaskConfig
from autoresearch.core.progress import Curve
from autoresearch.core.pruning import Series, Verdict, check
from autoresearch.core.records import Experiment
from autoresearch.store.ledger import Ledger


class Watch:
    """The progress of one run as it goes, and (against a best) whether to stop it."""

    def __init__(self, config: TaskConfig | None = None, name: str | None = None, best: list[Series] | None = None,
                 groups: list[list[Series]] | None = None):
        self.curve = Curve()
        self.config, self.name = config, name
        self.best, self.groups = best or [], groups or []
        self.verdict: Verdict | None = None

    @property
    def armed(self) -> bool:
        """Whether this run can be pruned at all (a best curve and a noise estimate to compare with)."""
        return self.config is not None and self.name is not None and bool(self.best) and bool(self.groups)

    def feed(self, line: str) -> None:
        point = self.curve.feed(line)
        if point is None or self.verdict is not None or not self.armed:
            return
        t, values = point
        if self.name in values:
            assert self.config is not None and self.name is not None
            prune = self.config.prune
            minimize = (prune.direction or self.config.metric.direction) == "minimize"
            self.verdict = check(prune, self.name, minimize, t, values[self.name], self.best, self.groups)

    def should_stop(self) -> bool:
        return self.verdict is not None


class Pruner:
    """Makes the Watch of each run from the task's [prune] section and the ledger."""

    def __init__(self, config: TaskConfig, ledger: Ledger, tag: str):
        self.config, self.ledger, self.tag = config, ledger, tag

    def watch(self, best: Experiment | None = None) -> Watch:
        """A Watch that records the curve; armed against `best`'s curves when pruning is on and it has some."""
        if best is None or not self.config.prune.enabled:
            return Watch()
        curves = [Curve.from_json(c) for c in self.ledger.run_curves(best.id)]
        curves = [c for c in curves if c.points]
        if not curves:
            return Watch()  # the task prints no progress (or the best ran before it did)
        name = self.metric_name(curves[0])
        groups = [[Curve.from_json(c).series(name) for c in group] for group in self.ledger.curve_groups(self.tag)]
        return Watch(self.config, name, [c.series(name) for c in curves], [g for g in groups if len(g) > 1])

    def metric_name(self, curve: Curve) -> str:
        """[prune] metric, else the task's [metric] name when its progress lines report it, else their first value."""
        names = curve.names()
        if self.config.prune.metric:
            return self.config.prune.metric
        return self.config.metric.name if self.config.metric.name in names else names[0]
