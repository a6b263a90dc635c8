"""Run experiments on a Ray cluster: one Ray task per run, with the slot's CPU/GPU request.

What runs where: the coordinator (ledger, git, agents) stays on the machine that started
`autoresearch run`; for each run it makes a tar of the commit's files with `git archive`, puts it
in Ray's object store and submits `_run_on_worker`. On the worker the tar is unpacked into a fresh
temporary folder and `execution.run_in_folder` does exactly what it does locally (frozen-file
checks, budget, secret-free environment, trusted evaluation). The task is a Ray generator: it
yields the run's output lines in batches while it runs (the coordinator hands them to `on_output`,
the live view), then the `Outcome`, whose logs are written under the coordinator's `state_dir/logs`.

Data: the commit's tracked files travel with every run. The setup's kept outputs and the named
inputs ([setup] outputs, inputs: run/workspace.py) are packed once per research run into Ray's
object store; a node that does not have them at the coordinator's paths (another machine, no
shared filesystem) unpacks them once into its own cache and links the run's folder there.
Whatever a setup prepares outside those (e.g. under ~/.cache) is made by the setup itself, which a
worker runs once per node and per (setup command, frozen files) before its first experiment there.

A run's processes live in a session of their own, so they would outlive a Ray worker that is
killed (raylet gone, force cancel): a small watchdog process per run kills them and removes the
run's folder when the worker dies before the run ends.

Every node needs autoresearch (and the task's own dependencies) installed in the same Python
environment as the coordinator: the task function and the `RunSpec`/`Outcome` classes are sent
by reference, not by value.
"""
from __future__ import annotations

import collections
import dataclasses
import fcntl
import hashlib
import io
import json
import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

import ray
import ray.exceptions as rex
from ray import ObjectRefGenerator

from autoresearch.core.errors import AutoresearchError, WorkerLost
from autoresearch.run.execution import Outcome, RunSpec, run_in_folder, run_setup
from autoresearch.run.runner import KILL_GRACE_S, KILL_WAIT_S
from autoresearch.run.slots import THREAD_VARS, Slot

POLL_S = 0.2  # how often a waiting run asks should_stop()
OUTPUT_EVERY_S = 0.5  # how often a worker sends the run's new output lines
OUTPUT_BATCH = 1000  # lines per message at most: the latest ones (the whole log comes at the end)
# After a polite cancel the worker's run_command kills the run's tree (SIGTERM, grace, SIGKILL);
# only past this do we kill the Ray worker process itself (then the watchdog cleans up).
CANCEL_GRACE_S = KILL_GRACE_S + KILL_WAIT_S + 2.0
SETUP_CACHE = "~/.cache/autoresearch/ray-setup"  # on each worker node, expanded there
SHIPPED_CACHE = "~/.cache/autoresearch/ray-shipped"  # setup outputs and inputs unpacked on a node, by content
MAX_SHIPPED_BYTES = 8 << 30  # larger setup outputs belong on a filesystem every node shares
# How long the cluster's address may take to accept a TCP connection. Ray itself retries an
# unreachable address for minutes (forever for a GCS address), so we ask first.
CONNECT_TIMEOUT_S = 10.0
# The task never finished because its worker process, its node or its object went away: the
# coordinator should run the experiment again (OwnerDiedError is an ObjectLostError).
LOST_ERRORS: tuple[type[BaseException], ...] = (
    rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError, rex.LocalRayletDiedError,
    rex.RaySystemError, rex.TaskUnschedulableError)
WATCH_VAR = "AUTORESEARCH_RAY_RUN"  # inherited by every process of a run: how the watchdog finds them
# Waits for the worker (argv[1]) to die or the run's folder (argv[3]) to go; if the worker died
# first, kills what carries the run's mark (argv[2] in $argv[4]). Plain psutil: starts fast.
_WATCHDOG = """
import os, shutil, sys, time, psutil
worker, mark, work, var = psutil.Process(int(sys.argv[1])), *sys.argv[2:5]
def alive():
    try:
        return worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
while alive() and os.path.isdir(work):
    time.sleep(1)
if os.path.isdir(work):
    for p in psutil.process_iter():
        try:
            if p.environ().get(var) == mark:
                p.kill()
        except psutil.Error:
            pass
    shutil.rmtree(work, ignore_errors=True)
"""


