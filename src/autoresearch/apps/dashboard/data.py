"""Read-only queries over a task's ledger for the dashboard and the report.

Invariant: nothing here writes. Every query opens the ledger with SQLite's read-only URI
(`mode=ro`), so the research loop, the only writer, never waits on the dashboard (WAL readers
do not block the writer). The writes the dashboard offers, adding an idea and pausing or
resuming a research run, go through the Ledger API in app.py, behind the token.

The queries select only the columns a view needs (a 10,000-experiment chart must not load every
log tail). They read the schema of store/ledger.py as it is; a status this module does not know
(a newer version's, e.g. `pruned`) is passed through unchanged and shown in a neutral style.
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoresearch.core.config import ConfigError, MetricSpec, load_config, state_dir
from autoresearch.core.records import Check
from autoresearch.repo import gitops

# The kinds a chart point can be: every status, with the discards a guard or the budget refused
# shown apart (they were not worse, they broke a rule). Unknown statuses get the kind "other".
KINDS = ("keep", "discard", "guard", "crash", "timeout", "pruned", "rejected", "interrupted", "running",
         "queued")
GUARD_PREFIXES = ("discard: guard ", "discard: over budget", "discard: flagged")
CHART_COLUMNS = ("id", "status", "metric", "agent", "description", "reason", "idea_id", "created_at",
                 "finished_at", "insertions", "deletions", "wall_s", "slot")
LOG_TAIL_CHARS = 6000  # the experiment view shows the end of a log; the full file stays on disk
FAILED = ("crash", "timeout", "pruned", "other")  # charted on the worse edge when they have no metric
NOT_CHARTED = ("rejected", "interrupted", "running", "queued")  # never measured (or not yet)
# A chart of more points than this in view gets, of each kind but the kept, each x bin's best and
# worst (the envelope: at 10,000 points a chart of 1,300 pixels draws ~8 on each pixel column, one
# over the other); kept points always all, so the best-so-far line is exact. Zoomed in far enough,
# every point. SVG (plotly's and the report's) draws ~3,000 markers in a fraction of a second.
CHART_ALL_UP_TO = 3000
CHART_BINS = 600  # x bins of a decimated chart: two points per kind and bin, about one per pixel pair
HOVER_CHARS = 160  # of a description or reason, in a chart point's hover


def kind(status: str, reason: str) -> str:
    """The chart's category of an experiment: its status, or `guard` for a rule-refused discard."""
    if status == "discard" and reason.startswith(GUARD_PREFIXES):
        return "guard"
    return status if status in KINDS else "other"


