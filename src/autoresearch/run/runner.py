"""Run one untrusted experiment command under a hard timeout and leave nothing behind.

The command runs with `/bin/sh -c` in a session of its own, stdin from /dev/null, stdout and
stderr merged into one pipe. A reader thread copies the output to a size-capped log (head and
tail kept, so the closing summary lines survive), feeds a live view line by line and keeps a
short tail for error messages. The main thread waits for the exit on a pidfd (no sleep steps),
and in between polls `should_stop`, the timeout, and samples the process tree (memory, and
which processes descend from the run, so that ones which leave the session can still be found).

Whatever way a run ends, its whole tree is killed: the process group, every descendant seen
while it ran, and every process that still carries the run's marker variable in its
environment (this finds a grandchild that called setsid() and was orphaned before any sample).
"""
from __future__ import annotations

import logging
import math
import os
import re
import resource
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Mapping

import psutil

from autoresearch.run.cgroups import ResourceLimits, RunCgroup
from autoresearch.run.sandbox import SandboxPolicy, sandbox_argv

log = logging.getLogger(__name__)

KILL_GRACE_S = 2.0  # SIGTERM, then this long, then SIGKILL
KILL_WAIT_S = 2.0  # how long to wait for SIGKILLed processes to disappear
STOP_POLL_S = 0.1  # how often should_stop() is asked
SAMPLE_FIRST_S = 0.02  # first tree sample after start (trivial commands finish before it)
SAMPLE_EVERY_S = 0.2  # then one tree sample (RSS, descendants) per this interval
READER_JOIN_S = 1.0  # after the tree is dead, how long the output may take to reach EOF
READ_CHUNK = 1 << 16
MAX_LINE_BYTES = 1 << 16  # a longer line without a newline is passed to on_output in pieces
TAIL_LINES = 50
TAIL_BYTES = 4096
MARK_VAR = "AUTORESEARCH_RUN_MARK"  # unique per run; inherited by every descendant

# Experiments get an allowlisted environment, never a copy of the caller's: what programs need to
# run (PATH, locale, home, terminal), what places devices and threads, and nothing else. Values the
# task needs come from its [env] table; other variables only by name ([sandbox] pass_env).
ENV_NAMES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR",
                       "PYTHONHASHSEED", "PYTHONIOENCODING", "TOKENIZERS_PARALLELISM", "PYTORCH_CUDA_ALLOC_CONF"})
ENV_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "HIP_", "ROCR_", "ROCM_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_")
ENV_SUFFIXES = ("_NUM_THREADS",)
# Even an allowed name is dropped when it reads like a credential (NVIDIA_API_KEY, CUDA_TOKEN...).
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "COOKIE", "SESSION")
SAFE_NAMES = frozenset({"TOKENIZERS_PARALLELISM"})  # contain a secret word but are harmless settings

Status = Literal["ok", "crash", "timeout", "stopped"]


@dataclass
class RunResult:
    status: Status  # ok: exit 0; crash: non-zero exit; timeout: killed past timeout; stopped: should_stop()
    exit_code: int | None  # negative: killed by that signal
    wall_s: float
    peak_mem_mb: float | None  # peak RSS of the whole process tree (sum over processes)
    log_path: Path
    log_tail: str  # last ~50 lines / 4 KB of output
    truncated: bool  # output exceeded the cap; the log keeps its head and tail
    oom_killed: bool = False  # the run's memory limit ([limits] memory_mb) killed a process of it


# -- environment -------------------------------------------------------------------------------

def is_secret(name: str) -> bool:
    """Whether a variable name reads like a credential (never passed on, even when allowed)."""
    upper = name.upper()
    return upper not in SAFE_NAMES and any(word in upper for word in SECRET_WORDS)


def is_allowed(name: str, passed: Iterable[str] = ()) -> bool:
    """Whether a variable of the caller's environment may reach an experiment."""
    if name in passed:
        return True
    return not is_secret(name) and (name in ENV_NAMES or name.startswith(ENV_PREFIXES) or name.endswith(ENV_SUFFIXES))


