"""Every error a user can cause or meet, walked through the real command line: bad configs, folders
that are no task, git failures, an unreachable Ray cluster, a missing dependency, a port in use, a
locked task, an experiment or a research run that does not exist. Each one prints exactly one
`error:` message that names the fix and exits non-zero, never a traceback."""
from __future__ import annotations

import fcntl
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoresearch.apps.cli import main
from autoresearch.core.config import STATE_DIR
from tests.conftest import TOY_CONFIG, make_task

# The command line with one module made unimportable (None in sys.modules: `import x` raises
# ModuleNotFoundError), as on a machine where that package was never installed.
WITHOUT = ("import sys; sys.modules[sys.argv.pop(1)] = None\n"
           "from autoresearch.apps.cli import main\n"
           "sys.exit(main(sys.argv[1:]))")


pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


def cli(capsys, *argv) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_process(*argv, without: str | None = None, timeout: float = 120) -> tuple[int, str, str]:
    """`python -m autoresearch ...` as a user runs it (optionally with one module missing)."""
    cmd = [sys.executable, "-c", WITHOUT, without] if without else [sys.executable, "-m", "autoresearch"]
    proc = subprocess.run([*cmd, *map(str, argv)], capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    return proc.returncode, proc.stdout, proc.stderr


def assert_user_error(result: tuple[int, str, str], *fix: str) -> str:
    """One `error:` message on stderr, no traceback, a non-zero exit, and the fix named: a `fix:`
    line, or each of the given phrases (the command to run). Returns the message."""
    code, out, err = result
    assert code != 0, (out, err)
    assert "Traceback" not in out + err, err
    assert err.count("error:") == 1 and "error:" not in out, (out, err)
    assert err.splitlines()[0].startswith("error:") or "\nerror:" in err, err  # at the start of a line
    message = err[err.index("error:"):]
    assert "fix:" in message or fix, message
    for phrase in fix:
        assert phrase in message, message
    return message


def _config(replace: tuple[str, str] | None = None, add: str = "", drop: str | None = None) -> str:
    text = TOY_CONFIG.replace(*replace) if replace else TOY_CONFIG
    if drop:  # a whole [section] with its lines
        start = text.index(f"[{drop}]")
        end = text.find("\n[", start)
        text = text[:start] + (text[end + 1:] if end != -1 else "")
    return text + add


BAD_CONFIGS = {
    "unknown section": (_config(add="\n[tsak]\nname = \"typo\"\n"), ("[tsak]", "unknown section", "fix: use one of")),
    "bad value": (_config(replace=("seconds = 5", 'seconds = "five"')), ("[budget.seconds]", "not a number", "fix:")),
    "missing [metric]": (_config(drop="metric"), ("[metric]", "missing", "fix: add a [metric] section")),
    "not TOML": (_config(add="\nthis is = not = toml\n"), ("not valid TOML", "fix:")),
    "bad direction": (_config(replace=('direction = "minimize"', 'direction = "down"')),
                      ("[metric.direction]", "fix: use \"minimize\"")),
}


# -- bad config --------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["run", "status"])
def test_bad_config(tmp_path: Path, capsys, case: str, command: str):
    config, phrases = BAD_CONFIGS[case]
    task = make_task(tmp_path / "task", config=config)
    argv = ["run", task, "--max-experiments", "1"] if command == "run" else ["status", "-C", task]
    message = assert_user_error(cli(capsys, *argv), *phrases)
    assert str(task / "autoresearch.toml") in message  # where
    if command == "run":
        assert not (task / STATE_DIR).exists()  # refused before anything was written


def test_bad_config_as_a_process(tmp_path: Path):
    task = make_task(tmp_path / "task", config=BAD_CONFIGS["missing [metric]"][0])
    assert_user_error(cli_process("run", task, "--max-experiments", "1"), "fix: add a [metric] section")
    assert_user_error(cli_process("status", "-C", task), "fix: add a [metric] section")


# -- folders that are no task --------------------------------------------------------------------

def test_not_a_git_repository_without_config(tmp_path: Path, capsys):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "train.py").write_text("print('score: 1')\n")
    assert_user_error(cli(capsys, "run", folder), "not a git repository", "fix:", "autoresearch init")
    assert not (folder / ".git").exists()
    assert_user_error(cli(capsys, "status", "-C", folder), "no research recorded", "autoresearch run")


