"""The progress protocol: what a run may print while it trains, so that a doomed run can be stopped.

A progress line is

    progress: t=0.35 train_loss=2.9134 [name=value ...]

`t` is the share of the time budget spent so far (0 to 1); each `name=value` is a number the run
measured at that point (lower or higher is better as the task's [prune] section says). Any task
may print such lines, none has to: a run without them is simply never pruned. The harness reads
them from the run's output as it goes (runner.py's `on_output`), keeps them as the run's *curve*
and records the curve with the run in the ledger.

The lines come from the experiment, so they are untrusted and bounded: a line longer than
MAX_LINE_CHARS is ignored, at most MAX_NAMES values per line are kept, values that are not valid
metrics (NaN, inf, beyond ±MAX_ABS_METRIC) are dropped, `t` must lie in [0, 1] and grow by at
least MIN_STEP from the last point kept, so a curve never holds more than MAX_POINTS points
however much a run prints. A lying curve can only hurt its own run: pruning stops runs, it never
keeps one (the final metric decides that).
"""
from __future__ import annotations

import math
import re
from bisect import bisect_left
from typing import Any

from autoresearch.core.metrics import NUMBER, valid_metric

PREFIX = "progress:"
MAX_LINE_CHARS = 1024  # a real progress line is a few dozen characters
MAX_NAMES = 8  # values kept per point
MAX_NAME_CHARS = 64
MIN_STEP = 0.005  # in shares of the budget: one point per half a percent at most
MAX_POINTS = int(1 / MIN_STEP) + 1  # t from 0 to 1 in steps of MIN_STEP

_PAIR = re.compile(rf"([A-Za-z_][A-Za-z0-9_./-]{{0,{MAX_NAME_CHARS - 1}}})=({NUMBER})(?=\s|$)", re.IGNORECASE)

Point = tuple[float, dict[str, float]]  # (t, {name: value})


def parse_progress(line: str) -> Point | None:
    """The point a progress line reports, or None when the line is not a valid one."""
    if len(line) > MAX_LINE_CHARS:
        return None
    text = line.strip()
    if not text.startswith(PREFIX):
        return None
    values: dict[str, float] = {}
    t = None
    for m in _PAIR.finditer(text, len(PREFIX)):
        name, value = m.group(1), float(m.group(2))
        if name == "t":
            t = value
        elif name not in values and len(values) < MAX_NAMES and valid_metric(value):
            values[name] = value
    if t is None or not math.isfinite(t) or not 0.0 <= t <= 1.0 or not values:
        return None
    return t, values


class Curve:
    """The progress points of one run, in the order of t, capped as the module docstring says."""

    def __init__(self, points: list[Point] | None = None):
        self.points: list[Point] = []
        for t, values in points or ():
            self.add(t, values)

    def feed(self, line: str) -> Point | None:
        """Take one output line; the point it added, or None (not a progress line, or not kept)."""
        point = parse_progress(line)
        return point if point is not None and self.add(*point) else None

    def add(self, t: float, values: dict[str, float]) -> bool:
        if self.points and t < self.points[-1][0] + MIN_STEP:
            return False
        self.points.append((t, values))
        return True

    def series(self, name: str) -> list[tuple[float, float]]:
        """(t, value) of every point that reports `name`."""
        return [(t, v[name]) for t, v in self.points if name in v]

    def names(self) -> list[str]:
        """The value names of the first point, in the order the run printed them."""
        return list(self.points[0][1]) if self.points else []

    def to_json(self) -> list[list[Any]]:
        return [[t, dict(v)] for t, v in self.points]

    @classmethod
    def from_json(cls, data: Any) -> Curve:
        """A curve as recorded (to_json); anything malformed in it is left out, never raised."""
        points: list[Point] = []
        for item in data if isinstance(data, list) else ():
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict) and \
                    isinstance(item[0], (int, float)) and math.isfinite(item[0]) and 0 <= item[0] <= 1:
                values = {str(k): float(v) for k, v in list(item[1].items())[:MAX_NAMES]
                          if isinstance(v, (int, float)) and not isinstance(v, bool) and valid_metric(v)}
                if values:
                    points.append((float(item[0]), values))
        return cls(points)


def curve_from_text(text: str) -> Curve:
    """The curve of a whole run output (a log file)."""
    curve = Curve()
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        curve.feed(line)
    return curve


def value_at(series: list[tuple[float, float]], t: float) -> float | None:
    """The series linearly interpolated at t; None outside the t it covers."""
    if not series or t < series[0][0] or t > series[-1][0]:
        return None
    i = bisect_left(series, (t, -math.inf))
    if series[i][0] == t or i == 0:
        return series[i][1]
    (t0, v0), (t1, v1) = series[i - 1], series[i]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
