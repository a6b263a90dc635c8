"""The research loop: propose → validate → commit in a worktree → run → judge → record → repeat.

Crash safety comes from the order of writes. The ledger row exists before anything else happens;
the experiment's commit is archived under a ref before the ledger names it; the keep/discard
decision is committed to the ledger before the research branch moves. On start-up, `recover()`
finishes what a killed process left: running rows become `interrupted`, stale worktrees are
removed, and the branch is set to the ledger's best.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from autoresearch import gitops
from autoresearch.agents.base import Agent, Context, NoProposal, Proposal
from autoresearch.config import ConfigError, TaskConfig, frozen_files, is_editable
from autoresearch.judge import check_guards, complexity, decide, pooled_sigma
from autoresearch.ledger import FINISHED, Experiment, Ledger
from autoresearch.metrics import MetricError, read_metrics
from autoresearch.runner import RunResult, clean_env, run_command
from autoresearch.sandbox import SandboxPolicy, describe, fallback_warning, sandbox_available

MAX_REJECTIONS_IN_A_ROW = 25  # an agent that only produces invalid proposals is stopped
BUDGET_ENV = "AUTORESEARCH_TIME_BUDGET"


class ResearchError(RuntimeError):
    """Research cannot go on (broken baseline, tampered frozen file, locked state...)."""


class Observer(Protocol):
    def message(self, text: str) -> None: ...
    def started(self, exp: Experiment, budget_s: float) -> None: ...
    def output(self, line: str) -> None: ...
    def finished(self, exp: Experiment, best: Experiment | None) -> None: ...


class QuietObserver:
    def message(self, text: str) -> None: pass
    def started(self, exp: Experiment, budget_s: float) -> None: pass
    def output(self, line: str) -> None: pass
    def finished(self, exp: Experiment, best: Experiment | None) -> None: pass


@dataclass
class Limits:
    max_experiments: int | None = None  # runs (not rejected proposals) in this invocation
    max_hours: float | None = None


class Research:
    policy: SandboxPolicy | None = None

    def __init__(self, config: TaskConfig, agent: Agent, *, tag: str, budget_s: float | None = None,
                 observer: Observer | None = None, ledger: Ledger | None = None):
        self.config, self.agent, self.tag = config, agent, tag
        self.repo = config.root
        self.state = config.state_dir
        self.budget_s = float(budget_s if budget_s is not None else config.budget_s)
        # Keep the config's slack for start-up and evaluation when the budget is overridden.
        self.timeout_s = max(self.budget_s + 30.0, config.timeout_s + self.budget_s - config.budget_s)
        self.observer: Observer = observer or QuietObserver()
        self.ledger = ledger or Ledger(self.state / "ledger.db")
        self.stop_event = threading.Event()
        self._lock_fd: int | None = None

    # -- start-up -----------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the state folder, repair after a crash, create the branch, run the setup."""
        self.state.mkdir(parents=True, exist_ok=True)
        self._lock()
        gitops.exclude_state(self.repo)
        self.recover()
        base = self.ledger.get_meta(f"base:{self.tag}")
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
        self.base = base
        frozen = self._hash_frozen(self.repo, base)
        recorded = self.ledger.get_meta(f"frozen:{self.tag}")
        if recorded is None:
            self.ledger.set_meta(f"frozen:{self.tag}", repr(sorted(frozen.items())))
        self.frozen = frozen
        if self.config.search:  # a [search] name that is no constant fails now, not mid-run
            from autoresearch.agents.constants import search_space
            try:
                search_space(self.config, self.editable_at(base))
            except ValueError as e:
                raise ConfigError(self.config.path, "search", str(e),
                                  "name only UPPER_CASE constants assigned once to a number") from e
        self.policy = self._sandbox_policy()
        if self.config.setup:
            self._setup()

    def close(self) -> None:
        self.ledger.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def recover(self) -> None:
        """Make the ledger, worktrees and refs consistent after any kind of stop."""
        for exp in self.ledger.experiments(statuses=("running",)):
            self.ledger.finish(exp.id, "interrupted", reason="autoresearch stopped during this experiment")
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
                                f"(lock {self.state / 'lock'}); stop it first") from None
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
            self.observer.message(f"warning: {fallback_warning()}")
            return None
        policy = SandboxPolicy(network=sb.network, readable=tuple(expand_path(p) for p in sb.readable),
                               writable=tuple(expand_path(p) for p in sb.writable),
                               hidden=tuple(expand_path(p) for p in sb.hidden))
        self.observer.message(f"sandbox: {describe(policy)}")
        return policy

    def _setup(self) -> None:
        self.observer.message(f"setup: {self.config.setup}")
        path = self.state / "worktrees" / "setup"
        gitops.add_worktree(self.repo, path, self.base)
        try:
            result = run_command(self.config.setup, path, env=self._env(), timeout_s=max(self.timeout_s, 3600),
                                 log_path=self.state / "logs" / "setup.log", log_cap_bytes=self.config.log_cap_bytes,
                                 on_output=self.observer.output, should_stop=self.stop_event.is_set)
        finally:
            gitops.remove_worktree(self.repo, path)
        if result.status != "ok":
            raise ResearchError(f"setup command `{self.config.setup}` failed ({result.status}, exit "
                                f"{result.exit_code}); log: {result.log_path}\n{result.log_tail}")

    # -- the loop -----------------------------------------------------------------------------

    def run(self, limits: Limits | None = None) -> int:
        """Run experiments until a limit, a stop request or the agent runs dry; returns runs made."""
        limits = limits or Limits()
        deadline = time.time() + limits.max_hours * 3600 if limits.max_hours else None
        runs = rejections = 0
        while not self.stop_event.is_set():
            if limits.max_experiments is not None and runs >= limits.max_experiments:
                break
            if deadline and time.time() >= deadline:
                self.observer.message("time limit reached")
                break
            exp = self.step()
            if exp is None:
                break
            if exp.status == "rejected":
                rejections += 1
                if rejections >= MAX_REJECTIONS_IN_A_ROW:
                    raise ResearchError(f"agent {self.agent.name} produced {rejections} invalid proposals "
                                        f"in a row; last: {exp.reason}")
                continue
            rejections = 0
            runs += 1
        return runs

    def step(self) -> Experiment | None:
        """One experiment: the baseline first, then the agent's proposals."""
        best = self.ledger.best(self.tag)
        if best is None:
            return self._baseline()
        ctx = self.context(best)
        try:
            proposal = self.agent.propose(ctx)
        except NoProposal as e:
            self.observer.message(f"agent {self.agent.name} has nothing more to propose: {e}")
            return None
        return self.try_proposal(proposal, best, ctx.files)

    def context(self, best: Experiment) -> Context:
        program_text = gitops.read_file(self.repo, best.commit or self.base, self.config.program) or ""
        return Context(config=self.config, program=program_text, files=self.editable_at(best.commit or self.base),
                       history=self.ledger.experiments(self.tag, FINISHED), ideas=self.ledger.ideas("open"),
                       best=best, tag=self.tag, notebook=self.state / "notebooks" / f"{self.tag}.md")

    def editable_at(self, commit: str) -> dict[str, str]:
        paths = [p for p in gitops.list_files(self.repo, commit) if is_editable(self.config, p)]
        return gitops.read_files(self.repo, commit, paths)

    def _baseline(self) -> Experiment:
        files = self.editable_at(self.base)
        exp_id = self.ledger.start_experiment(tag=self.tag, parent_commit=self.base, agent="baseline",
                                              description="baseline", params=_params(self.config, files))
        self.ledger.update(exp_id, commit=self.base, content_hash=_content_hash(files))
        gitops.update_ref(self.repo, gitops.archive_ref(self.tag, exp_id), self.base)
        exp = self._run(exp_id, self.base, best=None)
        if exp.status not in ("keep", "interrupted"):
            raise ResearchError(f"the baseline (unmodified {self.base[:9]}) did not produce a metric: "
                                f"{exp.status}: {exp.reason}\nlog: {exp.log_path}\n{exp.log_tail}")
        return exp

    def try_proposal(self, proposal: Proposal, best: Experiment, files: dict[str, str]) -> Experiment:
        parent = best.commit or self.base
        if proposal.parent_id is not None:  # e.g. a fix for a crashed experiment, built on its commit
            base_exp = self.ledger.get(proposal.parent_id)
            if base_exp and base_exp.tag == self.tag and base_exp.commit:
                parent, files = base_exp.commit, self.editable_at(base_exp.commit)
        edits = {p: c for p, c in proposal.edits.items() if files.get(p) != c}
        new_files = {**files, **edits}
        params = proposal.params or _params(self.config, new_files)
        exp_id = self.ledger.start_experiment(tag=self.tag, parent_commit=parent, agent=self.agent.name,
                                              description=_one_line(proposal.description),
                                              idea_id=proposal.idea_id, params=params, info=proposal.info)
        problem = proposal.info.get("reject_reason") or self.validate(proposal.edits, edits)
        digest = _content_hash(new_files)
        earlier = None if problem else self.ledger.find_content(self.tag, digest)
        if earlier is not None:  # the same change again: its result is already known
            problem = f"duplicate of experiment #{earlier.id} ({earlier.status}): same editable files"
        self.ledger.update(exp_id, content_hash=digest)
        if problem:
            self.ledger.finish(exp_id, "rejected", reason=problem)
            exp = self.ledger.get(exp_id)
            self.observer.finished(exp, best)
            return exp
        worktree = self.state / "worktrees" / f"exp-{exp_id}"
        try:
            gitops.add_worktree(self.repo, worktree, parent)
            commit = gitops.commit_edits(worktree, edits, f"{_one_line(proposal.description)}\n\n"
                                         f"autoresearch experiment {exp_id} ({self.agent.name})")
            gitops.update_ref(self.repo, gitops.archive_ref(self.tag, exp_id), commit)
            stat = gitops.diff_stat(self.repo, parent, commit)
            self.ledger.update(exp_id, commit=commit, files_changed=stat.files_changed,
                               insertions=stat.insertions, deletions=stat.deletions)
            lines_delta = sum(complexity(c) for c in edits.values()) - sum(complexity(files.get(p, "")) for p in edits)
            self.ledger.update(exp_id, lines_delta=lines_delta)
            return self._run(exp_id, commit, best, worktree=worktree, lines_delta=lines_delta)
        finally:
            gitops.remove_worktree(self.repo, worktree)

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

    def _run(self, exp_id: int, commit: str, best: Experiment | None, worktree: Path | None = None,
             lines_delta: int = 0) -> Experiment:
        """Run an experiment as often as the judge needs, decide, and record the decision durably."""
        first = self._execute(exp_id, commit, "primary", worktree)
        fields: dict[str, Any] = dict(first.fields)
        values = [first.metric] if first.status == "ok" else []
        if first.status != "ok":
            status, reason = first.failure
        elif best is None or best.metric is None:
            values += self._repeat(exp_id, commit, "noise", self.config.judge.noise_runs - 1)
            status, reason = "keep", f"baseline: {self.config.metric.name} {_mean(values):.6g}" + _spread(values)
        else:
            status, reason, values = self._decide(exp_id, commit, best, first, lines_delta)
        if values:
            fields["metric"] = _mean(values)
        self.ledger.finish(exp_id, status, reason=reason, **fields)  # durable before the branch moves
        if status == "keep":
            gitops.update_ref(self.repo, gitops.branch_ref(self.tag), commit, best.commit if best else None)
        exp = self.ledger.get(exp_id)
        if exp.idea_id is not None and status in FINISHED:
            self.ledger.mark_idea(exp.idea_id, exp_id, exp.reason)
        self.write_results()
        self.observer.finished(exp, self.ledger.best(self.tag))
        keeps = len(self.ledger.experiments(self.tag, ("keep",)))
        every = self.config.judge.reestimate_every
        if status == "keep" and best is not None and every and keeps > 1 and (keeps - 1) % every == 0:
            self.observer.message(f"re-measuring the noise on the best (#{exp_id})")
            more = self._repeat(exp_id, commit, "noise", self.config.judge.noise_runs - 1)
            if more:
                self.ledger.update(exp_id, metric=_mean(self.ledger.run_values(exp_id)))
                exp = self.ledger.get(exp_id)
        return exp

    def _decide(self, exp_id: int, commit: str, best: Experiment, first: "_Outcome",
                lines_delta: int) -> tuple[str, str, list[float]]:
        """Keep/discard with noise-aware statistics, re-running candidate and best when uncertain."""
        violation = check_guards(self.config.guards, first.metrics, self._baseline_metrics())
        if violation:
            return "discard", f"discard: {violation}", [first.metric]
        cfg, values = self.config.judge, [first.metric]
        best_values = self.ledger.run_values(best.id) or [best.metric]
        while True:
            sigma, dof = pooled_sigma(self.ledger.run_groups(self.tag))
            decision = decide(self.config.metric, cfg, values, best_values, sigma, dof, lines_delta,
                              confirmations_left=cfg.max_confirm - (len(values) - 1))
            if decision.action == "keep":
                flag = self._heldout_flag(first.metrics, best.metrics)
                if flag:
                    return "discard", f"discard: flagged, {flag}; {decision.reason}", values
            if decision.action != "confirm":
                return decision.status, decision.reason, values
            self.observer.message(f"#{exp_id} {decision.reason}")
            more = self._repeat(exp_id, commit, "confirm", 1)
            if not more:
                return "discard", f"discard: a confirmation run failed or was stopped; {decision.reason}", values
            values += more
            if len(best_values) < len(values) + 2:  # the best's mean gets sharper too
                best_values += self._repeat(best.id, best.commit or self.base, "confirm", 1)
                self.ledger.update(best.id, metric=_mean(best_values))

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

    def _repeat(self, exp_id: int, commit: str, kind: str, times: int) -> list[float]:
        values = []
        for _ in range(max(0, times)):
            if self.stop_event.is_set():
                break
            outcome = self._execute(exp_id, commit, kind)
            if outcome.status != "ok":
                break
            values.append(outcome.metric)
        return values

    def _execute(self, exp_id: int, commit: str, kind: str, worktree: Path | None = None) -> "_Outcome":
        """One run of a commit in a clean worktree, recorded in the ledger's runs table."""
        n = len(self.ledger.runs(exp_id))
        own_worktree = worktree is None
        worktree = worktree or gitops.add_worktree(self.repo, self.state / "worktrees" / f"exp-{exp_id}-{n}", commit)
        try:
            tampered = self._check_frozen(worktree)
            if tampered:
                raise ResearchError(f"frozen file {tampered} differs from the research base in {commit[:9]}")
            exp = self.ledger.get(exp_id)
            if kind != "primary":
                exp.description = f"{exp.description} ({kind} run {n + 1})"
            self.observer.started(exp, self.budget_s)
            suffix = "" if n == 0 else f".{n}"
            result = run_command(self.config.run, worktree, env=self._env(exp_id), timeout_s=self.timeout_s,
                                 log_path=self.state / "logs" / self.tag / f"{exp_id}{suffix}.log",
                                 log_cap_bytes=self.config.log_cap_bytes, on_output=self.observer.output,
                                 should_stop=self.stop_event.is_set, sandbox=self.policy)
            outcome = self._outcome(result, worktree)
            modified = self._check_frozen(worktree)
            if modified and outcome.status == "ok":
                outcome.status, outcome.failure = "tampered", ("discard", f"discard: the run modified frozen file {modified}")
            if outcome.status == "ok" and self.config.evaluate.command:
                self._trusted_evaluation(exp_id, n, worktree, outcome)
        finally:
            if own_worktree:
                gitops.remove_worktree(self.repo, worktree)
        self.ledger.add_run(exp_id, kind, "ok" if outcome.status == "ok" else outcome.status, outcome.metric,
                            outcome.metrics, result.wall_s, outcome.fields.get("peak_mem_mb"), str(result.log_path))
        return outcome

    def _trusted_evaluation(self, exp_id: int, n: int, worktree: Path, outcome: "_Outcome") -> None:
        """Re-measure with the frozen evaluator, outside the experiment's reach.

        The evaluator runs from a fresh folder holding only the frozen files of the research base
        (so nothing the experiment wrote can shadow its imports), reads the experiment's artifacts
        from $AUTORESEARCH_RUN_DIR, and its metrics replace what the experiment printed.
        """
        trusted = self.state / "trusted" / f"{exp_id}-{n}"
        if trusted.exists():
            shutil.rmtree(trusted)
        trusted.mkdir(parents=True)
        try:
            for path in self.frozen:
                target = trusted / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(gitops.read_file(self.repo, self.base, path) or "")
            suffix = "" if n == 0 else f".{n}"
            env = {**self._env(exp_id), "AUTORESEARCH_RUN_DIR": str(worktree)}
            policy = None if self.policy is None else SandboxPolicy(
                network=False, readable=(*self.policy.readable, *self.policy.hidden, worktree),
                writable=(), hidden=())
            result = run_command(self.config.evaluate.command, trusted, env=env, timeout_s=self.config.evaluate.timeout_s,
                                 log_path=self.state / "logs" / self.tag / f"{exp_id}{suffix}.eval.log",
                                 log_cap_bytes=self.config.log_cap_bytes, should_stop=self.stop_event.is_set,
                                 sandbox=policy)
            text = Path(result.log_path).read_text(errors="replace")
            metrics = read_metrics(text, self.config.metric, trusted) if result.status == "ok" else None
        except MetricError as e:
            metrics, result.log_tail = None, f"{e}\n{result.log_tail}"
        finally:
            shutil.rmtree(trusted, ignore_errors=True)
        if metrics is None:
            outcome.status = "crash"
            outcome.failure = ("crash", f"trusted evaluation failed ({result.status}): {result.log_tail[-300:]}")
            return
        name = self.config.metric.name
        claimed = outcome.metrics.get(name)
        outcome.metrics.update(metrics)
        if claimed is not None and claimed != metrics[name]:
            outcome.metrics[f"claimed_{name}"] = claimed  # what the experiment printed, for the record
        outcome.metric = metrics[name]
        outcome.fields["metrics"] = outcome.metrics

    def _outcome(self, result: RunResult, worktree: Path) -> "_Outcome":
        fields: dict[str, Any] = dict(exit_code=result.exit_code, wall_s=result.wall_s,
                                      peak_mem_mb=result.peak_mem_mb, log_path=str(result.log_path),
                                      log_tail=result.log_tail)
        if result.status == "stopped":
            return _Outcome("stopped", fields, failure=("interrupted", "stopped by the user"))
        if result.status == "timeout":
            return _Outcome("timeout", fields, failure=("timeout", f"killed after the {self.timeout_s:g}s hard timeout"))
        output = Path(result.log_path).read_text(errors="replace")
        try:
            metrics, missing = read_metrics(output, self.config.metric, worktree), None
        except MetricError as e:
            metrics, missing = {}, str(e)
        fields["metrics"] = metrics
        if "peak_memory_mb" in metrics:
            fields["peak_mem_mb"] = metrics["peak_memory_mb"]
        if result.status == "crash":
            return _Outcome("crash", fields, metrics=metrics, failure=("crash", f"exit code {result.exit_code}"))
        if missing:
            return _Outcome("crash", fields, metrics=metrics, failure=("crash", f"no metric: {missing}"))
        return _Outcome("ok", fields, metric=metrics[self.config.metric.name], metrics=metrics)

    def _baseline_metrics(self) -> dict[str, float] | None:
        for exp in self.ledger.experiments(self.tag, ("keep",)):
            return exp.metrics
        return None

    # -- helpers ------------------------------------------------------------------------------

    def _env(self, exp_id: int | None = None) -> dict[str, str]:
        extra = {**self.config.env, BUDGET_ENV: f"{self.budget_s:g}"}
        if exp_id is not None:
            extra["AUTORESEARCH_EXPERIMENT_ID"] = str(exp_id)
        return clean_env(extra)

    def _hash_frozen(self, repo: Path, commit: str) -> dict[str, str]:
        out = {}
        for path in frozen_files(self.config):
            text = gitops.read_file(repo, commit, path)
            out[path] = hashlib.sha256((text or "").encode()).hexdigest()
        return out

    def _check_frozen(self, worktree: Path) -> str | None:
        """The first frozen file whose content differs from the research base, or None."""
        for path, digest in self.frozen.items():
            file = worktree / path
            data = file.read_bytes().decode("utf-8", errors="replace") if file.exists() else ""
            if hashlib.sha256(data.encode()).hexdigest() != digest:
                return path
        return None

    def write_results(self) -> None:
        self.ledger.write_results_tsv(self.repo / "results.tsv", self.tag, self.config.metric.name)


@dataclass
class _Outcome:
    status: str  # ok | crash | timeout | stopped | tampered
    fields: dict[str, Any]
    metric: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    failure: tuple[str, str] = ("crash", "")  # (experiment status, reason) when not ok


def expand_path(text: str) -> str:
    """`~`, `$VAR` and `${VAR:-default}` in config paths (e.g. a data cache the user can move)."""
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1)) or m.group(2), text)
    return os.path.expanduser(os.path.expandvars(text))


def _content_hash(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path}\0{len(files[path])}\0".encode() + files[path].encode())
    return digest.hexdigest()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    m = _mean(values)
    sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f" ± {sd:.2g} over {len(values)} runs"


def _params(config: TaskConfig, files: dict[str, str]) -> dict[str, Any]:
    try:
        from autoresearch.agents.constants import current_params
        return current_params(config, files)
    except Exception:  # a file that does not parse has no params; the agent will learn nothing from it
        return {}


def _one_line(text: str) -> str:
    line = " ".join((text or "").split())
    return (line[:200] + "…") if len(line) > 200 else (line or "(no description)")