@dataclass
class Task:
    """One task repository the dashboard shows: where its ledger is and what its metric means."""

    root: Path
    name: str
    metric: MetricSpec
    program: str = "program.md"
    budget_s: float | None = None  # [budget] seconds when the dashboard started (a --budget override is not recorded)
    config_problem: str | None = None  # a broken autoresearch.toml: shown, not fatal to the dashboard
    tags_wanted: tuple[str, ...] = ()
    # (experiment, runs recorded) -> when this process first saw it running; None: running already at start-up
    _first_seen: dict[tuple[int, int], float | None] = field(default_factory=dict)

    @classmethod
    def open(cls, root: Path, tags: tuple[str, ...] = ()) -> Task:
        try:
            config = load_config(root)
            return cls(root, config.name, config.metric, config.program, config.budget_s, tags_wanted=tags)
        except ConfigError as e:
            return cls(root, root.name, MetricSpec("metric"), config_problem=str(e), tags_wanted=tags)

    @property
    def db_path(self) -> Path:
        return state_dir(self.root) / "ledger.db"

    def connect(self) -> sqlite3.Connection:
        """A read-only connection (a missing ledger is an empty task, not an error)."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        return conn

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        if not self.db_path.exists():
            return []
        conn = self.connect()
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def tags(self) -> list[str]:
        found = [r[0] for r in self.query("SELECT tag FROM experiments GROUP BY tag ORDER BY MIN(id)")]
        return [t for t in found if t in self.tags_wanted] if self.tags_wanted else found

    def default_tag(self) -> str | None:
        tags = self.tags()
        last = self.meta("last_tag")
        return last if last in tags else (tags[-1] if tags else None)

    # -- the views ----------------------------------------------------------------------------

    def summary(self, tag: str) -> dict[str, Any]:
        counts = {r[0]: r[1] for r in self.query(
            "SELECT status, COUNT(*) FROM experiments WHERE tag = ? GROUP BY status", (tag,))}
        kept = self.query("SELECT id, metric, description FROM experiments WHERE tag = ? AND status = 'keep' "
                          "ORDER BY finished_at, id", (tag,))
        baseline, best = (dict(kept[0]), dict(kept[-1])) if kept else (None, None)
        pauses = self.pauses(tag)
        return {"task": self.name, "root": str(self.root), "tag": tag, "branch": f"autoresearch/{tag}",
                "metric": self.metric.name, "direction": self.metric.direction, "counts": counts,
                "experiments": sum(counts.values()), "baseline": baseline, "best": best,
                "paused": pauses[-1] if pauses and pauses[-1]["ended_at"] is None else None,
                "config_problem": self.config_problem}

    def pauses(self, tag: str) -> list[dict[str, Any]]:
        """Every pause of a research run in order (the last one open while paused); none in a ledger
        older than pausing (no table, and this connection may not create it)."""
        if not self.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pauses'"):
            return []
        return [dict(r) for r in self.query("SELECT * FROM pauses WHERE tag = ? ORDER BY id", (tag,))]

    def experiments(self, tag: str) -> list[dict[str, Any]]:
        """Every experiment of a research run, in id order, with the columns the chart and table use."""
        rows = self.query(f"SELECT {', '.join(CHART_COLUMNS)} FROM experiments WHERE tag = ? ORDER BY id", (tag,))
        out = []
        for r in rows:
            d = dict(r)
            d["kind"] = kind(d["status"], d["reason"] or "")
            d["metric"] = _finite(d["metric"])
            out.append(d)
        return out

    def experiment(self, exp_id: int) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM experiments WHERE id = ?", (exp_id,))
        if not rows:
            return None
        d = dict(rows[0])
        d["commit"] = d.pop("commit_sha")
        for k in ("params", "info", "metrics"):
            d[k] = json.loads(d[k] or "{}")
        d["kind"] = kind(d["status"], d["reason"] or "")
        d["metric"] = _finite(d["metric"])
        d["log_tail"] = (d["log_tail"] or "")[-LOG_TAIL_CHARS:]
        d["runs"] = [dict(r) | {"metrics": json.loads(r["metrics"] or "{}"), "metric": _finite(r["metric"])}
                     for r in self.query("SELECT * FROM runs WHERE experiment_id = ? ORDER BY id", (exp_id,))]
        d["diff"] = self.diff(d["parent_commit"], d["commit"])
        if d["idea_id"] is not None:
            idea = self.query("SELECT id, text FROM ideas WHERE id = ?", (d["idea_id"],))
            d["idea"] = dict(idea[0]) if idea else None
        return d

    def diff(self, parent: str | None, commit: str | None) -> str:
        if not commit or not parent or commit == parent:
            return ""
        try:
            return gitops.diff(self.root, parent, commit)
        except gitops.GitError as e:  # a commit git no longer has (a pruned repository): say so
            return f"(no diff: git could not show {parent[:9]}..{commit[:9]}: {e.problem.strip()[:200]})"

    def run_groups(self, tag: str) -> list[list[float]]:
        """The metrics of every experiment's ok runs, for those run twice or more (the noise estimate's input)."""
        groups: dict[int, list[float]] = {}
        for exp_id, metric in self.query("SELECT r.experiment_id, r.metric FROM runs r JOIN experiments e ON e.id = "
                                         "r.experiment_id WHERE e.tag = ? AND r.status = 'ok' AND r.metric IS NOT NULL "
                                         "ORDER BY r.id", (tag,)):
            groups.setdefault(exp_id, []).append(metric)
        return [g for g in groups.values() if len(g) > 1]

    def checks(self, tag: str) -> list[dict[str, Any]]:
        """Ablation and transfer checks of a research run (`autoresearch ablate` / `transfer`), with
        their gains; none in a ledger older than the checks."""
        try:
            rows = self.query("SELECT * FROM checks WHERE tag = ? ORDER BY id", (tag,))
        except sqlite3.OperationalError:  # no checks table yet: the ledger's writer is older
            return []
        return [Check.from_row(r).to_dict() for r in rows]

    def ideas(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT i.*, e.status AS experiment_status FROM ideas i "
                          "LEFT JOIN experiments e ON e.id = i.experiment_id ORDER BY i.id")
        return [dict(r) for r in rows]

    def notebook(self, tag: str) -> str:
        path = state_dir(self.root) / "notebooks" / f"{tag}.md"
        return path.read_text(errors="replace") if path.is_file() else ""

    def program_text(self, tag: str) -> str:
        best = self.query("SELECT commit_sha FROM experiments WHERE tag = ? AND status = 'keep' "
                          "ORDER BY finished_at DESC, id DESC LIMIT 1", (tag,))
        commit = best[0][0] if best and best[0][0] else self.meta(f"base:{tag}")
        text = gitops.read_file(self.root, commit, self.program) if commit else None
        if text is None and (self.root / self.program).is_file():
            text = (self.root / self.program).read_text(errors="replace")
        return text or ""

    def slots(self, tag: str, now: float | None = None) -> dict[str, Any]:
        """What each slot runs now, how busy each has been, and the queue of ready proposals.

        The ledger records a run when it ends, so a running experiment's current run has no start
        time yet: it began when its previous run ended, or, for its first run, at some moment this
        process saw it running (`started_known` false when it was running before the dashboard)."""
        now = time.time() if now is None else now
        running = self._running(tag)
        self.observe_running(now, running)
        for r in running:
            seen = self._first_seen.get((r["id"], r["runs"]))
            r["started_at"] = r["last_run_end"] or seen
            r["started_known"] = r["started_at"] is not None
        queue = [dict(r) for r in self.query("SELECT id, agent, description, created_at FROM experiments WHERE "
                                             "tag = ? AND status = 'queued' ORDER BY id", (tag,))]
        return {"running": running, "queue": queue, "busy": self._busy(tag, now), "budget_s": self.budget_s}

    def _running(self, tag: str | None = None) -> list[dict[str, Any]]:
        where, args = ("AND e.tag = ?", (tag,)) if tag else ("", ())
        return [dict(r) for r in self.query(
            "SELECT e.id, e.tag, e.slot, e.description, e.agent, e.created_at, COUNT(r.id) AS runs, MAX(r.created_at) "
            f"AS last_run_end FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.id WHERE e.status = 'running' "
            f"{where} GROUP BY e.id ORDER BY e.id", args)]

    def observe_running(self, now: float, running: list[dict[str, Any]] | None = None, initial: bool = False) -> None:
        """Note when each running experiment's current run was first seen (the watcher calls this on every
        change of the ledger, so a start is known to within its poll interval)."""
        for r in self._running() if running is None else running:
            self._first_seen.setdefault((r["id"], r["runs"]), None if initial else now)

    def _busy(self, tag: str, now: float) -> list[dict[str, Any]]:
        """Per slot: the share of time since its first run that it spent running experiments."""
        rows = self.query("SELECT r.slot, MIN(r.started_at), SUM(r.created_at - r.started_at), COUNT(*) FROM runs r "
                          "JOIN experiments e ON e.id = r.experiment_id WHERE e.tag = ? AND r.started_at IS NOT NULL "
                          "GROUP BY r.slot ORDER BY r.slot", (tag,))
        out = []
        for slot, first, busy_s, n in rows:
            span = max(now - first, 1e-9)
            out.append({"slot": slot or "slot", "runs": n, "busy_s": busy_s, "span_s": span,
                        "busy_fraction": min(busy_s / span, 1.0)})
        return out

    def accounting(self, tag: str) -> dict[str, Any]:
        """Tokens, model cost, device time and cost per kept improvement, from what the ledger records."""
        tokens_in = tokens_out = 0
        latency = 0.0
        costs: list[float] = []
        models: set[str] = set()
        for (info_text,) in self.query("SELECT info FROM experiments WHERE tag = ?", (tag,)):
            info = json.loads(info_text or "{}")
            tokens_in += int(info.get("prompt_tokens", 0) or 0)
            tokens_out += int(info.get("completion_tokens", 0) or 0)
            latency += float(info.get("latency_s", 0.0) or 0.0)
            if info.get("cost_usd") is not None:
                costs.append(float(info["cost_usd"]))
            if info.get("model"):
                models.add(str(info["model"]))
        run_s, runs = self.query("SELECT COALESCE(SUM(r.wall_s), 0), COUNT(r.id) FROM runs r JOIN experiments e "
                                 "ON e.id = r.experiment_id WHERE e.tag = ?", (tag,))[0]
        by_kind = {k: {"runs": n, "device_hours": s / 3600} for k, n, s in self.query(
            "SELECT r.kind, COUNT(*), COALESCE(SUM(r.wall_s), 0) FROM runs r JOIN experiments e ON "
            "e.id = r.experiment_id WHERE e.tag = ? GROUP BY r.kind", (tag,))}
        keeps = self.query("SELECT COUNT(*) FROM experiments WHERE tag = ? AND status = 'keep'", (tag,))[0][0]
        improvements = max(keeps - 1, 0)  # the baseline is not an improvement
        cost = sum(costs) if costs else None
        hours = run_s / 3600
        return {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "tokens": tokens_in + tokens_out,
                "agent_latency_s": latency, "models": sorted(models), "cost_usd": cost, "runs": runs,
                "device_hours": hours, "by_kind": by_kind, "kept_improvements": improvements,
                "cost_per_kept_improvement": cost / improvements if cost is not None and improvements else None,
                "device_hours_per_kept_improvement": hours / improvements if improvements else None,
                "not_recorded": ["the price of device time (device-hours are measured; their cost is not)",
                                 "token counts of agents that do not report them (search, random, coding CLIs)"]}

    def params(self, tag: str) -> dict[str, Any]:
        """The numeric parameters of every finished experiment with a metric, and each one's importance:
        |Spearman rank correlation| with the metric (a simple, assumption-light stand-in for fANOVA)."""
        rows = self.query("SELECT id, agent, params, metric, status, reason FROM experiments WHERE tag = ? "
                          "AND params != '{}' ORDER BY id", (tag,))
        trials = []
        for r in rows:
            values = {k: v for k, v in json.loads(r["params"]).items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
            if values:
                trials.append({"id": r["id"], "agent": r["agent"], "status": r["status"],
                               "kind": kind(r["status"], r["reason"] or ""), "metric": _finite(r["metric"]),
                               "params": values})
        names = sorted({k for t in trials for k in t["params"]})
        scored = [t for t in trials if t["metric"] is not None]
        importance = {}
        for name in names:
            pairs = [(t["params"][name], t["metric"]) for t in scored if name in t["params"]]
            rho = spearman([p for p, _ in pairs], [m for _, m in pairs])
            importance[name] = abs(rho) if rho is not None else None
        return {"names": names, "trials": trials, "importance": importance, "metric": self.metric.name,
                "direction": self.metric.direction}


def chart(exps: list[dict[str, Any]], axis: str = "number", x_range: tuple[float, float] | None = None,
          y_range: tuple[float, float] | None = None, limit: int = CHART_ALL_UP_TO,
          bins: int = CHART_BINS) -> dict[str, Any]:
    """The progress chart's points of `experiments()` rows: every measured one, or, with more than
    `limit` in the view (x_range, y_range: what a zoomed chart shows; a failed point without a
    metric is in any y range), every kept one and each bin's extremes of the others (CHART_ALL_UP_TO).
    `counts` and `total` are of every charted point, in view or not; `last_x` is the latest x."""
    x = (lambda e: e["id"]) if axis == "number" else (lambda e: e["finished_at"])
    charted = [e for e in exps if e["status"] not in NOT_CHARTED and e["finished_at"]
               and (e["metric"] is not None or e["kind"] in FAILED)]
    view = [e for e in charted if (x_range is None or x_range[0] <= x(e) <= x_range[1]) and
            (y_range is None or e["metric"] is None or y_range[0] <= e["metric"] <= y_range[1])]
    picked = {e["id"] for e in view}
    if len(view) > limit:
        lo, hi = min(x(e) for e in view), max(x(e) for e in view)
        width = (hi - lo) / bins or 1.0
        extremes: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for e in view:
            if e["kind"] == "keep":
                continue
            pair = extremes.setdefault((e["kind"], min(int((x(e) - lo) / width), bins - 1)), [e, e])
            if e["metric"] is not None and (pair[0]["metric"] is None or e["metric"] < pair[0]["metric"]):
                pair[0] = e
            if e["metric"] is not None and (pair[1]["metric"] is None or e["metric"] > pair[1]["metric"]):
                pair[1] = e
        picked = {e["id"] for pair in extremes.values() for e in pair}
    shown = [e for e in charted if e["kind"] == "keep" or e["id"] in picked]  # kept ones in view or not: the line
    counts: dict[str, int] = {}
    for e in charted:
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    return {"points": [{"id": e["id"], "kind": e["kind"], "status": e["status"], "metric": e["metric"],
                        "finished_at": e["finished_at"], "description": (e["description"] or "")[:HOVER_CHARS],
                        "reason": (e["reason"] or "")[:HOVER_CHARS]} for e in shown],
            "counts": counts, "total": len(charted), "in_view": len(view), "decimated": len(view) > limit,
            "last_x": max((x(e) for e in charted), default=None)}


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None with fewer than 3 pairs or no spread."""
    if len(xs) < 3:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else None


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def _finite(value: float | None) -> float | None:
    """A metric JSON can carry: inf and nan (an older ledger may hold them) become None."""
    return value if value is not None and math.isfinite(value) else None


def data_version(conn: sqlite3.Connection) -> int:
    """SQLite's counter of commits by other connections: a change in the ledger costs one pragma to see."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])
