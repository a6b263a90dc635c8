"""The research coordinator: proposals in, decisions out, the branch always at the best.

The loop itself (propose → validate → commit → run → judge → record → repeat, on every slot) is
scheduler.py's; opening the run (lock, recovery, base, sandbox, setup) is startup.py's; what a
proposal must be and how a stale one is rebased is admission.py's; how often a candidate runs and
how it is judged is measure.py's. This module owns the order of the writes, which is what makes a
crash at any moment harmless:

- a proposal is committed and archived under a ref, then recorded in the ledger as `queued`,
  before any run;
- a decision is durable in the ledger before the research branch moves;
- a keep moves the branch from the best it was judged against, under one lock, so there are no
  lost updates and no racing keeps. A candidate whose best moved while it ran is rebased onto the
  new best (a three-way merge) and run, or re-run, there.

On start-up, `startup.recover()` finishes what a killed process left: running rows become
`interrupted`, stale worktrees are removed, the branch is set to the ledger's best; queued
proposals are run by the next `run()`.
"""
from __future__ import annotations

import errno
import logging
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

from autoresearch.agents.base import Agent, Context, NoProposal, Proposal
from autoresearch.core.config import ParallelConfig, TaskConfig
from autoresearch.core.errors import ResearchError, WorkerLost
from autoresearch.core.events import Observer, QuietObserver
from autoresearch.core.judge import complexity
from autoresearch.core.records import FINISHED, PENDING, Experiment, Status
from autoresearch.repo import gitops
from autoresearch.research import startup
from autoresearch.research.admission import (
    Rebase,
    Refusal,
    commit_message,
    content_hash,
    normalized,
    one_line,
    params_of,
    plan_rebase,
    validate,
)
from autoresearch.research.measure import Measurer, mean
from autoresearch.research.scheduler import Limits, Scheduler
from autoresearch.run import cgroups
from autoresearch.run.backends import Backend
from autoresearch.run.execution import STOPPED_BY_USER, FrozenFileError
from autoresearch.run.sandbox import SandboxPolicy
from autoresearch.run.slots import Slot
from autoresearch.store.ledger import Ledger, LedgerError

log = logging.getLogger(__name__)

MAX_REBASES = 3  # a candidate whose best keeps moving while it runs is discarded after this many rebases
MAX_LOST = 3  # an experiment whose worker dies this many times is given up (interrupted)
FILE_CACHE = 256  # commits whose editable files are kept in memory (rebases read them again and again)


@dataclass(frozen=True)
class _Opened:
    """What exists only once a research run is open."""

    base: str
    measurer: Measurer
    policy: SandboxPolicy | None


