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
from autoresearch.core.judge import check_guards, decide, pooled_sigma
from autoresearch.core.records import Experiment, Status
from autoresearch.run.backends import Backend
from autoresearch.run.cgroups import ResourceLimits, group_name
from autoresearch.run.execution import Outcome, RunSpec
from autoresearch.run.sandbox import SandboxPolicy
from autoresearch.run.slots import Slot
from autoresearch.store.ledger import Ledger

if TYPE_CHECKING:
    from autoresearch.core.events import Observer

BUDGET_ENV = "AUTORESEARCH_TIME_BUDGET"
# Start-up, export and evaluation time scatter with the machine's load by up to this share of a
# run's wall time (a 2-core CI runner saw +13% on an 11 s nanogpt run with a 2 s budget), so
# "within budget" never allows less slack than this share of the baseline's wall time.
WALL_TIME_NOISE = 0.2


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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _run_numbers: dict[int, int] = field(default_factory=dict, repr=False)

    def measure(self, exp: Experiment, best: Experiment | None, slot: Slot) -> tuple[str, str, list[float], dict]:
        """Run an experiment as often as the judge needs: (status, reason, metric values, fields of
        the primary run). Without a best (the baseline), its noise runs are made instead."""
        first = self.execute(exp.id, exp.commit, "primary", slot)
        fields: dict[str, Any] = dict(first.fields)
        values = [first.metric] if first.status == "ok" else []
        if first.status != "ok":
            status, reason = first.failure
        elif best is None or best.metric is None:
            values += self.repeat(exp.id, exp.commit, "noise", self.config.judge.noise_runs - 1, slot)
            status, reason = Status.KEEP, f"baseline: {self.config.metric.name} {mean(values):.6g}" + _spread(values)
        else:
            status, reason, values = self._decide(exp, best, first, slot)
        return status, reason, values, fields

    def judge_measured(self, exp_id: int, values: list[float], best: Experiment) -> tuple[str, str]:
        """The decision on values measured on an older base, against `best` (no more runs)."""
        exp = self.ledger.get(exp_id)
        sigma, dof = pooled_sigma(self.ledger.run_groups(self.tag))
        decision = decide(self.config.metric, self.config.judge, values, self.ledger.run_values(best.id) or
                          [best.metric], sigma, dof, exp.lines_delta, confirmations_left=0)
        return decision.status, f"{decision.reason} (measured before rebasing onto #{best.id})"

    def reestimate(self, exp: Experiment, slot: Slot) -> None:
        """Every `reestimate_every` keeps, re-measure the noise on the new best (on its slot)."""
        every = self.config.judge.reestimate_every
        if exp.status != Status.KEEP or not every:
            return
        keeps = self.ledger.count(self.tag, Status.KEEP)
        if keeps > 1 and (keeps - 1) % every == 0:
            self.observer.message(f"re-measuring the noise on the best (#{exp.id})")
            if self.repeat(exp.id, exp.commit, "noise", self.config.judge.noise_runs - 1, slot):
                self.ledger.update(exp.id, metric=mean(self.ledger.run_values(exp.id)))

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

    def execute(self, exp_id: int, commit: str, kind: str, slot: Slot) -> Outcome:
        """One run of a commit on a slot, recorded in the ledger's runs table. Raises WorkerLost (recorded
        as a lost run), and FrozenFileError when the commit differs from the base in a frozen file."""
        with self._lock:  # several slots may re-run the same best at once: each run gets its own number
            n = max(len(self.ledger.runs(exp_id)), self._run_numbers.get(exp_id, 0))
            self._run_numbers[exp_id] = n + 1
        exp = self.ledger.get(exp_id)
        if kind != "primary":
            exp.description = f"{exp.description} ({kind} run {n + 1})"
        exp.slot = slot.name
        spec = self.spec(exp_id, n, kind, commit)
        self.observer.started(exp, self.budget_s)
        started = time.time()
        try:
            outcome = self.backend.run(spec, slot, on_output=self.observer.output, should_stop=self.stop_event.is_set)
        except WorkerLost:
            self.ledger.add_run(exp_id, kind, "lost", slot=slot.name, started_at=started)
            raise
        self.ledger.add_run(exp_id, kind, "ok" if outcome.status == "ok" else outcome.status, outcome.metric,
                            outcome.metrics, outcome.fields.get("wall_s"), outcome.fields.get("peak_mem_mb"),
                            outcome.fields.get("log_path"), slot=slot.name, started_at=started)
        return outcome

    def spec(self, exp_id: int, n: int, kind: str, commit: str) -> RunSpec:
        """The `RunSpec` of run `n` of a commit under this task's budget, sandbox and limits (the
        hub's verifiers run their paired re-executions from the same description)."""
        return RunSpec(exp_id=exp_id, n=n, kind=kind, commit=commit, command=self.config.run,
                       env=run_env(self.config, self.budget_s, exp_id), timeout_s=self.timeout_s,
                       log_name=f"{self.tag}/{exp_id}{'' if n == 0 else f'.{n}'}.log",
                       log_cap_bytes=self.config.log_cap_bytes, metric=self.config.metric, frozen=self.frozen,
                       pass_env=self.config.sandbox.pass_env, cgroup=group_name(self.config.state_dir),
                       limits=ResourceLimits(self.config.limits.memory_limit_mb(), self.config.limits.processes or None),
                       evaluate=self.config.evaluate, sandbox=self.policy, setup=self.config.setup)

    # -- judging ------------------------------------------------------------------------------

    def _decide(self, exp: Experiment, best: Experiment, first: Outcome, slot: Slot) -> tuple[str, str, list[float]]:
        """Keep/discard with noise-aware statistics, re-running candidate and best when uncertain."""
        violation = self.over_budget(first) or check_guards(self.config.guards, first.metrics,
                                                            self._baseline_metrics())
        if violation:
            return Status.DISCARD, f"discard: {violation}", [first.metric]
        cfg, values = self.config.judge, [first.metric]
        while True:
            best_values = self.ledger.run_values(best.id) or [best.metric]
            sigma, dof = pooled_sigma(self.ledger.run_groups(self.tag))
            decision = decide(self.config.metric, cfg, values, best_values, sigma, dof, exp.lines_delta,
                              confirmations_left=cfg.max_confirm - (len(values) - 1))
            if decision.keep:
                flag = self._heldout_flag(first.metrics, best.metrics)
                if flag:
                    return Status.DISCARD, f"discard: flagged, {flag}; {decision.reason}", values
            if decision.action != "confirm":
                return decision.status, decision.reason, values
            self.observer.message(f"#{exp.id} {decision.reason}")
            more = self.repeat(exp.id, exp.commit, "confirm", 1, slot)
            if not more:
                return Status.DISCARD, (f"discard: a confirmation run failed, ran over budget or was stopped; "
                                   f"{decision.reason}"), values
            values += more
            if len(best_values) < len(values) + 2:  # the best's mean gets sharper too
                if self.repeat(best.id, best.commit, "confirm", 1, slot):
                    self.ledger.update(best.id, metric=mean(self.ledger.run_values(best.id)))

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
        wall = outcome.fields.get("wall_s")
        baseline = self._baseline()
        if wall is None or baseline is None:
            return None  # the baseline itself defines what its task's runs take
        limit = budget_limit(self.budget_s, baseline.wall_s, self.config.overrun)
        if wall <= limit:
            return None
        return (f"over budget: ran {wall:.1f}s, limit {limit:.1f}s (baseline {baseline.wall_s or 0:.1f}s + "
                f"{self.config.overrun:g} x the {self.budget_s:g}s budget, at least "
                f"{WALL_TIME_NOISE:g} x the baseline)")

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
