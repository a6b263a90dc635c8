"""The search agent: Optuna TPE over the search space, learning from every result in the ledger.

Each proposal rebuilds an in-memory study from the history (so it survives restarts, range
changes and other agents' experiments), asks TPE for the next setting and writes it into the
source. How results become trials:

* an experiment whose params cover the space with values inside the current distributions is a
  trial; one outside them (ranges changed, a value set by hand or by another agent) is skipped;
* keep/discard with a finite metric: a COMPLETE trial with that value;
* crash, timeout, non-finite metric or a guard violation: a COMPLETE trial with the worst metric
  seen (TPE ignores FAIL trials, and a region that crashes should be avoided, not forgotten);
  FAIL while no experiment has a metric yet.

Open ideas that are concrete settings (`LR=0.01, DEPTH=6`) are tried first, via
`study.enqueue_trial`; names an idea leaves out keep their current values, so the run measures
the idea alone. A setting already in the history (or the current one) is never proposed again;
when TPE keeps repeating itself, an untried setting is drawn at random, and when there is none
(a small finite space fully explored) the agent raises NoProposal.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import random
import warnings
from typing import Any, Iterator

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from autoresearch.agents.base import Context, NoProposal, Proposal
from autoresearch.agents.search_space import SearchState, sample_value
from autoresearch.agents.source_constants import (
    Number,
    current_params,
    describe_changes,
    normalize,
    parse_setting_idea,
    written_value,
)
from autoresearch.core.config import SearchParam, TaskConfig
from autoresearch.core.judge import check_guards

__all__ = ["SearchAgent", "current_params", "distribution", "in_distribution", "parse_setting_idea"]

MAX_ASKS = 20  # TPE asks before falling back to a random untried setting
MAX_RANDOM = 200  # random draws in that fallback (continuous spaces)
MAX_ENUMERATE = 100_000  # finite spaces up to this size are enumerated to find untried settings


def distribution(param: SearchParam) -> BaseDistribution:
    """The Optuna distribution of a (effective) search parameter."""
    if param.choices is not None:
        return CategoricalDistribution(list(param.choices))
    assert param.low is not None and param.high is not None
    if param.integer:
        return IntDistribution(int(param.low), int(param.high), log=param.log)
    return FloatDistribution(float(param.low), float(param.high), log=param.log)


def in_distribution(value: Any, dist: BaseDistribution) -> Any | None:
    """`value` as a param of `dist`, or None if it is not one of its values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if isinstance(dist, CategoricalDistribution):
        return next((c for c in dist.choices if c == value), None)
    if isinstance(dist, IntDistribution):
        if value != int(value) or not dist.low <= value <= dist.high:
            return None
        return int(value)
    if isinstance(dist, FloatDistribution):
        return float(value) if dist.low <= value <= dist.high else None
    return None


