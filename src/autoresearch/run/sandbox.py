"""Run an untrusted experiment command under bubblewrap (`bwrap`): the filesystem view it gets.

The sandbox sees the system read-only, a fresh /dev, /proc (own pid namespace), /tmp, /var/tmp and
/run, and an empty, throw-away tmpfs where the user's home is. On top of that, in this order of
precedence (a deeper path always wins over a shallower one, see `_plan`):

- the task repository, read-only (its `.autoresearch/` state folder hidden: ledger, logs, other
  experiments' worktrees);
- the Python installation autoresearch runs under, read-only (so `python` works even when it lives
  under the hidden home or /tmp);
- `policy.readable` read-only, `policy.writable` read-write, `policy.hidden` replaced by an empty
  read-only tmpfs (a hidden file by an unreadable node);
- the experiment's worktree, read-write.

No network unless `policy.network` (a separate network namespace: loopback only), separate pid, ipc
and uts namespaces, a new session (no TIOCSTI into the terminal), no capabilities, no nested user
namespaces where bwrap supports `--disable-userns`, and the kernel's writable procfs knobs
(`/proc/sys`, `/proc/sysrq-trigger`, ...) read-only: root inside could otherwise set
`kernel.core_pattern` and run a program on the host as root. The environment is exactly the `env`
given.

Started as root, autoresearch runs the experiment as an unprivileged user (`policy.user`, `nobody`
by default): bwrap, still root, builds the mounts, then `setpriv` switches to that user with every
capability and the bounding set dropped and no_new_privs set (so no setuid binary gives root back).
The worktree is handed to that user. `policy.allow_root` keeps uid 0 (without capabilities) instead.
Killing the outer bwrap process kills everything inside: bwrap's init in the pid namespace gets
SIGKILL through `--die-with-parent`, and when a pid namespace's init dies the kernel kills the rest.

Details and what does not hold without bwrap: docs/sandbox.md.
"""
from __future__ import annotations

import glob
import logging
import os
import pwd
import re
import shlex
import shutil
import site
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from autoresearch.core.config import STATE_DIR
from autoresearch.core.errors import AutoresearchError

log = logging.getLogger(__name__)

BWRAP = "bwrap"
PROBE_TIMEOUT_S = 10.0
# Readable by uid 0 (autoresearch run as root: root without capabilities still owns them); always hidden.
SYSTEM_SECRETS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers",
                  "/etc/ssh/ssh_host_*_key", "/etc/ssl/private", "/var/lib/sss/secrets")
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri", "/dev/kfd")  # CUDA, ROCm
# Kernel knobs in a fresh procfs that uid 0 could write (docker's list): mounted read-only.
PROC_READONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs")
# Kernel state nobody's experiment needs (keyrings, timers, kernel memory): hidden.
PROC_MASKED = ("/proc/kcore", "/proc/keys", "/proc/key-users", "/proc/timer_list", "/proc/sched_debug",
               "/proc/kmsg", "/proc/kallsyms", "/proc/latency_stats")
DEFAULT_USER = "nobody"  # who experiments run as when autoresearch runs as root
SETPRIV = "setpriv"  # util-linux: drops to the sandbox user inside bwrap
# bwrap as root without a user namespace keeps only what setpriv needs to switch users; setpriv then
# drops these too (a uid change clears the effective and permitted sets; the bounding set goes).
_ROOT_FLAGS = ("--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
               "--cap-add", "CAP_SETPCAP")
FALLBACK_WARNING = (
    "bubblewrap (bwrap) is not available{reason}: experiments run WITHOUT a sandbox. Model-written code can "
    "use the network, read your home directory (SSH keys, API key files, shell history), read and change "
    "the ledger, logs and other experiments, and write anywhere you can. Install it (Debian/Ubuntu: "
    "`apt-get install bubblewrap`) or run autoresearch in a container or VM you do not mind losing.")

# Security flags, most to least preferred; the first set with which a sandboxed `true` runs is used.
# `--unshare-user` with `--cap-drop ALL`: even when autoresearch runs as root, the code inside has no
# capabilities (it could otherwise unmount the tmpfs over the home), and mounts are locked.
_FLAG_SETS: tuple[tuple[str, ...], ...] = (
    ("--unshare-user", "--disable-userns", "--cap-drop", "ALL"),  # bwrap >= 0.8
    ("--unshare-user", "--cap-drop", "ALL"),
    ("--cap-drop", "ALL"),  # setuid bwrap without user namespaces, as root
    (),  # setuid bwrap, not root: capabilities are dropped anyway (only accepted when not root)
)
_NAMESPACE_FLAGS = ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session")


