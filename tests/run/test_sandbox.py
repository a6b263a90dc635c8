"""The bubblewrap sandbox: what an experiment can and cannot reach. Runs bwrap for real (fast)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from autoresearch.run import sandbox
from autoresearch.run.sandbox import (
    SandboxPolicy,
    describe,
    find_repo,
    sandbox_argv,
    sandbox_available,
)

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")


def git(*args: str | Path) -> None:
    subprocess.run(["git", *map(str, args)], check=True, capture_output=True)


@pytest.fixture
def task(tmp_path: Path) -> dict:
    """A task repo with its state folder and two experiment worktrees, and a fake home with secrets."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text("import sys\nprint('trained with', sys.version_info[0])\n")
    (repo / "data").mkdir()
    (repo / "data" / "val.bin").write_text("validation")
    (repo / "data" / "test.bin").write_text("held-out")
    git("init", "-q", "-b", "main", repo)
    git("-C", repo, "add", "-A")
    git("-C", repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    state = repo / ".autoresearch"
    (state / "logs").mkdir(parents=True)
    (state / "ledger.db").write_text("ledger")
    (state / "logs" / "exp-1.log").write_text("log")
    wt = state / "worktrees" / "exp-2"
    other = state / "worktrees" / "exp-1"
    git("-C", repo, "worktree", "add", "-q", "--detach", wt)
    git("-C", repo, "worktree", "add", "-q", "--detach", other)
    (other / "train.py").write_text("print('another experiment')\n")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".secret-test").write_text("api-key")
    (home / ".ssh" / "id_ed25519").write_text("private key")
    env = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"]),
           "HOME": str(home), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "AUTORESEARCH_RUN_MARK": "mark-123"}
    return {"repo": repo, "wt": wt, "other": other, "home": home, "env": env, "tmp": tmp_path}


def run(task: dict, command: str, policy: SandboxPolicy = SandboxPolicy(), **kw) -> subprocess.CompletedProcess:
    argv = sandbox_argv(command, task["wt"], policy, task["env"])
    return subprocess.run(argv, env=task["env"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30, **kw)


# -- no bwrap needed ---------------------------------------------------------------------------

def test_find_repo(task: dict, tmp_path: Path) -> None:
    assert find_repo(task["wt"]) == task["repo"].resolve()
    # A worktree outside the state folder: found through its .git file.
    elsewhere = tmp_path / "elsewhere"
    git("-C", task["repo"], "worktree", "add", "-q", "--detach", elsewhere)
    assert find_repo(elsewhere) == task["repo"].resolve()
    assert find_repo(tmp_path) is None


def test_policy_normalises_paths() -> None:
    p = SandboxPolicy(writable=["/a", Path("/b")], readable="/c")  # type: ignore[arg-type]
    assert p.writable == (Path("/a"), Path("/b")) and p.readable == (Path("/c"),)


def test_describe() -> None:
    assert describe(None) == "no sandbox"
    line = describe(SandboxPolicy(writable=(Path("/a"), Path("/b")), hidden=(Path("/c"),)))
    if sandbox_available():
        assert line.startswith("bwrap: no network, rw: worktree + 2 dirs") and "hidden: 1" in line
    else:
        assert line.startswith("no sandbox (bwrap unavailable")


def test_unavailable_gives_plain_shell_and_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sandbox, "BWRAP", "bwrap-does-not-exist")
    sandbox._reset_probe()
    try:
        assert not sandbox_available()
        argv, sandboxed = sandbox.wrap("true", tmp_path, SandboxPolicy(), {})
        assert argv == ["/bin/sh", "-c", "true"] and not sandboxed
        assert "WITHOUT a sandbox" in sandbox.fallback_warning() and "not found" in sandbox.fallback_warning()
        with pytest.raises(RuntimeError):
            sandbox_argv("true", tmp_path, SandboxPolicy(), {})
    finally:
        sandbox._reset_probe()


# -- bwrap -------------------------------------------------------------------------------------

@needs_bwrap
def test_available() -> None:
    assert sandbox_available(), sandbox.unavailable_reason()


