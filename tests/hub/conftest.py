"""Fixtures of the hub's tests: a noisy toy task with a trusted evaluator, a real hub server
(`autoresearch hub serve` in a subprocess, uvicorn on a free loopback port) on SQLite or on a real
PostgreSQL started here, and in-process verifiers that run through the real harness."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from autoresearch.hub.client import HubClient
from autoresearch.hub.verifier import Verifier
from tests.conftest import make_task

# The frozen evaluator scores the saved model with noise (σ = NOISE): re-runs differ, as on a GPU.
PREPARE = textwrap.dedent('''\
    import json, os, random
    NOISE = 0.05

    def evaluate(model):
        return (model["X"] - 2.0) ** 2 + random.SystemRandom().gauss(0.0, NOISE)

    if __name__ == "__main__":
        model = json.load(open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "model.json")))
        print(f"score: {evaluate(model):.6f}")
''')
TRAIN = textwrap.dedent('''\
    import json, os, time
    X = 5.0
    SEED = 1
    time.sleep(float(os.environ.get("HUB_TEST_SLEEP", "0")))
    json.dump({"X": X, "seed": SEED}, open("model.json", "w"))
    print("score: 9.0")
''')
CONFIG = textwrap.dedent('''\
    [task]
    name = "hubtoy"
    editable = ["train.py"]
    frozen = ["prepare.py"]
    run = "python train.py"
    [budget]
    seconds = 5
    timeout = 30
    [metric]
    name = "score"
    direction = "minimize"
    [evaluate]
    command = "python prepare.py"
    [env]
    HUB_TEST_SLEEP = "0"
''')
PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def hub_task(root: Path, sleep_s: float = 0.0, extra_config: str = "") -> Path:
    config = CONFIG.replace('HUB_TEST_SLEEP = "0"', f'HUB_TEST_SLEEP = "{sleep_s}"') + extra_config
    task = make_task(root, train=TRAIN, config=config, git=False)
    (task / "prepare.py").write_text(PREPARE)
    subprocess.run(["git", "init", "-q", "-b", "main", str(task)], check=True)
    subprocess.run(["git", "-C", str(task), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(task), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "task"],
                   check=True)
    return task


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningHub:
    task: Path
    port: int
    db: str | None
    lease_s: float | None = None
    proc: subprocess.Popen | None = None
    log: Path | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RunningHub:
        args = [sys.executable, "-m", "autoresearch", "hub", "serve", str(self.task), "--port", str(self.port)]
        args += ["--db", self.db] if self.db else []
        args += ["--lease-seconds", str(self.lease_s)] if self.lease_s else []
        self.log = self.task.parent / f"hub-{self.port}.log"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
        self.proc = subprocess.Popen(args + self.extra, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the hub exited: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"the hub did not start: {self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    @property
    def verifier_token(self) -> str:
        return (self.task / ".autoresearch" / "hub" / "verifier.token").read_text().strip()

    def client(self, name: str | None = None) -> HubClient:
        c = HubClient(self.url)
        if name:
            c.register(name)
        return c


class VerifierThread:
    """A real verifier (its own clone, the real harness) in a thread of the test process."""

    def __init__(self, hub: RunningHub, workdir: Path):
        self.verifier = Verifier(hub.url, hub.verifier_token, workdir, poll_s=0.1)
        self.verifier.open()
        self.thread = threading.Thread(target=self.verifier.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.verifier.stop_event.set()
        self.thread.join(60)
        self.verifier.close()


def wait_for(predicate, timeout: float = 60.0, poll_s: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def decided(client: HubClient, claim_id: int, timeout: float = 90.0) -> dict:
    return wait_for(lambda: (c := client.get(f"/claims/{claim_id}")) and not c["open"] and c, timeout,
                    what=f"claim #{claim_id} to be decided")


# -- PostgreSQL ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL cluster on a free loopback port, for this test session (as `nobody` when run as root)."""
    if not PG_BIN:
        pytest.skip("no PostgreSQL binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    bin_dir = PG_BIN[-1]
    data = Path(tempfile.mkdtemp(prefix="hub-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("nobody")
        os.chown(data, user.pw_uid, user.pw_gid)
        run_as = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    port = free_port()
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run(run_as + [str(bin_dir / "initdb"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "-D", str(data / "db")],
                   check=True, env=env, capture_output=True, cwd=data)
    subprocess.run(run_as + [str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-w", "-o",
                             f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, env=env, capture_output=True, cwd=data)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", data, port, run_as, bin_dir
    finally:
        subprocess.run(run_as + [str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                       env=env, capture_output=True, check=False)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def fresh_postgres(postgres_url):
    """A new, empty database in the session's cluster for one test."""
    url, _, port, _, _ = postgres_url
    import psycopg
    name = f"hub_{os.getpid()}_{int(time.time() * 1e6)}"
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request, tmp_path: Path):
    """A running hub on the toy task, on SQLite and on PostgreSQL, with one verifier thread."""
    db = request.getfixturevalue("fresh_postgres") if request.param == "postgresql" else None
    running = RunningHub(hub_task(tmp_path / "task"), free_port(), db).start()
    verifier = VerifierThread(running, tmp_path / "verifier")
    yield running
    verifier.stop()
    running.stop()
