"""Task configuration: `autoresearch.toml` at the root of a task repository.

A task is a git repository with a run command that prints a number. The config names what the
agents may edit, what is frozen, how to run an experiment and how to read its metric. Every
mistake is reported before any run, naming the file, the key and the fix.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autoresearch.core.errors import AutoresearchError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

CONFIG_NAME = "autoresearch.toml"
DEFAULT_BUDGET_S = 300.0
DEFAULT_LOG_CAP_MB = 16.0
DEFAULT_PROCESSES = 4096  # per run, threads included: a fork bomb stops here; torch + data workers stay far below
# "Within budget": a run may take the baseline's wall time plus this share of the budget. Generous
# enough for a bigger model's longer evaluation and export, tight enough that training past the
# budget (4 s against 2 s) is caught.
DEFAULT_OVERRUN = 0.5
METRIC_SOURCES = ("line", "regex", "json")
BACKENDS = ("local", "ray")  # where experiments run (run/backends.py makes them)
STATE_DIR = ".autoresearch"  # a task's state folder (ledger, logs, worktrees)
GIT_IGNORED = (f"{STATE_DIR}/", "results.tsv", "progress.png")  # what research writes into a task repository
DIRECTIONS = ("minimize", "maximize")
GUARD_KEYS = ("max", "min", "max_ratio", "min_ratio")
# How a task's commands run (run/environment.py): autoresearch's own Python, a venv, `uv`'s project
# environment, a named interpreter, or a command prefix (e.g. `conda run -n env`, a container).
ENVIRONMENT_KINDS = ("autoresearch", "venv", "uv", "python", "prefix")


class ConfigError(AutoresearchError, ValueError):
    """A config problem, phrased as: where it is, what is wrong, how to fix it."""

    def __init__(self, file: Path | str, key: str, problem: str, fix: str):
        self.file, self.key, self.problem, self.fix = str(file), key, problem, fix
        super().__init__(f"{file}: [{key}] {problem}\n  fix: {fix}")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    direction: Literal["minimize", "maximize"] = "minimize"
    source: Literal["line", "regex", "json"] = "line"
    pattern: str | None = None  # regex with one group (source = "regex")
    file: str | None = None  # JSON file written by the run, relative to the worktree (source = "json")


@dataclass(frozen=True)
class Guard:
    """A limit on a secondary metric, absolute or relative to the baseline experiment."""

    metric: str
    max: float | None = None
    min: float | None = None
    max_ratio: float | None = None
    min_ratio: float | None = None


@dataclass(frozen=True)
class SearchParam:
    """The range of one UPPER_CASE constant for the non-LLM agents."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class JudgeConfig:
    """Noise-aware acceptance (see judge.py). Defaults calibrated in benchmarks/judge_noise.py."""

    noise_runs: int = 3  # runs of the best to estimate the noise at the start (1 = naive rule)
    # The sequential test (judge.decide), a group-sequential design: keep above z_first standard
    # errors (t-corrected) on the candidate's first run and above z on later ones, discard at or
    # below confirm_from, re-run in between, at most max_confirm times. Calibrated in
    # benchmarks/judge_noise.py for false keeps <= 5% of no-ops and >= 90% of true 3σ gains.
    z: float = 1.45
    z_first: float = 1.8
    confirm_from: float = 0.6
    max_confirm: int = 2
    min_effect: float = 0.0  # smallest improvement worth keeping, in metric units
    complexity_cost: float = 0.0  # metric units per added non-blank, non-comment source line
    keep_simplifications: bool = True  # equal metric with fewer lines is kept
    # Re-measure the noise after this many keeps (0 = never): off by default, since every best kept
    # on one run is run once more (recheck) and the pooled σ grows with every repeated commit.
    reestimate_every: int = 0
    best_runs: int = 3  # an uncertain candidate's confirmation runs re-run the best too, until it has this many
    drift_check: bool = True  # no keep without a recent run of the best (see drift_window)
    # A run of the best counts as recent for a candidate when it started after the primary run of
    # the experiment this many places before the candidate (0: only runs since the candidate started).
    drift_window: int = 8
    recheck: bool = True  # a best kept on a single run is run once more at once (the winner's curse)
    # Every kept commit, the baseline included, is run until it has this many runs (0: as many as the
    # judge needed). A hub worker sets it (`worker join --evidence-runs`): its claims carry these runs,
    # and the hub's cheap check needs fewer verifier runs the more a claim carries (docs/hub.md).
    keep_runs: int = 0


