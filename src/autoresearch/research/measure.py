"""Measuring an experiment: run its commit on a slot as often as the judge needs, recording every run.

The coordinator (loop.py) decides *which* experiment runs on which best; a `Measurer` turns that into
runs on the backend and a (status, reason, values) verdict: one primary run, the noise runs of the
baseline, the confirmation runs of an uncertain candidate (and of the best it is compared with),
the guards and the held-out check of the trusted evaluation. Every run lands in the ledger's runs
table as it ends, so the pooled noise estimate sees it at once.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autoresearch.core.config import TaskConfig
from autoresearch.core.errors import WorkerLost
from autoresearch.core.judge import (
    Decision,
    check_guards,
    clean_groups,
    clean_values,
    decide,
    pooled_sigma,
)
from autoresearch.core.records import Experiment, Status
from autoresearch.research.pruning import Pruner
from autoresearch.run.backends import Backend
from autoresearch.run.cgroups import ResourceLimits, group_name
from autoresearch.run.environment import TaskEnvironment
from autoresearch.run.execution import Outcome, RunSpec
from autoresearch.run.sandbox import SandboxPolicy
from autoresearch.run.slots import Slot
from autoresearch.run.workspace import Links
from autoresearch.store.ledger import Ledger

if TYPE_CHECKING:
    from autoresearch.core.events import Observer

BUDGET_ENV = "AUTORESEARCH_TIME_BUDGET"
# Start-up, export and evaluation time scatter with the machine's load by up to this share of a
# run's wall time (a 2-core CI runner saw +13% on an 11 s nanogpt run with a 2 s budget), so
# "within budget" never allows less slack than this share of the baseline's wall time.
WALL_TIME_NOISE = 0.2
KILL_MARGIN_S = 1.0  # a run is killed this long after the budget's limit: timing jitter never kills a keep


def run_env(config: TaskConfig, budget_s: float, exp_id: int | None = None) -> dict[str, str]:
    """What a run (or the setup) gets on top of its worker's own, secret-free environment."""
    extra = {**config.env, BUDGET_ENV: f"{budget_s:g}"}
    if exp_id is not None:
        extra["AUTORESEARCH_EXPERIMENT_ID"] = str(exp_id)
    return extra


