"""The offline search agents: Optuna's samplers in a trust region around the current best.

`search` (the default), `tpe` and `cmaes` share one rule: start from the best, not from random
points. During the local start (search_local.py) each proposal changes one to three constants by a
modest step around the incumbent, and the region widens as experiments accumulate. Inside it an
Optuna sampler decides the values:

* TPE (`tpe`, and `search` on tasks of few constants or with few experiments so far): a fresh in-memory study per
  proposal over the constants it changes, their distributions narrowed to the trust region, holding
  every experiment of the ledger that lies in that region (so it survives restarts, range changes
  and other agents' experiments);
* CMA-ES (`cmaes` after its local start, and `search` once a task of CMAES_MIN_DIMS or more
  constants has had CMAES_AFTER_PER_DIM experiments per constant): one study kept by the agent in
  coordinates relative to the best at its start (the best is the centre of its box, so its mean
  starts there without the deprecated `x0`), told each result as it arrives. After a restart it
  starts again around the then best.

How results inform the samplers:

* keep/discard with a finite metric: a COMPLETE trial with that value;
* a guard violation, a run over budget, a crash, a timeout or a non-finite metric: an infeasible
  trial (a constraint value of 1; TPE ranks those below every feasible one) with the metric it had,
  else the worst metric seen (FAIL while no experiment has a metric yet); CMA-ES gets the worst value;
* `pruned` (stopped early as hopeless): a PRUNED trial with its last metric as intermediate value
  (TPE ranks it below every complete trial); CMA-ES gets the worst value.

Settings the task would surely reject (search_defaults.violation: a head count that does not
divide the width, memory-heavy constants growing more than 2x at once, a setting needing at least
the memory of one that broke a memory guard) are never proposed. Open ideas that are concrete
settings (`LR=0.01, DEPTH=6`) are tried first, as written. A proposal that changes the batch size
without a learning rate takes the learning rates with it (the square-root rule,
search_defaults.coupled_learning_rates): a larger batch alone mostly loses for want of them. A
setting already in the history (or the current one) is never proposed again; when the sampler
keeps repeating itself an untried setting is drawn at random, and when there is none left the
agent raises NoProposal. Each proposal records its sampler: the experiment's agent is e.g. `search:tpe`, its info has `sampler`,
`phase` (local or wide) and `changed`.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import random
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

from autoresearch.agents import search_local as region
from autoresearch.agents.base import Context, NoProposal, Proposal
from autoresearch.agents.search_defaults import (
    coupled_learning_rates,
    dominates,
    violation,
)
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

__all__ = ["CmaEsAgent", "SearchAgent", "TpeAgent", "choose_sampler", "current_params", "distribution",
           "in_distribution", "parse_setting_idea"]

MAX_ASKS = 20  # sampler asks before falling back to a random untried setting
MAX_RANDOM = 200  # random draws in that fallback (continuous spaces)
MAX_ENUMERATE = 100_000  # finite spaces up to this size are enumerated to find untried settings
CMAES_MIN_DIMS = 4  # below this TPE models the space well; CMA-ES pays off on larger ones...
CMAES_AFTER_PER_DIM = 8  # ...from 8 experiments per constant: on the 10-constant benchmark TPE led at 40
#                          experiments and tied at 60 (docs/benchmarks.md, search yield); CMA-ES's lead in
#                          public comparisons came over hundreds of trials
CMAES_RADIUS = 0.3  # CMA-ES's box: the best ± 0.3 of every range (its default sigma is a sixth of that)
FAILED = {"failed": 1.0}  # the constraint value of an infeasible trial


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


def choose_sampler(d: int, n: int) -> str:
    """The sampler `search` uses for a task of `d` constants after `n` experiments."""
    return "cmaes" if d >= CMAES_MIN_DIMS and n >= max(region.local_trials(d), CMAES_AFTER_PER_DIM * d) else "tpe"


@dataclass
class Outcome:
    """What an experiment tells a sampler: `state` is ok, infeasible or pruned; `value` may be None."""

    state: str
    value: float | None


def outcome(exp: Any, config: TaskConfig, baseline: dict[str, float] | None) -> Outcome:
    metric = exp.metric if exp.metric is not None and math.isfinite(exp.metric) else None
    if exp.status == "pruned":
        return Outcome("pruned", metric)
    if exp.status in ("keep", "discard") and metric is not None:
        broke = check_guards(config.guards, exp.metrics, baseline) or (exp.reason or "").startswith(
            ("discard: guard", "discard: over budget"))
        return Outcome("infeasible" if broke else "ok", metric)
    return Outcome("infeasible", None)


@dataclass
class _CmaStudy:
    """The CMA-ES study of one agent: relative coordinates u in [-1, 1] around `centre` (positions)."""

    study: optuna.Study
    key: str
    centre: dict[str, float]
    told: set[int] = field(default_factory=set)


class SearchAgent:
    name = "search"
    sampler = "auto"  # tpe | cmaes | auto (choose_sampler)

    def __init__(self, config: TaskConfig, seed: int | None = None, n_startup_trials: int = 5):
        self.config = config
        self.seed = seed
        self.n_startup_trials = n_startup_trials  # TPE: random draws in a region before it models it
        self.rng = random.Random(seed)
        self._calls = 0
        self._cma: _CmaStudy | None = None

    def propose(self, ctx: Context) -> Proposal:
        self._calls += 1
        state = SearchState.build(ctx)
        unusable = state.unusable_idea(ctx.ideas, self.name)
        if unusable:
            return unusable
        for idea, new in state.idea_settings(ctx.ideas):
            desc = f"{self.name}: idea #{idea.id}: {describe_changes(state.current, new, state.consts, arrow=False)}"
            return state.proposal(ctx, new, desc, idea_id=idea.id, info={"idea": idea.id})
        n = sum(1 for e in [*ctx.history, *ctx.pending] if e.agent != "baseline")
        d = len(state.names)
        sampler = self.sampler if self.sampler != "auto" else choose_sampler(d, n)
        if sampler == "cmaes" and n < region.local_trials(d):
            sampler = "tpe"  # CMA-ES starts once the local start has measured the single steps
        with _quiet_optuna():
            found = self._cmaes(ctx, state) if sampler == "cmaes" else self._local_tpe(ctx, state, n)
        by = self.name if self.name == sampler else f"{self.name}:{sampler}"
        if found is None:
            new = self._untried(state, {k: distribution(state.space[k][1]) for k in state.names})
            if new is None:
                raise NoProposal("every setting of the search space has been tried")
            desc = (f"{self.name}: {describe_changes(state.current, new, state.consts, arrow=False)} "
                    f"(random, {sampler} repeated itself)")
            return self._proposal(ctx, state, new, desc, {"fallback": "random", "sampler": sampler}, by)
        new, info = found
        phase = "local" if n < region.local_trials(d) else "wide"
        info.update(sampler=sampler, phase=phase)
        label = "TPE" if sampler == "tpe" else "CMA-ES"
        desc = (f"{self.name}: {describe_changes(state.current, new, state.consts, arrow=False)} "
                f"({label} trial {info['trial']}, {phase})")
        return self._proposal(ctx, state, new, desc, info, by)

    def _proposal(self, ctx: Context, state: SearchState, new: dict[str, Number], desc: str,
                  info: dict[str, Any], by: str) -> Proposal:
        info["changed"] = [n for n in state.names if new[n] != state.current[n]]
        proposal = state.proposal(ctx, new, desc, info=info)
        proposal.agent = by
        return proposal

    # -- TPE in the trust region ------------------------------------------------------------------

    def _local_tpe(self, ctx: Context, state: SearchState, n: int) -> tuple[dict[str, Number], dict] | None:
        d = len(state.names)
        most, radius = region.schedule(n, d)
        # queued or running single changes count as lost sides too: proposals made ahead spread out
        tried = [*ctx.history, *ctx.pending]
        lost = region.lost_sides(tried, state.current, state.names)
        blamed = region.blamed_sides(tried, state.current, state.names)
        steps = {name: st for name in state.names if (st := region.step(
            name, state.space[name][1], state.current[name], radius, lost.get(name, ()),
            blamed.get(name, 0))) is not None}
        if not steps:
            return None
        recent = region.recent_changes(tried, d)
        rounds = {n: len(sides) // 2 for n, sides in lost.items()}
        failures = self._memory_failures(ctx)
        for _ in range(MAX_ASKS):
            k = region.subset_size(self.rng, min(most, len(steps)))
            names = region.pick(self.rng, list(steps), k, recent, rounds)
            dists = {name: FloatDistribution(-1.0, 1.0) for name in names}
            study = self._tpe_study(ctx, {name: steps[name] for name in names}, steps)
            trial = study.ask(dists)
            new = dict(state.current)
            for name in names:
                param, c = state.space[name][1], state.consts[name][1]
                new[name] = written_value(normalize(steps[name].value(trial.params[name]), param), c)
            for name, value in coupled_learning_rates(new, state.current).items():
                if name in state.space:
                    new[name] = written_value(normalize(value, state.space[name][1]), state.consts[name][1])
            if self._acceptable(state, new, failures):
                return new, {"trial": trial.number, "radius": radius}
        return None

    def _tpe_study(self, ctx: Context, free: dict[str, region.Step], steps: dict[str, region.Step]) -> optuna.Study:
        """A fresh study over the steps of the `free` constants, holding every experiment of the
        ledger inside the trust region `steps` (as the steps it is from the incumbent)."""
        config = ctx.config
        sampler = optuna.samplers.TPESampler(seed=self._seed(len(ctx.history)), n_startup_trials=self.n_startup_trials,
                                             multivariate=True)
        study = optuna.create_study(direction=config.metric.direction, sampler=sampler)
        dists = {name: FloatDistribution(-1.0, 1.0) for name in free}
        baseline = next((e.metrics for e in ctx.history if e.status == "keep"), None)
        rows = []
        for exp in ctx.history:
            if not all(isinstance(exp.params.get(n), (int, float)) for n in steps):
                continue
            coords = {n: st.coordinate(exp.params[n]) for n, st in steps.items()}
            if any(v is None for v in coords.values()):
                continue
            rows.append(({n: coords[n] for n in free}, outcome(exp, config, baseline)))
        worst = _worst([o.value for _, o in rows], config.metric.direction)
        for params, result in rows:
            value = result.value if result.value is not None else worst
            if value is None:
                study.add_trial(create_trial(state=TrialState.FAIL, params=params, distributions=dists))
            elif result.state == "pruned":
                study.add_trial(create_trial(state=TrialState.PRUNED, params=params, distributions=dists,
                                             intermediate_values={0: value}))
            else:
                study.add_trial(create_trial(params=params, distributions=dists, value=value,
                                             constraints=FAILED if result.state == "infeasible" else None))
        return study

    # -- CMA-ES -----------------------------------------------------------------------------------

    def _cmaes(self, ctx: Context, state: SearchState) -> tuple[dict[str, Number], dict] | None:
        cma = self._cma
        if cma is None or set(cma.centre) != set(state.names):
            cma = self._cma = self._new_cma(ctx, state)
        self._tell(ctx, cma)
        dists = {n: FloatDistribution(-1.0, 1.0) for n in cma.centre}
        failures = self._memory_failures(ctx)
        for _ in range(MAX_ASKS):
            trial = cma.study.ask(dists)
            new = {}
            for name in state.names:
                param, c = state.space[name][1], state.consts[name][1]
                z = cma.centre[name] + CMAES_RADIUS * trial.params[name]
                new[name] = written_value(normalize(region.value_at(z, param), param), c)
            if self._acceptable(state, new, failures):
                return new, {"trial": trial.number, "cma": cma.key}
            cma.study.tell(trial, state=TrialState.FAIL)  # never run: CMA-ES leaves FAIL trials out
        return None

    def _new_cma(self, ctx: Context, state: SearchState) -> _CmaStudy:
        sampler = optuna.samplers.CmaEsSampler(seed=self._seed(len(ctx.history)), warn_independent_sampling=False)
        study = optuna.create_study(direction=ctx.config.metric.direction, sampler=sampler)
        centre = {n: region.position(state.current[n], state.space[n][1]) for n in state.names}
        best = ctx.best.metric if ctx.best is not None else None
        if best is not None and math.isfinite(best):  # the best at u = 0: fixes the space CMA-ES searches
            study.add_trial(create_trial(params={n: 0.0 for n in centre}, value=best,
                                         distributions={n: FloatDistribution(-1.0, 1.0) for n in centre}))
        return _CmaStudy(study, uuid.uuid4().hex[:12], centre)

    def _tell(self, ctx: Context, cma: _CmaStudy) -> None:
        """Tell the CMA-ES study the results of its trials that finished since the last proposal."""
        baseline = next((e.metrics for e in ctx.history if e.status == "keep"), None)
        results = [outcome(e, ctx.config, baseline) for e in ctx.history]
        worst = _worst([o.value for o in results if o.state == "ok"], ctx.config.metric.direction)
        for exp, result in zip(ctx.history, results):
            number = exp.info.get("trial")
            if exp.info.get("cma") != cma.key or not isinstance(number, int) or number in cma.told:
                continue
            value = result.value if result.state == "ok" else worst
            cma.study.tell(number, value, state=TrialState.COMPLETE if value is not None else TrialState.FAIL,
                           skip_if_finished=True)
            cma.told.add(number)

    # -- shared -----------------------------------------------------------------------------------

    def _acceptable(self, state: SearchState, new: dict[str, Number], failures: list[dict[str, Any]]) -> bool:
        if new == state.current or state.key(new) in state.seen:
            return False  # a repeat: ask again (in the TPE study it stays RUNNING, which steers away)
        return violation(new, state.current) is None and not any(dominates(new, f) for f in failures)

    def _memory_failures(self, ctx: Context) -> list[dict[str, Any]]:
        """The settings of experiments that broke a memory guard (their memory need is too high)."""
        memory_guards = [g.metric for g in ctx.config.guards if "mem" in g.metric.lower()]
        if not memory_guards:
            return []
        baseline = next((e.metrics for e in ctx.history if e.status == "keep"), None)
        return [e.params for e in ctx.history if e.status == "discard" and e.metrics and any(
            g in (check_guards(ctx.config.guards, e.metrics, baseline) or "") for g in memory_guards)]

    def _seed(self, n_history: int) -> int | None:
        if self.seed is None:
            return None
        return (self.seed * 1_000_003 + n_history * 10_007 + self._calls) % (2**31 - 1)

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


class TpeAgent(SearchAgent):
    """TPE in the trust region, whatever the task's size."""

    name = "tpe"
    sampler = "tpe"


class CmaEsAgent(SearchAgent):
    """CMA-ES after the local start, whatever the task's size."""

    name = "cmaes"
    sampler = "cmaes"


def _worst(values: list[float | None], direction: str) -> float | None:
    finite = [v for v in values if v is not None]
    if not finite:
        return None
    return max(finite) if direction == "minimize" else min(finite)


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