def clean_env(extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None,
              passed: Iterable[str] = ()) -> dict[str, str]:
    """The environment for an experiment: the allowlisted part of `base` (default os.environ), the
    names in `passed`, then `extra` (the task's [env] and the harness's variables).

    `python` on PATH is the interpreter autoresearch runs under, and output is unbuffered.
    """
    passed = frozenset(passed)
    env = {k: v for k, v in (os.environ if base is None else base).items() if is_allowed(k, passed)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in (extra or {}).items()})
    bindir = os.path.dirname(sys.executable)  # not resolved: a venv's bin/python is a symlink
    if bindir:
        rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
        env["PATH"] = os.pathsep.join([bindir, *rest])
    return env


# -- output ------------------------------------------------------------------------------------

_EOL = re.compile(rb"\r\n|\r|\n")


class _Output:
    """Receives the raw output: capped log file, live lines, short tail. Used by one thread."""

    def __init__(self, path: Path, cap: int, on_output: Callable[[str], None] | None):
        self.file = open(path, "w+b", buffering=0)
        self.cap = max(int(cap), 2)
        self.head_cap = self.cap // 2
        self.tail_cap = self.cap - self.head_cap
        self.written = 0  # bytes in the file before truncation
        self.total = 0
        self.truncated = False
        self.ring: deque[bytes] = deque()  # after truncation: the last tail_cap bytes
        self.ring_len = 0
        self.last = b""  # the last few KB, for log_tail
        self.partial = b""
        self.on_output = on_output
        self.callback_errors = 0
        self.done = False
        self.error: OSError | None = None  # writing the log failed (a full disk): the run is not judged

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        self.last = (self.last + data)[-4 * TAIL_BYTES:]
        if self.error is None:
            try:
                self._log(data)
            except OSError as e:  # keep draining the pipe, or the run blocks on it until the timeout
                self.error = e
        if self.on_output is not None:
            self._lines(data, eof=False)

    def _log(self, data: bytes) -> None:
        if not self.truncated:
            if self.written + len(data) <= self.cap:
                self.file.write(data)
                self.written += len(data)
                return
            # Over the cap for the first time: fill the head, then keep the tail (partly on disk).
            if self.written < self.head_cap:
                n = self.head_cap - self.written
                self.file.write(data[:n])
                self.written += n
                data = data[n:]
            start = max(self.head_cap, self.written - self.tail_cap)
            self.file.seek(start)
            kept = self.file.read(self.written - start) if self.written > start else b""
            self.file.truncate(self.head_cap)
            self.file.seek(self.head_cap)
            self.truncated = True
            self._ring(kept)
        self._ring(data)

    def _ring(self, data: bytes) -> None:
        if not data:
            return
        self.ring.append(data)
        self.ring_len += len(data)
        while self.ring_len - len(self.ring[0]) >= self.tail_cap:
            self.ring_len -= len(self.ring.popleft())
        if self.ring_len > self.tail_cap:
            extra = self.ring_len - self.tail_cap
            self.ring[0] = self.ring[0][extra:]
            self.ring_len -= extra

    def _lines(self, data: bytes, eof: bool) -> None:
        buf = self.partial + data
        pos = 0
        for m in _EOL.finditer(buf):
            if m.group() == b"\r" and m.end() == len(buf) and not eof:
                break  # maybe the first half of \r\n
            line = buf[pos:m.start()]
            if line or m.group() != b"\r":  # a bare \r on an empty line is a progress-bar redraw
                self._emit(line)
            pos = m.end()
        rest = buf[pos:]
        while len(rest) > MAX_LINE_BYTES:
            self._emit(rest[:MAX_LINE_BYTES])
            rest = rest[MAX_LINE_BYTES:]
        if eof and rest:
            self._emit(rest)
            rest = b""
        self.partial = rest

    def _emit(self, line: bytes) -> None:
        try:
            self.on_output(line.decode("utf-8", errors="replace"))  # type: ignore[misc]
        except Exception:  # a broken live view must never break the run
            self.callback_errors += 1
            if self.callback_errors == 1:
                log.warning("on_output raised; the run goes on", exc_info=True)

    def finish(self) -> None:
        """Flush the last partial line and write the kept tail after the truncation marker."""
        if self.done:
            return
        self.done = True
        try:
            if self.on_output is not None:
                self._lines(b"", eof=True)
            if self.truncated and self.error is None:
                tail = b"".join(self.ring)
                cut = tail.find(b"\n", 0, MAX_LINE_BYTES)
                if 0 <= cut < len(tail) - 1:
                    tail = tail[cut + 1:]  # start the tail on a whole line
                dropped = self.total - self.head_cap - len(tail)
                self.file.seek(max(self.head_cap - 1, 0))
                sep = b"" if self.head_cap == 0 or self.file.read(1) == b"\n" else b"\n"
                self.file.seek(self.head_cap)
                self.file.write(sep + f"[... {dropped} bytes truncated by autoresearch ...]\n".encode() + tail)
                self.ring.clear()
        except OSError as e:
            self.error = self.error or e
        finally:
            try:
                self.file.close()
            except OSError as e:
                self.error = self.error or e

    def tail_text(self) -> str:
        text = self.last.decode("utf-8", errors="replace")
        text = "\n".join(text.splitlines()[-TAIL_LINES:])
        return text[-TAIL_BYTES:]


