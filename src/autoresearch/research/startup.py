"""Opening a research run: one process per state folder, repair after any stop, the research base,
the sandbox, and the task's setup, in that order.

Each step either leaves the state folder, the ledger and git consistent or raises an error that
says what to do; nothing here runs an experiment. `recover()` is idempotent: whatever a killed
process left (running rows, stale worktrees, a branch behind the ledger, runs still alive in its
cgroup), running it again changes nothing more.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from autoresearch.core.config import (
    GIT_IGNORED,
    ConfigError,
    ParallelConfig,
    TaskConfig,
    frozen_files,
)
from autoresearch.core.errors import ResearchError
from autoresearch.core.events import Observer
from autoresearch.core.records import Status
from autoresearch.repo import gitops
from autoresearch.research.measure import run_env
from autoresearch.run import cgroups, environment, workspace
from autoresearch.run.backends import Backend, make_backend
from autoresearch.run.execution import run_setup
from autoresearch.run.runner import clean_env
from autoresearch.run.sandbox import (
    SandboxError,
    SandboxPolicy,
    describe,
    fallback_warning,
    preflight,
    sandbox_available,
)
from autoresearch.store.ledger import Ledger


class StateLock:
    """One autoresearch process per state folder (an flock the kernel drops when the process dies)."""

    def __init__(self, repo: Path, state: Path):
        self.repo, self.path = repo, state / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ResearchError(f"another autoresearch process is running on {self.repo} "
                                f"(lock {self.path})\n  fix: stop it first, or wait for it to end") from None
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateLock:  # noqa: PYI034
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def recover(repo: Path, state: Path, ledger: Ledger, observer: Observer) -> None:
    """Make the ledger, worktrees and refs consistent after any kind of stop."""
    for exp in ledger.experiments(statuses=(Status.RUNNING,)):
        ledger.finish(exp.id, Status.INTERRUPTED, reason="autoresearch stopped during this experiment")
    for exp in ledger.experiments(statuses=(Status.QUEUED,)):
        if not exp.commit:  # killed between its row and its commit's record: nothing to run
            ledger.finish(exp.id, Status.INTERRUPTED, reason="autoresearch stopped while queueing this proposal")
    killed = cgroups.reap(cgroups.group_name(state))  # runs a SIGKILLed coordinator left running
    if killed:
        observer.message(f"killed {killed} process(es) left running by an earlier autoresearch process")
    gitops.clear_stale_state(repo, state / "worktrees")
    for tag in ledger.tags():
        base = ledger.get_meta(f"base:{tag}")
        for exp in ledger.experiments(tag):
            if exp.commit and not gitops.ref_exists(repo, gitops.archive_ref(tag, exp.id)):
                gitops.update_ref(repo, gitops.archive_ref(tag, exp.id), exp.commit)
        best = ledger.best(tag)
        target = best.commit if best and best.commit else base
        ref = gitops.branch_ref(tag)
        if target and (not gitops.ref_exists(repo, ref) or gitops.rev_parse(repo, ref) != target):
            gitops.update_ref(repo, ref, target)


def research_base(config: TaskConfig, ledger: Ledger, tag: str, observer: Observer, *, explicit_tag: bool) -> str:
    """The commit research run `tag` starts from: recorded on its first start, checked on a resume."""
    repo = config.root
    gitops.exclude_state(repo, GIT_IGNORED)
    base = ledger.get_meta(f"base:{tag}")
    if base is None and not ledger.experiments(tag) and gitops.git(
            repo, "for-each-ref", "--count=1", "--format=%(refname)", f"{gitops.ARCHIVE_PREFIX}{tag}/"):
        raise ResearchError(f"git holds experiments of research run {tag!r} that the ledger "
                            f"{ledger.path} does not know (was it deleted or replaced?); new experiments "
                            f"would overwrite their refs.\n  fix: `autoresearch doctor -C {repo} --repair` "
                            "rebuilds the ledger from git, or use another --tag")
    if base is not None:
        _check_branch(repo, tag, base, observer, explicit_tag)
        return base
    base = gitops.rev_parse(repo, "HEAD")
    if gitops.ref_exists(repo, gitops.branch_ref(tag)):
        base = gitops.rev_parse(repo, gitops.branch_ref(tag))
    ledger.set_meta(f"base:{tag}", base)
    gitops.update_ref(repo, gitops.branch_ref(tag), base)
    observer.message(f"research branch autoresearch/{tag} starts at {base[:9]}")
    if gitops.has_uncommitted(repo, config.editable + config.frozen):
        observer.message("note: uncommitted changes in the task's files are not part of the research; "
                         "experiments start from the last commit")
    return base


def _check_branch(repo: Path, tag: str, base: str, observer: Observer, explicit_tag: bool) -> None:
    """Resuming a research run whose task branch has moved on: one message that says what to do."""
    head = gitops.rev_parse(repo, "HEAD")
    tip = gitops.rev_parse(repo, gitops.branch_ref(tag))
    if head in (base, tip) or gitops.is_ancestor(repo, head, tip):
        return  # HEAD is part of the research (the base, or the research branch checked out)
    branch = gitops.git(repo, "rev-parse", "--abbrev-ref", "HEAD", check=False).strip() or "HEAD"
    new = gitops.git(repo, "rev-list", "--count", f"{base}..{head}", check=False).strip() or "some"
    text = (f"research run {tag!r} started from {base[:9]}, but the task's branch {branch} is now at "
            f"{head[:9]} ({new} commit(s) the research does not have): resuming it would run the old code.")
    if explicit_tag:
        observer.message(f"note: {text} Continuing {tag!r} on its own base, as --tag asked.")
        return
    raise ResearchError(f"{text}\n  fix: start a new research run on the new code with `autoresearch run "
                        f"--tag NEW_NAME` (to keep what {tag!r} found, first `git merge autoresearch/{tag}` "
                        f"into {branch}), or continue the old one as it was with `--tag {tag}`")


def frozen_contents(config: TaskConfig, ledger: Ledger, tag: str, base: str) -> dict[str, str]:
    """The frozen files as the base has them (every run is checked against these); their digests
    are recorded once, so a later look can tell whether anyone changed the rules."""
    frozen = {p: gitops.read_file(config.root, base, p) or "" for p in frozen_files(config)}
    if ledger.get_meta(f"frozen:{tag}") is None:
        digests = {p: hashlib.sha256(t.encode()).hexdigest() for p, t in frozen.items()}
        ledger.set_meta(f"frozen:{tag}", repr(sorted(digests.items())))
    return frozen


def check_search(config: TaskConfig, files: dict[str, str]) -> None:
    """A [search] name that is no constant fails now, not mid-run."""
    if not config.search:
        return
    from autoresearch.agents.source_constants import search_space
    try:
        search_space(config, files)
    except ValueError as e:
        raise ConfigError(config.path, "search", str(e).removeprefix("[search] "),
                          "name only constants assigned once to a number") from e


def sandbox_policy(config: TaskConfig, budget_s: float, observer: Observer, scratch: Path) -> SandboxPolicy | None:
    """The experiments' sandbox: bubblewrap when available (or required), else a warning."""
    sb = config.sandbox
    if sb.enabled is False:
        observer.message("sandbox: off (task config); experiments run with the user's rights")
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
        observer.message(f"warning: {fallback_warning()}")
        return None
    policy = SandboxPolicy(network=sb.network, readable=tuple(expand_path(p) for p in sb.readable),
                           writable=tuple(expand_path(p) for p in sb.writable),
                           hidden=tuple(expand_path(p) for p in sb.hidden), user=sb.user, allow_root=sb.allow_root)
    try:
        problem = preflight(policy, config.root, scratch, clean_env(run_env(config, budget_s), passed=sb.pass_env))
    except SandboxError as e:
        raise ResearchError(str(e)) from None
    if problem:
        raise ResearchError(f"{problem}\n  fix: make them readable (writable) for that user, run autoresearch "
                            "as an ordinary user, or set [sandbox] allow_root = true")
    observer.message(f"sandbox: {describe(policy)}")
    return policy


