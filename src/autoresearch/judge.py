"""Keep or discard: compare a finished candidate with the current best.

The rule here is the original autoresearch's (strictly better metric wins), plus guard metrics
checked against the baseline. Every decision carries a one-line human-readable reason.
"""
from __future__ import annotations

from dataclasses import dataclass

from autoresearch.config import Guard, MetricSpec


@dataclass(frozen=True)
class Decision:
    keep: bool
    reason: str

    @property
    def status(self) -> str:
        return "keep" if self.keep else "discard"


def check_guards(guards: list[Guard], metrics: dict[str, float],
                 baseline: dict[str, float] | None) -> str | None:
    """The first guard violation as a reason, or None if all hold."""
    for g in guards:
        value = metrics.get(g.metric)
        if value is None:
            continue  # a run that does not report a guarded metric is not penalised for it
        if g.max is not None and value > g.max:
            return f"guard {g.metric}={value:g} above max {g.max:g}"
        if g.min is not None and value < g.min:
            return f"guard {g.metric}={value:g} below min {g.min:g}"
        base = (baseline or {}).get(g.metric)
        if base:
            if g.max_ratio is not None and value > g.max_ratio * base:
                return f"guard {g.metric}={value:g} above {g.max_ratio:g}x baseline {base:g}"
            if g.min_ratio is not None and value < g.min_ratio * base:
                return f"guard {g.metric}={value:g} below {g.min_ratio:g}x baseline {base:g}"
    return None


def judge(spec: MetricSpec, value: float, best: float, metrics: dict[str, float],
          guards: list[Guard], baseline: dict[str, float] | None) -> Decision:
    violation = check_guards(guards, metrics, baseline)
    delta = value - best
    if violation:
        return Decision(False, f"discard: {violation}")
    if spec.better(value, best):
        return Decision(True, f"keep: {spec.name} {value:.6g} ({delta:+.4g} vs best {best:.6g})")
    return Decision(False, f"discard: {spec.name} {value:.6g} ({delta:+.4g}, not better than {best:.6g})")
