"""The random agent: change one or two constants of the search space to random values in range.

A baseline for the other agents (an agent that cannot beat random search is not researching). It
changes the current best, so with keep-if-better it is a random local search. An open idea that is
a concrete setting (`LR=0.01, DEPTH=6`) of searchable constants is tried first.
"""
from __future__ import annotations

import random

from autoresearch.agents.base import Context, NoProposal, Proposal
from autoresearch.agents.search_space import SearchState, sample_value
from autoresearch.agents.source_constants import (
    Number,
    describe_changes,
)
from autoresearch.core.config import SearchParam, TaskConfig

MAX_TRIES = 200  # attempts at a setting that is neither the current one nor one already run


class RandomAgent:
    name = "random"

    def __init__(self, config: TaskConfig, seed: int | None = None):
        self.config = config
        self.seed = seed
        self.rng = random.Random(seed)

    def propose(self, ctx: Context) -> Proposal:
        state = SearchState.build(ctx)
        idea = state.idea_proposal(ctx, self.name)
        if idea:
            return idea
        changeable = [n for n in state.names if _can_change(state.space[n][1], state.current[n])]
        if not changeable:
            raise NoProposal("no searchable constant can take another value in its range")
        for _ in range(MAX_TRIES):
            picked = self.rng.sample(changeable, min(len(changeable), self.rng.choice((1, 2))))
            new = dict(state.current)
            for name in picked:
                param, c = state.space[name][1], state.consts[name][1]
                new[name] = sample_value(self.rng, param, c, state.current[name])
            if new != state.current and state.key(new) not in state.seen:
                return state.proposal(ctx, new, f"{self.name}: " + describe_changes(state.current, new, state.consts),
                                      info={"changed": [n for n in picked if new[n] != state.current[n]]})
        raise NoProposal(f"no untried setting found in {MAX_TRIES} random draws: the search space "
                         f"looks exhausted")


def _can_change(param: SearchParam, current: Number) -> bool:
    if param.choices is not None:
        return any(x != current for x in param.choices)
    assert param.low is not None and param.high is not None
    return param.high > param.low or current != param.low