@dataclass(frozen=True)
class Workshop:
    """What every experiment of the task runs with, once the setup has run."""

    environment: environment.EnvironmentPlan
    links: workspace.Links
    policy: SandboxPolicy | None  # the experiments' sandbox (None: no sandbox)


def prepare_task(config: TaskConfig, base: str, policy: SandboxPolicy | None, *, budget_s: float, timeout_s: float,
                 observer: Observer, stop_event: threading.Event) -> Workshop:
    """Build the task's environment and run its setup once (when it has one); the experiments'
    sandbox then gets, read-only, the environment and the setup's outputs."""
    plan = environment.plan(config, config.setup_access.network)
    links = workspace.links(config)
    if plan.build or config.setup or config.setup_access.outputs:
        _run_setup(config, base, plan, links, _setup_policy(config, policy, plan), budget_s=budget_s,
                   timeout_s=timeout_s, observer=observer, should_stop=stop_event.is_set)
    else:
        environment.make_shim(config)
    if config.environment.kind != "autoresearch":
        observer.message(plan.describe(config.environment.kind))
    return Workshop(plan, links, _experiment_policy(config, policy, plan, links))


def _run_setup(config: TaskConfig, base: str, plan: environment.EnvironmentPlan, links: workspace.Links,
               policy: SandboxPolicy | None, *, budget_s: float, timeout_s: float, observer: Observer,
               should_stop: Callable[[], bool]) -> None:
    """The setup in a worktree of the base, with the setup's access: its network ([setup] network),
    its outputs' stores writable (docs/tasks.md)."""
    state = config.state_dir
    path = state / "worktrees" / "setup"
    gitops.add_worktree(config.root, path, base)
    try:
        workspace.prepare_stores(config, path)
        environment.make_shim(config)
        links.apply(path)
        passed = (*config.sandbox.pass_env, *(environment.TLS_SETTINGS if config.setup_access.network else ()))
        common: dict[str, Any] = {"pass_env": passed, "timeout_s": timeout_s, "log_cap_bytes": config.log_cap_bytes,
                                  "on_output": observer.output, "should_stop": should_stop, "sandbox": policy}
        for command in plan.build:
            observer.message(f"environment: {command}")
            run_setup(command, path, env={**run_env(config, budget_s), **dict(plan.build_variables)},
                      log_path=state / "logs" / "environment.log", **common)
        if config.setup:
            network = "with network" if config.setup_access.network or config.sandbox.network else "no network"
            observer.message(f"setup: {config.setup}" + (f" ({network})" if policy else ""))
            run_setup(config.setup, path, env=run_env(config, budget_s), log_path=state / "logs" / "setup.log",
                      environment=plan.environment, **common)
    finally:
        gitops.remove_worktree(config.root, path)


