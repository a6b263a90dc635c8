"""The ledger: every experiment and idea, durably, in SQLite (WAL) in the task's state folder.

A row is written when an experiment starts (status `running`) and updated when it ends; each
write is committed before the result is reported anywhere else. `results.tsv` (the original
autoresearch's format) is regenerated from the ledger after every change, atomically.

The ledger is not the only record: every experiment's commit is archived under
refs/autoresearch/<tag>/<id>, the kept ones form the branch autoresearch/<tag>, and the run logs
are files. A database that SQLite finds corrupt raises LedgerError, which says so and how to
rebuild the ledger from those (`autoresearch doctor --repair`, doctor.py), never a raw traceback.

The contract (what the coordinator relies on; `autoresearch.testing.store.StoreConformance` checks
it, and a replacement store must pass it):
- durable: every write is committed before the call returns; a store opened again from the same
  path holds it (synchronous=FULL: a power loss too).
- thread safe: one Ledger is shared by any number of threads of one process; each call is atomic
  and none is lost. New ids (experiments, runs, ideas) are distinct and increase.
- `start_experiment` adds a row (`running` unless told, base_commit = parent_commit, created_at
  now); `update` sets Experiment fields only (ValueError for any other name or an unknown status)
  and `get` gives every field back as set; `finish` also stamps finished_at, strictly later than the
  tag's previous keep, so `best(tag)` is the latest keep in the order of the decisions (not ids)
  and `kept(tag)` lists the keeps in that order.
- `experiments`, `runs`, `all_runs`, `ideas` are in id order, `tags` in the order of their first
  experiment; `find_content` is the earliest match; `supersede_runs` turns a run's `ok` into
  `superseded`, which `run_values` and `run_groups` (runs of an experiment with two or more ok
  values) leave out; `run_curves` and `curve_groups` are the same for the runs' progress curves
  (ok runs with a non-empty curve), each curve as given to `add_run`.
- a ledger written by an older version opens and works: missing columns are added (ADDED_COLUMNS),
  and its runs read back with an empty curve.
- `pause(tag, source)` opens a pause of a research run and returns it; while one is open it returns
  that one (one open pause per tag, also against other processes); `resume(tag)` closes it (its
  ended_at now, no earlier than its start) and returns it, None when none was open; `paused(tag)`
  is the open one or None; `pauses(tag)` every pause of the tag in id order. Another process's
  pause is seen by the next call (the scheduler reads it before it starts an experiment).
- `add_check` starts an ablation/transfer check; `add_check_pair` appends one (reference,
  variant) pair, durably; `checks` gives them back in id order with their pairs in order.
- `write_results_tsv` replaces the file atomically: the finished experiments, in id order.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from autoresearch.core.config import STATE_DIR
from autoresearch.core.errors import AutoresearchError
from autoresearch.core.records import (
    FINISHED,
    PENDING,
    STATUSES,
    Check,
    Experiment,
    Idea,
    Pause,
    Run,
)

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tag           TEXT NOT NULL,
    parent_commit TEXT NOT NULL,
    commit_sha    TEXT,
    agent         TEXT NOT NULL,
    description   TEXT NOT NULL,
    idea_id       INTEGER,
    params        TEXT NOT NULL DEFAULT '{}',
    info          TEXT NOT NULL DEFAULT '{}',
    files_changed INTEGER NOT NULL DEFAULT 0,
    insertions    INTEGER NOT NULL DEFAULT 0,
    deletions     INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL,
    reason        TEXT NOT NULL DEFAULT '',
    metric        REAL,
    metrics       TEXT NOT NULL DEFAULT '{}',
    exit_code     INTEGER,
    wall_s        REAL,
    peak_mem_mb   REAL,
    log_path      TEXT,
    log_tail      TEXT NOT NULL DEFAULT '',
    lines_delta   INTEGER NOT NULL DEFAULT 0,
    content_hash  TEXT,
    created_at    REAL NOT NULL,
    finished_at   REAL
);
CREATE TABLE IF NOT EXISTS runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    kind          TEXT NOT NULL,            -- primary | noise | confirm
    status        TEXT NOT NULL,            -- ok | crash | timeout | stopped | pruned | ...
    metric        REAL,
    metrics       TEXT NOT NULL DEFAULT '{}',
    wall_s        REAL,
    peak_mem_mb   REAL,
    log_path      TEXT,
    created_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_experiment ON runs(experiment_id);
CREATE INDEX IF NOT EXISTS experiments_tag ON experiments(tag, id);
CREATE TABLE IF NOT EXISTS ideas (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    text          TEXT NOT NULL,
    source        TEXT NOT NULL DEFAULT 'human',
    status        TEXT NOT NULL DEFAULT 'open',
    experiment_id INTEGER,
    outcome       TEXT,
    created_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pauses (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tag           TEXT NOT NULL,
    source        TEXT NOT NULL,
    started_at    REAL NOT NULL,
    ended_at      REAL                      -- NULL: paused now
);
CREATE UNIQUE INDEX IF NOT EXISTS pauses_open ON pauses(tag) WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS checks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tag           TEXT NOT NULL,
    kind          TEXT NOT NULL,            -- ablation | transfer
    experiment_id INTEGER,
    setting       TEXT NOT NULL DEFAULT '{}',
    pairs         TEXT NOT NULL DEFAULT '[]',
    note          TEXT NOT NULL DEFAULT '',
    direction     TEXT NOT NULL DEFAULT 'minimize',
    created_at    REAL NOT NULL
);
"""
# Columns added after version 1, with their types: added to older ledgers when they are opened.
ADDED_COLUMNS = {
    "experiments": (("base_commit", "TEXT"), ("slot", "TEXT")),  # the best it was proposed against; where it ran
    "runs": (("slot", "TEXT"), ("started_at", "REAL"), ("curve", "TEXT")),  # curve: JSON progress points
}