def test_not_a_git_repository_as_a_process(tmp_path: Path):
    folder = tmp_path / "plain"
    folder.mkdir()
    assert_user_error(cli_process("run", folder), "autoresearch init")


def test_no_such_folder(tmp_path: Path, capsys):
    assert_user_error(cli(capsys, "run", tmp_path / "nowhere"), "no such folder", "fix:", "autoresearch examples")


def test_folder_inside_another_repository(tmp_path: Path, capsys):
    outer = make_task(tmp_path / "outer")
    sub = outer / "sub"
    make_task(sub, git=False)
    message = assert_user_error(cli(capsys, "run", sub), "inside the git repository", "fix:", "autoresearch new")
    assert str(outer) in message
    bare = outer / "bare"
    bare.mkdir()
    assert_user_error(cli(capsys, "run", bare), "fix:", "autoresearch init", "autoresearch new")
    assert not gitops_branches(outer)  # nothing landed in the outer repository


def test_git_repository_without_config(tmp_path: Path, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert_user_error(cli(capsys, "run", repo), "no config file", "fix:", "autoresearch init")
    (repo / "train.py").write_text("print('score: 1')\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
                   check=True)
    assert_user_error(cli(capsys, "run", repo), "no config file", "fix:", "autoresearch init")
    assert_user_error(cli(capsys, "idea", "add", "X=1", "-C", repo), "fix:", "autoresearch init")


def gitops_branches(repo: Path) -> list[str]:
    out = subprocess.run(["git", "-C", str(repo), "branch", "--list", "autoresearch/*"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()


# -- git failures --------------------------------------------------------------------------------

def test_repository_without_a_commit(tmp_path: Path, capsys):
    task = make_task(tmp_path / "task", git=False)
    subprocess.run(["git", "init", "-q", str(task)], check=True)
    assert_user_error(cli(capsys, "run", task, "--max-experiments", "1"), "without a commit", "fix:",
                      f"git -C {task} commit")


def test_corrupt_head(tmp_path: Path, capsys):
    task = make_task(tmp_path / "task")
    (task / ".git" / "HEAD").write_text("garbage\n")
    assert_user_error(cli(capsys, "run", task, "--max-experiments", "1"), ".git", "fix:", "HEAD")
    assert (task / ".git" / "HEAD").read_text() == "garbage\n"  # never re-initialised over the user's repository


def test_missing_commit_object(tmp_path: Path, capsys):
    task = make_task(tmp_path / "task")
    head = subprocess.run(["git", "-C", str(task), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (task / ".git" / "objects" / head[:2] / head[2:]).unlink()
    message = assert_user_error(cli(capsys, "run", task, "--max-experiments", "1"), "fix:", "git -C", "fsck")
    assert "commit the task's files" not in message  # it has a commit: git lost it


def test_git_error_names_the_fix(tmp_path: Path):
    from autoresearch.repo import gitops

    empty = tmp_path / "empty"
    empty.mkdir()
    subprocess.run(["git", "init", "-q", str(empty)], check=True)
    with pytest.raises(gitops.GitError) as e:
        gitops.rev_parse(empty, "HEAD")
    assert "fix: commit the task's files first" in str(e.value) and e.value.fix and e.value.problem
    with pytest.raises(gitops.GitError) as e:
        gitops.git(tmp_path / "nothing-here", "status")
    assert "\n  fix: " in str(e.value)


# -- Ray unreachable, missing dependencies ----------------------------------------------------------

@pytest.mark.parametrize("address", ["ray://127.0.0.1:1", "127.0.0.1:1"])
def test_ray_unreachable_fails_fast(toy_task: Path, capsys, address: str):
    pytest.importorskip("ray")
    started = time.monotonic()
    message = assert_user_error(cli(capsys, "run", toy_task, "--backend", "ray", "--address", address,
                                    "--max-experiments", "1"), "cannot reach the Ray cluster", "fix:", "ray start")
    assert address in message
    assert time.monotonic() - started < 60  # Ray alone retries such an address for minutes


@pytest.mark.skipif(importlib.util.find_spec("ray") is None or importlib.util.find_spec("grpc") is not None,
                    reason="needs Ray without its client (grpc) installed")
def test_ray_client_not_installed(toy_task: Path, capsys):
    with socket.socket() as listening:  # something answers on loopback, so the address is reachable
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"ray://127.0.0.1:{listening.getsockname()[1]}"
        assert_user_error(cli(capsys, "run", toy_task, "--backend", "ray", "--address", address,
                              "--max-experiments", "1"), "fix:", "ray[client]")


def test_ray_not_installed(toy_task: Path):
    assert_user_error(cli_process("run", toy_task, "--backend", "ray", "--max-experiments", "1", without="ray"),
                      "--backend ray", "Ray is not installed", "fix:", "autoresearch[ray]")
    (toy_task / "autoresearch.toml").write_text(TOY_CONFIG + '\n[parallel]\nbackend = "ray"\n')
    assert_user_error(cli_process("run", toy_task, "--max-experiments", "1", without="ray"),
                      "[parallel] backend", "fix:", "autoresearch[ray]")


def test_llm_agent_sdk_not_installed(tmp_path: Path):
    task = make_task(tmp_path / "task", config=TOY_CONFIG + '\n[agent]\nname = "openai"\nmodel = "gpt-x"\n')
    message = assert_user_error(cli_process("run", task, "--max-experiments", "1", without="openai"),
                                "openai", "fix:", "autoresearch[llm]", "--agent search")
    assert "[agent]" in message and str(task / "autoresearch.toml") in message
    assert_user_error(cli_process("run", task, "--agent", "anthropic", "--max-experiments", "1", without="anthropic"),
                      "--agent anthropic", "fix:", "autoresearch[llm]")


def test_missing_module_anywhere_else(capsys, monkeypatch):
    """The fallback for a module missing where no command expected it: still the package to install."""
    from autoresearch.apps import cli as cli_module

    def needs_torch(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(cli_module, "cmd_examples", needs_torch)
    assert_user_error(cli(capsys, "examples"), "`torch` is not installed", "fix:", "autoresearch[nanogpt]")


# -- port in use --------------------------------------------------------------------------------

def test_serve_model_port_in_use(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = assert_user_error(cli(capsys, "serve-model", "--port", port), "fix:", "--port")
        assert f"127.0.0.1:{port}" in message and "taken" in message


def test_serve_model_port_in_use_as_a_process():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert_user_error(cli_process("serve-model", "--port", taken.getsockname()[1]), "fix:", "--port")


def test_serve_model_bad_host_and_port(capsys):
    assert_user_error(cli(capsys, "serve-model", "--host", "0.0.0.0"), "loopback", "fix:", "--host 127.0.0.1")
    assert_user_error(cli(capsys, "serve-model", "--port", "70000"), "fix:", "65535")


# -- a locked task, what does not exist ----------------------------------------------------------------

def test_locked_task(toy_task: Path, capsys):
    state = toy_task / STATE_DIR
    state.mkdir()
    with open(state / "lock", "w") as lock:  # what a running `autoresearch run` holds
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        message = assert_user_error(cli(capsys, "run", toy_task, "--max-experiments", "1"),
                                    "another autoresearch process", "stop it")
    assert str(toy_task) in message


def test_status_without_research(toy_task: Path, capsys):
    assert_user_error(cli(capsys, "status", "-C", toy_task), "no research recorded", "fix:", "autoresearch run")
    assert_user_error(cli(capsys, "show", "1", "-C", toy_task), "no research recorded", "fix:", "autoresearch run")
    # A ledger that only holds ideas is no research run either.
    assert cli(capsys, "idea", "add", "X=1", "-C", toy_task)[0] == 0
    assert_user_error(cli(capsys, "status", "-C", toy_task), "no research run", "fix:", "autoresearch run")


def test_what_does_not_exist(toy_task: Path, capsys):
    code, _, err = cli(capsys, "run", toy_task, "--max-experiments", "1", "--json", "--tag", "t1")
    assert code == 0, err
    assert_user_error(cli(capsys, "show", "999", "-C", toy_task), "no experiment #999", "fix:", "autoresearch log")
    assert_user_error(cli(capsys, "status", "-C", toy_task, "--tag", "nope"), "no research run 'nope'", "t1",
                      "fix:", "--tag")
    assert cli(capsys, "status", "-C", toy_task)[0] == 0


def test_os_error_fallback(tmp_path: Path, capsys, monkeypatch):
    """An OSError no command turned into a message of its own: the path, what the system said, the fix."""
    from autoresearch.apps import cli as cli_module

    def disk_full(args):
        raise OSError(28, "No space left on device", str(tmp_path / "ledger.db"))

    monkeypatch.setattr(cli_module, "cmd_examples", disk_full)
    message = assert_user_error(cli(capsys, "examples"), "No space left on device", "fix:")
    assert str(tmp_path / "ledger.db") in message
