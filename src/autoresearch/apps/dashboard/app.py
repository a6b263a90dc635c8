"""The dashboard's web app: the page, its JSON API, live updates by server-sent events.

Invariants:
- Read-only by default: every GET reads the ledger through data.py (read-only SQLite). The
  writes, adding an idea and pausing or resuming a research run (a flag in the ledger that its
  loop reads before it starts an experiment), need the token printed at start-up (header
  `X-Autoresearch-Token`).
- Live updates cost the research loop nothing: one watcher task in this server asks each ledger
  `PRAGMA data_version` (a counter SQLite bumps when another connection commits) every POLL_S;
  the loop is never told about the dashboard and never waits for it.
- No internet: the page, its script and style, and plotly.min.js (from the installed `plotly`
  package) are served by this app; nothing is fetched from elsewhere.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel

from autoresearch.apps.dashboard.data import CHART_ALL_UP_TO, Task, chart, data_version
from autoresearch.store.ledger import Ledger

POLL_S = 0.2  # how often the watcher looks for a change: a new result shows within this (plus a fetch)
HEARTBEAT_S = 15.0  # an SSE comment this often keeps proxies and browsers from closing an idle stream
STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
TOKEN_HEADER = "X-Autoresearch-Token"
MAX_IDEA_CHARS = 2000
MAX_CACHED = 256  # views kept computed (task x research run x view)  # an idea is a sentence or a setting, not a file


class IdeaIn(BaseModel):
    text: str


class Watcher:
    """Sees commits to any task's ledger by polling SQLite's data_version; `version` counts them."""

    def __init__(self, tasks: list[Task], poll_s: float = POLL_S):
        self.tasks, self.poll_s = tasks, poll_s
        self.version = 0
        self.changed_task: dict[int, int] = {}  # task index -> the version of its last change
        self._conns: dict[int, sqlite3.Connection] = {}
        self._seen: dict[int, int] = {}
        self._changed = asyncio.Event()  # set and replaced on every change: streams wait on it

    async def wait(self, timeout_s: float) -> bool:
        """Until the next change (True) or the timeout (False)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    def poll(self) -> bool:
        """One look at every ledger; True if any changed since the last look."""
        changed = False
        for i, task in enumerate(self.tasks):
            conn = self._conns.get(i)
            if conn is None:
                if not task.db_path.exists():
                    continue
                conn = self._conns[i] = task.connect()
            try:
                seen = data_version(conn)
            except sqlite3.Error:  # the ledger was moved aside (doctor --repair): open the new one next time
                conn.close()
                del self._conns[i]
                continue
            first = i not in self._seen
            if self._seen.get(i) != seen:
                self._seen[i] = seen
                task.observe_running(time.time(), initial=first)
                if not first:
                    self.version += 1
                    self.changed_task[i] = self.version
                    changed = True
        return changed

    async def run(self) -> None:
        while True:
            if self.poll():
                self._changed.set()
                self._changed = asyncio.Event()
            await asyncio.sleep(self.poll_s)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()


