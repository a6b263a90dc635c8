"""One run of one experiment commit, in a folder that holds the commit's files: the part that can
happen on any machine.

The coordinator (loop.py) describes a run as a `RunSpec`: plain data, so it can travel to another
machine (backends.py). `run_in_folder` checks the frozen files, runs the command under the budget
with secrets stripped, reads the metric, re-measures it with the trusted evaluator when the task has
one, checks the frozen files again, and returns an `Outcome`. It never touches the ledger or git.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autoresearch.core.config import EvaluateConfig, MetricSpec
from autoresearch.core.errors import AutoresearchError, ResearchError
from autoresearch.core.metrics import MetricError, read_metrics
from autoresearch.core.untrusted import read_file
from autoresearch.run.cgroups import ResourceLimits
from autoresearch.run.environment import TaskEnvironment
from autoresearch.run.runner import RunResult, clean_env, run_command
from autoresearch.run.sandbox import (
    SandboxPolicy,
    find_repo,
    hand_over,
    hidden_path_hint,
    identity,
)
from autoresearch.run.workspace import Links

RUN_DIR_ENV = "AUTORESEARCH_RUN_DIR"
SETUP_MIN_TIMEOUT_S = 3600.0  # a task's setup downloads and prepares data: at least an hour, whatever the budget
DEFAULT_CGROUP = "autoresearch-worker"  # the cgroup group of runs whose spec names none (other machines)
# Resource metrics the harness measures itself: a printed value under one of these names is kept
# as `claimed_<name>`, never used (a run using 310 MB must not pass a memory guard by printing 12).
MEASURED_MEMORY = ("peak_memory_mb", "peak_mem_mb", "peak_rss_mb")
STOPPED_BY_USER = "stopped by the user"  # the reason of a stopped run (the coordinator says so when it was not)


class SetupError(ResearchError):
    """The task's setup command failed: nothing can run until it works."""


class FrozenFileError(AutoresearchError):
    """The commit to run already differs from the research base in a frozen file."""


@dataclass
class RunSpec:
    """Everything needed to run one experiment commit, on this machine or another."""

    exp_id: int
    n: int  # the experiment's run number: 0 is the primary run, then noise/confirmation re-runs
    kind: str  # primary | noise | confirm
    commit: str
    command: str
    env: dict[str, str]  # added to the worker's own (secret-free) environment
    timeout_s: float
    log_name: str  # relative to the logs folder, e.g. "<tag>/12.1.log"
    log_cap_bytes: int
    metric: MetricSpec
    frozen: dict[str, str] = field(default_factory=dict)  # path -> content at the research base
    pass_env: tuple[str, ...] = ()  # names of the worker's variables passed on ([sandbox] pass_env)
    limits: ResourceLimits = field(default_factory=ResourceLimits)  # per run, where cgroups are available
    cgroup: str | None = None  # the task's cgroup group (cgroups.group_name); None: the worker's own
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    sandbox: SandboxPolicy | None = None
    setup: str | None = None  # for workers on other machines: prepared once per node
    environment: TaskEnvironment = field(default_factory=TaskEnvironment)  # [environment]: PATH, prefix
    links: Links = field(default_factory=Links)  # setup outputs and inputs linked into the folder

    @property
    def eval_log_name(self) -> str:
        return self.log_name.removesuffix(".log") + ".eval.log"


@dataclass
class Outcome:
    status: str  # ok | crash | timeout | stopped | tampered
    fields: dict[str, Any]  # exit_code, wall_s, peak_mem_mb, log_path, log_tail, metrics
    metric: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    failure: tuple[str, str] = ("crash", "")  # (experiment status, reason) when not ok
    started_at: float = 0.0
    ended_at: float = 0.0
    logs: dict[str, str] = field(default_factory=dict)  # log name -> text, from workers on other machines


def run_setup(command: str, folder: Path, *, env: dict[str, str], pass_env: tuple[str, ...], timeout_s: float,
              log_path: Path, log_cap_bytes: int, on_output: Callable[[str], None] | None = None,
              should_stop: Callable[[], bool] | None = None, where: str = "", sandbox: SandboxPolicy | None = None,
              environment: TaskEnvironment | None = None) -> RunResult:
    """Run the task's setup (the user's own command at the research base) in `folder` with the
    experiments' environment, in the task's environment and, given a policy, in the sandbox with the
    setup's access ([setup]: its network, its outputs writable); SetupError when it fails. `where`
    names the machine."""
    environment = environment or TaskEnvironment()
    result = run_command(environment.command(command), folder, env=environment.environ(clean_env(env, passed=pass_env)),
                         timeout_s=max(timeout_s, SETUP_MIN_TIMEOUT_S), log_path=log_path,
                         log_cap_bytes=log_cap_bytes, on_output=on_output, should_stop=should_stop, sandbox=sandbox)
    if result.status != "ok":
        hint = hidden_path_hint(f"{command}\n{result.log_tail}", sandbox, (folder, find_repo(folder))) \
            if result.status == "crash" else ""
        raise SetupError(f"setup command `{command}` failed{where} ({result.status}, exit {result.exit_code}); "
                         f"log: {result.log_path}\n{result.log_tail[-2000:]}{hint}")
    return result