@dataclass(frozen=True)
class SandboxPolicy:
    """What an experiment may reach besides its worktree. Paths may be str or Path; `~` is the user's
    home; relative paths are relative to the task repository."""

    network: bool = False  # False: own network namespace, loopback only
    writable: tuple[Path, ...] = ()  # extra read-write folders (caches, outputs); created if missing
    readable: tuple[Path, ...] = ()  # extra read-only paths that would otherwise be hidden; missing ones skipped
    hidden: tuple[Path, ...] = ()  # paths to hide even under a visible root (state dir, held-out split)
    user: str = DEFAULT_USER  # run as this user when autoresearch runs as root
    allow_root: bool = False  # as root: keep uid 0 (without capabilities) instead of `user`
    # (source, target, writable): a folder shown at another path (a setup output kept in the state
    # folder, bound where the task expects it under the hidden home); the source must exist
    mounts: tuple[tuple[Path, Path, bool], ...] = ()

    def __post_init__(self) -> None:
        for name in ("writable", "readable", "hidden"):
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)):
                value = (value,)
            object.__setattr__(self, name, tuple(Path(p) for p in value))
        object.__setattr__(self, "mounts", tuple((Path(s), Path(t), bool(w)) for s, t, w in self.mounts))


# -- availability ------------------------------------------------------------------------------

_probe_lock = threading.Lock()
_probe_result: tuple[bool, tuple[str, ...], str] | None = None


def _probe() -> tuple[bool, tuple[str, ...], str]:
    """(available, security flags to use, reason when not); computed once per process."""
    global _probe_result
    with _probe_lock:
        if _probe_result is None:
            _probe_result = _run_probe()
            if _probe_result[0]:
                log.debug("bwrap works with %s", " ".join(_probe_result[1]) or "default flags")
            else:
                log.debug("bwrap unavailable: %s", _probe_result[2])
        return _probe_result


def _run_probe() -> tuple[bool, tuple[str, ...], str]:
    exe = shutil.which(BWRAP)
    if exe is None:
        return False, (), f"{BWRAP} not found on PATH"
    errors = []
    for flags in _FLAG_SETS:
        if not flags and os.geteuid() == 0:
            continue  # root without a user namespace or --cap-drop would keep every capability
        argv = [exe, *flags, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                "--unshare-net", *_NAMESPACE_FLAGS, "--", "/bin/sh", "-c", "true"]
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as e:
            errors.append(f"{type(e).__name__}: {e}")
            continue
        if proc.returncode == 0:
            return True, flags, ""
        errors.append((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
    return False, (), f"a sandboxed `true` failed ({errors[0] if errors else 'no usable flags'})"


class SandboxError(AutoresearchError):
    """The sandbox cannot run experiments as configured (says why and what to do)."""


@dataclass(frozen=True)
class Identity:
    """The unprivileged user an experiment runs as when autoresearch is root."""

    name: str
    uid: int
    gid: int


def identity(policy: SandboxPolicy) -> Identity | None:
    """Who the experiment runs as: None for "as this process" (not root, or root allowed)."""
    if os.geteuid() != 0 or policy.allow_root:
        return None
    try:
        entry = pwd.getpwnam(policy.user)
    except KeyError:
        raise SandboxError(f"autoresearch runs as root and experiments should run as the user {policy.user!r}, "
                           "which does not exist.\n  fix: create it (`useradd --system --no-create-home "
                           f"{policy.user}`), set [sandbox] user to an existing unprivileged user, or run "
                           "autoresearch as an ordinary user") from None
    if entry.pw_uid == 0:
        raise SandboxError(f"[sandbox] user {policy.user!r} is root; name an unprivileged user "
                           "(or set allow_root = true to run experiments as uid 0 without capabilities)")
    if shutil.which(SETPRIV) is None:
        raise SandboxError(f"autoresearch runs as root but `{SETPRIV}` (util-linux) is missing, so experiments "
                           f"cannot be switched to the user {policy.user!r}.\n  fix: install util-linux, run "
                           "autoresearch as an ordinary user, or set [sandbox] allow_root = true")
    return Identity(policy.user, entry.pw_uid, entry.pw_gid)


def hand_over(folder: Path, who: Identity | None) -> None:
    """Give a folder the experiment will write in (its worktree, the evaluator's folder) to `who`."""
    if who is None:
        return
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), who.uid, who.gid)
    os.lchown(folder, who.uid, who.gid)