def plotly_js() -> Path:
    """plotly.min.js as the installed plotly package ships it (no CDN)."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


def create_app(tasks: list[Task], token: str | None = None, poll_s: float = POLL_S) -> FastAPI:
    token = token or secrets.token_urlsafe(18)
    watcher = Watcher(tasks, poll_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher.poll()
        job = asyncio.create_task(watcher.run())
        yield
        job.cancel()
        watcher.close()

    app = FastAPI(title="autoresearch dashboard", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.token, app.state.watcher = token, watcher
    cache: dict[tuple[int, str, str], tuple[int, Any, str]] = {}  # (task, tag, view) -> (ledger version, data, JSON)

    def task_at(index: int) -> Task:
        if not 0 <= index < len(tasks):
            raise HTTPException(404, f"no task #{index}: this dashboard shows tasks 0..{len(tasks) - 1}")
        return tasks[index]

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(), headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        if name == "plotly.min.js":
            return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})
        if name not in STATIC_FILES:
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    @app.get("/api/tasks")
    def list_tasks() -> list[dict]:
        return [{"index": i, "name": t.name, "root": str(t.root), "tags": t.tags(), "default_tag": t.default_tag(),
                 "metric": t.metric.name, "direction": t.metric.direction, "config_problem": t.config_problem}
                for i, t in enumerate(tasks)]

    def computed(index: int, tag: str, view: str, compute: Callable[[], Any] | None = None) -> tuple[Any, str]:
        """A view's data and JSON, computed once per ledger change however many pages ask (slots are
        not cached: they depend on the time). compute: how, if not the Task method named `view`."""
        key, version = (index, tag, view), watcher.version
        hit = cache.get(key)
        if hit is None or hit[0] != version:
            if len(cache) > MAX_CACHED:  # many research runs looked at: start again rather than grow
                cache.clear()
            data = compute() if compute else getattr(task_at(index), view)(tag)
            hit = cache[key] = (version, data, json.dumps(data, separators=(",", ":")))
        return hit[1], hit[2]

    def cached(index: int, tag: str, view: str) -> Response:
        return Response(computed(index, tag, view)[1], media_type="application/json")

    @app.get("/api/{index}/{tag}/summary")
    def summary(index: int, tag: str) -> Response:
        return cached(index, tag, "summary")

    @app.get("/api/{index}/{tag}/experiments")
    def experiments(index: int, tag: str) -> Response:
        return cached(index, tag, "experiments")

    @app.get("/api/{index}/{tag}/chart")
    def progress_chart(index: int, tag: str, axis: Literal["number", "time"] = "number", x0: float | None = None,
                       x1: float | None = None, y0: float | None = None, y1: float | None = None,
                       all: bool = False) -> Response:
        """The progress chart's points (data.chart): of the whole run (cached), or of a zoomed view;
        all: every point, however many."""
        def compute() -> dict:
            exps = computed(index, tag, "experiments")[0]
            return chart(exps, axis, (x0, x1) if x0 is not None and x1 is not None else None,
                         (y0, y1) if y0 is not None and y1 is not None else None,
                         limit=len(exps) if all else CHART_ALL_UP_TO)
        if None in (x0, x1) and None in (y0, y1):
            return Response(computed(index, tag, f"chart:{axis}:{all}", compute)[1], media_type="application/json")
        return Response(json.dumps(compute(), separators=(",", ":")), media_type="application/json")

    @app.get("/api/{index}/experiment/{exp_id}")
    def experiment(index: int, exp_id: int) -> dict:
        found = task_at(index).experiment(exp_id)
        if found is None:
            raise HTTPException(404, f"no experiment #{exp_id} in {tasks[index].root}")
        return found

    @app.get("/api/{index}/{tag}/slots")
    def slots(index: int, tag: str) -> dict:
        return task_at(index).slots(tag)

    @app.get("/api/{index}/{tag}/notebook")
    def notebook(index: int, tag: str) -> dict:
        task = task_at(index)  # the notebook file is not in the ledger: read it every time
        return {"notebook": task.notebook(tag), "program": task.program_text(tag),
                "accounting": computed(index, tag, "accounting")[0], "checks": computed(index, tag, "checks")[0]}

    @app.get("/api/{index}/{tag}/params")
    def params(index: int, tag: str) -> Response:
        return cached(index, tag, "params")

    @app.get("/api/{index}/ideas")
    def ideas(index: int) -> list[dict]:
        return task_at(index).ideas()

    @app.post("/api/{index}/ideas", status_code=201)
    def add_idea(index: int, idea: IdeaIn,
                 x_autoresearch_token: str | None = Header(default=None)) -> dict:
        require_token(token, x_autoresearch_token)
        task = task_at(index)
        text = idea.text.strip()
        if not text or len(text) > MAX_IDEA_CHARS:
            raise HTTPException(422, f"an idea needs 1 to {MAX_IDEA_CHARS} characters of text")
        ledger = Ledger(task.db_path)
        try:
            idea_id = ledger.add_idea(text, source="dashboard")
        finally:
            ledger.close()
        return {"id": idea_id, "text": text}

    @app.post("/api/{index}/{tag}/pause")
    def pause(index: int, tag: str, x_autoresearch_token: str | None = Header(default=None)) -> dict:
        return set_paused(index, tag, True, x_autoresearch_token)

    @app.post("/api/{index}/{tag}/resume")
    def resume(index: int, tag: str, x_autoresearch_token: str | None = Header(default=None)) -> dict:
        return set_paused(index, tag, False, x_autoresearch_token)

    def set_paused(index: int, tag: str, paused: bool, given: str | None) -> dict:
        require_token(token, given)
        task = task_at(index)
        if tag not in task.tags():
            raise HTTPException(404, f"no research run {tag!r} in {task.root}")
        ledger = Ledger(task.db_path)
        try:
            pause = ledger.pause(tag, source="dashboard") if paused else ledger.resume(tag)
        finally:
            ledger.close()
        return {"tag": tag, "paused": paused, "pause": pause.to_dict() if pause else None}

    @app.get("/api/events")
    async def events() -> StreamingResponse:
        return StreamingResponse(event_stream(watcher), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


def require_token(expected: str, given: str | None) -> None:
    if not given or not secrets.compare_digest(given, expected):
        raise HTTPException(403, "this action needs the dashboard's token (printed when `autoresearch dashboard` "
                                 f"started); send it in the {TOKEN_HEADER} header, or open the printed URL")


async def event_stream(watcher: Watcher) -> AsyncIterator[str]:
    """`change` events naming the tasks whose ledger changed; a comment now and then keeps the stream open.
    (Starlette cancels this generator when the browser goes away.)"""
    last = watcher.version
    yield f"retry: 1000\nevent: hello\ndata: {json.dumps({'version': last})}\n\n"
    while True:
        if not await watcher.wait(HEARTBEAT_S):
            yield ": keep-alive\n\n"
            continue
        changed = sorted(i for i, v in watcher.changed_task.items() if v > last)
        last = watcher.version
        yield f"event: change\ndata: {json.dumps({'version': last, 'tasks': changed})}\n\n"