def run_in_folder(spec: RunSpec, folder: Path, log_dir: Path, *, on_output: Callable[[str], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> Outcome:
    """Run `spec` in `folder` (the commit's files, writable); logs go under `log_dir`."""
    started = time.time()
    tampered = check_frozen(spec.frozen, folder)
    if tampered:
        raise FrozenFileError(f"frozen file {tampered} differs from the research base in {spec.commit[:9]}")
    spec.links.apply(folder)
    env = spec.environment.environ(clean_env(spec.env, passed=spec.pass_env))
    result = run_command(spec.environment.command(spec.command), folder, env=env, timeout_s=spec.timeout_s,
                         log_path=log_dir / spec.log_name, log_cap_bytes=spec.log_cap_bytes, on_output=on_output,
                         should_stop=should_stop, sandbox=spec.sandbox, cgroup=spec.cgroup or DEFAULT_CGROUP,
                         limits=spec.limits)
    outcome = _outcome(spec, result, folder)
    modified = check_frozen(spec.frozen, folder)
    if modified and outcome.status == "ok":
        outcome.status, outcome.failure = "tampered", ("discard", f"discard: the run modified frozen file {modified}")
    if outcome.status == "ok" and spec.evaluate.command:
        _trusted_evaluation(spec, folder, log_dir, outcome, should_stop)
    outcome.started_at, outcome.ended_at = started, time.time()
    return outcome


def check_frozen(frozen: dict[str, str], folder: Path) -> str | None:
    """The first frozen file whose content in `folder` differs from `frozen`, or None.

    Read as untrusted (the run may have replaced it by a FIFO, a symlink or a huge sparse file):
    anything but a plain file of about the expected size differs."""
    for path, content in frozen.items():
        try:
            data = read_file(folder, path, max_bytes=4 * len(content) + 4096).decode("utf-8", errors="replace")
        except FileNotFoundError:
            data = ""
        except OSError:  # UntrustedFileError included
            return path
        if data != content:
            return path
    return None


def _outcome(spec: RunSpec, result: RunResult, folder: Path) -> Outcome:
    fields: dict[str, Any] = dict(exit_code=result.exit_code, wall_s=result.wall_s, peak_mem_mb=result.peak_mem_mb,
                                  log_path=str(result.log_path), log_tail=result.log_tail)
    if result.status == "stopped":
        return Outcome("stopped", fields, failure=("interrupted", STOPPED_BY_USER))
    if result.status == "timeout":
        return Outcome("timeout", fields, failure=("timeout", f"killed after the {spec.timeout_s:g}s hard timeout"))
    output = Path(result.log_path).read_text(errors="replace")
    try:
        metrics, missing = read_metrics(output, spec.metric, folder), None
    except MetricError as e:
        metrics, missing = {}, str(e)
    _measured_resources(metrics, result)
    fields["metrics"] = metrics
    if result.status == "crash":
        why = f"killed by the memory limit ({spec.limits.memory_mb:g} MB)" if result.oom_killed and \
            spec.limits.memory_mb else f"exit code {result.exit_code}" + hidden_path_hint(
                f"{spec.command}\n{result.log_tail}", spec.sandbox, (folder, find_repo(folder)))
        return Outcome("crash", fields, metrics=metrics, failure=("crash", why))
    if missing:
        return Outcome("crash", fields, metrics=metrics, failure=("crash", f"no metric: {missing}"))
    return Outcome("ok", fields, metric=metrics[spec.metric.name], metrics=metrics)


def _measured_resources(metrics: dict[str, float], result: RunResult) -> None:
    """Put what the harness measured where guards look, keeping printed values only as claims."""
    for name in MEASURED_MEMORY:
        if name in metrics:
            metrics[f"claimed_{name}"] = metrics.pop(name)
    if result.peak_mem_mb is not None:
        metrics["peak_memory_mb"] = round(result.peak_mem_mb, 3)


def _trusted_evaluation(spec: RunSpec, folder: Path, log_dir: Path, outcome: Outcome,
                        should_stop: Callable[[], bool] | None) -> None:
    """Re-measure with the frozen evaluator, outside the experiment's reach.

    The evaluator runs from a fresh folder holding only the frozen files of the research base
    (so nothing the experiment wrote can shadow its imports), reads the experiment's artifacts
    from $AUTORESEARCH_RUN_DIR, and its metrics replace what the experiment printed.
    """
    trusted = Path(tempfile.mkdtemp(prefix=f"trusted-{spec.exp_id}-{spec.n}-", dir=log_dir))
    try:
        for path, content in spec.frozen.items():
            target = trusted / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        if spec.sandbox is not None:
            hand_over(trusted, identity(spec.sandbox))
        policy = None if spec.sandbox is None else dataclasses.replace(
            spec.sandbox, network=False, readable=(*spec.sandbox.readable, *spec.sandbox.hidden, folder), writable=(),
            hidden=())
        result = run_command(spec.environment.command(spec.evaluate.command or ""), trusted,
                             env=spec.environment.environ(clean_env({**spec.env, RUN_DIR_ENV: str(folder)},
                                                                    passed=spec.pass_env)),
                             timeout_s=spec.evaluate.timeout_s, log_path=log_dir / spec.eval_log_name,
                             log_cap_bytes=spec.log_cap_bytes, should_stop=should_stop, sandbox=policy,
                             cgroup=spec.cgroup or DEFAULT_CGROUP, limits=spec.limits)
        text = Path(result.log_path).read_text(errors="replace")
        metrics = read_metrics(text, spec.metric, trusted) if result.status == "ok" else None
    except MetricError as e:
        metrics, result.log_tail = None, f"{e}\n{result.log_tail}"
    finally:
        shutil.rmtree(trusted, ignore_errors=True)
    if metrics is None:
        outcome.status = "crash"
        outcome.failure = ("crash", f"trusted evaluation failed ({result.status}): {result.log_tail[-300:]}")
        return
    name = spec.metric.name
    claimed = outcome.metrics.get(name)
    outcome.metrics.update(metrics)
    if claimed is not None and claimed != metrics[name]:
        outcome.metrics[f"claimed_{name}"] = claimed  # what the experiment printed, for the record
    outcome.metric = metrics[name]
    outcome.fields["metrics"] = outcome.metrics