@dataclass
class Measurer:
    config: TaskConfig
    tag: str
    ledger: Ledger
    backend: Backend
    observer: Observer
    stop_event: threading.Event
    budget_s: float
    timeout_s: float
    frozen: dict[str, str]  # path -> content at the research base
    policy: SandboxPolicy | None
    environment: TaskEnvironment = field(default_factory=TaskEnvironment)  # [environment]
    links: Links = field(default_factory=Links)  # setup outputs and inputs, linked into each worktree
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _run_numbers: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.pruner = Pruner(self.config, self.ledger, self.tag)  # watches every run's progress (pruning.py)

    def measure(self, exp: Experiment, best: Experiment | None, slot: Slot) -> tuple[str, str, list[float], dict]:
        """Run an experiment as often as the judge needs: (status, reason, metric values, fields of
        the primary run). Without a best (the baseline), its noise runs are made instead."""
        first = self.execute(exp.id, exp.commit, "primary", slot, against=best)
        fields: dict[str, Any] = dict(first.fields)
        values = [first.metric] if first.status == "ok" else []
        if first.status != "ok":
            status, reason = first.failure
        elif best is None or best.metric is None:
            runs = max(self.config.judge.noise_runs, self.config.judge.keep_runs)
            values += self.repeat(exp.id, exp.commit, "noise", runs - 1, slot)
            status, reason = Status.KEEP, f"baseline: {self.config.metric.name} {mean(values):.6g}" + _spread(values)
        else:
            status, reason, values = self._decide(exp, best, first, slot)
        return status, reason, values, fields

    def judge_measured(self, exp_id: int, values: list[float], best: Experiment) -> tuple[str, str]:
        """The decision on values measured on an older base, against `best` (no more runs)."""
        exp = self.ledger.get(exp_id)
        sigma, dof, best_values = self.evidence(best)
        decision = decide(self.config.metric, self.config.judge, values, best_values, sigma, dof,
                          exp.lines_delta, confirmations_left=0)
        return decision.status, f"{decision.reason} (measured before rebasing onto #{best.id})"

    def evidence(self, best: Experiment) -> tuple[float | None, int, list[float]]:
        """The pooled noise (σ, degrees of freedom) and the best's run values, broken runs left out."""
        groups = self.ledger.run_groups(self.tag)
        best_values = clean_values(self.ledger.run_values(best.id), groups) or [best.metric]
        sigma, dof = pooled_sigma(clean_groups(groups))
        return sigma, dof, best_values

    def best_estimate(self, exp_id: int) -> float | None:
        """The one number shown everywhere for an experiment measured several times: the mean of
        its runs, clearly broken runs left out (judge.clean_values)."""
        values = clean_values(self.ledger.run_values(exp_id), self.ledger.run_groups(self.tag))
        return mean(values) if values else None

    def reestimate(self, exp: Experiment, slot: Slot) -> None:
        """After a keep: a best kept on a single run is run once more (`[judge] recheck`): the run that
        won is the luckiest of many, a fresh one is not (the winner's curse), and it is the recent
        run of the best the next candidates' drift check needs. Then it is run until it has
        `keep_runs` runs (evidence a hub worker's claim carries). Every `reestimate_every` keeps, the
        noise is re-measured on the new best too (on its slot). Neither while the research is paused
        (new runs of the best: scheduler.py)."""
        if exp.status != Status.KEEP:
            return
        cfg = self.config.judge
        keeps = self.ledger.count(self.tag, Status.KEEP)
        if keeps > 1 and self.ledger.paused(self.tag):
            self.observer.message(f"paused: the best (#{exp.id}) is not re-measured this time")
            return
        if keeps > 1 and cfg.recheck and len(self.ledger.run_values(exp.id)) == 1:
            self.observer.message(f"re-measuring the new best (#{exp.id}) once")
            if self.repeat(exp.id, exp.commit, "confirm", 1, slot):
                self.ledger.update(exp.id, metric=self.best_estimate(exp.id))
        missing = cfg.keep_runs - len(self.ledger.run_values(exp.id))
        if missing > 0:
            self.observer.message(f"measuring the new best (#{exp.id}) {missing} more time(s) (keep_runs)")
            if self.repeat(exp.id, exp.commit, "confirm", missing, slot):
                self.ledger.update(exp.id, metric=self.best_estimate(exp.id))
        if cfg.reestimate_every and keeps > 1 and (keeps - 1) % cfg.reestimate_every == 0:
            self.observer.message(f"re-measuring the noise on the best (#{exp.id})")
            if self.repeat(exp.id, exp.commit, "noise", cfg.noise_runs - 1, slot):
                self.ledger.update(exp.id, metric=self.best_estimate(exp.id))

    def repeat(self, exp_id: int, commit: str, kind: str, times: int, slot: Slot) -> list[float]:
        """Up to `times` more runs of a commit; their metrics, up to the first that fails."""
        values = []
        for _ in range(max(0, times)):
            if self.stop_event.is_set():
                break
            outcome = self.execute(exp_id, commit, kind, slot)
            if outcome.status != "ok" or (kind == "confirm" and self.over_budget(outcome)):
                break
            values.append(outcome.metric)
        return values

    def execute(self, exp_id: int, commit: str, kind: str, slot: Slot, against: Experiment | None = None) -> Outcome:
        """One run of a commit on a slot, recorded in the ledger's runs table with its progress curve;
        with `against` (a candidate's primary run and its best), stopped as `pruned` once its progress
        cannot plausibly beat that best's. Raises WorkerLost (recorded as a lost run), and
        FrozenFileError when the commit differs from the base in a frozen file."""
        with self._lock:  # several slots may re-run the same best at once: each run gets its own number
            n = max(len(self.ledger.runs(exp_id)), self._run_numbers.get(exp_id, 0))
            self._run_numbers[exp_id] = n + 1
        exp = self.ledger.get(exp_id)
        if kind != "primary":
            exp.description = f"{exp.description} ({kind} run {n + 1})"
        exp.slot = slot.name
        spec = self.spec(exp_id, n, kind, commit)
        held = spec.timeout_s < self.timeout_s  # stopped at the budget's limit rather than the hard timeout
        self.observer.started(exp, self.budget_s)
        started = time.time()
        watch = self.pruner.watch(against)

        def on_output(line: str) -> None:
            watch.feed(line)  # first: a failing live view must not cost the curve
            self.observer.output(line)

        try:
            outcome = self.backend.run(spec, slot, on_output=on_output,
                                       should_stop=lambda: self.stop_event.is_set() or watch.should_stop())
        except WorkerLost:
            self.ledger.add_run(exp_id, kind, "lost", slot=slot.name, started_at=started,
                                curve=watch.curve.to_json())
            raise
        if outcome.status == "timeout" and held:  # it could only have been discarded: stopped there instead
            outcome.failure = (Status.DISCARD, f"discard: over budget: stopped at {spec.timeout_s:.1f}s, the longest "
                                               f"a run may take ({self._limit_text()})")
        if outcome.status == "stopped" and watch.verdict is not None and not self.stop_event.is_set():
            outcome.status, outcome.failure = Status.PRUNED.value, (Status.PRUNED, watch.verdict.reason)
            self.observer.message(f"#{exp_id} {watch.verdict.reason}")
        self.ledger.add_run(exp_id, kind, "ok" if outcome.status == "ok" else outcome.status, outcome.metric,
                            outcome.metrics, outcome.fields.get("wall_s"), outcome.fields.get("peak_mem_mb"),
                            outcome.fields.get("log_path"), slot=slot.name, started_at=started,
                            curve=watch.curve.to_json())
        return outcome

    def spec(self, exp_id: int, n: int, kind: str, commit: str) -> RunSpec:
        """The `RunSpec` of run `n` of a commit under this task's budget, sandbox and limits (the
        hub's verifiers run their paired re-executions from the same description)."""
        return RunSpec(exp_id=exp_id, n=n, kind=kind, commit=commit, command=self.config.run,
                       env=run_env(self.config, self.budget_s, exp_id), timeout_s=self.run_timeout(),
                       log_name=f"{self.tag}/{exp_id}{'' if n == 0 else f'.{n}'}.log",
                       log_cap_bytes=self.config.log_cap_bytes, metric=self.config.metric, frozen=self.frozen,
                       pass_env=self.config.sandbox.pass_env, cgroup=group_name(self.config.state_dir),
                       limits=ResourceLimits(self.config.limits.memory_limit_mb(), self.config.limits.processes or None),
                       evaluate=self.config.evaluate, sandbox=self.policy, setup=self.config.setup,
                       environment=self.environment, links=self.links)

    # -- judging ------------------------------------------------------------------------------

    def _decide(self, exp: Experiment, best: Experiment, first: Outcome, slot: Slot) -> tuple[str, str, list[float]]:
        """Keep/discard with noise-aware statistics: a sequential test that stops as soon as the
        evidence suffices either way (judge.decide), re-running the candidate while it is uncertain
        and the best alongside it (until the best has `[judge] best_runs` runs). No keep without a
        recent run of the best (`drift_check`: one made since the candidate started or alongside the
        last `drift_window` experiments): when the machine got faster or slower meanwhile, that run
        shows it, and a candidate that does not beat the best's recent runs is uncertain, not kept."""
        violation = self.over_budget(first) or check_guards(self.config.guards, first.metrics,
                                                            self._baseline_metrics())
        if violation:
            return Status.DISCARD, f"discard: {violation}", [first.metric]
        cfg, values, started = self.config.judge, [first.metric], first.started_at or time.time()
        while True:
            sigma, dof, best_values = self.evidence(best)
            decision = decide(self.config.metric, cfg, values, best_values, sigma, dof, exp.lines_delta,
                              confirmations_left=cfg.max_confirm - (len(values) - 1))
            if decision.keep:
                flag = self._heldout_flag(first.metrics, best.metrics)
                if flag:
                    return Status.DISCARD, f"discard: flagged, {flag}; {decision.reason}", values
                recent = self._recent_best_values(best, started)
                if cfg.drift_check and not recent:
                    self.observer.message(f"#{exp.id} {decision.reason}; re-measuring the best (#{best.id}) first")
                    if not self._rerun_best(best, slot):
                        return Status.DISCARD, f"discard: the best's check run failed or was stopped; {decision.reason}", values
                    continue
                decision = self._against_recent(decision, values, recent, cfg.max_confirm - (len(values) - 1))
            if decision.action != "confirm":
                return decision.status, decision.reason, values
            self.observer.message(f"#{exp.id} {decision.reason}")
            more = self.repeat(exp.id, exp.commit, "confirm", 1, slot)
            if not more:
                return Status.DISCARD, (f"discard: a confirmation run failed, ran over budget or was stopped; "
                                   f"{decision.reason}"), values
            values += more
            if len(best_values) < cfg.best_runs:  # the best's mean gets sharper too, measured alongside
                self._rerun_best(best, slot)

    def _against_recent(self, decision: Decision, values: list[float], recent: list[float], left: int) -> Decision:
        """A keep stands only if the candidate also beats the best's runs made since it started."""
        if not self.config.judge.drift_check:
            return decision
        gain = mean(recent) - mean(values)
        if self.config.metric.direction == "maximize":
            gain = -gain
        if gain > 0:
            return decision
        why = (f"the best re-measured meanwhile ({mean(recent):.6g}, {len(recent)} run{'s' * (len(recent) > 1)}) "
               f"is as good: {decision.reason}")
        return Decision("confirm", f"uncertain: {why}") if left > 0 else Decision("discard", f"discard: {why}")

    def _recent_best_values(self, best: Experiment, since: float) -> list[float]:
        """The best's runs that count as recent for a candidate that started at `since`: those made
        since, and those made alongside the last `[judge] drift_window` experiments (a drift slower
        than that many experiments shows in them too). Not the runs the baseline made back to back
        before any candidate (its primary and noise runs: one moment, which may be an odd one), nor
        any noise runs."""
        window = self.config.judge.drift_window
        shared_from = self.ledger.primary_start(self.tag, since, window) if window else None
        baseline = self._baseline()
        own_block = {"noise"} | ({"primary"} if baseline is not None and baseline.id == best.id else set())
        recent = []
        for r in self.ledger.runs(best.id):
            if r.status != "ok" or r.metric is None:
                continue
            start = r.started_at or 0
            if start >= since or (shared_from is not None and start >= shared_from and r.kind not in own_block):
                recent.append(r.metric)
        return recent

    def _rerun_best(self, best: Experiment, slot: Slot) -> bool:
        if not self.repeat(best.id, best.commit, "confirm", 1, slot):
            return False
        self.ledger.update(best.id, metric=self.best_estimate(best.id))
        return True

    def _heldout_flag(self, metrics: dict[str, float], best_metrics: dict[str, float]) -> str | None:
        """Why a candidate that improves the metric is suspect on the held-out split, or None."""
        name, tol = self.config.evaluate.heldout, self.config.evaluate.heldout_tolerance
        if not name or name not in best_metrics:
            return None
        if name not in metrics:
            return f"the trusted evaluation reported no held-out {name}"
        cand, best = metrics[name], best_metrics[name]
        worse = cand - best if self.config.metric.direction == "minimize" else best - cand
        if worse > tol:
            return f"held-out {name} {cand:.6g} is worse than the best's {best:.6g} by more than {tol:g}"
        return None

    def over_budget(self, outcome: Outcome) -> str | None:
        """Why a run took longer than the budget allows (see `budget_limit`), or None."""
        wall, limit = outcome.fields.get("wall_s"), self._limit()
        if wall is None or limit is None or wall <= limit:
            return None  # without a baseline: it defines what its task's runs take
        return f"over budget: ran {wall:.1f}s, limit {limit:.1f}s ({self._limit_text()})"

    def run_timeout(self) -> float:
        """How long a run may go on before it is killed: the hard timeout ([budget] timeout), and once
        the baseline has run, never past the budget's limit (a longer run could only be discarded).
        This is what holds a task whose runs end after a number of iterations, not a time, to the
        budget: a candidate that makes each iteration slower is stopped there."""
        baseline = self._baseline()
        if baseline is None or baseline.wall_s is None:
            return self.timeout_s
        return min(self.timeout_s, self._limit() + KILL_MARGIN_S)

    def _limit(self) -> float | None:
        """The longest a run may take and be kept (`budget_limit`); None before the baseline."""
        baseline = self._baseline()
        return None if baseline is None else budget_limit(self.budget_s, baseline.wall_s, self.config.overrun)

    def _limit_text(self) -> str:
        baseline = self._baseline()
        return (f"baseline {(baseline.wall_s if baseline else 0) or 0:.1f}s + {self.config.overrun:g} x the "
                f"{self.budget_s:g}s budget, at least {WALL_TIME_NOISE:g} x the baseline")

    def _baseline(self) -> Experiment | None:
        for exp in self.ledger.experiments(self.tag, (Status.KEEP,)):
            return exp
        return None

    def _baseline_metrics(self) -> dict[str, float] | None:
        baseline = self._baseline()
        return baseline.metrics if baseline else None


def budget_limit(budget_s: float, baseline_wall_s: float | None, overrun: float) -> float:
    """The longest wall time (spawn to exit, measured by the harness) a run may take and be kept.

    At most the baseline's wall time (or the budget, if longer) plus `[budget] overrun` x budget,
    and never less slack than WALL_TIME_NOISE x the baseline's wall time: when start-up and
    evaluation dwarf a short budget, their scatter alone would otherwise fail honest runs."""
    baseline = baseline_wall_s or 0.0
    return max(budget_s, baseline) + max(overrun * budget_s, WALL_TIME_NOISE * baseline)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    m = mean(values)
    sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f" ± {sd:.2g} over {len(values)} runs"