class SearchAgent:
    name = "search"

    def __init__(self, config: TaskConfig, seed: int | None = None, n_startup_trials: int = 10):
        self.config = config
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self.rng = random.Random(seed)
        self._calls = 0

    def propose(self, ctx: Context) -> Proposal:
        self._calls += 1
        state = SearchState.build(ctx)
        dists = {n: distribution(state.space[n][1]) for n in state.names}
        with _quiet_optuna():
            study, n_told = self._study(ctx, dists)
            unusable = state.unusable_idea(ctx.ideas, self.name)
            if unusable:
                return unusable
            for idea, new in state.idea_settings(ctx.ideas):
                study.enqueue_trial(dict(new), skip_if_exists=True)
                trial = study.ask(dists)  # the enqueued setting (values out of range are allowed)
                desc = (f"{self.name}: idea #{idea.id}: "
                        f"{describe_changes(state.current, new, state.consts, arrow=False)} (TPE trial {trial.number})")
                return state.proposal(ctx, new, desc, idea_id=idea.id, info={"trial": trial.number})
            for _ in range(MAX_ASKS):
                trial = study.ask(dists)
                new = {n: written_value(normalize(trial.params[n], state.space[n][1]), state.consts[n][1])
                       for n in state.names}
                if state.key(new) not in state.seen:
                    phase = ", random start" if n_told < self.n_startup_trials else ""
                    desc = (f"{self.name}: {describe_changes(state.current, new, state.consts, arrow=False)} "
                            f"(TPE trial {trial.number}{phase})")
                    return state.proposal(ctx, new, desc, info={"trial": trial.number})
                # a repeat stays RUNNING in this throwaway study; TPE's constant liar steers away from it
        new = self._untried(state, dists)
        if new is None:
            raise NoProposal("every setting of the search space has been tried")
        desc = f"{self.name}: {describe_changes(state.current, new, state.consts, arrow=False)} (random, TPE repeated itself)"
        return state.proposal(ctx, new, desc, info={"fallback": "random"})

    # -- internals --------------------------------------------------------------------------------

    def _seed(self, n_history: int) -> int | None:
        if self.seed is None:
            return None
        return (self.seed * 1_000_003 + n_history * 10_007 + self._calls) % (2**31 - 1)

    def _study(self, ctx: Context, dists: dict[str, BaseDistribution]) -> tuple[optuna.Study, int]:
        """A fresh in-memory study holding every usable experiment; and how many were told."""
        config = ctx.config
        sampler = optuna.samplers.TPESampler(seed=self._seed(len(ctx.history)),
                                             n_startup_trials=self.n_startup_trials)
        study = optuna.create_study(direction=config.metric.direction, sampler=sampler)
        baseline = next((e.metrics for e in ctx.history if e.status == "keep"), None)
        rows: list[tuple[dict[str, Any], float | None]] = []
        for exp in ctx.history:
            params = {n: in_distribution(exp.params.get(n), d) for n, d in dists.items()}
            if any(v is None for v in params.values()):
                continue
            ok = (exp.status in ("keep", "discard") and exp.metric is not None and math.isfinite(exp.metric)
                  and not check_guards(config.guards, exp.metrics, baseline))
            rows.append((params, exp.metric if ok else None))
        values = [v for _, v in rows if v is not None]
        worst = (max(values) if config.metric.direction == "minimize" else min(values)) if values else None
        for params, value in rows:
            if value is None and worst is None:
                study.add_trial(create_trial(state=TrialState.FAIL, params=params, distributions=dists))
            else:
                study.add_trial(create_trial(params=params, distributions=dists,
                                             value=value if value is not None else worst))
        return study, len(rows)

    def _untried(self, state: SearchState, dists: dict[str, BaseDistribution]) -> dict[str, Number] | None:
        """An untried setting drawn at random, or None if the (finite) space is exhausted."""
        size = 1
        for d in dists.values():
            if isinstance(d, CategoricalDistribution):
                size *= len(d.choices)
            elif isinstance(d, IntDistribution):
                size *= d.high - d.low + 1
            else:
                size = 0
                break
            if size > MAX_ENUMERATE:
                size = 0
                break
        if size:
            axes = [[written_value(v, state.consts[n][1]) for v in _values(dists[n])] for n in state.names]
            untried = [combo for combo in itertools.product(*axes) if combo not in state.seen]
            return dict(zip(state.names, self.rng.choice(untried))) if untried else None
        for _ in range(MAX_RANDOM):
            new = {n: sample_value(self.rng, state.space[n][1], state.consts[n][1], state.current[n])
                   for n in state.names}
            if state.key(new) not in state.seen:
                return new
        return None


def _values(d: BaseDistribution) -> list[Any]:
    if isinstance(d, CategoricalDistribution):
        return list(d.choices)
    assert isinstance(d, IntDistribution)
    return list(range(d.low, d.high + 1))


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """No 'A new study created' lines or out-of-range warnings on the research log."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(level)