@ray.remote
def _run_on_worker(spec: RunSpec, tar: bytes, slot: Slot, shipped: list | None = None
                   ) -> Iterator[list[str] | Outcome]:
    """On a worker: batches of the run's output lines while it goes on, then its outcome (sent once
    the run's folder is gone: a run that has ended left nothing behind). `shipped`: [key, ref] of
    the setup's outputs and inputs (a nested ref: fetched only by a node that lacks them)."""
    if shipped is not None:
        spec = _with_shipped(spec, shipped[0], shipped[1])
    outcome = yield from _run_here(spec, tar, slot)
    yield outcome


def _shipped_paths(spec: RunSpec) -> list[str]:
    """What a run needs from the coordinator's machine besides its commit: the link targets of the
    setup's outputs and inputs, and the stores bound under the sandbox's home."""
    mounts = spec.sandbox.mounts if spec.sandbox is not None else ()
    return [*(t for _, t in spec.links.outputs), *(t for _, t in spec.links.inputs), *(str(s) for s, _, _ in mounts)]


def _pack(paths: list[str]) -> tuple[str, bytes]:
    """The paths as one tar (member i: paths[i]) and a key of their contents (names, sizes, times)."""
    digest, buffer, total = hashlib.sha256(), io.BytesIO(), 0
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for i, path in enumerate(paths):
            for root, _dirs, files in os.walk(path) if os.path.isdir(path) else [("", [], [path])]:
                for name in sorted(files):
                    st = os.stat(os.path.join(root, name))
                    total += st.st_size
                    digest.update(f"{i}\0{os.path.join(root, name)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            if total > MAX_SHIPPED_BYTES:
                raise ValueError(f"the setup's outputs and inputs ({total / 2**30:.1f} GiB so far) are too large to "
                                 f"send through Ray's object store (at most {MAX_SHIPPED_BYTES / 2**30:.0f} GiB)\n"
                                 f"  fix: put {path} on a filesystem every node mounts at the same path")
            archive.add(path, arcname=str(i))
    return digest.hexdigest(), buffer.getvalue()


def _with_shipped(spec: RunSpec, key: str, ref: Any) -> RunSpec:
    """The spec as this node runs it: the coordinator's paths where they exist here (the same machine,
    a shared filesystem), else the shipped copies, unpacked once per node into SHIPPED_CACHE."""
    paths = _shipped_paths(spec)
    if all(os.path.exists(p) for p in paths):
        return spec
    home = Path(SHIPPED_CACHE).expanduser() / key
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{home}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the node's other slots wait for the first unpack
        if not (home / ".done").exists():
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            _extract(ray.get(ref), home)
            (home / ".done").write_text(key)
    here = {p: str(home / str(i)) for i, p in enumerate(paths)}
    links = dataclasses.replace(spec.links, outputs=tuple((r, here[t]) for r, t in spec.links.outputs),
                                inputs=tuple((r, here[t]) for r, t in spec.links.inputs))
    sandbox = spec.sandbox
    if sandbox is not None:
        sandbox = dataclasses.replace(sandbox, readable=(*sandbox.readable, home),
                                      mounts=tuple((Path(here[str(s)]), t, w) for s, t, w in sandbox.mounts))
    return dataclasses.replace(spec, links=links, sandbox=sandbox)


def _run_here(spec: RunSpec, tar: bytes, slot: Slot) -> Generator[list[str], None, Outcome]:
    """Unpack the commit, prepare the node once, run (yielding the output); the outcome with its logs."""
    work = Path(tempfile.mkdtemp(prefix=f"autoresearch-{spec.exp_id}-{spec.n}-"))
    mark = uuid.uuid4().hex
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), mark, str(work), WATCH_VAR],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # outlives this worker: that is its job
    try:
        folder, log_dir = work / "files", work / "logs"
        folder.mkdir()
        log_dir.mkdir()
        _extract(tar, folder)
        env = {**spec.env, **slot.env}
        if slot.gpus > 0 and "CUDA_VISIBLE_DEVICES" in os.environ:
            # Ray picked this task's GPUs; a value copied from the coordinator must not override it.
            env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
        spec.env = {**env, WATCH_VAR: mark}
        if spec.setup:
            _setup_once(spec, folder, log_dir)
        outcome = yield from _streamed(lambda on_output, should_stop: run_in_folder(
            spec, folder, log_dir, on_output=on_output, should_stop=should_stop))
        outcome.logs = {str(p.relative_to(log_dir)): p.read_bytes()[:spec.log_cap_bytes].decode(errors="replace")
                        for p in sorted(log_dir.rglob("*")) if p.is_file()}
        return outcome
    finally:
        shutil.rmtree(work, ignore_errors=True)
        watchdog.kill()
        watchdog.wait()


