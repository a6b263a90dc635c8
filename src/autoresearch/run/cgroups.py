"""One cgroup per run: a process tree that cannot slip away from its kill, and resource limits.

A process can leave its session, its process group and its parent (setsid, double fork, a cleared
environment), but not its cgroup. Each run is started inside a fresh cgroup of its own: the command
line is prefixed with a tiny shell that writes its own pid into the cgroup and then `exec`s the
command, so every descendant is inside from its first instruction. At the end of the run the
whole cgroup is killed at once (`cgroup.kill`, Linux 5.14+, on the unified hierarchy; else by
freezing it and killing every member) and removed.

Runs of one task live under `autoresearch-<task>/` (see `group_name`), so that a coordinator
killed with SIGKILL leaves nothing behind for long: `reap(group)` on the next start kills and
removes every run cgroup a previous process left there.

Limits (`[limits]`): `memory.max` / `memory.limit_in_bytes` and `pids.max` of the run's cgroup,
on cgroup v2 where the controller is available to us, else on its v1 hierarchy. Where autoresearch
may not create cgroups (not root and no delegated subtree), `available()` is False: runs are then
killed by process group, by the descendants seen and by the environment marker (runner.py), and
limits are not enforced. docs/sandbox.md says what holds in each case.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MOUNTINFO = "/proc/self/mountinfo"
SELF_CGROUP = "/proc/self/cgroup"
KILL_ROUNDS = 50  # v1 without cgroup.kill: freeze, kill the members, thaw; repeat until empty
REMOVE_WAIT_S = 2.0
PROBE_GROUP = "autoresearch-probe"  # a killed cgroup empties asynchronously; rmdir succeeds once it has


@dataclass(frozen=True)
class ResourceLimits:
    """Per-run limits; None: not limited."""

    memory_mb: float | None = None
    processes: int | None = None  # tasks, threads included (pids.max counts threads)


@dataclass(frozen=True)
class _Hierarchies:
    v2: Path | None  # our own cgroup on the unified hierarchy
    v1: dict[str, Path]  # controller -> our own cgroup on its v1 hierarchy


_found: _Hierarchies | None = None
_found_lock = threading.Lock()
_warned: set[str] = set()


def _discover() -> _Hierarchies:
    """Where our own cgroups are, on the unified hierarchy and on the v1 hierarchies we care about."""
    try:
        own = Path(SELF_CGROUP).read_text().splitlines()
        mounts = Path(MOUNTINFO).read_text().splitlines()
    except OSError:
        return _Hierarchies(None, {})
    paths: dict[str, str] = {}  # "" (v2) or controller -> our path in that hierarchy
    for line in own:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in (parts[1].split(",") if parts[1] else [""]):
                paths[controller] = parts[2]
    v2, v1 = None, {}
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        root, mountpoint, fstype, options = fields[3], fields[4], rest[0], rest[2].split(",")
        if fstype == "cgroup2" and "" in paths and v2 is None:
            v2 = _inside(mountpoint, root, paths[""])
        elif fstype == "cgroup":
            for controller in ("memory", "pids", "freezer"):
                if controller in options and controller in paths and controller not in v1:
                    v1[controller] = _inside(mountpoint, root, paths[controller])
    return _Hierarchies(v2, v1)


def _inside(mountpoint: str, root: str, path: str) -> Path:
    rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
    return Path(mountpoint) / ("" if rel == "." else rel)


def _hierarchies() -> _Hierarchies:
    global _found
    with _found_lock:
        if _found is None:
            _found = _discover()
        return _found


def group_name(state_dir: Path | str) -> str:
    """The cgroup folder of one task's runs (stable across restarts of autoresearch)."""
    return "autoresearch-" + hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:12]


def _group_dirs(group: str) -> tuple[Path | None, dict[str, Path]]:
    h = _hierarchies()
    return (h.v2 / group if h.v2 else None), {c: p / group for c, p in h.v1.items()}


def _writable(parent: Path) -> bool:
    return parent.is_dir() and os.access(parent, os.W_OK)


_usable: bool | None = None


