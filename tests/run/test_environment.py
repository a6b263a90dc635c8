"""The task's own environment ([environment]): uv's project environment, a venv (the repository's own,
or built from requirements.txt), a named interpreter, a command prefix. Real uv, offline (the test
projects have no dependencies, so nothing is ever downloaded), real runs through the harness."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autoresearch.core.config import ConfigError, load_config
from autoresearch.research.coordinator import Research
from tests.conftest import step
from tests.scripted import ScriptedAgent

UV = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")
# What the run reports about where it runs: its interpreter's prefix, and whether autoresearch's own
# packages (optuna) are importable there: they are not in the task's own environment.
TRAIN = textwrap.dedent('''\
    import os, sys
    try:
        import optuna  # noqa: F401
        has_optuna = 1
    except ImportError:
        has_optuna = 0
    print("prefix:", sys.prefix)
    print(f"has_optuna: {has_optuna}")
    print(f"prefixed: {int(os.environ.get('TASK_PREFIXED') == 'yes')}")
    print("score: 1.5")
''')
CONFIG = textwrap.dedent('''\
    [task]
    editable = ["train.py"]
    run = "{run}"

    [budget]
    seconds = 5
    timeout = 60

    [metric]
    name = "score"

    [environment]
    {environment}
''')
PYPROJECT = '[project]\nname = "shaped"\nversion = "0.1.0"\nrequires-python = ">=3.9"\ndependencies = []\n'


def task(root: Path, environment: str, run: str = "python train.py", files: dict[str, str] | None = None,
         ignored: tuple[str, ...] = ()) -> Path:
    root.mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    (root / ".gitignore").write_text("".join(f"{p}\n" for p in ignored))
    (root / "autoresearch.toml").write_text(CONFIG.format(run=run, environment=environment))
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "task"],
                   check=True)
    return root


def baseline(repo: Path) -> dict[str, float]:
    r = Research(load_config(repo), ScriptedAgent([]), tag="t")
    r.open()
    try:
        exp = step(r)
    finally:
        r.close()
    assert exp.status == "keep", exp.reason
    log = Path(exp.log_path).read_text()
    return {**exp.metrics, "prefix": next(line.split(": ", 1)[1] for line in log.splitlines()
                                          if line.startswith("prefix: "))}


def uv_project(root: Path) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    subprocess.run([UV, "lock", "--offline"], cwd=root, check=True, capture_output=True,
                   env={**os.environ, "UV_OFFLINE": "1", "UV_PYTHON_DOWNLOADS": "never"})
    return {"pyproject.toml": PYPROJECT, "uv.lock": (root / "uv.lock").read_text()}


@pytest.mark.skipif(UV is None, reason="uv is not installed")
@pytest.mark.parametrize("run", ["python train.py", "uv run train.py"])
def test_uv_project_runs_in_its_own_synced_environment(tmp_path: Path, run: str) -> None:
    files = uv_project(tmp_path / "lock")
    repo = task(tmp_path / "t", 'kind = "uv"', run=run, files=files)
    metrics = baseline(repo)
    assert metrics["prefix"] == str(repo / ".autoresearch" / "env" / "uv-venv")
    assert metrics["has_optuna"] == 0  # not autoresearch's own Python
    assert (repo / ".autoresearch" / "logs" / "environment.log").is_file()


def test_the_default_is_autoresearchs_own_python(tmp_path: Path) -> None:
    repo = task(tmp_path / "t", "")
    metrics = baseline(repo)
    assert metrics["has_optuna"] == 1 and metrics["prefix"] == sys.prefix


def test_the_repositorys_venv(tmp_path: Path) -> None:
    repo = task(tmp_path / "t", 'kind = "venv"', ignored=(".venv",))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(repo / ".venv")], check=True)
    metrics = baseline(repo)
    assert metrics["prefix"] == str(repo / ".venv") and metrics["has_optuna"] == 0


@pytest.mark.skipif(UV is None, reason="uv is not installed")
def test_a_venv_built_at_setup_from_requirements(tmp_path: Path) -> None:
    repo = task(tmp_path / "t", 'kind = "venv"\nrequirements = "requirements.txt"',
                files={"requirements.txt": "# nothing to install: the build must work offline\n"})
    metrics = baseline(repo)
    assert metrics["prefix"] == str(repo / ".autoresearch" / "env" / "venv") and metrics["has_optuna"] == 0


def test_a_named_interpreter_is_python_on_path(tmp_path: Path) -> None:
    base = os.path.realpath(os.path.join(sys.base_prefix, "bin", "python3"))
    repo = task(tmp_path / "t", f'kind = "python"\npython = "{base}"')
    metrics = baseline(repo)
    assert metrics["prefix"] == sys.base_prefix and metrics["has_optuna"] == 0


def test_a_command_prefix(tmp_path: Path) -> None:
    repo = task(tmp_path / "t", 'kind = "prefix"\nprefix = "env TASK_PREFIXED=yes"')
    assert baseline(repo)["prefixed"] == 1


@pytest.mark.parametrize("environment, match", [
    ('kind = "conda"', r"\[environment.kind\] 'conda' is not an environment kind"),
    ('kind = "python"', r"\[environment.python\] kind = 'python' needs it"),
    ('kind = "venv"', r"\[environment.venv\] no virtual environment at .*\.venv"),
    ('kind = "uv"', r"needs .*pyproject.toml"),
    ('kind = "prefix"', r"\[environment.prefix\]"),
])
def test_environment_mistakes_fail_the_config(tmp_path: Path, environment: str, match: str) -> None:
    repo = task(tmp_path / "t", environment)
    with pytest.raises(ConfigError, match=match):
        load_config(repo)
