"""The hub's HTTP face: a versioned JSON API under /api/v1 (OpenAPI at /api/v1/openapi.json) and a
read-only page at /.

Every write is hostile until proven otherwise: it needs a token (`Authorization: Bearer ...`),
passes a per-token rate limit (kept in the database: ratelimit.py), a request body limit (checked while reading, so a lying or missing
Content-Length does not help) and a strict schema (unknown fields refused), before service.py's
rules see it. Registration is rate-limited per client address and for the hub as a whole. Reads
need nothing and are served from views.py's caches. Binds 127.0.0.1 by default; run it behind a
TLS-terminating proxy to offer it to the internet (docs/hub.md).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from autoresearch.core.config import GIT_IGNORED, TaskConfig, load_config
from autoresearch.hub import page
from autoresearch.hub.models import CLAIM_STATES, VERIFIER, WORKER, Worker
from autoresearch.hub.patches import MAX_PATCH_BYTES
from autoresearch.hub.ratelimit import RateLimited, RateLimiter
from autoresearch.hub.service import Hub, HubError, Submission
from autoresearch.hub.storage import default_url, open_database
from autoresearch.hub.views import Views
from autoresearch.repo import gitops

API = "/api/v1"
MAX_BODY = MAX_PATCH_BYTES * 2 + 64 * 1024  # a patch's JSON escaping can double it; plus the claim's fields
WRITE_RATE = 5.0  # writes per second per token, sustained ...
WRITE_BURST = 20  # ... with this burst
REGISTER_RATE = 1.0  # registrations per second per client address ...
REGISTER_BURST = 30  # ... with this burst (a lab behind one address registers its machines at once)
HEX40 = r"^[0-9a-f]{40}$"
HEX64 = r"^[0-9a-f]{64}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Registration(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@+-]+$")


class CommitmentIn(Strict):
    digest: str = Field(pattern=HEX64)


class ClaimIn(Strict):
    commitment_id: int = Field(ge=1)
    nonce: str = Field(min_length=16, max_length=128)
    base_commit: str = Field(pattern=HEX40)
    files: dict[Annotated[str, Field(max_length=255)], str] = Field(min_length=1, max_length=16)
    description: str = Field(max_length=2000)
    agent: str = Field(default="unknown", max_length=64)
    claimed: dict[str, Any] = Field(default_factory=dict, max_length=16)  # gain, base_runs, candidate_runs
    environment: dict[str, Any] = Field(default_factory=dict, max_length=32)  # device, library versions
    log_tail: str = Field(default="", max_length=8000)


class TriedIn(Strict):
    base_commit: str = Field(pattern=HEX40)
    description: str = Field(max_length=2000)
    diff_hash: str = Field(pattern=HEX64)
    metric: float | None = None


class RunIn(Strict):
    status: str = Field(max_length=32)
    metric: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict, max_length=64)
    wall_s: float | None = None
    reason: str = Field(default="", max_length=2000)


class ReportIn(Strict):
    lease_token: str = Field(min_length=8, max_length=128)
    runs: list[RunIn] = Field(max_length=64)
    environment: dict[str, Any] = Field(default_factory=dict, max_length=32)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413, whatever its headers say.

    The body is read here first (at most `limit` bytes are ever held), then handed to the app."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(send, self.limit)
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                return await _too_large(send, self.limit)
            more = message.get("more_body", False)
        replayed = False

        async def buffered():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()
        return await self.app(scope, buffered, send)


async def _too_large(send, limit: int) -> None:
    body = f'{{"error": "request body over {limit} bytes", "fix": "send a smaller patch"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(hub: Hub, views: Views) -> FastAPI:
    app = FastAPI(title="autoresearch hub", version="1", openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs",
                  redoc_url=None)
    writes = RateLimiter(hub.sessions, "write", WRITE_RATE, WRITE_BURST)
    registrations = RateLimiter(hub.sessions, "register", REGISTER_RATE, REGISTER_BURST)

    def limited(limiter: RateLimiter, key: object) -> None:
        try:
            limiter.take(key)
        except RateLimited as e:
            raise HubError(429, "too many requests", f"slow down: {e}") from None

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, e: HubError):
        return JSONResponse({"error": e.message, "fix": e.fix}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        problems = [{"where": ".".join(str(p) for p in err.get("loc", ())), "what": err.get("msg")}
                    for err in e.errors()[:10]]
        return JSONResponse({"error": "invalid request", "problems": problems,
                             "fix": f"see {API}/openapi.json for the schema"}, status_code=422)

    def authed(kind: str):
        def dependency(authorization: Annotated[str | None, Header()] = None) -> Worker:
            token = authorization[7:].strip() if authorization and authorization.startswith("Bearer ") else None
            worker = hub.authenticate(token, kind)
            if kind == WORKER:  # verifiers are the operator's own machines: their polling is not limited
                limited(writes, worker.id)
            return worker
        return dependency

    as_worker, as_verifier = Depends(authed(WORKER)), Depends(authed(VERIFIER))

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page.render(views)

    @app.get("/assets/hub.css")
    def css() -> Response:
        return Response(page.stylesheet(), media_type="text/css")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "height": hub.head_height}

    @app.get(f"{API}/task")
    def task() -> dict:
        return views.task()

    @app.get(f"{API}/task/bundle")
    def bundle() -> Response:
        return Response(hub_bundle(hub).read_bytes(), media_type="application/octet-stream")

    async def per_height(name: str, request: Request) -> Response:
        """The hot path of polling workers: pre-built bytes, 304 when the client has them already.
        On the event loop itself (no thread hand-off); a body not built yet is built in a thread."""
        body = views.cached(name) or await run_in_threadpool(views.body, name)
        if request.headers.get("if-none-match") == body.etag:
            return Response(status_code=304, headers={"ETag": body.etag})
        return Response(body.data, media_type="application/json", headers={"ETag": body.etag})

    @app.get(f"{API}/best")
    async def best(request: Request) -> Response:
        return await per_height("best", request)

    @app.get(f"{API}/chain")
    async def chain(request: Request) -> Response:
        return await per_height("chain", request)

    @app.get(f"{API}/claims")
    def claims(state: str | None = None) -> list[dict]:
        if state is not None and state not in CLAIM_STATES:
            raise HubError(422, f"unknown state {state!r}", f"use one of {', '.join(CLAIM_STATES)}")
        return views.claims(state)

    @app.get(f"{API}/claims/{{claim_id}}")
    def claim(claim_id: int) -> dict:
        found = views.claim(claim_id)
        if found is None:
            raise HubError(404, f"no claim #{claim_id}")
        return found

    @app.get(f"{API}/leaderboard")
    def leaderboard() -> list[dict]:
        return views.leaderboard()

    @app.get(f"{API}/tried")
    def tried() -> list[dict]:
        return views.tried()

    @app.post(f"{API}/workers", status_code=201)
    def register(body: Registration, request: Request) -> dict:
        limited(registrations, request.client.host if request.client else "?")
        limited(registrations, "*")  # and the hub as a whole: a flood from many addresses is slowed too
        worker_id, token = hub.register(body.name)
        return {"worker_id": worker_id, "token": token}

    @app.post(f"{API}/commitments", status_code=201)
    def commit(body: CommitmentIn, worker: Worker = as_worker) -> dict:
        c = hub.commit(worker, body.digest)
        return {"commitment_id": c.id, "created_at": c.created_at}

    @app.post(f"{API}/claims", status_code=201)
    def reveal(body: ClaimIn, worker: Worker = as_worker) -> dict:
        claim = hub.reveal(worker, Submission(**body.model_dump()))
        return {"claim_id": claim.id, "state": claim.state, "base_commit": claim.base_commit,
                "rebased": claim.base_commit != claim.submitted_base}

    @app.post(f"{API}/tried", status_code=201)
    def add_tried(body: TriedIn, worker: Worker = as_worker) -> dict:
        return {"id": hub.add_tried(worker, body.base_commit, body.description, body.diff_hash, body.metric)}

    @app.post(f"{API}/jobs/lease")
    def lease(verifier: Worker = as_verifier) -> Response:
        job = hub.lease(verifier)
        return Response(status_code=204) if job is None else JSONResponse(job)

    @app.post(f"{API}/jobs/{{job_id}}/result")
    def result(job_id: int, body: ReportIn, verifier: Worker = as_verifier) -> dict:
        return hub.report(verifier, job_id, body.lease_token, [r.model_dump() for r in body.runs])

    return app


def hub_state(config: TaskConfig) -> Path:
    return config.state_dir / "hub"


def hub_bundle(hub: Hub) -> Path:
    """A git bundle of the task's commit: how workers and verifiers get the repository."""
    path = hub_state(hub.config) / "task.bundle"
    if not path.exists():
        ref = "refs/autoresearch/hub/root"
        gitops.update_ref(hub.repo, ref, hub.root)
        tmp = path.with_suffix(".tmp")
        gitops.git(hub.repo, "bundle", "create", "-q", str(tmp), ref)
        os.replace(tmp, path)
    return path


def verifier_token(hub: Hub) -> str:
    """The token of the hub's own verifiers, made on first start (file readable by its owner only)."""
    path = hub_state(hub.config) / "verifier.token"
    if path.exists():
        return path.read_text().strip()
    _, token = hub.register("hub-verifier", kind=VERIFIER)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def open_hub(task: Path, db_url: str | None = None, lease_s: float | None = None) -> tuple[Hub, Views]:
    config = load_config(task)
    state = hub_state(config)
    state.mkdir(parents=True, exist_ok=True)
    gitops.exclude_state(config.root, GIT_IGNORED)
    hub = Hub(config, open_database(db_url or default_url(state)), lease_s=lease_s)
    hub.start()
    verifier_token(hub)
    hub_bundle(hub)
    return hub, Views(hub)


def serve(task: Path, host: str, port: int, db_url: str | None = None, lease_s: float | None = None,
          on_ready=None) -> None:
    import uvicorn

    hub, views = open_hub(task, db_url, lease_s)
    app = BodyLimit(create_app(hub, views), MAX_BODY)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            limit_concurrency=512, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready(hub)
    server.run()
