from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from autoresearch.run import runner
from autoresearch.run.runner import clean_env, run_command
from autoresearch.testing import process_gone

PY = sys.executable


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "KILL_GRACE_S", 0.3)


def run(cmd: str, tmp_path: Path, **kw) -> runner.RunResult:
    kw.setdefault("timeout_s", 10)
    kw.setdefault("log_path", tmp_path / "logs" / "run.log")
    return run_command(cmd, tmp_path, env=clean_env(), **kw)


def read_pids(path: Path, n: int) -> list[int]:
    pids = [int(x) for x in path.read_text().split()]
    assert len(pids) == n, pids
    return pids


# Two background grandchildren, one of which leaves the session, each writing its pid.
SPAWN = ("sleep 100 & echo $! >> pids; "
         "setsid sh -c 'echo $$ >> pids; exec sleep 100' & "
         "while [ $(wc -l < pids) -lt 2 ]; do sleep 0.01; done; ")


def test_normal_exit(tmp_path: Path):
    r = run("echo hello; echo err >&2; pwd", tmp_path, log_path=tmp_path / "deep" / "dir" / "a.log")
    assert r.status == "ok" and r.exit_code == 0 and not r.truncated
    assert r.log_path.read_text() == f"hello\nerr\n{tmp_path}\n"
    assert r.log_tail == f"hello\nerr\n{tmp_path}"
    assert 0 <= r.wall_s < 2


def test_nonzero_exit(tmp_path: Path):
    r = run("echo boom; exit 3", tmp_path)
    assert r.status == "crash" and r.exit_code == 3 and "boom" in r.log_tail


def test_stdin_is_devnull(tmp_path: Path):
    r = run("cat; echo after", tmp_path, timeout_s=5)
    assert r.status == "ok" and r.log_tail == "after"


def test_timeout_kills_tree_including_setsid_grandchild(tmp_path: Path):
    t = time.monotonic()
    r = run(SPAWN + "echo started; sleep 100", tmp_path, timeout_s=0.5)
    assert r.status == "timeout"
    assert time.monotonic() - t < 3
    assert "started" in r.log_path.read_text()
    for pid in read_pids(tmp_path / "pids", 2):
        assert process_gone(pid), f"pid {pid} survived the timeout"


def test_timeout_sigkills_what_ignores_sigterm(tmp_path: Path):
    cmd = ("trap '' TERM; " + SPAWN.replace("exec sleep", "trap \"\" TERM; sleep") + "sleep 100")
    r = run(cmd, tmp_path, timeout_s=0.3)
    assert r.status == "timeout" and r.exit_code == -9
    for pid in read_pids(tmp_path / "pids", 2):
        assert process_gone(pid)


def test_background_leftovers_killed_after_normal_exit(tmp_path: Path):
    r = run(SPAWN + "echo done", tmp_path)
    assert r.status == "ok" and r.log_tail == "done"
    for pid in read_pids(tmp_path / "pids", 2):
        assert process_gone(pid), f"leftover {pid} survived"


def test_escaped_daemon_started_right_before_exit(tmp_path: Path):
    # A double-forked, setsid'd daemon that is orphaned before any tree sample could see it.
    code = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        open('pids', 'w').write(str(os.getpid()))\n"
            "        time.sleep(100)\n"
            "    os._exit(0)\n"
            "while not os.path.exists('pids') or not open('pids').read(): time.sleep(0.005)\n")
    (tmp_path / "daemon.py").write_text(code)
    r = run("python daemon.py", tmp_path)
    assert r.status == "ok"
    assert process_gone(read_pids(tmp_path / "pids", 1)[0])


def test_log_cap_keeps_head_tail_and_summary(tmp_path: Path):
    code = "for i in range(20000): print(f'line {i:06d} ' + 'x' * 40)\nprint('score: 1.5')\n"
    (tmp_path / "spam.py").write_text(code)
    cap = 20_000
    r = run("python spam.py", tmp_path, log_cap_bytes=cap)
    assert r.status == "ok" and r.truncated
    text = r.log_path.read_text()
    assert len(text) < cap + 100
    assert text.startswith("line 000000 ")
    assert text.rstrip().endswith("score: 1.5")
    assert r.log_tail.endswith("score: 1.5")
    marker = [ln for ln in text.splitlines() if "truncated by autoresearch" in ln]
    assert len(marker) == 1 and marker[0].startswith("[... ") and marker[0].endswith(" bytes truncated by autoresearch ...]")
    dropped = int(marker[0].split()[1])
    total = sum(len(f"line {i:06d} " + "x" * 40) + 1 for i in range(20000)) + len("score: 1.5\n")
    head, tail = text.split(marker[0] + "\n")
    assert len(head) == cap // 2 + 1 and head.endswith("\n")  # the head, cut mid-line, then a newline
    assert cap // 2 + dropped + len(tail) == total  # nothing lost but what the marker counts
    assert tail.startswith("line ")  # the tail starts on a whole line
    assert len(tail) <= cap - cap // 2


def test_log_under_cap_is_whole(tmp_path: Path):
    r = run("seq 1 1000", tmp_path, log_cap_bytes=10_000)
    assert not r.truncated
    assert r.log_path.read_text() == "".join(f"{i}\n" for i in range(1, 1001))