def available() -> bool:
    """Whether runs can be put in cgroups of their own (cgroup v2 with cgroup.kill, or v1 freezer):
    probed once per process by starting `true` in a fresh cgroup, as a run would be."""
    global _usable
    with _found_lock:
        if _usable is not None:
            return _usable
    h = _hierarchies()
    if h.v2 is not None and _writable(h.v2) and (h.v2 / "cgroup.procs").exists():
        usable = (h.v2 / "cgroup.kill").exists() or "freezer" in h.v1 and _writable(h.v1["freezer"])
    else:
        usable = "freezer" in h.v1 and _writable(h.v1["freezer"])
    with _found_lock:
        _usable = usable  # provisional: the probe's own RunCgroup.create asks available() again
    if usable:
        usable = _probe()
        with _found_lock:
            _usable = usable
    return usable


def _probe() -> bool:
    group = RunCgroup.create(PROBE_GROUP)
    if group is None:
        return False
    try:
        proc = subprocess.run(group.wrap(["true"]), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        proc = None
        why = str(e)
    finally:
        group.destroy()
        remove_group(PROBE_GROUP)
    if proc is not None and proc.returncode == 0:
        return True
    why = proc.stderr.strip() if proc is not None else why
    _warn_once("probe", f"cannot start processes in a cgroup of their own ({why or 'exit code'}); runs are "
                        "killed by process tree only and [limits] are not enforced")
    return False


class RunCgroup:
    """The cgroup(s) of one run: created by `create`, entered by the command's prefix, killed and
    removed by `destroy`."""

    def __init__(self, v2: Path | None, v1: dict[str, Path]):
        self.v2, self.v1 = v2, v1

    @classmethod
    def create(cls, group: str, limits: ResourceLimits | None = None) -> RunCgroup | None:
        """A fresh cgroup for one run in `group`, with `limits`; None where cgroups are unavailable."""
        if not available():
            return None
        limits = limits or ResourceLimits()
        name = f"run-{uuid.uuid4().hex[:12]}"
        v2_group, v1_groups = _group_dirs(group)
        made_v2: Path | None = None
        made_v1: dict[str, Path] = {}
        try:
            if v2_group is not None and _writable(v2_group.parent):
                v2_group.mkdir(exist_ok=True)
                _enable_controllers(v2_group, limits)
                made_v2 = v2_group / name
                made_v2.mkdir()
            controllers = _v2_controllers(made_v2)
            needed = {"memory": limits.memory_mb is not None, "pids": limits.processes is not None,
                      "freezer": made_v2 is None or not (made_v2 / "cgroup.kill").exists()}
            for controller, parent in v1_groups.items():
                if needed[controller] and controller not in controllers and _writable(parent.parent):
                    parent.mkdir(exist_ok=True)
                    made_v1[controller] = parent / name
                    made_v1[controller].mkdir()
            group_ = cls(made_v2, made_v1)
            group_._limit(limits, controllers)
            return group_
        except OSError as e:
            cls(made_v2, made_v1).destroy()
            _warn_once("create", f"cannot create a cgroup for a run ({e}); runs are killed by process tree only")
            return None

    def _limit(self, limits: ResourceLimits, v2_controllers: set[str]) -> None:
        if limits.memory_mb is not None:
            limit = str(int(limits.memory_mb * (1 << 20)))
            if "memory" in v2_controllers and self.v2 is not None:
                (self.v2 / "memory.max").write_text(limit)
                if (self.v2 / "memory.swap.max").exists():  # a limit that swap can sidestep is none
                    (self.v2 / "memory.swap.max").write_text("0")
            elif "memory" in self.v1:
                (self.v1["memory"] / "memory.limit_in_bytes").write_text(limit)
            else:
                _warn_once("memory", "no memory controller available: [limits] memory_mb is not enforced")
        if limits.processes is not None:
            if "pids" in v2_controllers and self.v2 is not None:
                (self.v2 / "pids.max").write_text(str(limits.processes))
            elif "pids" in self.v1:
                (self.v1["pids"] / "pids.max").write_text(str(limits.processes))
            else:
                _warn_once("pids", "no pids controller available: [limits] processes is not enforced")

    @property
    def procs_files(self) -> list[str]:
        """The files the run's first process writes its pid into."""
        dirs = ([self.v2] if self.v2 else []) + list(self.v1.values())
        return [str(d / "cgroup.procs") for d in dirs]

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv`, started inside this cgroup: a shell joins it, then execs argv (exit 125 if it cannot)."""
        files = self.procs_files
        script = ('n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; '
                  'exec "$@"')
        return ["/bin/sh", "-c", script, "autoresearch-cgroup", str(len(files)), *files, *argv]

    def members(self) -> list[int]:
        pids: set[int] = set()
        for f in self.procs_files:
            try:
                pids.update(int(p) for p in Path(f).read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(pids)

    def oom_killed(self) -> bool:
        """Whether the memory limit killed something in this run."""
        try:
            if self.v2 is not None and (self.v2 / "memory.events").exists():
                events = dict(line.split() for line in (self.v2 / "memory.events").read_text().splitlines())
                if int(events.get("oom_kill", 0)) > 0:
                    return True
            if "memory" in self.v1:
                control = (self.v1["memory"] / "memory.oom_control").read_text()
                return any(line.split()[:1] == ["oom_kill"] and int(line.split()[1]) > 0
                           for line in control.splitlines())
        except (OSError, ValueError, IndexError):
            pass
        return False

    def kill(self) -> None:
        """SIGKILL every process in the cgroup, however it got away from its parent."""
        if self.v2 is not None and (self.v2 / "cgroup.kill").exists():
            try:
                (self.v2 / "cgroup.kill").write_text("1")
            except OSError as e:
                log.warning("cgroup.kill of %s failed: %s", self.v2, e)
            return
        freezer = self.v1.get("freezer")
        for _ in range(KILL_ROUNDS):
            pids = self.members()
            if not pids:
                return
            if freezer is not None:
                _write(freezer / "freezer.state", "FROZEN")  # no forking away while we kill
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if freezer is not None:
                _write(freezer / "freezer.state", "THAWED")  # killed tasks die once thawed
            time.sleep(0.01)

    def destroy(self) -> None:
        """Kill what is left and remove the cgroup folders."""
        self.kill()
        end = time.monotonic() + REMOVE_WAIT_S
        dirs = ([self.v2] if self.v2 else []) + list(self.v1.values())
        for d in dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > end:
                        log.warning("cannot remove cgroup %s: %s", d, e)
                        break
                    self.kill()
                    time.sleep(0.01)


def reap(group: str) -> int:
    """Kill and remove every run cgroup left in `group` by an earlier autoresearch process (call it
    only while holding the task's lock); the number of processes killed."""
    v2_group, v1_groups = _group_dirs(group)
    runs: dict[str, dict] = {}
    for key, parent in [("v2", v2_group), *v1_groups.items()]:
        if parent is None or not parent.is_dir():
            continue
        for child in parent.iterdir():
            if child.is_dir() and child.name.startswith("run-"):
                runs.setdefault(child.name, {"v2": None, "v1": {}})
                if key == "v2":
                    runs[child.name]["v2"] = child
                else:
                    runs[child.name]["v1"][key] = child
    killed = 0
    for parts in runs.values():
        cg = RunCgroup(parts["v2"], parts["v1"])
        killed += len(cg.members())
        cg.destroy()
    return killed


def remove_group(group: str) -> None:
    """Remove a task's (empty) group folders once it is done with them."""
    v2_group, v1_groups = _group_dirs(group)
    for d in [v2_group, *v1_groups.values()]:
        if d is not None:
            try:
                d.rmdir()
            except OSError:
                pass  # not there, or runs of another process of the task still in it


def _enable_controllers(group: Path, limits: ResourceLimits) -> None:
    """Make memory/pids available to the runs below `group` on cgroup v2, where the parent allows."""
    wanted = [c for c, on in (("memory", limits.memory_mb is not None), ("pids", limits.processes is not None)) if on]
    try:
        have = set((group / "cgroup.controllers").read_text().split())
        enabled = set((group / "cgroup.subtree_control").read_text().split())
    except OSError:
        return
    for c in wanted:
        if c in have and c not in enabled:
            try:
                (group / "cgroup.subtree_control").write_text(f"+{c}")
            except OSError:
                pass  # then the v1 hierarchy, if any, takes the limit


def _v2_controllers(run_dir: Path | None) -> set[str]:
    if run_dir is None:
        return set()
    try:
        return set((run_dir / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError:
        pass


def _warn_once(key: str, text: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(text)


def _reset() -> None:
    """Forget what was discovered (tests)."""
    global _found, _usable
    with _found_lock:
        _found, _usable = None, None
    _warned.clear()