def _extract(tar: bytes, folder: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        if hasattr(tarfile, "data_filter"):  # no absolute paths or links out of the folder
            archive.extractall(folder, filter="data")
        else:  # pragma: no cover - Python without the tarfile filters (< 3.10.12)
            archive.extractall(folder)


def _streamed(run: Callable[[Callable[[str], None], Callable[[], bool]], Outcome]
              ) -> Generator[list[str], None, Outcome]:
    """Run `run(on_output, should_stop)` in a thread, yielding its output lines in batches; returns
    its outcome. A cancel (KeyboardInterrupt at a yield or a join) stops the run through should_stop,
    and run_command kills its process tree."""
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    stop = threading.Event()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["outcome"] = run(lines.put, stop.is_set)
        except BaseException as e:  # raised again in the task, so it reaches the coordinator as itself
            result["error"] = e

    thread = threading.Thread(target=target, name="run", daemon=True)
    thread.start()
    try:
        while thread.is_alive() or not lines.empty():
            thread.join(OUTPUT_EVERY_S)
            batch = collections.deque((lines.get() for _ in range(lines.qsize())), maxlen=OUTPUT_BATCH)
            if batch:
                yield list(batch)
    finally:
        stop.set()
        thread.join()
    if "error" in result:
        raise result["error"]
    return result["outcome"]


def _setup_once(spec: RunSpec, folder: Path, log_dir: Path) -> None:
    """Run the task's setup on this node unless it already succeeded here for the same inputs."""
    assert spec.setup
    key = hashlib.sha256(json.dumps([spec.setup, sorted(spec.frozen.items())]).encode()).hexdigest()
    cache = Path(SETUP_CACHE).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    marker = cache / f"{key}.done"
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the node's other slots wait for the first one's setup
        if marker.exists():
            return
        host = socket.gethostname()
        run_setup(spec.setup, folder, env=spec.env, pass_env=spec.pass_env, timeout_s=spec.timeout_s,
                  log_path=log_dir / "setup" / f"{host}.log", log_cap_bytes=spec.log_cap_bytes, where=f" on {host}",
                  environment=spec.environment)
        marker.write_text(f"{spec.setup}\n")


def _local_cluster_env() -> None:
    """Settings for a cluster started here by `ray.init()`: it listens on 127.0.0.1, not the machine's
    outward address (Ray's own single-machine mode, its default on macOS and Windows; set through
    Ray's private constants module, so a Ray that renames it starts as it would by default), and its
    workers run experiments at normal priority (Ray starts them at nice 15, and an experiment would
    then lose the cores to the coordinator and its agents on the same machine)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # for the processes Ray starts
    os.environ.setdefault("RAY_worker_niceness", "0")
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
        constants.ENABLE_RAY_CLUSTER = False


class RayConnectError(AutoresearchError):
    """The Ray cluster named by the address cannot be reached or joined."""

    exit_code = 1


CONNECT_FIX = ("start the cluster (`ray start --head` on its head node) or correct the address (--address, or "
               "address in [parallel]): a Ray Client address looks like ray://HEAD:10001, a node's GCS address "
               "like HEAD:6379; or run on this machine with --backend local")


def _endpoint(address: str) -> tuple[str, int] | None:
    """The host and port that a Ray address connects to; None when Ray finds it itself ("auto",
    "local") or the address has a form Ray parses (and reports) on its own."""
    scheme, sep, rest = address.strip().partition("://")
    if not sep:
        rest = scheme
    elif scheme != "ray":
        return None
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """RayConnectError unless the address accepts a TCP connection within timeout_s."""
    endpoint = _endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout_s).close()
    except OSError as e:
        reason = f"no answer within {timeout_s:g}s" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise RayConnectError(f"cannot reach the Ray cluster at {address}: {reason} "
                              f"(nothing accepts connections on {endpoint[0]}:{endpoint[1]})\n"
                              f"  fix: {CONNECT_FIX}") from None


def _connect(options: dict[str, Any]) -> None:
    """ray.init, with the errors a user meets (an unreachable or malformed address, the Ray Client
    not installed) as RayConnectError."""
    address = options.get("address") or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
    try:
        ray.init(**options)
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as e:
        text = str(e).strip()
        if "ray[client]" in text:
            raise RayConnectError(f"the Ray Client address {address} needs the Ray Client, which is not installed\n"
                                  "  fix: pip install \"ray[client]\" (or connect with the GCS address HEAD:6379 "
                                  "from a node of the cluster)") from None
        if not address:
            raise RayConnectError(f"could not start a local Ray cluster: {text}\n  fix: see Ray's logs under "
                                  "/tmp/ray/session_latest/logs, or start a cluster yourself (`ray start --head`) "
                                  "and pass --address auto") from None
        raise RayConnectError(f"cannot connect to the Ray cluster at {address}: {text}\n  fix: {CONNECT_FIX}") from None


class RayBackend:
    """Slots are Ray resource requests; each run is one Ray task on whichever node has room."""

    name = "ray"

    def __init__(self, repo: Path, state_dir: Path, *, address: str | None = None, slots: int | None = None,
                 cpus_per_slot: float | None = None, gpus_per_slot: float | None = None):
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots}")
        self.repo, self.state_dir = Path(repo), Path(state_dir)
        # Only a connection we opened is ours to close (a test or a notebook may have opened one).
        self._connected = not ray.is_initialized()
        if self._connected:
            options: dict[str, Any] = {"address": address, "ignore_reinit_error": True, "log_to_driver": False,
                                       "logging_level": logging.WARNING}
            if address is None:  # may start a local cluster: loopback only, no dashboard server
                _local_cluster_env()
                options["include_dashboard"] = False
            _connect(options)
        resources = ray.cluster_resources()
        gpus = gpus_per_slot if gpus_per_slot is not None else (1.0 if resources.get("GPU", 0) > 0 else 0.0)
        cpus = cpus_per_slot or 1.0
        count = slots or max(1, int(resources.get("GPU", 0) // gpus if gpus else resources.get("CPU", 0) // cpus))
        # Integral CPU requests tell the math libraries how many threads to use; Ray does not pin cores.
        env = {v: str(int(cpus)) for v in THREAD_VARS} if float(cpus).is_integer() else {}
        self.slots = [Slot(f"ray{i}", dict(env), cpus=cpus, gpus=gpus) for i in range(count)]
        self._shipments: dict[tuple[str, ...], list] = {}  # shipped paths -> [key, object ref]
        self._ship_lock = threading.Lock()

    def run(self, spec: RunSpec, slot: Slot, *, on_output: Callable[[str], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Outcome:
        """Run on the cluster; `on_output` gets the output lines as the worker sends them (every
        OUTPUT_EVERY_S, the latest OUTPUT_BATCH at most), the full log arrives when the run ends."""
        started = time.time()
        tar = self._archive(spec.commit)
        stream = _run_on_worker.options(num_cpus=slot.cpus, num_gpus=slot.gpus, max_retries=0).remote(
            spec, ray.put(tar), slot, self._shipped(spec))
        try:
            while True:
                if not ray.wait([stream], timeout=POLL_S)[0]:
                    if should_stop is not None and should_stop():
                        self._cancel(stream)
                        return self._local_outcome(spec, started, "stopped", ("interrupted", "stopped by the user"),
                                                   "stopped by the user; the run's output stayed on the worker")
                    continue
                item = ray.get(next(stream))
                if isinstance(item, Outcome):
                    outcome = item
                    break
                for line in item if on_output is not None else ():
                    on_output(line)
        except rex.RayTaskError as e:
            # Our own error on the worker (FrozenFileError, a failed setup): raise it as itself.
            cause = e.cause if isinstance(e.cause, BaseException) else RuntimeError(str(e))
            raise cause from e
        except rex.OutOfMemoryError as e:
            # Ray's memory monitor killed the task. Usually the experiment itself is the hog, so a
            # crash (as the kernel's OOM killer gives locally), not a re-run that would loop.
            reason = "killed by Ray's memory monitor (the node ran out of memory)"
            return self._local_outcome(spec, started, "crash", ("crash", reason), str(e))
        except LOST_ERRORS as e:
            raise WorkerLost(f"{type(e).__name__}: {e}") from e
        return self._localize(spec, outcome)

    def close(self) -> None:
        if self._connected and ray.is_initialized():
            ray.shutdown()  # stops the cluster if ray.init started one, else only disconnects
        self._connected = False

    # -- helpers ---------------------------------------------------------------------------------

    def _shipped(self, spec: RunSpec) -> list | None:
        """[key, ref] of the setup's outputs and inputs in the object store, packed at the first run
        that needs them (they do not change while a research runs: experiments see them read-only)."""
        paths = tuple(_shipped_paths(spec))
        if not paths:
            return None
        with self._ship_lock:
            if paths not in self._shipments:
                key, data = _pack(list(paths))
                self._shipments[paths] = [key, ray.put(data)]
            return self._shipments[paths]

    def _archive(self, commit: str) -> bytes:
        proc = subprocess.run(["git", "-C", str(self.repo), "archive", "--format=tar", commit],
                              capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"git archive {commit} failed in {self.repo}: "
                               f"{proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout

    @staticmethod
    def _cancel(stream: ObjectRefGenerator) -> None:
        ray.cancel(stream)  # KeyboardInterrupt in the task: the run is stopped and its process tree killed
        deadline = time.monotonic() + CANCEL_GRACE_S
        while time.monotonic() < deadline:  # drain what it still sends until it ends
            if ray.wait([stream], timeout=POLL_S)[0]:
                try:
                    ray.get(next(stream))
                except (StopIteration, rex.RayError):
                    return
        ray.cancel(stream, force=True)  # kills the Ray worker process

    def _localize(self, spec: RunSpec, outcome: Outcome) -> Outcome:
        """Write the worker's logs under state_dir/logs and point the outcome at them."""
        logs = (self.state_dir / "logs").resolve()
        for name, text in outcome.logs.items():
            path = (logs / name).resolve()
            if not path.is_relative_to(logs):  # names come from the worker: stay inside logs/
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        outcome.fields["log_path"] = str(logs / spec.log_name)
        outcome.logs = {}
        return outcome

    def _local_outcome(self, spec: RunSpec, started: float, status: str, failure: tuple[str, str],
                       note: str) -> Outcome:
        """An outcome for a run whose result never came back, with a local log saying why."""
        log = self.state_dir / "logs" / spec.log_name
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(note + "\n")
        fields: dict[str, Any] = {"exit_code": None, "wall_s": time.time() - started, "peak_mem_mb": None,
                                  "log_path": str(log), "log_tail": note}
        return Outcome(status, fields, failure=failure, started_at=started, ended_at=time.time())
