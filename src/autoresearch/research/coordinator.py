"""The research loop: propose → validate → commit → run → judge → record → repeat.

Crash safety comes from the order of writes. A proposal is committed and archived under a ref,
then recorded in the ledger as `queued`, before any run; the keep/discard decision is committed to
the ledger before the research branch moves. On start-up, `recover()` finishes what a killed
process left: running rows become `interrupted`, stale worktrees are removed, the branch is set to
the ledger's best; queued proposals are run by the next `run()`.

Experiments run in parallel on the backend's slots (scheduler.py drives the threads). A proposal
is made against the best of its time; when another experiment is kept first, it is rebased onto
the new best (a three-way merge) and run, or re-run, there: a keep always moves the branch from the
best it was judged against, under one lock, so there are no lost updates and no racing keeps.
How often a candidate runs and how it is judged against its best is measure.py's part.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import logging
import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

from autoresearch.agents.base import Agent, Context, NoProposal, Proposal
from autoresearch.agents.search_defaults import violation
from autoresearch.agents.source_constants import reapply_constants
from autoresearch.core.config import (
    GIT_IGNORED,
    ConfigError,
    ParallelConfig,
    TaskConfig,
    frozen_files,
    is_editable,
    normalize_path,
)
from autoresearch.core.errors import ResearchError, WorkerLost
from autoresearch.core.events import Observer, QuietObserver
from autoresearch.core.judge import complexity
from autoresearch.core.records import FINISHED, PENDING, Experiment, Status
from autoresearch.repo import gitops
from autoresearch.research.measure import Measurer, mean, run_env
from autoresearch.research.scheduler import Limits, Scheduler
from autoresearch.run import cgroups, environment, workspace
from autoresearch.run.backends import Backend, make_backend
from autoresearch.run.execution import STOPPED_BY_USER, FrozenFileError, run_setup
from autoresearch.run.runner import clean_env
from autoresearch.run.sandbox import (
    SandboxError,
    SandboxPolicy,
    describe,
    fallback_warning,
    preflight,
    sandbox_available,
)
from autoresearch.run.slots import Slot
from autoresearch.store.ledger import Ledger, LedgerError

log = logging.getLogger(__name__)

MAX_REBASES = 3  # a candidate whose best keeps moving while it runs is discarded after this many rebases
MAX_LOST = 3  # an experiment whose worker dies this many times is given up (interrupted)
FILE_CACHE = 256  # commits whose editable files are kept in memory (rebases read them again and again)


class Research:
    policy: SandboxPolicy | None = None

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
        self._files = gitops.ObjectCache(FILE_CACHE)  # commit -> its editable files
        self._lock_fd: int | None = None
        self.explicit_tag = True  # False: `run` resumes the last tag by itself (a moved branch then stops it)
        self.stop_reason = ""  # why the research stops, when not by the user (a failed agent...)

    # -- start-up -----------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the state folder, repair after a crash, create the branch, run the setup."""
        self.state.mkdir(parents=True, exist_ok=True)
        self._lock()
        gitops.exclude_state(self.repo, GIT_IGNORED)
        self.recover()
        base = self.ledger.get_meta(f"base:{self.tag}")
        if base is None and not self.ledger.experiments(self.tag) and gitops.git(
                self.repo, "for-each-ref", "--count=1", "--format=%(refname)", f"{gitops.ARCHIVE_PREFIX}{self.tag}/"):
            raise ResearchError(f"git holds experiments of research run {self.tag!r} that the ledger "
                                f"{self.ledger.path} does not know (was it deleted or replaced?); new experiments "
                                "would overwrite their refs.\n  fix: `autoresearch doctor -C "
                                f"{self.repo} --repair` rebuilds the ledger from git, or use another --tag")
        if base is None:
            base = gitops.rev_parse(self.repo, "HEAD")
            if gitops.ref_exists(self.repo, gitops.branch_ref(self.tag)):
                base = gitops.rev_parse(self.repo, gitops.branch_ref(self.tag))
            self.ledger.set_meta(f"base:{self.tag}", base)
            gitops.update_ref(self.repo, gitops.branch_ref(self.tag), base)
            self.observer.message(f"research branch autoresearch/{self.tag} starts at {base[:9]}")
            if gitops.has_uncommitted(self.repo, self.config.editable + self.config.frozen):
                self.observer.message("note: uncommitted changes in the task's files are not part of the research; "
                                      "experiments start from the last commit")
        else:
            self._check_branch(base)
        self.base = base
        self.frozen = {p: gitops.read_file(self.repo, base, p) or "" for p in frozen_files(self.config)}
        if self.ledger.get_meta(f"frozen:{self.tag}") is None:
            digests = {p: hashlib.sha256(t.encode()).hexdigest() for p, t in self.frozen.items()}
            self.ledger.set_meta(f"frozen:{self.tag}", repr(sorted(digests.items())))
        if self.config.search:  # a [search] name that is no constant fails now, not mid-run
            from autoresearch.agents.source_constants import search_space
            try:
                search_space(self.config, self.editable_at(base))
            except ValueError as e:
                raise ConfigError(self.config.path, "search", str(e).removeprefix("[search] "),
                                  "name only constants assigned once to a number") from e
        self.policy = self._sandbox_policy()
        self.env_plan = environment.plan(self.config, self.config.setup_access.network)
        self.links = workspace.links(self.config)
        if self.env_plan.build or self.config.setup or self.config.setup_access.outputs:
            self._setup()
        else:
            environment.make_shim(self.config)
        self.policy = self._experiment_policy(self.policy)
        if self.config.environment.kind != "autoresearch":
            self.observer.message(self.env_plan.describe(self.config.environment.kind))
        if not self.config.evaluate.command:
            self.observer.message(f"note: no [evaluate] step, so {self.config.metric.name} is self-reported: it is what "
                                  "the experiment prints, and a hostile experiment can print any number "
                                  "(docs/threat-model.md)")
        if self.backend is None:
            p = self.parallel
            try:
                self.backend = make_backend(p.backend, self.repo, self.state, slots=p.slots, address=p.address,
                                            cpus_per_slot=p.cpus_per_slot, gpus_per_slot=p.gpus_per_slot)
            except ValueError as e:
                raise ConfigError(self.config.path, "parallel.backend", str(e), "install it, or use backend = \"local\"")
        self.measurer = Measurer(self.config, self.tag, self.ledger, self.backend, self.observer, self.stop_event,
                                 self.budget_s, self.timeout_s, self.frozen, self.policy,
                                 environment=self.env_plan.environment, links=self.links)
        slots = self.backend.slots
        self.observer.message(f"{len(slots)} slot{'s' * (len(slots) != 1)} on {self.backend.name}: "
                              f"{', '.join(s.name for s in slots)}; {self.parallel.ahead} proposal(s) ahead per slot")

    def _check_branch(self, base: str) -> None:
        """Resuming a research run whose task branch has moved on: one message that says what to do."""
        head = gitops.rev_parse(self.repo, "HEAD")
        tip = gitops.rev_parse(self.repo, gitops.branch_ref(self.tag))
        if head in (base, tip) or _is_ancestor(self.repo, head, tip):
            return  # HEAD is part of the research (the base, or the research branch checked out)
        branch = gitops.git(self.repo, "rev-parse", "--abbrev-ref", "HEAD", check=False).strip() or "HEAD"
        new = gitops.git(self.repo, "rev-list", "--count", f"{base}..{head}", check=False).strip() or "some"
        text = (f"research run {self.tag!r} started from {base[:9]}, but the task's branch {branch} is now at "
                f"{head[:9]} ({new} commit(s) the research does not have): resuming it would run the old code.")
        if self.explicit_tag:
            self.observer.message(f"note: {text} Continuing {self.tag!r} on its own base, as --tag asked.")
            return
        raise ResearchError(f"{text}\n  fix: start a new research run on the new code with `autoresearch run "
                            f"--tag NEW_NAME` (to keep what {self.tag!r} found, first `git merge autoresearch/{self.tag}` "
                            f"into {branch}), or continue the old one as it was with `--tag {self.tag}`")

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
        self.ledger.close()
        if self._lock_fd is not None:
            cgroups.remove_group(cgroups.group_name(self.state))
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def recover(self) -> None:
        """Make the ledger, worktrees and refs consistent after any kind of stop."""
        for exp in self.ledger.experiments(statuses=(Status.RUNNING,)):
            self.ledger.finish(exp.id, Status.INTERRUPTED, reason="autoresearch stopped during this experiment")
        for exp in self.ledger.experiments(statuses=(Status.QUEUED,)):
            if not exp.commit:  # killed between its row and its commit's record: nothing to run
                self.ledger.finish(exp.id, Status.INTERRUPTED, reason="autoresearch stopped while queueing this proposal")
        killed = cgroups.reap(cgroups.group_name(self.state))  # runs a SIGKILLed coordinator left running
        if killed:
            self.observer.message(f"killed {killed} process(es) left running by an earlier autoresearch process")
        gitops.clear_stale_state(self.repo, self.state / "worktrees")
        for tag in self.ledger.tags():
            base = self.ledger.get_meta(f"base:{tag}")
            for exp in self.ledger.experiments(tag):
                if exp.commit and not gitops.ref_exists(self.repo, gitops.archive_ref(tag, exp.id)):
                    gitops.update_ref(self.repo, gitops.archive_ref(tag, exp.id), exp.commit)
            best = self.ledger.best(tag)
            target = best.commit if best and best.commit else base
            ref = gitops.branch_ref(tag)
            if target and (not gitops.ref_exists(self.repo, ref) or gitops.rev_parse(self.repo, ref) != target):
                gitops.update_ref(self.repo, ref, target)
        self.write_results()

    def _lock(self) -> None:
        fd = os.open(self.state / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ResearchError(f"another autoresearch process is running on {self.repo} "
                                f"(lock {self.state / 'lock'})\n  fix: stop it first, or wait for it to end") from None
        self._lock_fd = fd

    def _sandbox_policy(self) -> SandboxPolicy | None:
        """The experiments' sandbox: bubblewrap when available (or required), else a warning."""
        sb = self.config.sandbox
        if sb.enabled is False:
            self.observer.message("sandbox: off (task config); experiments run with the user's rights")
            return None
        if not sandbox_available():
            if sb.enabled:
                raise ResearchError(f"the task requires the sandbox, but {fallback_warning()}")
            if os.geteuid() == 0 and not sb.allow_root:
                raise ResearchError(
                    f"autoresearch runs as root and {fallback_warning()}\n  Experiments would run as root with "
                    "every capability. fix: install bubblewrap (experiments then run as an unprivileged user), "
                    "run autoresearch as an ordinary user, or accept the risk with [sandbox] allow_root = true "
                    "(or enabled = false)")
            self.observer.message(f"warning: {fallback_warning()}")
            return None
        policy = SandboxPolicy(network=sb.network, readable=tuple(expand_path(p) for p in sb.readable),
                               writable=tuple(expand_path(p) for p in sb.writable),
                               hidden=tuple(expand_path(p) for p in sb.hidden), user=sb.user, allow_root=sb.allow_root)
        try:
            problem = preflight(policy, self.repo, self.state / "worktrees" / "preflight",
                                clean_env(run_env(self.config, self.budget_s), passed=sb.pass_env))
        except SandboxError as e:
            raise ResearchError(str(e)) from None
        if problem:
            raise ResearchError(f"{problem}\n  fix: make them readable (writable) for that user, run autoresearch "
                                "as an ordinary user, or set [sandbox] allow_root = true")
        self.observer.message(f"sandbox: {describe(policy)}")
        return policy

    def _setup(self) -> None:
        """Build the task's environment and run the setup once, in a worktree of the base, with the
        setup's access: its network ([setup] network), its outputs' stores writable (docs/tasks.md)."""
        cfg, plan = self.config, self.env_plan
        path = self.state / "worktrees" / "setup"
        gitops.add_worktree(self.repo, path, self.base)
        try:
            workspace.prepare_stores(cfg, path)
            environment.make_shim(cfg)
            self.links.apply(path)
            policy = self._setup_policy()
            passed = (*cfg.sandbox.pass_env, *(environment.TLS_SETTINGS if cfg.setup_access.network else ()))
            common: dict[str, Any] = {"pass_env": passed, "timeout_s": self.timeout_s,
                                      "log_cap_bytes": cfg.log_cap_bytes, "on_output": self.observer.output,
                                      "should_stop": self.stop_event.is_set, "sandbox": policy}
            for command in plan.build:
                self.observer.message(f"environment: {command}")
                run_setup(command, path, env={**run_env(cfg, self.budget_s), **dict(plan.build_variables)},
                          log_path=self.state / "logs" / "environment.log", **common)
            if cfg.setup:
                network = "with network" if cfg.setup_access.network or cfg.sandbox.network else "no network"
                self.observer.message(f"setup: {cfg.setup}" + (f" ({network})" if policy else ""))
                run_setup(cfg.setup, path, env=run_env(cfg, self.budget_s), log_path=self.state / "logs" / "setup.log",
                          environment=plan.environment, **common)
        finally:
            gitops.remove_worktree(self.repo, path)

    def _setup_policy(self) -> SandboxPolicy | None:
        """The setup's sandbox: the experiments' view, as you (your own command), with its network,
        nothing hidden, and writable: the outputs' stores, the environment's build, the [sandbox] paths."""
        if self.policy is None:
            return None
        p, plan = self.policy, self.env_plan
        return dataclasses.replace(
            p, network=self.config.setup_access.network or p.network, allow_root=True, hidden=(),
            writable=(*p.writable, *p.readable, *workspace.stores(self.config), *plan.writable_at_setup),
            readable=(*plan.folders, *environment.interpreter_folders(self.config, plan)),
            mounts=workspace.home_mounts(self.config, writable=True))

    def _experiment_policy(self, policy: SandboxPolicy | None) -> SandboxPolicy | None:
        """The experiments' sandbox plus, read-only, the task's environment and the setup's outputs."""
        if policy is None:
            return None
        plan = self.env_plan
        return dataclasses.replace(
            policy, readable=(*policy.readable, *plan.folders, *environment.interpreter_folders(self.config, plan),
                              *workspace.stores(self.config), *(Path(t) for _, t in self.links.inputs)),
            mounts=workspace.home_mounts(self.config, writable=False))

    # -- the loop -----------------------------------------------------------------------------

    def run(self, limits: Limits | None = None) -> int:
        """Run experiments on every slot until a limit, a stop request or the agents run dry;
        returns the runs made (rejected proposals are not runs)."""
        return Scheduler(self, limits or Limits()).run()

    @property
    def slots(self) -> list[Slot]:
        assert self.backend is not None, "call open() first"
        return self.backend.slots

    def context(self, best: Experiment | None) -> Context:
        head = best.commit if best and best.commit else self.base
        program_text = gitops.read_file(self.repo, head, self.config.program) or ""
        pending = self.ledger.experiments(self.tag, PENDING)
        claimed = {e.idea_id for e in pending}  # an idea being tried is not offered again
        return Context(config=self.config, program=program_text, files=self.editable_at(head),
                       history=self.ledger.experiments(self.tag, FINISHED),
                       ideas=[i for i in self.ledger.ideas("open") if i.id not in claimed],
                       best=best, tag=self.tag, notebook=self.state / "notebooks" / f"{self.tag}.md", pending=pending)

    def editable_at(self, commit: str) -> dict[str, str]:
        """The editable files of a commit (cached: commits never change)."""
        files = self._files.get(commit)
        if files is None:
            files = gitops.editable_files(self.config, commit)
            self._files.put(commit, files)
        return dict(files)

    def baseline(self, slot: Slot) -> Experiment:
        """Run the unmodified research base; its runs also give the first noise estimate."""
        files = self.editable_at(self.base)
        exp_id = self.ledger.start_experiment(tag=self.tag, parent_commit=self.base, agent="baseline",
                                              description="baseline", params=_params(self.config, files))
        self.ledger.update(exp_id, commit=self.base, content_hash=_content_hash(files), slot=slot.name)
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
                parent, files = base_exp.commit, self.editable_at(base_exp.commit)
        proposed, problem = _normalized(proposal.edits)
        edits = {p: c for p, c in proposed.items() if files.get(p) != c}
        new_files = {**files, **edits}
        description = _one_line(proposal.description)
        problem = problem or proposal.rejection or self.validate(proposed, edits)
        commit = None
        if not problem:
            try:
                commit = gitops.commit_files(self.repo, parent, edits, _message(description, agent_name))
            except gitops.GitError as e:  # e.g. a name git refuses: this proposal fails, not the research
                problem = f"git could not commit it: {e.problem.strip()[:300]}"
        digest = _content_hash(new_files)
        with self.lock:  # the duplicate check and the new row: atomic against other agents and slots
            exp_id = self.ledger.start_experiment(tag=self.tag, parent_commit=parent, agent=agent_name,
                                                  description=description, status=Status.QUEUED,
                                                  idea_id=proposal.idea_id, info=proposal.info,
                                                  params=proposal.params or _params(self.config, new_files))
            self.ledger.update(exp_id, base_commit=head, content_hash=digest)
            problem = problem or self._duplicate(digest, exp_id)
            if problem:
                exp = self._finish(exp_id, Status.REJECTED, problem, best)
                if proposal.rejection and proposal.idea_id is not None:  # its agent says it can never run
                    self.ledger.mark_idea(proposal.idea_id, exp_id, exp.reason)
                return exp
            self._record_commit(exp_id, parent, commit, files, edits)
            return self.ledger.get(exp_id)

    def _duplicate(self, digest: str, exp_id: int) -> str | None:
        earlier = self.ledger.find_content(self.tag, digest, exclude=exp_id)
        if earlier is None:
            return None
        return f"duplicate of experiment #{earlier.id} ({earlier.status}): same editable files"

    def _record_commit(self, exp_id: int, parent: str, commit: str, files: dict[str, str],
                       edits: dict[str, str], **fields: Any) -> None:
        gitops.update_ref(self.repo, gitops.archive_ref(self.tag, exp_id), commit)
        self._files.put(commit, {**files, **edits})
        stat = gitops.diff_stat(files, {**files, **edits})
        lines_delta = sum(complexity(c) for c in edits.values()) - sum(complexity(files.get(p, "")) for p in edits)
        self.ledger.update(exp_id, parent_commit=parent, commit=commit, files_changed=stat.files_changed,
                           insertions=stat.insertions, deletions=stat.deletions, lines_delta=lines_delta, **fields)

    def validate(self, proposed: dict[str, str], edits: dict[str, str]) -> str | None:
        """Why a proposal cannot be run, or None. No run is spent on an invalid proposal."""
        frozen = set(frozen_files(self.config))
        for path in proposed:
            if path in frozen or not is_editable(self.config, path):
                kind = "frozen" if path in frozen else "not editable"
                return f"touches {path}, which is {kind} (editable: {', '.join(self.config.editable)})"
        if not edits:
            return "no change to any editable file"
        for path, content in edits.items():
            if path.endswith(".py"):
                try:
                    compile(content, path, "exec")
                except SyntaxError as e:
                    return f"syntax error in {path} line {e.lineno}: {e.msg}"
        return None

    def _prepare_rebase(self, exp: Experiment, best: Experiment) -> tuple[str, str] | dict[str, Any]:
        """The git work of moving a stale candidate onto `best` (no lock needed): the new commit and
        what to record, or (status, reason) when it cannot run there."""
        assert exp.commit and exp.base_commit and best.commit
        files = self.editable_at(best.commit)
        base, proposed = self.editable_at(exp.base_commit), self.editable_at(exp.commit)
        # A change of constant values (a search proposal) is re-expressed on the new best: its values
        # set there. Anything else is merged as text; a conflict drops it unrun (not an experiment).
        merged = reapply_constants(base, proposed, files)
        if merged is not None:
            problem = violation(_params(self.config, {**files, **merged}), _params(self.config, files))
            if problem:
                return Status.REJECTED, f"re-expressed on #{best.id}, it would break a rule: {problem}"
        else:
            merged, conflicts = gitops.merge_files(base, files, proposed)
            if conflicts:
                return Status.REJECTED, (f"conflicts with #{best.id} ({_one_line(best.description)[:60]}), kept since "
                                         f"it was proposed, in {', '.join(conflicts)}")
        if not merged:
            return Status.REJECTED, f"nothing left to try: its change is already in the best (#{best.id})"
        commit = gitops.commit_files(self.repo, best.commit, merged, _message(exp.description, exp.agent) +
                                     f"rebased from {exp.commit[:9]} onto #{best.id}\n")
        return {"commit": commit, "files": files, "merged": merged, "digest": _content_hash({**files, **merged}),
                "params": _params(self.config, {**files, **merged})}

    def _record_rebase(self, exp: Experiment, best: Experiment, prepared: tuple[str, str] | dict[str, Any]
                       ) -> tuple[str, str] | None:
        """Record a prepared rebase (under the lock); (status, reason) when it cannot run."""
        if isinstance(prepared, tuple):
            return prepared
        duplicate = self._duplicate(prepared["digest"], exp.id)
        if duplicate:
            self.ledger.update(exp.id, content_hash=prepared["digest"])
            return Status.REJECTED, f"after rebasing onto #{best.id}: {duplicate}"
        rebased = [*exp.info.get("rebased", []), {"from": exp.commit, "onto": best.id}]
        self._record_commit(exp.id, best.commit, prepared["commit"], prepared["files"], prepared["merged"],
                            base_commit=best.commit, content_hash=prepared["digest"], info={**exp.info, "rebased": rebased},
                            params=prepared["params"])
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
            best, exp, problem = self._start_on_best(exp_id, slot)
            if problem:
                return self._finish(exp_id, *problem, best)
            try:
                status, reason, values, fields = self._measure(exp, best, slot)
            except WorkerLost as e:
                return self._requeue(exp_id, e)
            with self.lock:
                current = self.ledger.best(self.tag)
                if status != Status.KEEP or current.id == best.id:
                    exp = self._finish(exp_id, status, reason, best, values, fields)
                elif not self.parallel.rerun_rebased:
                    self.observer.message(f"#{exp_id} beat #{best.id}, but #{current.id} was kept meanwhile")
                    problem = self._record_rebase(exp, current, self._prepare_rebase(exp, current))
                    if problem:
                        return self._finish(exp_id, *problem, current)
                    status, reason = self.measurer.judge_measured(exp_id, values, current)
                    exp = self._finish(exp_id, status, reason, current, values, fields)
                else:
                    self.observer.message(f"#{exp_id} beat #{best.id}, but #{current.id} was kept meanwhile: "
                                          "rebasing and running it again")
                    self.ledger.supersede_runs(exp_id)  # measured on the old base: set aside, run again
                    self.ledger.update(exp_id, status=Status.QUEUED)
                    continue
            self.measurer.reestimate(exp, slot)  # outside the lock: other slots go on deciding meanwhile
            return exp
        return self._finish(exp_id, Status.DISCARD, f"discard: the best moved {MAX_REBASES + 1} times while it ran",
                            self.ledger.best(self.tag))

    def _start_on_best(self, exp_id: int, slot: Slot) -> tuple[Experiment, Experiment, tuple[str, str] | None]:
        """Mark a queued experiment running on top of the current best, rebasing it first if the best
        moved since it was proposed: (best, experiment, None), or (best, experiment, (status, reason))
        when it cannot run there."""
        while True:
            with self.lock:
                best, exp = self.ledger.best(self.tag), self.ledger.get(exp_id)
                assert best is not None and exp is not None and exp.status == Status.QUEUED, (exp_id, exp and exp.status)
                if exp.base_commit == best.commit:
                    self.ledger.update(exp_id, status=Status.RUNNING, slot=slot.name)
                    return best, self.ledger.get(exp_id), None
            prepared = self._prepare_rebase(exp, best)  # git work without the lock
            with self.lock:
                if self.ledger.best(self.tag).id != best.id:
                    continue  # kept again meanwhile: rebase onto that one
                problem = self._record_rebase(exp, best, prepared)
                if problem:
                    return best, exp, problem
                self.ledger.update(exp_id, status=Status.RUNNING, slot=slot.name)
                return best, self.ledger.get(exp_id), None

    def _requeue(self, exp_id: int, error: Exception) -> Experiment:
        with self.lock:
            exp = self.ledger.get(exp_id)
            lost = int(exp.info.get("lost", 0)) + 1
            if lost > MAX_LOST:
                return self._finish(exp_id, Status.INTERRUPTED, f"its worker was lost {lost} times; last: {error}",
                                    self.ledger.best(self.tag))
            self.ledger.supersede_runs(exp_id)
            self.ledger.update(exp_id, status=Status.QUEUED, info={**exp.info, "lost": lost},
                               reason=f"re-queued: its worker was lost ({error})")
            self.observer.message(f"#{exp_id} re-queued: its worker was lost ({error})")
            return self.ledger.get(exp_id)

    def _measure(self, exp: Experiment, best: Experiment | None, slot: Slot) -> tuple[str, str, list[float], dict]:
        try:
            return self.measurer.measure(exp, best, slot)
        except FrozenFileError as e:  # the frozen files were checked at admission: this is tampering
            raise ResearchError(str(e)) from None

    def _finish(self, exp_id: int, status: str, reason: str, best: Experiment | None, values: list[float] = (),
                fields: dict[str, Any] | None = None) -> Experiment:
        """Record a decision durably, then move the branch (a keep) and tell the observer."""
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
            self.write_results()
            self.observer.finished(exp, self.ledger.best(self.tag))
            return exp

    # -- helpers ------------------------------------------------------------------------------

    def write_results(self) -> None:
        with self.lock:
            self.ledger.write_results_tsv(self.repo / "results.tsv", self.tag, self.config.metric.name)


def _is_ancestor(repo: Path, commit: str, of: str) -> bool:
    try:
        gitops.git(repo, "merge-base", "--is-ancestor", commit, of)
        return True
    except gitops.GitError:
        return False


def _disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(error, sqlite3.OperationalError) and "full" in str(error)


def _normalized(edits: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """A proposal's edits under canonical paths, or why they cannot be taken (an odd path, two
    spellings of one file, content that is not text)."""
    out: dict[str, str] = {}
    for path, content in edits.items():
        try:
            norm = normalize_path(path)
        except ValueError as e:
            return {}, f"invalid path: {e}"
        if norm in out:
            return {}, f"{path!r} and another path both name {norm}"
        if not isinstance(content, str) or "\x00" in content:
            return {}, f"the new content of {norm} is not text"
        out[norm] = content
    return out, None


def expand_path(text: str) -> str:
    """`~`, `$VAR` and `${VAR:-default}` in config paths (e.g. a data cache the user can move)."""
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1)) or m.group(2), text)
    return os.path.expanduser(os.path.expandvars(text))


def _content_hash(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path}\0{len(files[path])}\0".encode() + files[path].encode())
    return digest.hexdigest()


def _params(config: TaskConfig, files: dict[str, str]) -> dict[str, Any]:
    try:
        from autoresearch.agents.source_constants import current_params
        return current_params(config, files)
    except Exception:  # a file that does not parse has no params; the agent will learn nothing from it
        return {}


def _message(description: str, agent: str) -> str:
    return f"{description}\n\nproposed by {agent} (autoresearch)\n"


def _one_line(text: str) -> str:
    line = " ".join((text or "").split())
    return (line[:200] + "…") if len(line) > 200 else (line or "(no description)")
