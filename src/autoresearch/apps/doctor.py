"""`autoresearch doctor`: check a task's ledger, and rebuild a corrupt (or lost) one from git.

The ledger holds the details of the decisions, but the research itself is also in git and in
files: every experiment's commit is archived under refs/autoresearch/<tag>/<id>, the kept ones are
the first-parent chain of the branch autoresearch/<tag>, and each run's output is in
.autoresearch/logs/<tag>/<id>[.<n>].log. A rebuilt ledger has one row per archived experiment, its
id kept: `keep` for the commits on the branch's chain (the branch head is the best again, the
oldest kept is the research base), `discard` for the others, with the reason saying it was
recovered; the metric is re-read from the run logs. Its runs are restored from the logs when they
all ran that one commit (not after a rebase), so the noise estimate survives, with their progress
curves (pruning goes on). What only the old ledger knew is lost: ideas, crash/timeout/pruned
statuses, reasons, resource figures, and rejected proposals (they have no archived commit). The corrupt file is moved aside, never deleted, and
nothing is moved while an autoresearch process holds the task.
"""
from __future__ import annotations

import math
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from autoresearch.apps.tasks import TaskError
from autoresearch.core.config import (
    ConfigError,
    JudgeConfig,
    MetricSpec,
    TaskConfig,
    is_editable,
    load_config,
    state_dir,
)
from autoresearch.core.errors import ResearchError
from autoresearch.core.metrics import (
    MetricError,
    parse_summary,
    read_metrics,
    valid_metric,
)
from autoresearch.core.progress import curve_from_text
from autoresearch.core.records import Experiment
from autoresearch.repo import gitops
from autoresearch.research.admission import (  # a rebuilt row hashes as the loop does
    content_hash,
    params_of,
)
from autoresearch.research.startup import StateLock
from autoresearch.store.ledger import Ledger

RECOVERED = "recovered from git by `autoresearch doctor`"
_RUN_LOG = re.compile(r"(\d+)(?:\.(\d+))?\.log")  # <id>.log is the first run, <id>.<n>.log the later ones
_AGENT = re.compile(r"^proposed by (.+) \(autoresearch\)$", re.MULTILINE)  # loop._message's second paragraph
_REBASED = re.compile(r"^rebased from \S+ onto #\d+$", re.MULTILINE)


def check(db: Path) -> str | None:
    """What is wrong with the ledger file (SQLite's integrity check), or None when it is sound."""
    if not db.exists():
        return "it does not exist"
    try:
        conn = sqlite3.connect(db, timeout=30)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        return str(e)
    return None if rows == ["ok"] else "; ".join(map(str, rows[:5]))


def repair(root: Path) -> dict[str, Any]:
    """Move the task's ledger aside (if there is one) and rebuild it from git and the logs, holding
    the task's lock; what was done, for the report."""
    state = state_dir(root)
    db = state / "ledger.db"
    refs = archive_refs(root)
    if not refs and not db.exists():
        raise TaskError(f"no research recorded in {root}: no ledger and no refs under {gitops.ARCHIVE_PREFIX}")
    lock = StateLock(root, state)  # the lock `autoresearch run` holds: no ledger is moved under a research
    try:
        lock.acquire()
    except ResearchError:
        raise TaskError(f"another autoresearch process is running on {root} (lock {lock.path}); "
                        "stop it first, then run `autoresearch doctor --repair` again") from None
    try:
        moved = _move_aside(db) if db.exists() else None
        summary = rebuild(root, db, refs)
    finally:
        lock.release()
    return {"moved_to": str(moved) if moved else None, **summary}


def archive_refs(root: Path) -> dict[str, dict[int, str]]:
    """tag -> experiment id -> commit, from refs/autoresearch/<tag>/<id>."""
    out: dict[str, dict[int, str]] = {}
    listing = gitops.git(root, "for-each-ref", "--format=%(refname) %(objectname)", gitops.ARCHIVE_PREFIX)
    for line in listing.splitlines():
        name, _, commit = line.partition(" ")
        tag, _, number = name.removeprefix(gitops.ARCHIVE_PREFIX).rpartition("/")
        if tag and number.isdigit():
            out.setdefault(tag, {})[int(number)] = commit
    return out


def rebuild(root: Path, db: Path, refs: dict[str, dict[int, str]]) -> dict[str, Any]:
    """A new ledger at `db` (which must not exist) from the archive refs and the run logs."""
    notes: list[str] = []
    try:
        config: TaskConfig | None = load_config(root)
    except ConfigError as e:
        config = None
        notes.append(f"the task's config does not load, so no metric was re-read: {e}")
    ledger = Ledger(db)
    counts: dict[str, dict[str, int]] = {}
    try:
        for tag, commits in refs.items():
            counts[tag] = _rebuild_tag(root, ledger, tag, commits, config, notes)
        if refs:
            ledger.set_meta("last_tag", max(refs, key=lambda t: max(refs[t])))  # the latest experiment's
    finally:
        ledger.close()
    return {"experiments": sum(c["experiments"] for c in counts.values()), "tags": counts, "notes": notes}