def _read_output(fd: int, out: _Output, stop: threading.Event) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    try:
        while True:
            if stop.is_set():  # a process we could not find still holds the pipe: take what is there
                os.set_blocking(fd, False)
                try:
                    while data := os.read(fd, READ_CHUNK):
                        out.feed(data)
                except (BlockingIOError, OSError):
                    pass
                break
            if not poller.poll(100):
                continue
            data = os.read(fd, READ_CHUNK)
            if not data:
                break
            out.feed(data)
    except Exception:
        log.exception("output reader failed")
    finally:
        out.finish()


# -- the process tree --------------------------------------------------------------------------

class _Tree:
    """The processes of one run: sampled while it runs, killed when it ends."""

    def __init__(self, pid: int, mark: str, started: float):
        self.pid = pid
        self.mark = mark
        self.started = started  # time.time() just before the spawn
        self.root: psutil.Process | None = None
        self.seen: dict[int, psutil.Process] = {}  # every descendant ever seen
        self.peak_rss = 0
        self.me = os.getpid()

    def sample(self, root_alive: bool) -> None:
        """Remember descendants and add up the tree's resident memory."""
        procs: dict[int, psutil.Process] = {}
        try:
            if root_alive:
                if self.root is None:
                    self.root = psutil.Process(self.pid)
                procs[self.pid] = self.root
                for c in self.root.children(recursive=True):
                    procs[c.pid] = c
        except psutil.Error:
            pass
        for pid, p in list(self.seen.items()):
            if pid not in procs and _alive(p):
                procs[pid] = p
        rss = 0
        for pid, p in procs.items():
            if pid != self.pid:
                self._remember(p)
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak_rss = max(self.peak_rss, rss)

    def _remember(self, p: psutil.Process) -> None:
        old = self.seen.get(p.pid)
        if old is None or not _alive(old):
            self.seen[p.pid] = p  # psutil.Process keeps create_time: a reused pid is not ours

    def victims(self, root_alive: bool) -> list[psutil.Process]:
        """Every live process of this run, except the root shell."""
        found: dict[int, psutil.Process] = {}
        starts: list[psutil.Process] = []
        if root_alive:
            try:
                starts.append(self.root or psutil.Process(self.pid))
            except psutil.Error:
                pass
        starts += [p for p in self.seen.values() if _alive(p)]
        for p in starts:
            if p.pid != self.pid:
                found[p.pid] = p
            try:
                for c in p.children(recursive=True):
                    found[c.pid] = c
            except psutil.Error:
                pass
        for p in self._marked():
            found.setdefault(p.pid, p)
        found.pop(self.me, None)
        found.pop(self.pid, None)
        live = [p for p in found.values() if _alive(p)]
        for p in live:
            self._remember(p)
        return live

    def _marked(self) -> list[psutil.Process]:
        """Processes started since the run began whose environment carries the run's mark."""
        out = []
        for p in psutil.process_iter(["create_time"]):
            try:
                if (p.info["create_time"] or 0) < self.started - 1.0 or p.pid == self.me:
                    continue
                if p.environ().get(MARK_VAR) == self.mark:
                    out.append(p)
            except psutil.Error:  # gone, or not ours to read
                continue
        return out


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(procs: list[psutil.Process], pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p in procs:
        try:
            p.send_signal(sig)  # checks the pid still names the same process
        except psutil.Error:
            pass


class _Root:
    """The direct child: exit notification through a pidfd where the kernel has them."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.pid = proc.pid
        self.status: int | None = None
        self.maxrss_kb = 0
        self.ended: float | None = None
        self.poller = None
        self.pidfd = None
        try:
            self.pidfd = os.pidfd_open(self.pid)
            self.poller = select.poll()
            self.poller.register(self.pidfd, select.POLLIN)
        except (AttributeError, OSError):
            self.pidfd = None

    @property
    def alive(self) -> bool:
        return self.status is None

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the exit; reap it. True once it has exited."""
        if self.status is not None:
            return True
        if self.poller is not None:
            if self.poller.poll(max(0, math.ceil(timeout * 1000))):
                return self._reap(block=True)
            return self._reap(block=False)
        end = time.monotonic() + timeout
        delay = 0.0005
        while True:
            if self._reap(block=False):
                return True
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.02)

    def _reap(self, block: bool) -> bool:
        try:
            pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            pid, status, usage = self.pid, 0, None
        if pid == 0:
            return False
        self.ended = time.monotonic()
        self.status = status
        if usage is not None:
            self.maxrss_kb = usage.ru_maxrss  # KiB on Linux; includes its reaped descendants
        if usage is not None:
            self.proc.returncode = os.waitstatus_to_exitcode(status)
        return True

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    @property
    def exit_code(self) -> int | None:
        return self.proc.returncode