class Research:
    """One research run (a tag) of one task. `open()` it, `run()` it, `close()` it."""

    def __init__(self, config: TaskConfig, agent: Agent | list[Agent], *, tag: str, budget_s: float | None = None,
                 observer: Observer | None = None, ledger: Ledger | None = None, backend: Backend | None = None,
                 parallel: ParallelConfig | None = None):
        self.agents: list[Agent] = list(agent) if isinstance(agent, (list, tuple)) else [agent]
        if not self.agents:
            raise ValueError("research needs at least one agent")
        self.config, self.tag = config, tag
        self.repo = config.root
        self.state = config.state_dir
        self.parallel = parallel or config.parallel
        self.budget_s = float(budget_s if budget_s is not None else config.budget_s)
        # The configured hard timeout as it is; an overridden budget shifts it by the same amount.
        self.timeout_s = config.timeout_s + max(0.0, self.budget_s - config.budget_s) if budget_s is not None \
            else config.timeout_s
        self.observer: Observer = observer or QuietObserver()
        self.ledger = ledger or Ledger(self.state / "ledger.db")
        self.backend = backend
        self.stop_event = threading.Event()
        self.lock = threading.RLock()  # admission, rebase, decision and the branch: one at a time
        self._results_lock = threading.Lock()  # results.tsv is rewritten whole: one writer at a time
        self.files = gitops.EditableFiles(config, FILE_CACHE)
        self._state_lock = startup.StateLock(self.repo, self.state)
        self.explicit_tag = True  # False: `run` resumes the last tag by itself (a moved branch then stops it)
        self.stop_reason = ""  # why the research stops, when not by the user (a failed agent...)
        self._opened: _Opened | None = None

    # -- start-up -----------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the state folder, repair after a crash, create the branch, run the setup."""
        self._state_lock.acquire()
        self.recover()
        base = startup.research_base(self.config, self.ledger, self.tag, self.observer, explicit_tag=self.explicit_tag)
        frozen = startup.frozen_contents(self.config, self.ledger, self.tag, base)
        startup.check_search(self.config, self.files.at(base))
        policy = startup.sandbox_policy(self.config, self.budget_s, self.observer,
                                        self.state / "worktrees" / "preflight")
        shop = startup.prepare_task(self.config, base, policy, budget_s=self.budget_s, timeout_s=self.timeout_s,
                                    observer=self.observer, stop_event=self.stop_event)
        if not self.config.evaluate.command:
            self.observer.message(f"note: no [evaluate] step, so {self.config.metric.name} is self-reported: it is what "
                                  "the experiment prints, and a hostile experiment can print any number "
                                  "(docs/threat-model.md)")
        if self.backend is None:
            self.backend = startup.task_backend(self.config, self.parallel)
        measurer = Measurer(self.config, self.tag, self.ledger, self.backend, self.observer, self.stop_event,
                            self.budget_s, self.timeout_s, frozen, shop.policy,
                            environment=shop.environment.environment, links=shop.links)
        self._opened = _Opened(base, measurer, shop.policy)
        slots = self.backend.slots
        self.observer.message(f"{len(slots)} slot{'s' * (len(slots) != 1)} on {self.backend.name}: "
                              f"{', '.join(s.name for s in slots)}; {self.parallel.ahead} proposal(s) ahead per slot")

    @property
    def _session(self) -> _Opened:
        if self._opened is None:
            raise ResearchError("the research is not open: call open() first")
        return self._opened

    @property
    def base(self) -> str:
        """The commit this research run started from."""
        return self._session.base

    @property
    def measurer(self) -> Measurer:
        return self._session.measurer

    @property
    def policy(self) -> SandboxPolicy | None:
        """The experiments' sandbox (None: experiments run unsandboxed)."""
        return self._session.policy

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
        self.ledger.close()
        if self._state_lock.held:
            cgroups.remove_group(cgroups.group_name(self.state))
        self._state_lock.release()

    def recover(self) -> None:
        """Make the ledger, worktrees, refs and results.tsv consistent after any kind of stop."""
        startup.recover(self.repo, self.state, self.ledger, self.observer)
        self.write_results()

    # -- the loop -----------------------------------------------------------------------------

    def run(self, limits: Limits | None = None) -> int:
        """Run experiments on every slot until a limit, a stop request or the agents run dry;
        returns the runs made (rejected proposals are not runs)."""
        return Scheduler(self, limits or Limits()).run()

    @property
    def slots(self) -> list[Slot]:
        if self.backend is None:
            raise ResearchError("the research is not open: call open() first")
        return self.backend.slots

    def context(self, best: Experiment | None) -> Context:
        head = best.commit if best and best.commit else self.base
        program_text = gitops.read_file(self.repo, head, self.config.program) or ""
        pending = self.ledger.experiments(self.tag, PENDING)
        claimed = {e.idea_id for e in pending}  # an idea being tried is not offered again
        return Context(config=self.config, program=program_text, files=self.files.at(head),
                       history=self.ledger.experiments(self.tag, FINISHED),
                       ideas=[i for i in self.ledger.ideas("open") if i.id not in claimed],
                       best=best, tag=self.tag, notebook=self.state / "notebooks" / f"{self.tag}.md", pending=pending)

    def baseline(self, slot: Slot) -> Experiment:
        """Run the unmodified research base; its runs also give the first noise estimate."""
        files = self.files.at(self.base)
        exp_id = self.ledger.start_experiment(tag=self.tag, parent_commit=self.base, agent="baseline",
                                              description="baseline", params=params_of(self.config, files))
        self.ledger.update(exp_id, commit=self.base, content_hash=content_hash(files), slot=slot.name)
        gitops.update_ref(self.repo, gitops.archive_ref(self.tag, exp_id), self.base)
        try:
            status, reason, values, fields = self._measure(self.ledger.get(exp_id), None, slot)
        except WorkerLost as e:
            status, reason, values, fields = Status.INTERRUPTED, f"worker lost: {e}", [], {}
        exp = self._finish(exp_id, status, reason, None, values, fields)
        if exp.status not in (Status.KEEP, Status.INTERRUPTED):
            raise ResearchError(f"the baseline (unmodified {self.base[:9]}) did not produce a metric: "
                                f"{exp.status}: {exp.reason}\nlog: {exp.log_path}\n{exp.log_tail}")
        return exp

    # -- proposals ----------------------------------------------------------------------------

    def propose(self, agent: Agent) -> Experiment | None:
        """Ask `agent` for a proposal against the current best (the research base while the baseline
        runs) and admit it; None when it has none."""
        best = self.ledger.best(self.tag)
        ctx = self.context(best)
        try:
            proposal = agent.propose(ctx)
        except NoProposal as e:
            self.observer.message(f"agent {agent.name} has nothing more to propose: {e}")
            return None
        return self.admit(proposal, proposal.agent or agent.name, best, ctx.files)

    def admit(self, proposal: Proposal, agent_name: str, best: Experiment | None,
              files: dict[str, str]) -> Experiment:
        """Validate a proposal and, if it may run, commit it and queue it; else record it as rejected.

        The commit is made before the lock is taken (git takes milliseconds; slots must not wait)."""
        head = parent = best.commit if best and best.commit else self.base
        if proposal.parent_id is not None:  # e.g. a fix for a crashed experiment, built on its commit
            base_exp = self.ledger.get(proposal.parent_id)
            if base_exp and base_exp.tag == self.tag and base_exp.commit:
                parent, files = base_exp.commit, self.files.at(base_exp.commit)
        proposed, problem = normalized(proposal.edits)
        edits = {p: c for p, c in proposed.items() if files.get(p) != c}
        new_files = {**files, **edits}
        description = one_line(proposal.description)
        problem = problem or proposal.rejection or validate(self.config, proposed, edits)
        commit = None
        if not problem:
            try:
                commit = gitops.commit_files(self.repo, parent, edits, commit_message(description, agent_name))
            except gitops.GitError as e:  # e.g. a name git refuses: this proposal fails, not the research
                problem = f"git could not commit it: {e.problem.strip()[:300]}"
        digest = content_hash(new_files)
        with self.lock:  # the duplicate check and the new row: atomic against other agents and slots
            exp_id = self.ledger.start_experiment(tag=self.tag, parent_commit=parent, agent=agent_name,
                                                  description=description, status=Status.QUEUED,
                                                  idea_id=proposal.idea_id, info=proposal.info,
                                                  params=proposal.params or params_of(self.config, new_files))
            self.ledger.update(exp_id, base_commit=head, content_hash=digest)
            problem = problem or self._duplicate(digest, exp_id)
            if not problem:
                self._record_commit(exp_id, parent, commit, files, edits)
                return self.ledger.get(exp_id)
            exp, best_now = self._decide(exp_id, Status.REJECTED, problem, best)
            if proposal.rejection and proposal.idea_id is not None:  # its agent says it can never run
                self.ledger.mark_idea(proposal.idea_id, exp_id, exp.reason)
        self._publish(exp, best_now)
        return exp

    def _duplicate(self, digest: str, exp_id: int) -> str | None:
        earlier = self.ledger.find_content(self.tag, digest, exclude=exp_id)
        if earlier is None:
            return None
        return f"duplicate of experiment #{earlier.id} ({earlier.status}): same editable files"

    def _record_commit(self, exp_id: int, parent: str, commit: str, files: dict[str, str],
                       edits: dict[str, str], **fields: Any) -> None:
        gitops.update_ref(self.repo, gitops.archive_ref(self.tag, exp_id), commit)
        self.files.remember(commit, {**files, **edits})
        stat = gitops.diff_stat(files, {**files, **edits})
        lines_delta = sum(complexity(c) for c in edits.values()) - sum(complexity(files.get(p, "")) for p in edits)
        self.ledger.update(exp_id, parent_commit=parent, commit=commit, files_changed=stat.files_changed,
                           insertions=stat.insertions, deletions=stat.deletions, lines_delta=lines_delta, **fields)

    def _record_rebase(self, exp: Experiment, best: Experiment, plan: Rebase | Refusal) -> Refusal | None:
        """Record a planned rebase (under the lock); the refusal when it cannot run."""
        if isinstance(plan, Refusal):
            return plan
        duplicate = self._duplicate(plan.digest, exp.id)
        if duplicate:
            self.ledger.update(exp.id, content_hash=plan.digest)
            return Refusal(Status.REJECTED, f"after rebasing onto #{best.id}: {duplicate}")
        rebased = [*exp.info.get("rebased", []), {"from": exp.commit, "onto": best.id}]
        self._record_commit(exp.id, best.commit, plan.commit, plan.files, plan.merged, base_commit=best.commit,
                            content_hash=plan.digest, info={**exp.info, "rebased": rebased}, params=plan.params)
        self.observer.message(f"#{exp.id} rebased onto #{best.id} (kept since it was proposed)")
        return None

    # -- running and judging ------------------------------------------------------------------

    def process(self, exp_id: int, slot: Slot) -> Experiment:
        """Run a queued experiment on `slot` until it is decided (or re-queued: its worker was lost).

        An unexpected error fails this experiment (recorded as a crash with the error), not the
        research. A full disk stops the research cleanly: the experiment goes back to the queue and
        runs again when `autoresearch run` is started once there is space.
        """
        try:
            return self._process(exp_id, slot)
        except (ResearchError, LedgerError):  # the research cannot go on, or nothing can be recorded
            raise
        except Exception as e:  # noqa: BLE001 - one experiment's failure, whatever it is
            if _disk_full(e):
                try:
                    self.ledger.supersede_runs(exp_id)
                    self.ledger.update(exp_id, status=Status.QUEUED, reason="re-queued: the disk was full")
                except Exception:  # noqa: BLE001 - the ledger may be on the full disk: recover() marks it
                    pass
                raise ResearchError(f"the disk is full ({e}). Experiment #{exp_id} was not judged and runs again "
                                    "on resume. fix: free some space, then `autoresearch run` again") from None
            log.exception("experiment #%s failed inside autoresearch", exp_id)
            return self._finish(exp_id, Status.CRASH, f"internal error while running it: {type(e).__name__}: "
                                f"{str(e)[:300]}", self.ledger.best(self.tag))

    def _process(self, exp_id: int, slot: Slot) -> Experiment:
        """process() without the error handling.

        A candidate judged a keep against a best that has moved on meanwhile is rebased onto the new
        best and re-run there (or, with `rerun_rebased = false`, judged against it on what it measured).
        """
        for _ in range(MAX_REBASES + 1):
            best, exp, refusal = self._start_on_best(exp_id, slot)
            if refusal:
                return self._finish(exp_id, refusal.status, refusal.reason, best)
            try:
                status, reason, values, fields = self._measure(exp, best, slot)
            except WorkerLost as e:
                return self._requeue(exp_id, e)
            with self.lock:
                current = self.ledger.best(self.tag)
                if status != Status.KEEP or current.id == best.id:
                    decided = self._decide(exp_id, status, reason, best, values, fields)
                elif not self.parallel.rerun_rebased:
                    self.observer.message(f"#{exp_id} beat #{best.id}, but #{current.id} was kept meanwhile")
                    refusal = self._record_rebase(exp, current, plan_rebase(self.config, self.files, exp, current))
                    if refusal:
                        decided = self._decide(exp_id, refusal.status, refusal.reason, current)
                    else:
                        status, reason = self.measurer.judge_measured(exp_id, values, current)
                        decided = self._decide(exp_id, status, reason, current, values, fields)
                else:
                    self.observer.message(f"#{exp_id} beat #{best.id}, but #{current.id} was kept meanwhile: "
                                          "rebasing and running it again")
                    self.ledger.supersede_runs(exp_id)  # measured on the old base: set aside, run again
                    self.ledger.update(exp_id, status=Status.QUEUED)
                    continue
            exp = decided[0]
            if not refusal:  # outside the lock: other slots go on deciding meanwhile
                self.measurer.reestimate(exp, slot)  # before the keep is told: with all its runs (a hub claim)
                exp = self.ledger.get(exp.id)
            self._publish(exp, self.ledger.best(self.tag))
            return exp
        return self._finish(exp_id, Status.DISCARD, f"discard: the best moved {MAX_REBASES + 1} times while it ran",
                            self.ledger.best(self.tag))

    def _start_on_best(self, exp_id: int, slot: Slot) -> tuple[Experiment, Experiment, Refusal | None]:
        """Mark a queued experiment running on top of the current best, rebasing it first if the best
        moved since it was proposed: (best, experiment, None), or (best, experiment, refusal) when it
        cannot run there."""
        while True:
            with self.lock:
                best, exp = self.ledger.best(self.tag), self.ledger.get(exp_id)
                assert best is not None and exp is not None and exp.status == Status.QUEUED, (exp_id, exp and exp.status)
                if exp.base_commit == best.commit:
                    self.ledger.update(exp_id, status=Status.RUNNING, slot=slot.name)
                    return best, self.ledger.get(exp_id), None
            plan = plan_rebase(self.config, self.files, exp, best)  # git work without the lock
            with self.lock:
                if self.ledger.best(self.tag).id != best.id:
                    continue  # kept again meanwhile: rebase onto that one
                refusal = self._record_rebase(exp, best, plan)
                if refusal:
                    return best, exp, refusal
                self.ledger.update(exp_id, status=Status.RUNNING, slot=slot.name)
                return best, self.ledger.get(exp_id), None

    def _requeue(self, exp_id: int, error: Exception) -> Experiment:
        exp = self.ledger.get(exp_id)
        lost = int(exp.info.get("lost", 0)) + 1
        if lost > MAX_LOST:
            return self._finish(exp_id, Status.INTERRUPTED, f"its worker was lost {lost} times; last: {error}",
                                self.ledger.best(self.tag))
        with self.lock:
            self.ledger.supersede_runs(exp_id)
            self.ledger.update(exp_id, status=Status.QUEUED, info={**exp.info, "lost": lost},
                               reason=f"re-queued: its worker was lost ({error})")
            exp = self.ledger.get(exp_id)
        self.observer.message(f"#{exp_id} re-queued: its worker was lost ({error})")
        return exp

    def _measure(self, exp: Experiment, best: Experiment | None, slot: Slot) -> tuple[str, str, list[float], dict]:
        try:
            return self.measurer.measure(exp, best, slot)
        except FrozenFileError as e:  # the frozen files were checked at admission: this is tampering
            raise ResearchError(str(e)) from None

    def _finish(self, exp_id: int, status: str, reason: str, best: Experiment | None, values: list[float] = (),
                fields: dict[str, Any] | None = None) -> Experiment:
        """Decide (durably, under the lock), then tell results.tsv and the observer (outside it)."""
        exp, best_now = self._decide(exp_id, status, reason, best, values, fields)
        self._publish(exp, best_now)
        return exp

    def _decide(self, exp_id: int, status: str, reason: str, best: Experiment | None, values: list[float] = (),
                fields: dict[str, Any] | None = None) -> tuple[Experiment, Experiment | None]:
        """Record a decision durably, then move the branch (a keep): the experiment and the best now."""
        with self.lock:
            fields = dict(fields or {})
            if status == Status.INTERRUPTED and self.stop_reason and reason == STOPPED_BY_USER:
                reason = self.stop_reason
            if values:
                fields["metric"] = mean(list(values))
            self.ledger.finish(exp_id, status, reason=reason, **fields)  # durable before the branch moves
            exp = self.ledger.get(exp_id)
            if status == Status.KEEP:
                gitops.update_ref(self.repo, gitops.branch_ref(self.tag), exp.commit, best.commit if best else None)
            if exp.idea_id is not None and status in FINISHED:
                self.ledger.mark_idea(exp.idea_id, exp_id, exp.reason)
            return exp, self.ledger.best(self.tag)

    def _publish(self, exp: Experiment, best: Experiment | None) -> None:
        """What a decision tells the world; slow viewers and the results.tsv rewrite hold no slot up."""
        self.write_results()
        self.observer.finished(exp, best)

    def write_results(self) -> None:
        """results.tsv, the original autoresearch's log, rewritten from the ledger."""
        with self._results_lock:
            self.ledger.write_results_tsv(self.repo / "results.tsv", self.tag, self.config.metric.name)


def _disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(error, sqlite3.OperationalError) and "full" in str(error)