def _rebuild_tag(root: Path, ledger: Ledger, tag: str, commits: dict[int, str], config: TaskConfig | None,
                 notes: list[str]) -> dict[str, int]:
    branch = gitops.branch_ref(tag)
    chain: list[str] = []  # the branch's first-parent history, oldest first
    if gitops.ref_exists(root, branch):
        chain = gitops.git(root, "rev-list", "--first-parent", "--reverse", branch).splitlines()
    else:
        notes.append(f"tag {tag}: no branch autoresearch/{tag}, so no experiment is known to be kept")
    position = {c: i for i, c in enumerate(chain)}
    kept = {commit: exp_id for exp_id, commit in sorted(commits.items()) if commit in position}  # the last of twins
    base = min(kept, key=position.__getitem__) if kept else None
    info = _commit_info(root, sorted(set(commits.values())))
    logs = _run_logs(state_dir(root) / "logs" / tag)
    last_keep, restored, runs_of = 0.0, 0, {}
    noise_runs = (config.judge if config else JudgeConfig()).noise_runs
    for exp_id in sorted(commits, key=lambda i: (position.get(commits[i], -1), i)):  # keeps in the chain's order
        commit = commits[exp_id]
        if commit not in info:
            notes.append(f"tag {tag}: #{exp_id}'s ref points at {commit[:9]}, which is not a commit; skipped")
            continue
        parents, when, message = info[commit]
        keep, baseline = kept.get(commit) == exp_id, commit == base
        parent = commit if baseline or not parents else parents[0]  # the baseline is recorded as its own parent
        runs = [(n, path, *_read_log(path, config.metric if config else None)) for n, path in logs.get(exp_id, [])]
        measured = [r for r in runs if r[2] is not None]
        rebased = bool(_REBASED.search(message))  # its first logs are runs of the commit it was rebased from
        if rebased or not measured:
            metric, metrics = (measured[-1][2], measured[-1][3]) if measured else (None, runs[0][3] if runs else {})
        else:
            metric, metrics = math.fsum(r[2] for r in measured) / len(measured), measured[0][3]
        agent = _AGENT.search(message)
        finished = when
        if keep:  # the best is the latest keep: keep times follow the chain
            finished = last_keep = max(when, last_keep + 1e-6)
        files = _editable(root, commit, config)
        ledger.restore(Experiment(
            id=exp_id, tag=tag, parent_commit=parent, base_commit=parent, commit=commit,
            agent="baseline" if baseline else agent.group(1) if agent else "unknown",
            description="baseline" if baseline else (message.strip().splitlines() or ["(no description)"])[0],
            status="keep" if keep else "discard",
            reason=f"{RECOVERED}; " + ("metric re-read from its logs" if metric is not None else "metric unknown"),
            metric=metric, metrics=metrics, log_path=str(runs[0][1]) if runs else None,
            params=params_of(config, files) if config else {}, content_hash=content_hash(files) if config else None,
            created_at=when, finished_at=finished))
        restored += 1
        if not rebased:  # every log is a run of this one commit: they are its runs again
            # the baseline's first `noise_runs` runs are its noise estimate; later ones re-measured it beside a candidate
            runs_of[exp_id] = [("primary" if n == 0 else "noise" if baseline and n < noise_runs else "confirm",
                                path, value, values) for n, path, value, values in runs]
    for exp_id in sorted(runs_of):
        for kind, path, value, values in runs_of[exp_id]:
            ledger.add_run(exp_id, kind, "ok" if value is not None else "crash", value, values, log_path=str(path),
                           curve=curve_from_text(path.read_text(errors="replace")).to_json())
    if base:
        ledger.set_meta(f"base:{tag}", base)
    return {"experiments": restored, "kept": len(kept)}


def _commit_info(root: Path, commits: list[str]) -> dict[str, tuple[list[str], float, str]]:
    """commit -> (parents, commit time, message), in one git call."""
    out = gitops.git(root, "log", "--no-walk=unsorted", "--stdin", "--format=%H%x00%P%x00%ct%x00%B%x01",
                     input="\n".join(commits) + "\n")
    info = {}
    for record in out.split("\x01"):
        fields = record.strip("\n").split("\x00")
        if len(fields) == 4:
            info[fields[0]] = (fields[1].split(), float(fields[2]), fields[3])
    return info


def _run_logs(folder: Path) -> dict[int, list[tuple[int, Path]]]:
    """experiment id -> its runs' logs as (run number, path), in run order."""
    out: dict[int, list[tuple[int, Path]]] = {}
    if folder.is_dir():
        for path in folder.iterdir():
            m = _RUN_LOG.fullmatch(path.name)
            if m:
                out.setdefault(int(m.group(1)), []).append((int(m.group(2) or 0), path))
    return {k: sorted(v) for k, v in out.items()}


def _read_log(path: Path, spec: MetricSpec | None) -> tuple[float | None, dict[str, float]]:
    """The primary metric (None when there is none) and the valid values of one run's log; the
    trusted evaluation's log (<id>[.<n>].eval.log), when there is one, is what counted."""
    evaluated = path.with_name(path.name.removesuffix(".log") + ".eval.log")
    text = (evaluated if evaluated.is_file() else path).read_text(errors="replace")
    values = {k: v for k, v in parse_summary(text).items() if valid_metric(v)}
    if spec is None or spec.source == "json":  # the JSON file was in the run's folder, which is gone
        return None, values
    try:
        values = read_metrics(text, spec, path.parent)
    except MetricError:
        return None, values
    return values[spec.name], values


def _editable(root: Path, commit: str, config: TaskConfig | None) -> dict[str, str]:
    if config is None:
        return {}
    paths = [p for p in gitops.list_files(root, commit) if is_editable(config, p)]
    return gitops.read_files(root, commit, paths)


def _move_aside(db: Path) -> Path:
    """ledger.db (and its -wal, -shm) -> ledger.db.corrupt-<timestamp>(-wal, -shm)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = db.with_name(f"{db.name}.corrupt-{stamp}"), 1
    while aside.exists():
        n += 1
        aside = db.with_name(f"{db.name}.corrupt-{stamp}.{n}")
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{db}{suffix}").exists():
            os.replace(f"{db}{suffix}", f"{aside}{suffix}")
    return aside