def _kill_tree(root: _Root, tree: _Tree, grace: bool) -> None:
    """SIGTERM everything, wait up to KILL_GRACE_S, SIGKILL what is left (found afresh)."""
    pgid = root.pid  # start_new_session: the root leads its own group
    victims = tree.victims(root.alive)
    if not root.alive:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            if not victims:
                return  # the common case: a clean exit with nothing left behind
    if grace:
        _signal(victims, pgid, signal.SIGTERM)
        _wait_dead(root, victims, KILL_GRACE_S)
        victims = tree.victims(root.alive)
    _signal(victims, pgid, signal.SIGKILL)
    if root.alive:  # not reaped, so the pid is still ours (Popen.kill would poll and reap it)
        try:
            os.kill(root.pid, signal.SIGKILL)
        except OSError:
            pass
    _wait_dead(root, victims, KILL_WAIT_S)
    left = [p for p in victims if _alive(p)]
    if left:
        log.warning("processes %s of the run survived SIGKILL", [p.pid for p in left])


def _wait_dead(root: _Root, procs: list[psutil.Process], timeout: float) -> None:
    end = time.monotonic() + timeout
    delay = 0.001
    while True:
        left = end - time.monotonic()
        if root.alive:
            root.wait(min(delay, max(left, 0)))
        procs = [p for p in procs if _alive(p)]
        if (not root.alive and not procs) or left <= 0:
            return
        if not root.alive:
            time.sleep(min(delay, left))
        delay = min(delay * 2, 0.05)


# -- running -----------------------------------------------------------------------------------