# What update() may set: the Experiment record's fields but its id (column names come from this set only).
UPDATABLE = frozenset(Experiment.__dataclass_fields__) - {"id"}


class LedgerError(AutoresearchError):
    """The ledger's database is corrupt: which file, what is still intact, how to recover."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        state = self.path.parent
        task = state.parent if state.name == STATE_DIR else "<task>"
        super().__init__(
            f"{self.path} is corrupt ({problem}). The research itself is intact: each experiment's commit is under "
            f"refs/autoresearch/<tag>/<id>, the kept ones on the branch autoresearch/<tag>, and the run logs are in "
            f"{state / 'logs'}.\n  fix: autoresearch doctor -C {task} --repair (moves the corrupt file aside and "
            "rebuilds the ledger from git and the logs)")


class _Result(list):
    """The rows of one statement, fetched while the connection was held, its lastrowid and rowcount."""

    lastrowid: int | None = None
    rowcount: int = -1

    def fetchone(self) -> sqlite3.Row | None:
        return self[0] if self else None


class _SharedConnection:
    """One SQLite connection shared by the coordinator's threads: each statement runs and is fetched
    whole under a lock, so threads never interleave on a cursor."""

    def __init__(self, db: sqlite3.Connection, path: Path):
        self._db, self._lock, self.path = db, threading.Lock(), path

    def execute(self, sql: str, args: tuple | list = ()) -> _Result:
        with self._lock, self._corruption():
            cur = self._db.execute(sql, args)
            rows = _Result(cur.fetchall())
            rows.lastrowid, rows.rowcount = cur.lastrowid, cur.rowcount
            return rows

    def executescript(self, sql: str) -> None:
        with self._lock, self._corruption():
            self._db.executescript(sql)

    @contextmanager
    def _corruption(self) -> Iterator[None]:
        """SQLite's "not a database" and "malformed" (plain DatabaseError) become LedgerError; its
        subclasses (locked, full disk, constraints) are other problems and pass unchanged."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            if type(e) is not sqlite3.DatabaseError:
                raise
            raise LedgerError(self.path, str(e)) from e

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Ledger:
    """One SQLite database per task; safe for one writer process (any number of its threads) and
    many readers."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        self.db = _SharedConnection(conn, self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a reported result survives power loss
        self.db.executescript(SCHEMA)
        for table, columns in ADDED_COLUMNS.items():
            have = {r["name"] for r in self.db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns:
                if name not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.db.close()

    # -- experiments --------------------------------------------------------------------------

    def start_experiment(self, *, tag: str, parent_commit: str, agent: str, description: str,
                         idea_id: int | None = None, params: dict | None = None,
                         info: dict | None = None, status: str = "running") -> int:
        cur = self.db.execute(
            "INSERT INTO experiments (tag, parent_commit, base_commit, agent, description, idea_id, params, info,"
            " status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tag, parent_commit, parent_commit, agent, description, idea_id, json.dumps(params or {}),
             json.dumps(info or {}), status, time.time()))
        return int(cur.lastrowid)

    def update(self, exp_id: int, **fields: Any) -> None:
        """Set columns of one experiment (dicts are stored as JSON). Only the Experiment record's own
        fields can be set: a name that is not one is an error, never part of the SQL."""
        if not fields:
            return
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise ValueError(f"not fields of an experiment: {sorted(unknown)}")
        if "commit" in fields:
            fields["commit_sha"] = fields.pop("commit")
        for k in ("params", "info", "metrics"):
            if k in fields:
                fields[k] = json.dumps(fields[k])
        if fields.get("status") and fields["status"] not in STATUSES:
            raise ValueError(f"unknown status {fields['status']!r}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE experiments SET {cols} WHERE id = ?", (*fields.values(), exp_id))

    def finish(self, exp_id: int, status: str, **fields: Any) -> None:
        now = time.time()
        if status == "keep":  # the best is the latest keep: keep times strictly increase, whatever the clock does
            last = self.db.execute("SELECT MAX(finished_at) FROM experiments WHERE status = 'keep' AND tag = "
                                   "(SELECT tag FROM experiments WHERE id = ?)", (exp_id,)).fetchone()[0]
            if last is not None and last >= now:
                now = last + 1e-6
        self.update(exp_id, status=status, finished_at=now, **fields)

    def restore(self, exp: Experiment) -> None:
        """Insert an experiment as given, its id included (`autoresearch doctor` rebuilding from git)."""
        if exp.status not in STATUSES:
            raise ValueError(f"unknown status {exp.status!r}")
        row = exp.to_dict()
        row["commit_sha"] = row.pop("commit")
        for k in ("params", "info", "metrics"):
            row[k] = json.dumps(row[k])
        self.db.execute(f"INSERT INTO experiments ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                        tuple(row.values()))

    def get(self, exp_id: int) -> Experiment | None:
        row = self.db.execute("SELECT * FROM experiments WHERE id = ?", (exp_id,)).fetchone()
        return _experiment(row) if row else None

    def count(self, tag: str, status: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM experiments WHERE tag = ? AND status = ?",
                                   (tag, status)).fetchone()[0])

    def kept(self, tag: str) -> list[Experiment]:
        """The kept experiments in the order they were kept: the research branch's history."""
        rows = self.db.execute("SELECT * FROM experiments WHERE tag = ? AND status = 'keep' ORDER BY finished_at, id",
                               (tag,))
        return [_experiment(r) for r in rows]

    def experiments(self, tag: str | None = None, statuses: tuple[str, ...] | None = None) -> list[Experiment]:
        sql, args = "SELECT * FROM experiments", []
        where = []
        if tag is not None:
            where.append("tag = ?")
            args.append(tag)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(statuses)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_experiment(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def best(self, tag: str) -> Experiment | None:
        """The latest kept experiment: the one the research branch points at. Latest in the order of
        the decisions, not of the ids: with parallel slots an older experiment may be kept last."""
        row = self.db.execute("SELECT * FROM experiments WHERE tag = ? AND status = 'keep' "
                              "ORDER BY finished_at DESC, id DESC LIMIT 1", (tag,)).fetchone()
        return _experiment(row) if row else None

    def find_content(self, tag: str, content_hash: str, statuses: tuple[str, ...] = FINISHED + PENDING,
                     exclude: int | None = None) -> Experiment | None:
        """An earlier experiment (finished, queued or running) whose editable files were exactly these."""
        row = self.db.execute("SELECT * FROM experiments WHERE tag = ? AND content_hash = ? AND id != ? AND status IN "
                              f"({','.join('?' * len(statuses))}) ORDER BY id LIMIT 1",
                              (tag, content_hash, exclude or -1, *statuses)).fetchone()
        return _experiment(row) if row else None

    def tags(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT tag FROM experiments GROUP BY tag ORDER BY MIN(id)")]

    # -- runs ---------------------------------------------------------------------------------

    def add_run(self, experiment_id: int, kind: str, status: str, metric: float | None = None,
                metrics: dict | None = None, wall_s: float | None = None, peak_mem_mb: float | None = None,
                log_path: str | None = None, slot: str | None = None, started_at: float | None = None,
                curve: list | None = None) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (experiment_id, kind, status, metric, metrics, wall_s, peak_mem_mb, log_path,"
            " created_at, slot, started_at, curve) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (experiment_id, kind, status, metric, json.dumps(metrics or {}), wall_s, peak_mem_mb, log_path,
             time.time(), slot, started_at, json.dumps(curve) if curve else None))
        return int(cur.lastrowid)

    def supersede_runs(self, experiment_id: int) -> None:
        """Set aside the runs of an experiment's earlier commit (it was rebased onto a newer best)."""
        self.db.execute("UPDATE runs SET status = 'superseded' WHERE experiment_id = ? AND status = 'ok'",
                        (experiment_id,))

    def all_runs(self, tag: str) -> list[Run]:
        rows = self.db.execute("SELECT r.* FROM runs r JOIN experiments e ON e.id = r.experiment_id "
                               "WHERE e.tag = ? ORDER BY r.id", (tag,))
        return [_run(r) for r in rows]

    def runs(self, experiment_id: int) -> list[Run]:
        rows = self.db.execute("SELECT * FROM runs WHERE experiment_id = ? ORDER BY id", (experiment_id,))
        return [_run(r) for r in rows]

    def run_values(self, experiment_id: int) -> list[float]:
        """The metric of every successful run of one experiment, as recorded (see run_groups)."""
        return [r[0] for r in self.db.execute("SELECT metric FROM runs WHERE experiment_id = ? AND status = 'ok' "
                                              "AND metric IS NOT NULL ORDER BY id", (experiment_id,))]

    def run_groups(self, tag: str) -> list[list[float]]:
        """Metric values of repeated runs, grouped by experiment: the raw material of the noise estimate.

        As recorded: an older ledger may hold values no valid run gives (1e300, inf); judge.py, the
        one consumer that computes with them, ignores those."""
        groups: dict[int, list[float]] = {}
        for exp_id, metric in self.db.execute(
                "SELECT r.experiment_id, r.metric FROM runs r JOIN experiments e ON e.id = r.experiment_id "
                "WHERE e.tag = ? AND r.status = 'ok' AND r.metric IS NOT NULL ORDER BY r.id", (tag,)):
            groups.setdefault(exp_id, []).append(metric)
        return [g for g in groups.values() if len(g) > 1]

    def primary_start(self, tag: str, before: float, back: int) -> float | None:
        """When the earliest of the last `back` primary runs of a tag started before `before` began
        (None: there is none)."""
        rows = list(self.db.execute(
            "SELECT r.started_at FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE e.tag = ? "
            "AND r.kind = 'primary' AND r.started_at < ? ORDER BY r.started_at DESC LIMIT ?",
            (tag, before, back)))
        return rows[-1][0] if rows else None

    def run_curves(self, experiment_id: int) -> list[list]:
        """The progress curve of every successful run of one experiment that recorded one."""
        return [json.loads(r[0]) for r in self.db.execute(
            "SELECT curve FROM runs WHERE experiment_id = ? AND status = 'ok' AND curve IS NOT NULL ORDER BY id",
            (experiment_id,))]

    def curve_groups(self, tag: str) -> list[list[list]]:
        """Curves of repeated runs, grouped by experiment: the raw material of the curves' noise."""
        groups: dict[int, list[list]] = {}
        for exp_id, curve in self.db.execute(
                "SELECT r.experiment_id, r.curve FROM runs r JOIN experiments e ON e.id = r.experiment_id "
                "WHERE e.tag = ? AND r.status = 'ok' AND r.curve IS NOT NULL ORDER BY r.id", (tag,)):
            groups.setdefault(exp_id, []).append(json.loads(curve))
        return [g for g in groups.values() if len(g) > 1]

    # -- ideas --------------------------------------------------------------------------------

    def add_idea(self, text: str, source: str = "human") -> int:
        text = text.strip()
        if not text:
            raise ValueError("an idea needs some text")
        cur = self.db.execute("INSERT INTO ideas (text, source, created_at) VALUES (?, ?, ?)",
                              (text, source, time.time()))
        return int(cur.lastrowid)

    def ideas(self, status: str | None = None) -> list[Idea]:
        sql = "SELECT * FROM ideas" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        return [Idea(**dict(r)) for r in self.db.execute(sql, (status,) if status else ())]

    def mark_idea(self, idea_id: int, experiment_id: int, outcome: str) -> None:
        self.db.execute("UPDATE ideas SET status = 'tried', experiment_id = ?, outcome = ? WHERE id = ?",
                        (experiment_id, outcome, idea_id))

    # -- meta ---------------------------------------------------------------------------------

    # -- checks (ablation, transfer) ---------------------------------------------------------------

    def add_check(self, tag: str, kind: str, experiment_id: int | None, setting: dict | None = None,
                  direction: str = "minimize") -> int:
        cur = self.db.execute(
            "INSERT INTO checks (tag, kind, experiment_id, setting, direction, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (tag, kind, experiment_id, json.dumps(setting or {}), direction, time.time()))
        return int(cur.lastrowid)

    def add_check_pair(self, check_id: int, reference: float, variant: float) -> None:
        """One more (reference, variant) pair of a check, durable before the next run starts."""
        self.db.execute("UPDATE checks SET pairs = json_insert(pairs, '$[#]', json_array(?, ?)) WHERE id = ?",
                        (float(reference), float(variant), check_id))

    def note_check(self, check_id: int, note: str) -> None:
        self.db.execute("UPDATE checks SET note = ? WHERE id = ?", (note, check_id))

    def checks(self, tag: str | None = None) -> list[Check]:
        """The checks (of one research run, or all), in id order."""
        sql, args = ("SELECT * FROM checks WHERE tag = ? ORDER BY id", (tag,)) if tag is not None else \
            ("SELECT * FROM checks ORDER BY id", ())
        return [Check.from_row(r) for r in self.db.execute(sql, args)]

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- pauses -------------------------------------------------------------------------------

    def pause(self, tag: str, source: str = "human") -> Pause:
        """Pause a research run (one statement: the unique index on open pauses makes a second
        pause, from any process, a no-op that returns the first)."""
        self.db.execute("INSERT OR IGNORE INTO pauses (tag, source, started_at) VALUES (?, ?, ?)",
                        (tag, source, time.time()))
        # The open one (made now or before); if another process resumed it in between, that one, ended.
        row = self.db.execute("SELECT * FROM pauses WHERE tag = ? ORDER BY id DESC LIMIT 1", (tag,)).fetchone()
        return Pause(**dict(row))

    def resume(self, tag: str) -> Pause | None:
        """End the open pause of a research run: the period it lasted, or None if it was not paused."""
        pause = self.paused(tag)
        if pause is None:
            return None
        ended = max(time.time(), pause.started_at)
        done = self.db.execute("UPDATE pauses SET ended_at = ? WHERE id = ? AND ended_at IS NULL", (ended, pause.id))
        if done.rowcount != 1:  # another process resumed it first
            return None
        pause.ended_at = ended
        return pause

    def paused(self, tag: str) -> Pause | None:
        row = self.db.execute("SELECT * FROM pauses WHERE tag = ? AND ended_at IS NULL", (tag,)).fetchone()
        return Pause(**dict(row)) if row else None

    def pauses(self, tag: str) -> list[Pause]:
        return [Pause(**dict(r)) for r in self.db.execute("SELECT * FROM pauses WHERE tag = ? ORDER BY id", (tag,))]

    # -- results.tsv --------------------------------------------------------------------------

    def write_results_tsv(self, path: Path, tag: str, metric_name: str) -> None:
        """The original autoresearch's format: commit, metric, memory_gb, status, description."""
        lines = [f"commit\t{metric_name}\tmemory_gb\tstatus\tdescription"]
        rows = self.db.execute("SELECT commit_sha, parent_commit, metric, peak_mem_mb, status, description FROM "
                               f"experiments WHERE tag = ? AND status IN ({','.join('?' * len(FINISHED))}) ORDER BY id",
                               (tag, *FINISHED))
        for commit, parent, metric, mem_mb, status, description in rows:
            value = f"{metric:.6f}" if metric is not None else "0.000000"
            desc = " ".join(description.replace("\t", " ").split())
            lines.append(f"{(commit or parent)[:7]}\t{value}\t{(mem_mb or 0.0) / 1024:.1f}\t{status}\t{desc}")
        _atomic_write(path, "\n".join(lines) + "\n")


def _experiment(row: sqlite3.Row) -> Experiment:
    d = dict(row)
    d["commit"] = d.pop("commit_sha")
    for k in ("params", "info", "metrics"):
        d[k] = json.loads(d[k] or "{}")
    return Experiment(**d)


def _run(row: sqlite3.Row) -> Run:
    d = dict(row)
    d["metrics"] = json.loads(d["metrics"])
    d["curve"] = json.loads(d["curve"] or "[]")
    return Run(**d)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

