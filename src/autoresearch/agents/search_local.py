"""The trust region of the offline search: which constants a proposal changes, and how far.

Invariant: a proposal changes at most `schedule(n, d)`'s number of constants, each within its
radius of the incumbent (the current best) on the range's own scale (log ranges in log space,
choices by their position), and both only grow with the number of experiments `n`: during the
local start (the first `local_trials(d)` experiments) one to three constants move by a modest step
around the best, later more constants move further. A memory-heavy constant never grows more than
MAX_MEMORY_GROWTH x in one step. The samplers (search.py) decide the values inside this region.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from autoresearch.agents.search_defaults import MAX_MEMORY_GROWTH, is_memory_heavy
from autoresearch.core.config import SearchParam

Number = int | float

LOCAL_MIN_TRIALS = 12  # the local start lasts at least this many experiments...
LOCAL_TRIALS_PER_DIM = 1  # ...and one per searched constant (each gets tried at least once)
LOCAL_SIZES = (1, 2, 3)  # how many constants one local proposal changes...
LOCAL_SIZE_WEIGHTS = (0.5, 0.3, 0.2)  # ...mostly one: its effect is measured alone
RADIUS_START = 0.12  # an eighth of the range: a 10x log range moves by up to 1.3x, a [0, 0.3] one by 0.036
RADIUS_MAX = 0.5  # after the local start the region widens to half of every range
EXHAUSTED_WEIGHT = 0.3  # per round lost both ways from the best: a constant is picked this much less often...
SHRINK = 0.57  # ...and its radius shrinks by this factor (a finer step around the same best)
RECENT_PER_DIM = 1  # constants changed in the last d experiments are picked less often


def local_trials(d: int) -> int:
    return max(LOCAL_MIN_TRIALS, LOCAL_TRIALS_PER_DIM * d)


def schedule(n: int, d: int) -> tuple[int, float]:
    """(most constants changed at once, radius) for a proposal after `n` experiments of `d` constants."""
    start = local_trials(d)
    if n < start:
        return min(d, LOCAL_SIZES[-1]), RADIUS_START
    later = (n - start) / start
    return min(d, LOCAL_SIZES[-1] + int(later * d / 2)), min(RADIUS_MAX, RADIUS_START * (1 + later))


def subset_size(rng: random.Random, most: int) -> int:
    if most <= LOCAL_SIZES[-1]:
        sizes = [s for s in LOCAL_SIZES if s <= most]
        return rng.choices(sizes, weights=LOCAL_SIZE_WEIGHTS[:len(sizes)])[0]
    return rng.randint(1, most)


def pick(rng: random.Random, names: list[str], k: int, recent: dict[str, int],
         rounds: dict[str, int] | None = None) -> list[str]:
    """`k` names, drawn without replacement: those changed less recently more likely, and each round
    a constant lost on both sides from the current best (`rounds`) makes it EXHAUSTED_WEIGHT as likely."""
    pool, out, rounds = list(names), [], rounds or {}
    while pool and len(out) < k:
        weights = [EXHAUSTED_WEIGHT ** rounds.get(n, 0) / (1 + recent.get(n, 0)) for n in pool]
        chosen = rng.choices(pool, weights=weights)[0]
        pool.remove(chosen)
        out.append(chosen)
    return out


def position(value: Number, param: SearchParam) -> float:
    """Where `value` lies in the range of `param`, from 0 (low) to 1 (high), on the range's scale."""
    if param.choices is not None:
        choices = sorted(param.choices)
        nearest = min(range(len(choices)), key=lambda i: abs(choices[i] - value))
        return nearest / max(1, len(choices) - 1)
    low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
    if high <= low:
        return 0.0
    if param.log and value > 0 and low > 0:
        z = (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    else:
        z = (value - low) / (high - low)
    return min(1.0, max(0.0, z))


def value_at(z: float, param: SearchParam) -> Number:
    """The inverse of `position` (for choices: the choice nearest to `z`)."""
    z = min(1.0, max(0.0, z))
    if param.choices is not None:
        choices = sorted(param.choices)
        return choices[round(z * (len(choices) - 1))]
    low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
    if param.log and low > 0:
        return math.exp(math.log(low) + z * (math.log(high) - math.log(low)))
    return low + z * (high - low)


@dataclass(frozen=True)
class Step:
    """The moves of one constant around the incumbent, as a signed step `s` in [-1, 1] that the
    sampler chooses: |s| = 0 is the smallest step that changes the written value (`shortest`),
    |s| = 1 the radius. Steps too small to change the written value are left out of the coordinate,
    so a sampler that favours the incumbent's neighbourhood still proposes a real change."""

    name: str
    param: SearchParam
    current: Number
    shortest: float  # in positions (0..1 of the range)
    longest: float
    cap: float  # memory-heavy constants: the largest value one step may reach
    side: int = 0  # +1 / -1: only up / down (the other side was tried from here and lost); 0: both

    def value(self, s: float) -> Number:
        sign = self.side or (-1.0 if s < 0 else 1.0)
        dz = sign * (self.shortest + abs(s) * (self.longest - self.shortest))
        v = value_at(position(self.current, self.param) + dz, self.param)
        if v > self.cap:
            v = self.cap if self.param.choices is None else max(c for c in self.param.choices if c <= self.cap)
        return v

    def coordinate(self, value: Number) -> float | None:
        """The step `value` is from the incumbent (0 for the incumbent), None outside the region."""
        dz = position(value, self.param) - position(self.current, self.param)
        if abs(dz) > self.longest + 1e-9:
            return None
        span = self.longest - self.shortest
        if span <= 0:
            return 0.0
        # clamped: a value at the radius can come back a rounding error outside [-1, 1], which the
        # sampler's distribution refuses (it stopped a research run)
        return math.copysign(min(1.0, max(0.0, abs(dz) - self.shortest) / span), dz)


def step(name: str, param: SearchParam, current: Number, radius: float, lost: tuple[int, ...] = (),
         blamed: int = 0) -> Step | None:
    """The moves of `name` within `radius` of `current` (None: it cannot move), given the sides of its
    lost single changes from there, in order (`lost`): after a loss the other side is tried, and each
    round lost on both sides shrinks the radius by SHRINK (pattern search: a finer step). Without a
    single change to go by, a side only ever lost in joint changes (`blamed`) is not tried again."""
    radius *= SHRINK ** (len(lost) // 2)
    cap = current * MAX_MEMORY_GROWTH if is_memory_heavy(name) and current > 0 else math.inf
    if param.choices is not None:
        values = sorted(param.choices)
        grain = 1 / max(1, len(values) - 1)  # one choice further
    elif param.integer:
        grain = 1 / max(1.0, float(param.high) - float(param.low))  # type: ignore[arg-type]
    else:
        grain = 0.0
    if param.choices is not None and len(param.choices) < 2 or param.low == param.high and param.choices is None:
        return None
    shortest = max(grain * 0.51, radius / 4)  # a quarter of the radius: a change worth measuring
    side = -lost[-1] if len(lost) % 2 else (-blamed if not lost else 0)
    return Step(name, param, current, shortest, max(radius, shortest + grain), cap, side)


def moves(history: list[Any], current: dict[str, Number], names: list[str]) -> Iterator[tuple[Any, dict[str, int]]]:
    """Each experiment with the direction (+1 up, -1 down) each constant it changed moved from the
    current values (experiments without a numeric value for every constant are left out)."""
    for exp in history:
        if all(isinstance(exp.params.get(n), (int, float)) for n in names):
            yield exp, {n: 1 if exp.params[n] > current[n] else -1 for n in names if exp.params[n] != current[n]}


def lost_sides(history: list[Any], current: dict[str, Number], names: list[str]) -> dict[str, tuple[int, ...]]:
    """For each constant, the directions (+1 up, -1 down) in which a change of it alone, made from
    the current values, was run and not kept: the search tries the other side next, and a constant
    that lost on both sides is picked less often until the best moves."""
    lost: dict[str, tuple[int, ...]] = {}
    for exp, sides in moves(history, current, names):
        if exp.status != "keep" and len(sides) == 1:
            (name, side), = sides.items()
            lost[name] = (*lost.get(name, ()), side)
    return lost


def recent_changes(experiments: list[Any], d: int) -> dict[str, int]:
    """How often each constant was changed by the last RECENT_PER_DIM·d search proposals."""
    counts: dict[str, int] = {}
    for exp in experiments[-RECENT_PER_DIM * max(1, d):]:
        for name in exp.info.get("changed", []) if isinstance(exp.info, dict) else []:
            counts[name] = counts.get(name, 0) + 1
    return counts


def blamed_sides(history: list[Any], current: dict[str, Number], names: list[str]) -> dict[str, int]:
    """For each constant, the one direction (+1 up, -1 down) in which it moved in joint changes from
    about the current values (two or more constants differ) that all lost, while it never moved the
    other way: most joint losses come from one bad move (a depth of 1 among three changes), and its
    constants are tried the other way next rather than the same bad move again with others."""
    joint_lost: dict[str, set[int]] = {}
    cleared: set[str] = set()  # a keep, or a single change, leaves the constant without blame
    for exp, sides in moves(history, current, names):
        for name, side in sides.items():
            if exp.status == "keep" or len(sides) < 2:
                cleared.add(name)
            else:
                joint_lost.setdefault(name, set()).add(side)
    return {n: next(iter(s)) for n, s in joint_lost.items() if len(s) == 1 and n not in cleared}
