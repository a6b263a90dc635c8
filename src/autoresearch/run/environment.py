"""The task's own environment: which interpreter and packages its commands (setup, run, evaluate) get.

`[environment] kind` names it (core/config.py):

- `autoresearch`: the Python autoresearch runs under (`python` on PATH is that one);
- `venv`: a virtual environment, the repository's own (`venv = ".venv"`) or one built at setup from
  `requirements` (with uv, kept in the state folder);
- `uv`: the project's `pyproject.toml` (+ `uv.lock`), synced at setup into a venv in the state folder
  (`uv sync --frozen`, offline unless `[setup] network`); a command that says `uv run` uses it too;
- `python`: a named interpreter, put on PATH as `python`;
- `prefix`: a string put before every command (`conda run -n env`, a container runner).

`plan` turns the config into a `TaskEnvironment` (plain data, it travels in each RunSpec) plus the
commands that build it at setup. The environment's folders and its base interpreter are mounted
read-only in the sandbox (`readable`), so a venv whose Python lives under the hidden home still runs.
"""
from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from autoresearch.core.config import TaskConfig

# The caller's TLS settings (certificate bundles, not credentials) that a setup with network keeps:
# behind a proxy with its own CA, downloads fail without them.
TLS_SETTINGS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT")
ENV_DIR = "env"  # under the task's state folder: built environments, the interpreter shim, uv's cache
UV = "uv"


@dataclass(frozen=True)
class TaskEnvironment:
    """How one command runs in the task's environment: what goes first on PATH, the variables it
    adds, the prefix before the command. Empty: autoresearch's own Python (the default)."""

    bindir: str | None = None
    variables: tuple[tuple[str, str], ...] = ()
    prefix: str | None = None

    def command(self, command: str) -> str:
        return f"{self.prefix} {command}" if self.prefix else command

    def environ(self, env: Mapping[str, str]) -> dict[str, str]:
        """`env` (already cleaned) with this environment's PATH entry first and its variables."""
        out = dict(env)
        out.update(self.variables)
        if self.bindir:
            rest = [p for p in out.get("PATH", os.defpath).split(os.pathsep) if p and p != self.bindir]
            out["PATH"] = os.pathsep.join([self.bindir, *rest])
        return out


@dataclass(frozen=True)
class EnvironmentPlan:
    environment: TaskEnvironment
    build: tuple[str, ...]  # shell commands that make it, run before the setup (in the setup's folder)
    build_variables: tuple[tuple[str, str], ...]  # what those commands (and only they) get besides
    folders: tuple[Path, ...]  # what experiments must see read-only (the venv, the shim)
    writable_at_setup: tuple[Path, ...]  # what the build writes

    def describe(self, kind: str) -> str:
        where = f" ({self.environment.bindir})" if self.environment.bindir else ""
        prefix = f" prefix `{self.environment.prefix}`" if self.environment.prefix else ""
        return f"environment: {kind}{where}{prefix}" + (f"; built at setup: {'; '.join(self.build)}" if self.build else "")


def env_dir(state: Path) -> Path:
    return Path(state) / ENV_DIR


def plan(config: TaskConfig, network: bool) -> EnvironmentPlan:
    """The environment of `config`'s commands; `network`: the build may download ([setup] network)."""
    env, state = config.environment, env_dir(config.state_dir)
    offline = () if network else ("--offline",)
    if env.kind == "uv":
        venv = state / "uv-venv"
        sync = [UV, "sync", *(["--frozen"] if (config.root / "uv.lock").is_file() else []), *offline,
                *(["--python", env.python] if env.python else [])]
        variables = (("UV_PROJECT_ENVIRONMENT", str(venv)), ("UV_NO_SYNC", "1"), ("VIRTUAL_ENV", str(venv)),
                     *((("UV_OFFLINE", "1"),) if not network else ()), ("UV_PYTHON_DOWNLOADS", "never"))
        return EnvironmentPlan(TaskEnvironment(str(venv / "bin"), variables), (shlex.join(sync),),
                               _uv_build_variables(state, venv, network), (venv,), _built(state, venv))
    if env.kind == "venv" and env.requirements:
        venv = state / "venv"
        python = ["--python", env.python] if env.python else []
        build = (shlex.join([UV, "venv", "--allow-existing", *python, str(venv)]),
                 shlex.join([UV, "pip", "install", *offline, "--python", str(venv / "bin" / "python"), "-r",
                             env.requirements]))
        return EnvironmentPlan(TaskEnvironment(str(venv / "bin"), (("VIRTUAL_ENV", str(venv)),)), build,
                               _uv_build_variables(state, venv, network), (venv,), _built(state, venv))
    if env.kind == "venv":
        venv = (config.root / (env.venv or ".venv")).absolute()
        return EnvironmentPlan(TaskEnvironment(str(venv / "bin"), (("VIRTUAL_ENV", str(venv)),)), (), (), (venv,), ())
    if env.kind == "python":
        shim = state / "bin"
        return EnvironmentPlan(TaskEnvironment(str(shim)), (), (), (shim,), ())
    if env.kind == "prefix":
        return EnvironmentPlan(TaskEnvironment(prefix=env.prefix), (), (), (), ())
    return EnvironmentPlan(TaskEnvironment(), (), (), (), ())


def _uv_build_variables(state: Path, venv: Path, network: bool) -> tuple[tuple[str, str], ...]:
    # A Python uv downloads (a `.python-version` this machine lacks) must outlive the setup's
    # throw-away home: it is the built venv's base interpreter.
    return (("UV_PROJECT_ENVIRONMENT", str(venv)), ("UV_CACHE_DIR", str(state / "uv-cache")),
            ("UV_PYTHON_INSTALL_DIR", str(state / "python")),
            *((("UV_OFFLINE", "1"), ("UV_PYTHON_DOWNLOADS", "never")) if not network else ()))


def _built(state: Path, venv: Path) -> tuple[Path, ...]:
    """What building a uv environment writes: the venv, uv's cache, the Pythons uv installs."""
    return (venv, state / "uv-cache", state / "python")


def make_shim(config: TaskConfig) -> None:
    """kind = "python": `python` and `python3` in the state folder's bin/ point at the named interpreter."""
    env = config.environment
    if env.kind != "python" or not env.python:
        return
    target = shutil.which(env.python) or env.python
    shim = env_dir(config.state_dir) / "bin"
    shim.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3"):
        link = shim / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.abspath(target))


def interpreter_folders(config: TaskConfig, plan_: EnvironmentPlan) -> tuple[Path, ...]:
    """The folders the environment's interpreter really lives in (a venv's base Python, the named
    interpreter's installation), for the sandbox to show read-only; [environment] readable too."""
    found: list[Path] = []
    for folder in plan_.folders:
        cfg = folder / "pyvenv.cfg"
        if cfg.is_file():
            for line in cfg.read_text(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "home" and value.strip():
                    found.append(Path(os.path.realpath(value.strip())).parent)  # <prefix>/bin -> <prefix>
    env = config.environment
    if env.kind == "python" and env.python:
        real = Path(os.path.realpath(shutil.which(env.python) or env.python))
        found.append(real.parent.parent)
    found += [Path(os.path.expanduser(p)) for p in env.readable]
    home = Path.home().resolve()
    # Never a whole home (or a parent of one) just because an interpreter lives in it.
    return tuple(p for p in dict.fromkeys(found) if not (p == home or home.is_relative_to(p.resolve())))