def sandbox_available() -> bool:
    """Whether bwrap is installed and a trivial sandboxed command succeeds (cached per process)."""
    return _probe()[0]


def unavailable_reason() -> str:
    """Why sandbox_available() is False ('' when it is True)."""
    return _probe()[2]


def fallback_warning() -> str:
    """The warning to log (once per research run) when experiments run without a sandbox."""
    reason = unavailable_reason()
    return FALLBACK_WARNING.format(reason=f" ({reason})" if reason else "")


def _reset_probe() -> None:
    """Forget the cached probe (tests)."""
    global _probe_result
    with _probe_lock:
        _probe_result = None
        _root_probe.clear()


_root_probe: dict[Identity, str] = {}  # identity -> "" when bwrap + setpriv works for it, else why not


def _check_root_mode(who: Identity) -> None:
    """Raise SandboxError unless bwrap as root can switch to `who` (probed once per identity)."""
    with _probe_lock:
        if who not in _root_probe:
            argv = [shutil.which(BWRAP) or BWRAP, *_ROOT_FLAGS, "--ro-bind", "/", "/", "--dev", "/dev",
                    "--proc", "/proc", "--unshare-net", *_NAMESPACE_FLAGS, "--", *_setpriv(who), "/bin/sh", "-c",
                    "true"]
            try:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                      timeout=PROBE_TIMEOUT_S)
                _root_probe[who] = "" if proc.returncode == 0 else (
                    proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            except (OSError, subprocess.TimeoutExpired) as e:
                _root_probe[who] = f"{type(e).__name__}: {e}"
        problem = _root_probe[who]
    if problem:
        raise SandboxError(f"cannot run experiments as {who.name} under bwrap ({problem}).\n  fix: run "
                           "autoresearch as an ordinary user, or set [sandbox] allow_root = true")


def _setpriv(who: Identity) -> list[str]:
    return [shutil.which(SETPRIV) or SETPRIV, f"--reuid={who.uid}", f"--regid={who.gid}", "--clear-groups",
            "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--"]


# -- the mount plan ----------------------------------------------------------------------------

# Precedence at the same path (higher wins); at different depths the deeper path wins.
_RANK = {"base": 0, "home": 1, "ro-auto": 2, "repo": 3, "state": 4, "ro": 5, "ro-map": 5, "rw": 6, "rw-map": 6,
         "hide": 7, "worktree": 8}


def _real(path: Path | str, base: Path | None = None) -> Path:
    p = Path(os.path.expanduser(str(path)))
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    return Path(os.path.realpath(p))


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def find_repo(worktree: Path) -> Path | None:
    """The task repository an experiment worktree belongs to: the folder holding the `.autoresearch`
    state folder the worktree lies in, else the repository its `.git` file points to."""
    worktree = _real(worktree)
    for parent in worktree.parents:
        if parent.name == STATE_DIR:
            return parent.parent
    try:
        text = (worktree / ".git").read_text().strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    gitdir = _real(text[len("gitdir:"):].strip(), worktree)
    try:  # <common>/worktrees/<name>/commondir holds the path of <common>
        common = _real((gitdir / "commondir").read_text().strip(), gitdir)
    except OSError:
        common = gitdir.parent.parent
    return common.parent if common.name == ".git" else None


def _homes(env: Mapping[str, str]) -> list[Path]:
    """The homes to hide: the env's HOME, this process's home, and the user's home from passwd."""
    candidates: list[str] = []
    if env.get("HOME"):
        candidates.append(env["HOME"])
    candidates.append(os.path.expanduser("~"))
    try:
        candidates.append(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        pass
    homes: list[Path] = []
    for c in candidates:
        p = _real(c)
        if p != Path("/") and p.is_dir() and p not in homes:
            homes.append(p)
    return homes


def _python_paths() -> list[Path]:
    """The interpreter autoresearch runs under and its packages (`python` in the sandbox is this one)."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))]
    try:
        paths.append(site.getusersitepackages())
    except Exception:  # noqa: BLE001 - some embedded interpreters lack it
        pass
    found = {_real(p) for p in paths if p}
    found = {p for p in found if p.exists()}
    return sorted(p for p in found if not any(q != p and _is_within(p, q) for q in found))  # outermost only


def _resolv_dirs() -> list[Path]:
    """Where /etc/resolv.conf really lives when that is under /run (systemd-resolved, NetworkManager)."""
    target = _real("/etc/resolv.conf")
    return [target.parent] if _is_within(target, Path("/run")) and target.exists() else []


def _plan(worktree: Path, policy: SandboxPolicy, env: Mapping[str, str],
          repo: Path | None, who: Identity | None = None) -> list[tuple[str, Path]]:
    """(kind, path) mounts in the order bwrap must apply them: by depth, then by precedence."""
    mounts: dict[Path, str] = {}

    def add(kind: str, path: Path) -> None:
        old = mounts.get(path)
        if old is None or _RANK[kind] >= _RANK[old]:
            mounts[path] = kind

    for p in ("/tmp", "/var/tmp", "/run"):
        if os.path.isdir(p) and not os.path.islink(p):
            add("base", Path(p))
    homes = _homes(env)
    for h in homes:
        add("home", h)
    for p in [*_python_paths(), *_resolv_dirs(), Path("/run/nvidia-persistenced")]:
        # Never expose a whole home (or a parent of it) just because the interpreter lives there.
        if p.exists() and not any(_is_within(h, p) for h in homes):
            add("ro-auto", p)
    if repo is not None:
        add("repo", repo)
        if (repo / STATE_DIR).is_dir():
            add("state", repo / STATE_DIR)
    base = repo or worktree
    for p in policy.readable:
        rp = _real(p, base)
        if rp.exists():
            add("ro", rp)
        else:
            log.info("sandbox: readable path %s does not exist; skipped", rp)
    for p in policy.writable:
        rp = _real(p, base)
        if not rp.exists():
            rp.mkdir(parents=True, exist_ok=True)
            hand_over(rp, who)  # ours to give: an existing folder keeps its owner
            log.info("sandbox: created writable folder %s", rp)
        add("rw", rp)
    for _source, target, writable in policy.mounts:
        add("rw-map" if writable else "ro-map", _real(target, base))
    for p in [*(Path(m) for pattern in SYSTEM_SECRETS for m in glob.glob(pattern)), *policy.hidden]:
        rp = _real(p, base)
        if rp.exists():
            add("hide", rp)
        else:
            log.debug("sandbox: hidden path %s does not exist; nothing to hide", rp)
    add("worktree", worktree)
    return sorted(((k, p) for p, k in mounts.items()), key=lambda kp: (len(kp[1].parts), _RANK[kp[0]], str(kp[1])))


_TMPFS_KINDS = ("base", "home", "state", "hide")


def _mount_args(plan: Iterable[tuple[str, Path]], shared_scratch: bool = False,
                sources: dict[Path, Path] | None = None) -> list[str]:
    """bwrap arguments for the plan. With `shared_scratch` (the sandbox user is not the root that
    mounts), the folders bwrap makes on its tmpfs mounts to hold deeper mounts get mode 0755, not
    bwrap's 0700, so the user can reach its worktree, the interpreter and the repository.
    `sources`: target -> source of the mapped mounts (policy.mounts)."""
    plan = list(plan)
    args: list[str] = []
    readonly_tmpfs: list[str] = []
    kinds = {path: kind for kind, path in plan}
    made: set[Path] = set()
    for kind, path in plan:
        p = str(path)
        if shared_scratch:
            for parent in reversed(path.parents):
                holder = next((q for q in (parent, *parent.parents) if q in kinds), None)
                if parent not in kinds and parent not in made and holder is not None and kinds[holder] in _TMPFS_KINDS:
                    args += ["--perms", "0755", "--dir", str(parent)]
                    made.add(parent)
        if kind in ("base", "home"):
            # Writable scratch, thrown away after the run; root made it, so the sandbox user needs 1777.
            args += [*(["--perms", "1777"] if shared_scratch else []), "--tmpfs", p]
        elif kind in ("state", "hide"):
            if path.is_dir():
                args += ["--tmpfs", p]
                readonly_tmpfs.append(p)  # made read-only once deeper mounts have their mount points
            else:  # a file: an unreadable device node (binds are nodev), reading it fails
                args += ["--ro-bind", "/dev/null", p]
        elif kind in ("ro-auto", "repo", "ro"):
            args += ["--ro-bind", p, p]
        elif kind in ("rw", "worktree"):
            args += ["--bind", p, p]
        elif kind in ("ro-map", "rw-map"):
            args += ["--ro-bind" if kind == "ro-map" else "--bind", str((sources or {})[path]), p]
        else:  # pragma: no cover
            raise AssertionError(kind)
    for p in readonly_tmpfs:
        args += ["--remount-ro", p]
    return args


def _device_args() -> list[str]:
    """GPU device nodes (/dev/nvidia*, /dev/dri, /dev/kfd), bound with device access if present."""
    args: list[str] = []
    seen: set[str] = set()
    for pattern in GPU_DEVICES:
        for dev in sorted(glob.glob(pattern)):
            if dev not in seen:
                seen.add(dev)
                args += ["--dev-bind", dev, dev]
    return args


def sandbox_argv(command: str, worktree: Path, policy: SandboxPolicy, env: Mapping[str, str],
                 *, repo: Path | None = None) -> list[str]:
    """The argv that runs `/bin/sh -c command` under bwrap with cwd = worktree and exactly `env`.

    `repo` is the task repository (found from the worktree when None: the folder holding the
    `.autoresearch` the worktree lies in, else the one its `.git` file points to). Raises
    RuntimeError when bwrap is not usable (check sandbox_available() first).
    """
    ok, flags, reason = _probe()
    if not ok:
        raise RuntimeError(f"bubblewrap sandbox not available: {reason}")
    worktree = _real(worktree)
    if not worktree.is_dir():
        raise FileNotFoundError(f"worktree {worktree} is not a folder")
    repo = _real(repo) if repo is not None else find_repo(worktree)
    who = identity(policy)
    if who is not None:
        _check_root_mode(who)
        flags = _ROOT_FLAGS
        hand_over(worktree, who)
    argv = [shutil.which(BWRAP) or BWRAP, *flags, *_NAMESPACE_FLAGS]
    if not policy.network:
        argv.append("--unshare-net")
    argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *_proc_args()]
    argv += _device_args()
    sources = {_real(target, repo or worktree): _real(source) for source, target, _ in policy.mounts}
    argv += _mount_args(_plan(worktree, policy, env, repo, who), shared_scratch=who is not None, sources=sources)
    if os.path.isdir("/dev/shm") and os.path.islink("/run/shm"):
        argv += ["--symlink", "/dev/shm", "/run/shm"]  # /run is a fresh tmpfs; keep the old alias
    argv.append("--clearenv")
    for name, value in env.items():
        if name and "=" not in name:
            argv += ["--setenv", name, str(value)]
    if who is None:
        argv += ["--chdir", str(worktree), "--", "/bin/sh", "-c", command]
    else:  # bwrap's root, without capabilities, may not enter a worktree it gave away: cd as the user
        argv += ["--chdir", "/", "--", *_setpriv(who), "/bin/sh", "-c",
                 f"cd -- {shlex.quote(str(worktree))} || exit 126\n{command}"]
    return argv


def _proc_args() -> list[str]:
    """Read-only kernel knobs and masked kernel state inside the fresh /proc."""
    args: list[str] = []
    for p in PROC_READONLY:
        if os.path.exists(p):
            args += ["--ro-bind", p, p]
    for p in PROC_MASKED:
        if os.path.exists(p):
            args += ["--ro-bind", "/dev/null", p]
    return args


def wrap(command: str, worktree: Path, policy: SandboxPolicy | None, env: Mapping[str, str],
         *, repo: Path | None = None) -> tuple[list[str], bool]:
    """(argv, sandboxed): the sandboxed argv when a policy is given and bwrap works, else plain
    `/bin/sh -c command` (the caller logs fallback_warning() when it wanted a sandbox)."""
    if policy is not None and sandbox_available():
        return sandbox_argv(command, worktree, policy, env, repo=repo), True
    return ["/bin/sh", "-c", command], False


def describe(policy: SandboxPolicy | None) -> str:
    """One line for logs, e.g. 'bwrap: no network, rw: worktree + 2 dirs, ro: +1, hidden: 3'."""
    if policy is None:
        return "no sandbox"
    if not sandbox_available():
        return f"no sandbox (bwrap unavailable: {unavailable_reason()})"
    parts = ["network" if policy.network else "no network",
             "rw: worktree" + (f" + {len(policy.writable)} dir{'s' * (len(policy.writable) != 1)}"
                               if policy.writable else "")]
    if policy.readable:
        parts.append(f"ro: +{len(policy.readable)}")
    if policy.hidden:
        parts.append(f"hidden: {len(policy.hidden)}")
    parts.append("home hidden")
    who = identity(policy)
    if who is not None:
        parts.append(f"as user {who.name}")
    elif os.geteuid() == 0:
        parts.append("as uid 0 without capabilities (allow_root)")
    return "bwrap: " + ", ".join(parts)


def preflight(policy: SandboxPolicy, repo: Path, scratch: Path, env: Mapping[str, str]) -> str | None:
    """Why experiments cannot work in this sandbox (as its user: the repository, the interpreter and
    the extra folders out of reach), or None. Runs one sandboxed shell in `scratch`, a new folder."""
    repo = _real(repo)
    checks = [f"test -r {shlex.quote(str(repo))} || echo 'cannot read the task repository {repo}'",
              "python -c pass >/dev/null 2>&1 || echo 'cannot run python (the interpreter autoresearch runs "
              "under, or what PATH names)'"]
    for p in policy.readable:
        rp = _real(p, repo)
        if rp.exists():
            checks.append(f"test -r {shlex.quote(str(rp))} || echo 'cannot read [sandbox] readable {rp}'")
    for p in policy.writable:
        rp = _real(p, repo)
        checks.append(f"test -w {shlex.quote(str(rp))} || echo 'cannot write [sandbox] writable {rp}'")
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        argv = sandbox_argv("\n".join(checks), scratch, policy, env, repo=repo)
        proc = subprocess.run(argv, env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"the sandbox did not start: {e}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    problems = proc.stdout.strip().splitlines()
    if proc.returncode not in (0,) and not problems:
        problems = [(proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]]
    if not problems:
        return None
    who = identity(policy)
    as_whom = f"as the user {who.name}" if who else "in the sandbox"
    return f"experiments {as_whom}: " + "; ".join(problems)


# -- hints -------------------------------------------------------------------------------------

_PATH_RE = re.compile(r"(?<![\w.])(/[^\s'\"`:,;()\[\]]+)")
_MISSING_WORDS = ("no such file", "not found", "can't open", "cannot open", "cannot access", "does not exist")


def hidden_path_hint(text: str, policy: SandboxPolicy | None, visible: Iterable[Path | None] = ()) -> str:
    """A hint for a failed sandboxed command that names a path which exists on this machine but not in
    the sandbox (under /tmp, /var/tmp, /run or a home), or ''. `text` is the command and its output's
    tail; `visible` are folders the sandbox shows besides the policy's (the repository, the worktree)."""
    if policy is None:
        return ""
    lines = text.splitlines()
    candidates = [m for line in lines[:1] + [x for x in lines[1:] if any(w in x.lower() for w in _MISSING_WORDS)]
                  for m in _PATH_RE.findall(line)]
    shown = [_real(p) for p in (*policy.readable, *policy.writable, *(t for _, t, _ in policy.mounts),
                                *(v for v in visible if v is not None))]
    covered = [*(Path(p) for p in ("/tmp", "/var/tmp", "/run")), *_homes({})]
    for text_path in dict.fromkeys(candidates):
        path = _real(text_path)
        if not path.exists() or not any(_is_within(path, c) for c in covered):
            continue
        if any(_is_within(path, s) for s in shown) or STATE_DIR in path.parts:
            continue
        return (f"\n  hint: {text_path} exists on this machine, but the sandbox does not show it (experiments and "
                "the setup get a fresh /tmp and an empty home).\n  fix: move it into the repository (a git-ignored "
                "file: name it in [setup] inputs), or add it to [sandbox] readable")
    return ""