@dataclass(frozen=True)
class EvaluateConfig:
    """A trusted evaluation step run by the harness after every successful run (see docs/threat-model.md).

    The command runs in a fresh folder holding only the frozen files of the research base, with
    the experiment's worktree at $AUTORESEARCH_RUN_DIR; its `name: value` lines replace the
    metrics the experiment printed. `heldout` names a metric of a split the experiment cannot
    see: a kept candidate that worsens it by more than `heldout_tolerance` is flagged and not kept.
    """

    command: str | None = None
    heldout: str | None = None
    heldout_tolerance: float = 0.0
    timeout_s: float = 600.0


@dataclass(frozen=True)
class SandboxConfig:
    """How experiments are isolated (bubblewrap when available; see docs/sandbox.md)."""

    enabled: bool | None = None  # None: when available, with a warning when not
    network: bool = False
    readable: tuple[str, ...] = ()  # extra read-only paths (e.g. a data cache under $HOME)
    writable: tuple[str, ...] = ()  # extra read-write paths
    hidden: tuple[str, ...] = ()  # paths experiments must not see (e.g. a held-out split)
    user: str = "nobody"  # started as root, experiments run as this unprivileged user
    allow_root: bool = False  # started as root: run experiments as uid 0 (no capabilities) instead
    pass_env: tuple[str, ...] = ()  # names of the caller's variables experiments may see besides the defaults


@dataclass(frozen=True)
class EnvironmentConfig:
    """[environment]: the interpreter and packages the task's commands (setup, run, evaluate) use."""

    kind: str = "autoresearch"  # one of ENVIRONMENT_KINDS
    venv: str | None = None  # kind venv: an existing virtual environment, relative to the repository
    requirements: str | None = None  # kind venv: build the venv at setup from this file instead
    python: str | None = None  # kind python: the interpreter; venv/uv builds: the base interpreter
    prefix: str | None = None  # kind prefix: put before every command
    readable: tuple[str, ...] = ()  # more paths the environment needs, read-only in the sandbox


@dataclass(frozen=True)
class SetupConfig:
    """[setup]: what the one setup per research run may reach, and what it leaves for the experiments."""

    network: bool = False  # the setup (and building the environment) may use the network
    outputs: tuple[str, ...] = ()  # folders it fills, kept in the state folder, read-only in experiments
    inputs: tuple[str, ...] = ()  # files or folders of the checkout (git-ignored ones) linked into every worktree


@dataclass(frozen=True)
class LimitsConfig:
    """Per-run resource limits, enforced through a cgroup per run where cgroups are available
    (see cgroups.py). 0 turns a limit off."""

    memory_mb: float | None = None  # None: 90% of this machine's memory, so one run cannot take the host down
    processes: int = DEFAULT_PROCESSES  # tasks, threads included

    def memory_limit_mb(self) -> float | None:
        if self.memory_mb is None:
            try:
                total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            except (ValueError, OSError):
                return None
            return round(0.9 * total / (1 << 20))
        return self.memory_mb or None


@dataclass(frozen=True)
class ParallelConfig:
    """How many experiments run at once, where, and how far the agents think ahead (scheduler.py)."""

    slots: int | None = None  # None: one per visible GPU, else one CPU slot (Ray: from the cluster)
    ahead: int = 2  # proposals per slot kept ready or in thought while experiments run (0: serial): with 2,
    #                 one is ready when a slot frees even when an agent thinks as long as a run takes
    rerun_rebased: bool = True  # a keep whose best moved meanwhile is rebased and re-run on the new best
    backend: str = "local"  # local | ray
    address: str | None = None  # the Ray cluster ("auto", "ray://host:10001"); none: a local one
    cpus_per_slot: float | None = None  # Ray resource requests per experiment
    gpus_per_slot: float | None = None


@dataclass(frozen=True)
class PruneConfig:
    """Stopping doomed runs early from their progress lines (core/progress.py, core/pruning.py,
    docs/pruning.md). It acts only where the task prints progress lines and the best's runs have
    curves; the baseline and the best's own runs are never stopped."""

    enabled: bool = True
    metric: str | None = None  # the progress value compared; None: [metric] name if printed, else the first
    direction: str | None = None  # None: as [metric]
    min_share: float = 0.3  # never before this share of the budget
    k: float = 3.0  # excess over the best's worst run, in run-to-run σ of the curves (t-corrected for few)
    slack: float = 0.5  # plus this share of the best's improvement still to come (curves cross)