def test_on_output_gets_lines_and_survives_errors(tmp_path: Path):
    seen: list[str] = []

    def view(line: str) -> None:
        seen.append(line)
        raise RuntimeError("broken view")

    r = run("echo one; printf 'two\\r\\nthree\\rfour\\n'; printf 'no newline'", tmp_path, on_output=view)
    assert r.status == "ok"
    assert seen == ["one", "two", "three", "four", "no newline"]
    assert r.log_path.read_bytes() == b"one\ntwo\r\nthree\rfour\nno newline"


def test_on_output_is_live(tmp_path: Path):
    got = threading.Event()
    r = run("echo ready; sleep 5", tmp_path, on_output=lambda line: got.set(), should_stop=got.is_set)
    assert r.status == "stopped" and r.wall_s < 2


def test_should_stop(tmp_path: Path):
    start = time.monotonic()
    r = run(SPAWN + "sleep 100", tmp_path, should_stop=lambda: time.monotonic() - start > 0.3)
    assert r.status == "stopped"
    assert time.monotonic() - start < 3
    for pid in read_pids(tmp_path / "pids", 2):
        assert process_gone(pid)


def test_peak_memory(tmp_path: Path):
    (tmp_path / "alloc.py").write_text("import time\nb = b'x' * (200 << 20)\ntime.sleep(0.3)\nprint(len(b))\n")
    r = run("python alloc.py; echo done", tmp_path)
    assert r.status == "ok"
    assert r.peak_mem_mb is not None and 150 < r.peak_mem_mb < 400


def test_peak_memory_short_lived_child(tmp_path: Path):
    # A child that lives a fraction of a second. wait4's ru_maxrss cannot tell its peak from the
    # harness's own when the harness is bigger (the counter is inherited), so the dense early
    # sampling has to see it.
    (tmp_path / "alloc.py").write_text("import time\nb = b'x' * (200 << 20)\ntime.sleep(0.15)\n")
    r = run("python alloc.py", tmp_path)
    assert r.peak_mem_mb is not None and r.peak_mem_mb > 150


def test_clean_env():
    base = {"PATH": "/usr/bin:/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "OPENAI_API_KEY": "sk",
            "ANTHROPIC_API_KEY": "a", "HF_TOKEN": "h", "MY_SECRET": "s", "db_password": "p",
            "AWS_REGION": "x", "AUTORESEARCH_AGENT_MODEL": "m", "GITHUB_TOKEN": "g",
            "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": "0"}
    env = clean_env({"AUTORESEARCH_TIME_BUDGET": "300", "MY_VAR": "1"}, base=base)
    for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HF_TOKEN", "MY_SECRET", "db_password", "AWS_REGION",
              "AUTORESEARCH_AGENT_MODEL", "GITHUB_TOKEN"):
        assert k not in env
    assert env["HOME"] == "/home/u" and env["LANG"] == "C.UTF-8" and env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    assert env["AUTORESEARCH_TIME_BUDGET"] == "300" and env["MY_VAR"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    bindir = os.path.dirname(PY)
    assert env["PATH"].split(os.pathsep) == [bindir, "/usr/bin", "/bin"] or bindir in ("/usr/bin", "/bin")


def test_clean_env_allowlists_os_environ(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("SOME_SETTING", "1")
    env = clean_env()
    assert "OPENAI_API_KEY" not in env and "SOME_SETTING" not in env  # an allowlist: unknown names stay out
    assert env["PATH"] and clean_env(passed=["SOME_SETTING"])["SOME_SETTING"] == "1"  # unless named


def test_python_is_our_interpreter(tmp_path: Path):
    r = run("python -c 'import sys, os; print(sys.prefix); print(os.environ[\"PYTHONUNBUFFERED\"])'", tmp_path)
    assert r.status == "ok" and r.log_tail == f"{sys.prefix}\n1"


def test_log_one_write_bigger_than_cap(tmp_path: Path):
    r = run("head -c 100000 /dev/zero | tr '\\0' a; echo; echo 'score: 1'", tmp_path, log_cap_bytes=100)
    assert r.truncated
    data = r.log_path.read_bytes()
    assert data.startswith(b"a" * 50 + b"\n[... ") and data.endswith(b" truncated by autoresearch ...]\nscore: 1\n")


@pytest.mark.parametrize("cap", [2, 7, 64, 1000])
def test_capped_log_matches_reference(tmp_path: Path, cap: int):
    import random

    rng = random.Random(cap)
    data = b"".join(b"%d %s\n" % (i, b"y" * rng.randrange(0, 30)) for i in range(300))
    out = runner._Output(tmp_path / "x.log", cap, None)
    pos = 0
    while pos < len(data):
        n = rng.randrange(1, 200)
        out.feed(data[pos:pos + n])
        pos += n
    out.finish()
    got = (tmp_path / "x.log").read_bytes()
    head = data[:cap // 2]
    assert got.startswith(head)
    rest = got[len(head):]
    if not head.endswith(b"\n") and head:
        assert rest.startswith(b"\n")
        rest = rest[1:]
    marker, tail = rest.split(b"\n", 1)
    dropped = int(marker.split()[1])
    assert marker == b"[... %d bytes truncated by autoresearch ...]" % dropped
    assert data.endswith(tail) and len(head) + dropped + len(tail) == len(data)
    assert len(tail) <= cap - cap // 2
    assert out.ring_len <= cap  # bounded memory
