"""What both non-LLM agents (random, search) derive from a context: the search space, the current
values of its constants, the settings already tried, and proposals that write new values.

Nothing here decides what to try next; the agents do.
"""
from __future__ import annotations

import math
import random
from typing import Any

from autoresearch.agents.base import Context, NoProposal, Proposal
from autoresearch.agents.source_constants import (
    Constant,
    Number,
    Space,
    baseline_params,
    current_params,
    describe_changes,
    file_constants,
    idea_problem,
    idea_values,
    normalize,
    search_space,
    tried_keys,
    write_values,
    written_value,
)
from autoresearch.core.config import SearchParam, TaskConfig


class SearchState:
    """What both non-LLM agents derive from a context: the space, current values, tried settings."""

    def __init__(self, config: TaskConfig, files: dict[str, str], space: Space,
                 consts: dict[str, tuple[str, Constant]], history: list[Any]):
        self.config, self.files, self.space, self.consts = config, files, space, consts
        self.names = list(space)
        self.current: dict[str, Number] = {n: consts[n][1].value for n in self.names}
        self.seen = tried_keys(history, self.names) | {self.key(self.current)}

    @classmethod
    def build(cls, ctx: Context) -> "SearchState":
        space = search_space(ctx.config, ctx.files, anchor=baseline_params(ctx.history))
        if not space:
            raise NoProposal("no searchable constants: the editable files have no module-level "
                             "UPPER_CASE numeric constants (or [search] names none)")
        # What is queued or running counts as tried: proposing it again would waste a slot.
        return cls(ctx.config, ctx.files, space, file_constants(ctx.config, ctx.files), [*ctx.history, *ctx.pending])

    def key(self, values: dict[str, Number]) -> tuple:
        return tuple(values[n] for n in self.names)

    def idea_settings(self, ideas: list[Any]):
        """(idea, full new values) for each open idea that is an untried setting, oldest first."""
        for idea in ideas:
            if getattr(idea, "status", "open") != "open":
                continue
            values = idea_values(idea.text, self.space, self.consts)
            if values is None:
                continue
            new = {**self.current, **values}
            if self.key(new) in self.seen:
                continue  # a no-op or already run: nothing for this agent to try
            yield idea, new

    def unusable_idea(self, ideas: list[Any], agent: str) -> Proposal | None:
        """A rejection that closes the oldest open idea setting these constants to values that can never
        be tried (outside the [search] choices...): it would otherwise stay open forever."""
        for idea in ideas:
            problem = idea_problem(idea.text, self.space, self.consts) if getattr(idea, "status", "open") == "open" \
                else None
            if problem:
                return Proposal(description=f"{agent}: idea #{idea.id}: {idea.text}", edits={}, idea_id=idea.id,
                                rejection=f"idea #{idea.id} cannot be tried: {problem}")
        return None

    def idea_proposal(self, ctx: Context, agent: str) -> Proposal | None:
        unusable = self.unusable_idea(ctx.ideas, agent)
        if unusable:
            return unusable
        for idea, new in self.idea_settings(ctx.ideas):
            desc = f"{agent}: idea #{idea.id}: " + describe_changes(self.current, new, self.consts)
            return self.proposal(ctx, new, desc, idea_id=idea.id)
        return None

    def proposal(self, ctx: Context, new: dict[str, Number], description: str,
                 idea_id: int | None = None, info: dict[str, Any] | None = None) -> Proposal:
        changed = {n: v for n, v in new.items() if v != self.current[n]}
        edits = write_values(self.files, self.space, changed)
        params = current_params(self.config, {**self.files, **edits})
        return Proposal(description=description, edits=edits, idea_id=idea_id, params=params,
                        info=dict(info or {}))


def sample_value(rng: random.Random, param: SearchParam, c: Constant, current: Number) -> Number:
    """A value drawn uniformly (log-uniformly for log ranges) from the range, different from
    `current` when the range allows it, as it will be written into the constant."""
    if param.choices is not None:
        others = [x for x in param.choices if x != current] or list(param.choices)
        return written_value(rng.choice(others), c)
    assert param.low is not None and param.high is not None
    value: Number = current
    for _ in range(50):
        if param.log:
            u = math.exp(rng.uniform(math.log(param.low), math.log(param.high)))
        elif param.integer:
            u = rng.randint(int(param.low), int(param.high))
        else:
            u = rng.uniform(param.low, param.high)
        value = written_value(normalize(u, param), c)
        if value != current:
            break
    return value