@dataclass
class TaskConfig:
    root: Path
    name: str
    run: str
    editable: list[str]
    frozen: list[str] = field(default_factory=list)
    setup: str | None = None
    program: str = "program.md"
    metric: MetricSpec = field(default_factory=lambda: MetricSpec("score"))
    budget_s: float = DEFAULT_BUDGET_S
    timeout_s: float = 2 * DEFAULT_BUDGET_S + 60
    overrun: float = DEFAULT_OVERRUN  # a kept run takes at most the baseline's wall time + overrun x budget
    guards: list[Guard] = field(default_factory=list)
    search: dict[str, SearchParam] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    log_cap_bytes: int = int(DEFAULT_LOG_CAP_MB * 1024 * 1024)
    agent: dict[str, Any] = field(default_factory=dict)  # [agent]: name + options for its factory
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    environment: EnvironmentConfig = field(default_factory=EnvironmentConfig)
    setup_access: SetupConfig = field(default_factory=SetupConfig)

    @property
    def path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def state_dir(self) -> Path:
        """Where the ledger, logs and worktrees live (ignored by git)."""
        return state_dir(self.root)


def state_dir(root: Path | str) -> Path:
    """The state folder of the task repository at `root` (one owner for its name: STATE_DIR)."""
    return Path(root) / STATE_DIR


def load_config(root: Path | str) -> TaskConfig:
    """Read and validate `<root>/autoresearch.toml`."""
    root = Path(root).resolve()
    path = root / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(path, "-", "no config file here",
                          f"run `autoresearch init {root}` to write one, then review it")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "-", f"not valid TOML: {e}", "fix the syntax at that line") from e
    return parse_config(data, root, path)


def parse_config(data: dict, root: Path, path: Path) -> TaskConfig:
    """The TaskConfig of a parsed autoresearch.toml: each section read and checked by its own reader."""
    readers = (_read_budget, _read_metric, _read_guards, _read_search, _read_env, _read_agent, _read_judge,
               _read_evaluate, _read_sandbox, _read_parallel, _read_limits, _read_logs, _read_prune,
               _read_environment, _read_setup)
    known = {"task", *(r.__name__.removeprefix("_read_") for r in readers)}
    for k in data:
        if k not in known:
            raise ConfigError(path, k, "unknown section", f"use one of: {', '.join(sorted(known))}")
    cfg = _read_task(data, root, path)
    for read in readers:
        read(cfg, data, path)
    return cfg


def _read_task(data: dict, root: Path, path: Path) -> TaskConfig:
    """[task]: what runs, what agents may edit, what is frozen."""
    task = _table(data, "task", path, required=True)
    _only(task, "task", {"name", "run", "setup", "editable", "frozen", "program"}, path)
    run = _str(task, "task.run", path, required=True)
    editable = _globs(task, "task.editable", path, required=True)
    frozen = _globs(task, "task.frozen", path)
    program = _str(task, "task.program", path) or "program.md"
    cfg = TaskConfig(
        root=root,
        name=_str(task, "task.name", path) or root.name,
        run=run,
        editable=editable,
        frozen=frozen,
        setup=_str(task, "task.setup", path),
        program=program,
    )
    for pattern in editable:
        if not any(root.glob(pattern)):
            raise ConfigError(path, "task.editable", f"pattern {pattern!r} matches no file",
                              "list files that exist in the repository, e.g. editable = [\"train.py\"]")
    for pattern in frozen:
        if not any(root.glob(pattern)):
            raise ConfigError(path, "task.frozen", f"pattern {pattern!r} matches no file",
                              "list files that exist, or remove the pattern")
    clash = set(editable_files(cfg)) & set(frozen_files(cfg))
    if clash:
        raise ConfigError(path, "task.frozen", f"{sorted(clash)} are both editable and frozen",
                          "a file is either editable or frozen: remove it from one list")

    return cfg