def _setup_policy(config: TaskConfig, policy: SandboxPolicy | None, plan: environment.EnvironmentPlan) -> SandboxPolicy | None:
    """The setup's sandbox: the experiments' view, as you (your own command), with its network,
    nothing hidden, and writable: the outputs' stores, the environment's build, the [sandbox] paths."""
    if policy is None:
        return None
    return dataclasses.replace(
        policy, network=config.setup_access.network or policy.network, allow_root=True, hidden=(),
        writable=(*policy.writable, *policy.readable, *workspace.stores(config), *plan.writable_at_setup),
        readable=(*plan.folders, *environment.interpreter_folders(config, plan)),
        mounts=workspace.home_mounts(config, writable=True))


def _experiment_policy(config: TaskConfig, policy: SandboxPolicy | None, plan: environment.EnvironmentPlan,
                       links: workspace.Links) -> SandboxPolicy | None:
    """The experiments' sandbox plus, read-only, the task's environment and the setup's outputs."""
    if policy is None:
        return None
    return dataclasses.replace(
        policy, readable=(*policy.readable, *plan.folders, *environment.interpreter_folders(config, plan),
                          *workspace.stores(config), *(Path(t) for _, t in links.inputs)),
        mounts=workspace.home_mounts(config, writable=False))


def task_backend(config: TaskConfig, parallel: ParallelConfig) -> Backend:
    """Where the experiments run ([parallel] backend), or a config error that says how to get it."""
    p = parallel
    try:
        return make_backend(p.backend, config.root, config.state_dir, slots=p.slots, address=p.address,
                            cpus_per_slot=p.cpus_per_slot, gpus_per_slot=p.gpus_per_slot)
    except ValueError as e:
        raise ConfigError(config.path, "parallel.backend", str(e), "install it, or use backend = \"local\"") from e


def expand_path(text: str) -> str:
    """`~`, `$VAR` and `${VAR:-default}` in config paths (e.g. a data cache the user can move)."""
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1)) or m.group(2), text)
    return os.path.expanduser(os.path.expandvars(text))