@needs_bwrap
def test_runs_in_worktree_and_writes_there(task: dict) -> None:
    r = run(task, "pwd; python train.py; echo out > result.json; mkdir -p sub && echo x > sub/y")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == str(task["wt"].resolve())
    assert "trained with 3" in r.stdout
    assert (task["wt"] / "result.json").read_text() == "out\n" and (task["wt"] / "sub" / "y").exists()


@needs_bwrap
def test_exit_code_passes_through(task: dict) -> None:
    assert run(task, "exit 3").returncode == 3
    assert run(task, "kill -9 $$").returncode == 128 + 9  # bwrap reports a signal death as 128+n


@needs_bwrap
def test_cannot_write_task_repo(task: dict) -> None:
    repo = task["repo"]
    r = run(task, f"echo x > {repo}/train.py; echo x > {repo}/new.txt; echo x > {repo}/.git/config; "
                  f"rm -f {repo}/data/val.bin; echo done")
    assert "done" in r.stdout
    assert r.stderr.count("Read-only file system") >= 3, r.stderr
    assert not (repo / "new.txt").exists() and (repo / "data" / "val.bin").exists()
    assert (repo / "train.py").read_text().startswith("import sys")
    # The repository itself is visible read-only (the frozen evaluator may import from it).
    assert run(task, f"cat {repo}/data/val.bin").stdout == "validation"


@needs_bwrap
def test_state_dir_and_other_experiments_hidden(task: dict) -> None:
    state = task["repo"] / ".autoresearch"
    r = run(task, f"ls -A {state}; ls -A {state}/worktrees; cat {state}/ledger.db; cat {task['other']}/train.py; "
                  f"echo x > {state}/forged.db; echo done")
    assert r.stdout.split() == ["worktrees", "exp-2", "done"], r.stdout  # only the way to our own worktree
    assert "ledger" not in r.stdout and "another experiment" not in r.stdout
    assert not (state / "forged.db").exists()


@needs_bwrap
def test_home_hidden(task: dict) -> None:
    home = task["home"]
    r = run(task, f'echo "home=$HOME"; ls -A "$HOME"; cat {home}/.secret-test; cat {home}/.ssh/id_ed25519; '
                  f'echo scratch > "$HOME/.cache-file" && cat "$HOME/.cache-file"')
    assert r.stdout.splitlines() == [f"home={home}", "scratch"], r.stdout  # empty, writable, thrown away
    assert "api-key" not in r.stdout and "private key" not in r.stdout
    assert not (home / ".cache-file").exists()
    # This process's own home is hidden too, not only the env's HOME.
    real_home = Path(os.path.realpath(Path.home()))
    entries = sorted(p.name for p in real_home.iterdir()) if real_home.is_dir() else []
    if entries and real_home != home.resolve() and not str(task["wt"].resolve()).startswith(str(real_home)):
        # Only the way to the interpreter may show (e.g. ~/.pyenv when python lives there).
        allowed = {p.relative_to(real_home).parts[0] for p in sandbox._python_paths()
                   if real_home in p.parents}
        r = run(task, f"ls -A {real_home}")
        assert set(r.stdout.split()) <= allowed, r.stdout


@needs_bwrap
def test_host_tmp_hidden(task: dict) -> None:
    outside = Path("/tmp") / f"autoresearch-sandbox-test-{os.getpid()}"
    outside.write_text("host tmp")
    try:
        r = run(task, f"cat {outside}; echo x > /tmp/inside && cat /tmp/inside")
        assert r.stdout == "x\n" and "No such file" in r.stderr
        assert not Path("/tmp/inside").exists() or Path("/tmp/inside").read_text() != "x\n"
    finally:
        outside.unlink()


@needs_bwrap
def test_hidden_paths(task: dict) -> None:
    repo = task["repo"]
    policy = SandboxPolicy(hidden=(repo / "data" / "test.bin", Path("data/secret-dir")))  # relative: to the repo
    (repo / "data" / "secret-dir").mkdir()
    (repo / "data" / "secret-dir" / "labels.txt").write_text("labels")
    r = run(task, f"cat {repo}/data/test.bin; ls -A {repo}/data/secret-dir; cat {repo}/data/secret-dir/labels.txt; "
                  f"cat {repo}/data/val.bin", policy)
    assert r.stdout == "validation", r.stdout
    assert "held-out" not in r.stdout and "labels" not in r.stdout