def _read_budget(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[budget]: the training budget, the hard timeout, what "within budget" means."""
    budget = _table(data, "budget", path)
    _only(budget, "budget", {"seconds", "timeout", "overrun"}, path)
    cfg.budget_s = _num(budget, "budget.seconds", path, default=DEFAULT_BUDGET_S, positive=True)
    cfg.timeout_s = _num(budget, "budget.timeout", path, default=2 * cfg.budget_s + 60, positive=True)
    cfg.overrun = _num(budget, "budget.overrun", path, default=DEFAULT_OVERRUN)
    if cfg.overrun < 0:
        raise ConfigError(path, "budget.overrun", f"{cfg.overrun:g} is negative",
                          f"give a share of the budget, e.g. overrun = {DEFAULT_OVERRUN}")
    if cfg.timeout_s < cfg.budget_s:
        raise ConfigError(path, "budget.timeout", f"timeout {cfg.timeout_s:g}s is below the budget "
                          f"{cfg.budget_s:g}s", "set timeout above the budget (start-up and evaluation take time too)")


def _read_metric(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[metric]: the primary metric and where it is read."""
    metric = _table(data, "metric", path, required=True)
    _only(metric, "metric", {"name", "direction", "source", "pattern", "file"}, path)
    name = _str(metric, "metric.name", path, required=True)
    direction = _str(metric, "metric.direction", path) or "minimize"
    if direction not in DIRECTIONS:
        raise ConfigError(path, "metric.direction", f"{direction!r} is not a direction",
                          "use \"minimize\" (lower is better) or \"maximize\"")
    source = _str(metric, "metric.source", path) or "line"
    if source not in METRIC_SOURCES:
        raise ConfigError(path, "metric.source", f"{source!r} is not a metric source",
                          "use \"line\" (a `name: value` line), \"regex\" or \"json\"")
    pattern = _str(metric, "metric.pattern", path)
    file = _str(metric, "metric.file", path)
    if source == "regex":
        if not pattern:
            raise ConfigError(path, "metric.pattern", "source is \"regex\" but no pattern is given",
                              "add pattern = 'val_loss=([0-9.]+)' with one capturing group")
        try:
            if re.compile(pattern).groups < 1:
                raise ConfigError(path, "metric.pattern", "the regex has no capturing group",
                                  "wrap the number in parentheses, e.g. 'loss=([0-9.eE+-]+)'")
        except re.error as e:
            raise ConfigError(path, "metric.pattern", f"invalid regex: {e}", "fix the regex") from e
    if source == "json" and not file:
        raise ConfigError(path, "metric.file", "source is \"json\" but no file is given",
                          "add file = \"metrics.json\" (written by the run, relative to the repo)")
    cfg.metric = MetricSpec(name, direction, source, pattern, file)  # type: ignore[arg-type]


def _read_guards(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[guards]: limits on secondary metrics."""
    guards = _table(data, "guards", path)
    for gname, spec in guards.items():
        if not isinstance(spec, dict) or not spec or set(spec) - set(GUARD_KEYS):
            raise ConfigError(path, f"guards.{gname}", "a guard is a table of limits",
                              f"e.g. {gname} = {{ max_ratio = 1.25 }}; keys: {', '.join(GUARD_KEYS)}")
        for k, v in spec.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ConfigError(path, f"guards.{gname}.{k}", f"{v!r} is not a number", "give a number")
        cfg.guards.append(Guard(gname, **{k: float(v) for k, v in spec.items()}))


def _read_search(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[search]: ranges for the search agents."""
    search = _table(data, "search", path)
    for pname, spec in search.items():
        cfg.search[pname] = _search_param(pname, spec, path)


def _read_env(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[env]: variables added to the experiments' environment."""
    env = _table(data, "env", path)
    for k, v in env.items():
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise ConfigError(path, f"env.{k}", f"{v!r} is not a string or number", "quote the value")
    cfg.env = {k: str(v) for k, v in env.items()}


def _read_agent(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[agent]: the agent's name (its options are checked by agents.make_agent)."""
    cfg.agent = dict(_table(data, "agent", path))
    if "name" in cfg.agent and not isinstance(cfg.agent["name"], str):
        raise ConfigError(path, "agent.name", f"{cfg.agent['name']!r} is not an agent name",
                          "e.g. name = \"openai\" (see `autoresearch run --help` for agents)")


def _read_judge(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[judge]: noise-aware acceptance."""
    judge = _table(data, "judge", path)
    fields = JudgeConfig.__dataclass_fields__
    _only(judge, "judge", set(fields), path)
    values: dict[str, Any] = {}
    for k, v in judge.items():
        default = fields[k].default
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise ConfigError(path, f"judge.{k}", f"{v!r} is not true/false", "write true or false")
            values[k] = v
            continue
        number = _num(judge, f"judge.{k}", path, default=default)
        if number < 0 or (isinstance(default, int) and number != int(number)):
            raise ConfigError(path, f"judge.{k}", f"{v!r} must be a non-negative "
                              f"{'integer' if isinstance(default, int) else 'number'}", f"e.g. {k} = {default}")
        values[k] = int(number) if isinstance(default, int) else number
    cfg.judge = JudgeConfig(**values)
    if cfg.judge.noise_runs < 1:
        raise ConfigError(path, "judge.noise_runs", "must be at least 1", "1 turns noise estimation off")


def _read_evaluate(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[evaluate]: the trusted evaluation step."""
    ev = _table(data, "evaluate", path)
    _only(ev, "evaluate", {"command", "heldout", "heldout_tolerance", "timeout"}, path)
    cfg.evaluate = EvaluateConfig(
        command=_str(ev, "evaluate.command", path), heldout=_str(ev, "evaluate.heldout", path),
        heldout_tolerance=_num(ev, "evaluate.heldout_tolerance", path, default=0.0),
        timeout_s=_num(ev, "evaluate.timeout", path, default=600.0, positive=True))
    if cfg.evaluate.heldout and not cfg.evaluate.command:
        raise ConfigError(path, "evaluate.heldout", "a held-out metric needs the trusted step that reports it",
                          "add command = \"python prepare.py --evaluate\" (a frozen evaluator)")


def _read_sandbox(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[sandbox]: how experiments are isolated."""
    sb = _table(data, "sandbox", path)
    _only(sb, "sandbox", set(SandboxConfig.__dataclass_fields__), path)
    for k in ("enabled", "network", "allow_root"):
        if k in sb and not isinstance(sb[k], bool):
            raise ConfigError(path, f"sandbox.{k}", f"{sb[k]!r} is not true/false", "write true or false")
    pass_env = tuple(_globs(sb, "sandbox.pass_env", path))
    for name in pass_env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(path, "sandbox.pass_env", f"{name!r} is not a variable name",
                              "list names such as \"HF_HOME\" (no values, no wildcards)")
    cfg.sandbox = SandboxConfig(enabled=sb.get("enabled"), network=bool(sb.get("network", False)),
                                readable=tuple(_globs(sb, "sandbox.readable", path)),
                                writable=tuple(_globs(sb, "sandbox.writable", path)),
                                hidden=tuple(_globs(sb, "sandbox.hidden", path)),
                                user=_str(sb, "sandbox.user", path) or "nobody",
                                allow_root=bool(sb.get("allow_root", False)), pass_env=pass_env)


def _read_parallel(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[parallel]: slots, backend, thinking ahead."""
    cfg.parallel = _parallel(_table(data, "parallel", path), path)


def _read_limits(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[limits]: per-run resources."""
    limits = _table(data, "limits", path)
    _only(limits, "limits", {"memory_mb", "processes"}, path)
    memory = _num(limits, "limits.memory_mb", path, default=-1.0)
    processes = _num(limits, "limits.processes", path, default=DEFAULT_PROCESSES)
    if "memory_mb" in limits and memory < 0:
        raise ConfigError(path, "limits.memory_mb", f"{memory:g} is negative", "give megabytes, or 0 for no limit")
    if processes < 0 or processes != int(processes):
        raise ConfigError(path, "limits.processes", f"{processes:g} is not a whole number >= 0",
                          f"e.g. processes = {DEFAULT_PROCESSES} (0: no limit)")
    cfg.limits = LimitsConfig(memory_mb=memory if "memory_mb" in limits else None, processes=int(processes))


def _read_logs(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[logs]: the log cap."""
    logs = _table(data, "logs", path)
    _only(logs, "logs", {"cap_mb"}, path)
    cfg.log_cap_bytes = int(_num(logs, "logs.cap_mb", path, default=DEFAULT_LOG_CAP_MB, positive=True) * 1024 * 1024)

def _read_prune(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[prune]: stopping doomed runs early."""
    prune = _table(data, "prune", path)
    _only(prune, "prune", set(PruneConfig.__dataclass_fields__), path)
    if "enabled" in prune and not isinstance(prune["enabled"], bool):
        raise ConfigError(path, "prune.enabled", f"{prune['enabled']!r} is not true/false", "write true or false")
    direction = _str(prune, "prune.direction", path)
    if direction is not None and direction not in DIRECTIONS:
        raise ConfigError(path, "prune.direction", f"{direction!r} is not a direction",
                          "use \"minimize\" or \"maximize\", or leave it out to follow [metric]")
    default = PruneConfig()
    min_share = _num(prune, "prune.min_share", path, default=default.min_share)
    if not 0 <= min_share < 1:
        raise ConfigError(path, "prune.min_share", f"{min_share:g} is not a share of the budget in [0, 1)",
                          f"e.g. min_share = {default.min_share} (never prune before 30% of the budget)")
    values = {k: _num(prune, f"prune.{k}", path, default=getattr(default, k)) for k in ("k", "slack")}
    for k, v in values.items():
        if v < 0:
            raise ConfigError(path, f"prune.{k}", f"{v:g} is negative", f"e.g. {k} = {getattr(default, k)}")
    cfg.prune = PruneConfig(enabled=prune.get("enabled", True), metric=_str(prune, "prune.metric", path),
                            direction=direction, min_share=min_share, **values)


def _read_environment(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[environment]: how the task's commands run (see run/environment.py)."""
    env = _table(data, "environment", path)
    _only(env, "environment", set(EnvironmentConfig.__dataclass_fields__), path)
    kind = _str(env, "environment.kind", path) or "autoresearch"
    if kind not in ENVIRONMENT_KINDS:
        raise ConfigError(path, "environment.kind", f"{kind!r} is not an environment kind",
                          f"use one of: {', '.join(repr(k) for k in ENVIRONMENT_KINDS)}")
    cfg.environment = EnvironmentConfig(
        kind=kind, venv=_str(env, "environment.venv", path), requirements=_str(env, "environment.requirements", path),
        python=_str(env, "environment.python", path), prefix=_str(env, "environment.prefix", path),
        readable=tuple(_globs(env, "environment.readable", path)))
    _check_environment(cfg.environment, cfg.root, path)


def _check_environment(env: EnvironmentConfig, root: Path, path: Path) -> None:
    needs = {"python": "python", "prefix": "prefix"}
    if env.kind in needs and not getattr(env, needs[env.kind]):
        example = 'python = "/usr/bin/python3.11"' if env.kind == "python" else 'prefix = "conda run -n myenv"'
        raise ConfigError(path, f"environment.{needs[env.kind]}", f"kind = {env.kind!r} needs it", f"add {example}")
    if env.kind == "venv" and not env.requirements:
        venv = root / (env.venv or ".venv")
        if not (venv / "bin" / "python").exists():
            raise ConfigError(path, "environment.venv", f"no virtual environment at {venv} (no bin/python)",
                              f"create it (python -m venv {env.venv or '.venv'}), name yours with venv = \"...\", "
                              "or set requirements = \"requirements.txt\" to build one at setup")
    if env.kind == "uv" and not (root / "pyproject.toml").is_file():
        raise ConfigError(path, "environment.kind", f"kind = \"uv\" needs {root / 'pyproject.toml'}",
                          "add the project file (uv init), or choose another kind")
    for key in ("requirements",):
        value = getattr(env, key)
        if value and not (root / value).is_file():
            raise ConfigError(path, f"environment.{key}", f"{root / value} does not exist",
                              "name a file of the repository, e.g. requirements = \"requirements.txt\"")


def _read_setup(cfg: TaskConfig, data: dict, path: Path) -> None:
    """[setup]: the setup's network, the folders it keeps for the experiments, the inputs it needs."""
    setup = _table(data, "setup", path)
    _only(setup, "setup", set(SetupConfig.__dataclass_fields__), path)
    if "network" in setup and not isinstance(setup["network"], bool):
        raise ConfigError(path, "setup.network", f"{setup['network']!r} is not true/false", "write true or false")
    outputs = tuple(_globs(setup, "setup.outputs", path))
    for out in outputs:
        if not (out.startswith("~/") or _inside(out)):
            raise ConfigError(path, "setup.outputs", f"{out!r} is neither inside the repository nor under ~/",
                              "name a folder such as \"data/shakespeare_char\" or \"~/.cache/mytask\" (other "
                              "places: [sandbox] writable and readable)")
        if not out.startswith("~/"):
            inside = [f for f in editable_files(cfg) + frozen_files(cfg) if f == out or f.startswith(out.rstrip("/") + "/")]
            if inside:
                raise ConfigError(path, "setup.outputs", f"{out!r} holds editable or frozen files ({', '.join(inside)})",
                                  "name the folder the setup writes data into, not one with the task's code")
    inputs = tuple(_globs(setup, "setup.inputs", path))
    for name in inputs:
        if not _inside(name) or not (cfg.root / name).exists():
            raise ConfigError(path, "setup.inputs", f"{name!r} is not a file or folder of {cfg.root}",
                              "name paths inside the repository that exist in your checkout (e.g. a git-ignored "
                              "input.txt), relative to its root")
    cfg.setup_access = SetupConfig(network=bool(setup.get("network", False)), outputs=outputs, inputs=inputs)


def _inside(relpath: str) -> bool:
    try:
        return normalize_path(relpath) == relpath.rstrip("/")
    except ValueError:
        return False


def editable_files(cfg: TaskConfig) -> list[str]:
    """Repository-relative paths of the editable files, sorted."""
    return _expand(cfg.root, cfg.editable)


def frozen_files(cfg: TaskConfig) -> list[str]:
    return _expand(cfg.root, cfg.frozen)


def normalize_path(relpath: str) -> str:
    """A proposal's file path in its one canonical form (`./a//b.py` -> `a/b.py`), or ValueError
    saying why it can never be written: absolute, `..`, a `.git` part, NUL or control characters."""
    if not isinstance(relpath, str) or not relpath:
        raise ValueError(f"{relpath!r} is not a file path")
    if any(ord(c) < 32 or c == "\x7f" for c in relpath):
        raise ValueError(f"{relpath!r} contains a NUL or control character")
    text = relpath.replace("\\", "/")
    if text.startswith("/"):
        raise ValueError(f"{relpath!r} is absolute; give a path inside the repository")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"{relpath!r} names no file")
    if ".." in parts:
        raise ValueError(f"{relpath!r} leaves the repository (..)")
    if any(p.lower() == ".git" for p in parts):
        raise ValueError(f"{relpath!r} is inside .git")
    return "/".join(parts)


def is_editable(cfg: TaskConfig, relpath: str) -> bool:
    """Whether an agent may write `relpath` (existing or new) under the editable globs. The one
    place that says so: the loop, the LLM agents and the coding-CLI agents all ask here."""
    from fnmatch import fnmatch

    try:
        relpath = normalize_path(relpath)
    except ValueError:
        return False
    return any(fnmatch(relpath, g) for g in cfg.editable) and not any(fnmatch(relpath, g) for g in cfg.frozen)


def edit_problem(cfg: TaskConfig, relpath: str, content: str | None = None) -> str | None:
    """Why an agent may not write `content` to `relpath`, or None: the path must be editable (not
    frozen) and a Python file must compile. The loop, the LLM agents and the hub all ask here."""
    if not is_editable(cfg, relpath):
        kind = "frozen" if relpath in set(frozen_files(cfg)) else "not editable"
        return f"{relpath} is {kind}: it may not be changed (editable: {', '.join(cfg.editable)})"
    if content is not None and relpath.endswith(".py"):
        try:
            compile(content, relpath, "exec")
        except SyntaxError as e:
            line = (e.text or "").strip()
            return f"{relpath} has a syntax error at line {e.lineno}: {e.msg}" + (f": {line}" if line else "")
    return None


# -- helpers ---------------------------------------------------------------------------------

def _expand(root: Path, patterns: list[str]) -> list[str]:
    out: set[str] = set()
    for pattern in patterns:
        for p in root.glob(pattern):
            if p.is_file() and ".git" not in p.relative_to(root).parts:
                out.add(p.relative_to(root).as_posix())
    return sorted(out)


def _parallel(table: dict, path: Path) -> ParallelConfig:
    _only(table, "parallel", set(ParallelConfig.__dataclass_fields__), path)
    values: dict[str, Any] = {}
    for key in ("slots", "ahead"):
        if key in table:
            v = table[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if key == "slots" else 0):
                raise ConfigError(path, f"parallel.{key}", f"{v!r} is not a whole number"
                                  f"{' of at least 1' if key == 'slots' else ''}", f"e.g. {key} = 2")
            values[key] = v
    if "rerun_rebased" in table:
        if not isinstance(table["rerun_rebased"], bool):
            raise ConfigError(path, "parallel.rerun_rebased", f"{table['rerun_rebased']!r} is not true/false",
                              "write true or false")
        values["rerun_rebased"] = table["rerun_rebased"]
    backend = _str(table, "parallel.backend", path) or "local"
    if backend not in BACKENDS:
        raise ConfigError(path, "parallel.backend", f"{backend!r} is not a backend",
                          f"use one of: {', '.join(repr(b) for b in BACKENDS)}")
    values["backend"] = backend
    values["address"] = _str(table, "parallel.address", path)
    for key in ("cpus_per_slot", "gpus_per_slot"):
        if key in table:
            values[key] = _num(table, f"parallel.{key}", path, default=0.0, positive=True)
    return ParallelConfig(**values)


def _search_param(name: str, spec: Any, path: Path) -> SearchParam:
    key = f"search.{name}"
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise ConfigError(path, key, "a search range is a table",
                          f"e.g. {name} = {{ low = 1e-4, high = 1e-2, log = true }} or {{ choices = [2, 4, 8] }}")
    if set(spec) - {"low", "high", "log", "int", "choices"}:
        raise ConfigError(path, key, f"unknown keys {sorted(set(spec) - {'low', 'high', 'log', 'int', 'choices'})}",
                          "use low, high, log, int or choices")
    if "choices" in spec:
        if not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ConfigError(path, f"{key}.choices", "choices must be a non-empty list", "e.g. choices = [64, 128, 256]")
        return SearchParam(name, choices=tuple(spec["choices"]))
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(path, key, "needs numeric low and high (or choices)", f"e.g. {name} = {{ low = 1, high = 8 }}")
    if low >= high:
        raise ConfigError(path, key, f"low {low} is not below high {high}", "swap or widen the range")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(path, f"{key}.log", "a log range needs low > 0", "raise low or set log = false")
    integer = bool(spec.get("int", isinstance(low, int) and isinstance(high, int)))
    return SearchParam(name, float(low), float(high), log, integer)


def _table(data: dict, key: str, path: Path, required: bool = False) -> dict:
    value = data.get(key)
    if value is None:
        if required:
            raise ConfigError(path, key, "section is missing", f"add a [{key}] section (see `autoresearch init`)")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(path, key, "must be a table", f"write it as [{key}] followed by key = value lines")
    return value


def _only(table: dict, section: str, allowed: set[str], path: Path) -> None:
    for k in table:
        if k not in allowed:
            raise ConfigError(path, f"{section}.{k}", "unknown key", f"use one of: {', '.join(sorted(allowed))}")


def _str(table: dict, key: str, path: Path, required: bool = False) -> str | None:
    value = table.get(key.rsplit(".", 1)[-1])
    if value is None:
        if required:
            raise ConfigError(path, key, "is missing", f"add {key.rsplit('.', 1)[-1]} = \"...\"")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, key, f"{value!r} is not a non-empty string", "quote the value")
    return value


def _globs(table: dict, key: str, path: Path, required: bool = False) -> list[str]:
    value = table.get(key.rsplit(".", 1)[-1])
    if value is None:
        if required:
            raise ConfigError(path, key, "is missing", "add e.g. editable = [\"train.py\"]")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(path, key, f"{value!r} is not a list of paths or globs", "e.g. [\"train.py\", \"model/*.py\"]")
    if required and not value:
        raise ConfigError(path, key, "is empty", "name at least one file the agents may edit")
    return value


def _num(table: dict, key: str, path: Path, default: float, positive: bool = False) -> float:
    import math

    value = table.get(key.rsplit(".", 1)[-1], default)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(path, key, f"{value!r} is not a number", "write a number without quotes")
    if not math.isfinite(value):  # TOML allows nan and inf; nan passes every `<=` test below
        raise ConfigError(path, key, f"{value} is not a finite number", "give a finite number (not nan or inf)")
    if positive and value <= 0:
        raise ConfigError(path, key, f"{value} must be positive", "give a value above zero")
    return float(value)
