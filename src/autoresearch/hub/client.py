"""The HTTP client of the hub's API, shared by workers, verifiers, the tests and the benchmark.

`claim()` does commit-then-reveal in one call: it hashes the patch with a fresh random nonce,
commits the digest, then reveals the patch. `clone_task()` makes a local repository of the task
from the hub's bundle and checks it is the commit the hub names.
"""
from __future__ import annotations

import platform
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from autoresearch.core.errors import AutoresearchError
from autoresearch.hub.patches import commitment_digest
from autoresearch.repo import gitops

API = "/api/v1"
TIMEOUT_S = 30.0


class HubRefused(AutoresearchError):
    """The hub answered a request with an error: `status` and the hub's own reason."""

    def __init__(self, status: int, error: str, fix: str = ""):
        super().__init__(f"the hub refused: {error} (HTTP {status})" + (f"\n  fix: {fix}" if fix else ""))
        self.status, self.error, self.fix = status, error, fix


class HubClient:
    def __init__(self, url: str, token: str | None = None, timeout_s: float = TIMEOUT_S):
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s)
        self.token = token

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = self.http.request(method, API + path, headers=headers, **kw)
        except httpx.HTTPError as e:
            raise HubRefused(0, f"cannot reach the hub at {self.url}: {type(e).__name__}: {e}",
                             "check the URL and that the hub runs") from None
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"error": r.text[:300]}
            raise HubRefused(r.status_code, str(body.get("error", body)), str(body.get("fix", "")))
        return r

    def get(self, path: str) -> Any:
        return self.request("GET", path).json()

    def post(self, path: str, body: dict) -> Any:
        r = self.request("POST", path, json=body)
        return r.json() if r.status_code != 204 else None

    # -- the worker's side ----------------------------------------------------------------------

    def register(self, name: str) -> int:
        reply = self.post("/workers", {"name": name})
        self.token = reply["token"]
        return reply["worker_id"]

    def claim(self, base_commit: str, files: dict[str, str], description: str, *, agent: str = "unknown",
              claimed: dict | None = None, environment: dict | None = None, log_tail: str = "") -> dict:
        """Commit to the patch, then reveal it: the claim's id and state."""
        nonce = secrets.token_hex(16)
        commitment = self.post("/commitments", {"digest": commitment_digest(base_commit, files, nonce)})
        return self.post("/claims", {"commitment_id": commitment["commitment_id"], "nonce": nonce,
                                     "base_commit": base_commit, "files": files, "description": description,
                                     "agent": agent, "claimed": claimed or {}, "environment": environment or {},
                                     "log_tail": log_tail})

    def tried(self, base_commit: str, description: str, diff_hash: str, metric: float | None) -> None:
        self.post("/tried", {"base_commit": base_commit, "description": description, "diff_hash": diff_hash,
                             "metric": metric})

    # -- both ----------------------------------------------------------------------------------

    def clone_task(self, dest: Path) -> Path:
        """A repository of the hub's task at `dest` (made from the bundle once), at the hub's root commit."""
        root = self.get("/task")["root_commit"]
        if not (dest / ".git").exists():
            dest.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as tmp:
                bundle = Path(tmp) / "task.bundle"
                bundle.write_bytes(self.request("GET", "/task/bundle").content)
                gitops.git(dest, "init", "-q", "-b", "main")
                gitops.git(dest, "fetch", "-q", str(bundle), "refs/autoresearch/hub/root:refs/remotes/hub/root")
                gitops.git(dest, "reset", "-q", "--hard", "refs/remotes/hub/root")
        head = gitops.rev_parse(dest, "HEAD")
        if head != root:
            raise HubRefused(0, f"{dest} is at {head[:12]}, the hub's task at {root[:12]}",
                             f"use an empty folder, or check out {root[:12]} there")
        return dest


def fingerprint() -> dict[str, Any]:
    """What the machine is, sent with claims and reports (hardware makes numbers differ, not gains).
    Only versions and the platform string: nothing secret of the machine leaves it."""
    return {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine()}