@needs_bwrap
def test_readable_and_writable_extra_dirs(task: dict) -> None:
    home = task["home"]
    data = home / ".cache" / "dataset"
    data.mkdir(parents=True)
    (data / "train.bin").write_text("tokens\n")
    out = home / "outputs"  # does not exist yet: created
    (data / "test.bin").write_text("held-out\n")
    policy = SandboxPolicy(readable=(data, home / "missing"), writable=(out,), hidden=(data / "test.bin",))
    r = run(task, f"cat {data}/train.bin; echo x > {data}/new; echo ckpt > {out}/model.pt && echo saved; "
                  f"ls -A $HOME/.cache; cat $HOME/.secret-test; cat {data}/test.bin", policy)
    assert r.stdout.split() == ["tokens", "saved", "dataset"], r.stdout + r.stderr
    assert "Read-only file system" in r.stderr
    assert (out / "model.pt").read_text() == "ckpt\n" and not (data / "new").exists()


@needs_bwrap
def test_env_is_exactly_the_given_one(task: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTER_ONLY_VAR", "leak")
    env = {**task["env"], "FOO": "bar baz", "EMPTY": ""}
    argv = sandbox_argv("env", task["wt"], SandboxPolicy(), env)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)  # bwrap itself gets os.environ here
    inside = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert {k: inside.get(k) for k in env} == env
    assert set(inside) - set(env) <= {"PWD", "SHLVL", "_", "OLDPWD"}, inside


def _listener() -> socket.socket:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    return srv


@needs_bwrap
def test_no_network_unless_allowed(task: dict) -> None:
    srv = _listener()
    try:
        port = srv.getsockname()[1]
        probe = (f"python -c \"import socket; s = socket.create_connection(('127.0.0.1', {port}), timeout=3); "
                 f"print('connected')\"")
        r = run(task, probe)
        assert r.returncode != 0 and "connected" not in r.stdout
        assert "ConnectionRefusedError" in r.stderr or "OSError" in r.stderr, r.stderr
        # Loopback works inside its own namespace.
        r = run(task, "python -c \"import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
                      "c = socket.create_connection(s.getsockname()); print('loopback ok')\"")
        assert "loopback ok" in r.stdout, r.stderr
        r = run(task, probe, SandboxPolicy(network=True))
        assert r.returncode == 0 and "connected" in r.stdout, r.stderr
    finally:
        srv.close()


def _all_dead(procs: list[psutil.Process], timeout: float) -> bool:
    """Whether every process exits within `timeout`. A zombie counts as dead: bwrap's init, orphaned
    when the outer bwrap is killed, waits for the host's pid 1 to reap it (slow on some machines)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = 0
        for p in procs:
            try:
                alive += p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


@needs_bwrap
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_bwrap_kills_everything_inside(task: dict, sig: int) -> None:
    # A runaway tree: a plain child, one that left the session, one that ignores SIGTERM.
    command = ("sleep 300 & setsid sh -c 'sleep 301' & sh -c 'trap \"\" TERM; sleep 302' & "
               "python -c 'import time; time.sleep(303)' & echo started > started; wait")
    argv = sandbox_argv(command, task["wt"], SandboxPolicy(), task["env"])
    proc = subprocess.Popen(argv, env=task["env"], stdin=subprocess.DEVNULL, start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            tree = psutil.Process(proc.pid).children(recursive=True)
            if (task["wt"] / "started").exists() and sum("sleep" in " ".join(p.cmdline()) for p in tree
                                                         if p.is_running()) >= 4:
                break
            time.sleep(0.02)
        assert len(tree) >= 6, [p.cmdline() for p in tree]
        # The runner finds stray processes by a marker variable: it is readable from outside.
        assert any(p.environ().get("AUTORESEARCH_RUN_MARK") == "mark-123" for p in tree)
        os.killpg(proc.pid, sig)  # what the runner does: signal the group of the process it started
        proc.wait(timeout=10)
        assert _all_dead(tree, timeout=5), [(p.pid, p.status()) for p in tree if p.is_running()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in tree:  # on failure, leave nothing behind
            try:
                p.kill()
            except psutil.Error:
                pass