def run_command(command: str, cwd: Path, *, env: Mapping[str, str], timeout_s: float, log_path: Path,
                log_cap_bytes: int = 16 << 20, on_output: Callable[[str], None] | None = None,
                should_stop: Callable[[], bool] | None = None, sandbox: "SandboxPolicy | None" = None,
                cgroup: str | None = None, limits: ResourceLimits | None = None) -> RunResult:
    """Run `command` with /bin/sh in `cwd`; kill its whole tree past `timeout_s` or on `should_stop()`.

    With a `sandbox` policy, the command runs under bubblewrap (the caller checks availability).
    With a `cgroup` group name (cgroups.group_name), it runs in a cgroup of its own in that group
    where cgroups are available: killed as a whole at the end, with `limits` applied.

    `on_output` gets each output line (from a reader thread). The output is copied to `log_path`,
    capped at `log_cap_bytes` (head and tail kept). No process of the run survives the call.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = _Output(log_path, log_cap_bytes, on_output)
    mark = uuid.uuid4().hex
    run_env = {**env, MARK_VAR: mark}
    started_wall = time.time()
    t0 = time.monotonic()
    group = RunCgroup.create(cgroup, limits) if cgroup else None
    try:
        argv = sandbox_argv(command, Path(cwd), sandbox, run_env) if sandbox else ["/bin/sh", "-c", command]
        if group is not None:
            argv = group.wrap(argv)
        proc = subprocess.Popen(argv, cwd=str(cwd), env=run_env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True)
    except BaseException:
        out.finish()
        if group is not None:
            group.destroy()
        raise
    root = _Root(proc)
    tree = _Tree(proc.pid, mark, started_wall)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    stop_reading = threading.Event()
    reader = threading.Thread(target=_read_output, args=(fd, out, stop_reading), name=f"runner-output-{proc.pid}",
                              daemon=True)
    reader.start()

    oom = False
    try:
        status = _watch(root, tree, t0, timeout_s, should_stop)
    finally:
        # Also on KeyboardInterrupt or any error here: nothing of the run may survive.
        try:
            _kill_tree(root, tree, grace=True)
        finally:
            oom = _end(root, group, reader, stop_reading, log_path)
    if out.error is not None:  # e.g. ENOSPC: what the run printed is lost, so it cannot be judged
        raise OSError(out.error.errno, f"cannot write the run's log {log_path}: {out.error.strerror}")
    wall = (root.ended or time.monotonic()) - t0
    code = root.exit_code
    if status is None:
        status = "ok" if code == 0 else "crash"
    peak = _peak_mb(root, tree)
    return RunResult(status=status, exit_code=code, wall_s=wall, peak_mem_mb=peak,
                     log_path=log_path, log_tail=out.tail_text(), truncated=out.truncated, oom_killed=oom)


def _end(root: _Root, group: RunCgroup | None, reader: threading.Thread, stop_reading: threading.Event,
         log_path: Path) -> bool:
    """After the tree is killed: its cgroup emptied and removed, the output read to the end.
    Returns whether the kernel's OOM killer ended the run."""
    oom = False
    if group is not None:  # whatever left the tree (setsid, double fork, cleared env) dies here
        oom = group.oom_killed()
        group.destroy()
    root.close()
    reader.join(READER_JOIN_S)
    if reader.is_alive():
        stop_reading.set()
        reader.join(READER_JOIN_S + 1.0)
    if reader.is_alive():
        log.warning("output reader of %s did not finish (on_output stuck?)", log_path)
    else:
        root.proc.stdout.close()
    return oom


def _watch(root: _Root, tree: _Tree, t0: float, timeout_s: float,
           should_stop: Callable[[], bool] | None) -> Status | None:
    """Wait for the root's exit, the timeout or a stop request, sampling the tree meanwhile: the
    reason the run ends early ("timeout", "stopped"), or None when it exited by itself."""
    deadline = t0 + timeout_s
    next_sample = t0 + SAMPLE_FIRST_S
    next_stop = t0 + STOP_POLL_S
    while True:
        now = time.monotonic()
        wake = min(deadline, next_sample, next_stop if should_stop is not None else math.inf)
        if root.wait(max(0.0, wake - now)):
            return None
        now = time.monotonic()
        if now >= deadline:
            return "timeout"
        if should_stop is not None and now >= next_stop:
            next_stop = now + STOP_POLL_S
            try:
                stop = bool(should_stop())
            except Exception:
                log.warning("should_stop raised; treated as False", exc_info=True)
                stop = False
            if stop:
                return "stopped"
        if now >= next_sample:
            tree.sample(root_alive=True)
            # Dense at first (short runs), then every SAMPLE_EVERY_S.
            next_sample = time.monotonic() + min(SAMPLE_EVERY_S, max(SAMPLE_FIRST_S, (now - t0) / 4))


def _peak_mb(root: _Root, tree: _Tree) -> float | None:
    """The run's peak memory: the tree's summed RSS as sampled, or the root's ru_maxrss.

    A child's ru_maxrss starts at the harness's own RSS (fork copies the counters, exec keeps the
    old high-water mark), so it only says something about the run when it is above ours."""
    own_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = root.maxrss_kb if root.maxrss_kb > own_kb else 0
    peak = max(tree.peak_rss / (1 << 20), child_kb / 1024)
    return peak if peak > 0 else None
