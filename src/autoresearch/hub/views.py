"""What the hub shows: read-only views of the chain, claims, leaderboard and tried-and-failed list.

Reads never take the hub's write lock. The chain and the best change only when a claim is
accepted, so their JSON is built once per chain height and served from memory as bytes with an
ETag (the hot path of every worker polling for a new best: no database, no schema validation, and
a poll that names the current ETag is answered 304 without a body); the other lists are rebuilt at
most every CACHE_S seconds.
Unaccepted claims are shown without their patch: only accepted commits publish their diff.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from autoresearch.hub.models import (
    ACCEPTED,
    QUEUED,
    REFUTED,
    REJECTED,
    VERIFYING,
    ChainEntry,
    Claim,
    Tried,
    Worker,
)
from autoresearch.hub.service import AUDIT_RATE, REPUTABLE_AFTER, Hub
from autoresearch.repo import gitops

CACHE_S = 1.0  # claims, leaderboard and tried lists are at most this stale
RECENT = 100  # claims and tried experiments listed


@dataclass(frozen=True)
class Body:
    """A response body built once per chain height, and its entity tag."""

    data: bytes
    etag: str


class Views:
    def __init__(self, hub: Hub):
        self.hub = hub
        self._lock = threading.Lock()
        self._by_height: dict[tuple[str, int], Body] = {}
        self._timed: dict[str, tuple[float, Any]] = {}

    def cached(self, name: str) -> Body | None:
        """The body of `name` ("best" or "chain") at the current height if it is built: a dict lookup."""
        return self._by_height.get((name, self.hub.head_height))

    def body(self, name: str) -> Body:
        """The body of `name` at the current height, built (from the database) when it is not yet."""
        key = (name, self.hub.head_height)
        hit = self._by_height.get(key)
        if hit is None:
            data = json.dumps({"best": self.best, "chain": self.chain}[name]()).encode()
            hit = Body(data, f'"{key[1]}-{hashlib.sha256(data).hexdigest()[:16]}"')
            with self._lock:
                self._by_height = {k: v for k, v in self._by_height.items() if k[1] == key[1]}
                self._by_height[key] = hit
        return hit

    def _timed_cached(self, name: str, build) -> Any:
        hit = self._timed.get(name)
        if hit is not None and time.monotonic() - hit[0] < CACHE_S:
            return hit[1]
        value = build()
        self._timed[name] = (time.monotonic(), value)
        return value

    # -- the chain ----------------------------------------------------------------------------

    def chain(self) -> list[dict[str, Any]]:
        with self.hub.sessions() as s:
            names = {w.id: w.name for w in s.scalars(select(Worker))}
            entries = list(s.scalars(select(ChainEntry).order_by(ChainEntry.height)))
        out, total = [], 0.0
        for e in entries:
            total += e.gain
            diff = gitops.diff(self.hub.repo, e.parent_commit, e.commit) if e.parent_commit else ""
            out.append({"height": e.height, "commit": e.commit, "parent": e.parent_commit, "claim_id": e.claim_id,
                        "worker": names.get(e.worker_id), "gain": e.gain, "gain_se": e.gain_se, "total_gain": total,
                        "description": e.description, "created_at": e.created_at, "diff": diff})
        return out

    def chain_json(self) -> bytes:
        return self.body("chain").data

    def best(self) -> dict[str, Any]:
        with self.hub.sessions() as s:
            head = s.scalars(select(ChainEntry).order_by(ChainEntry.height.desc()).limit(1)).one()
        return {"height": head.height, "commit": head.commit, "root_commit": self.hub.root,
                "files": self.hub.editable_at(head.commit), "description": head.description}

    def best_json(self) -> bytes:
        return self.body("best").data

    def task(self) -> dict[str, Any]:
        cfg = self.hub.config
        return {"name": cfg.name, "metric": cfg.metric.name, "direction": cfg.metric.direction,
                "editable": cfg.editable, "frozen": self.hub.frozen, "root_commit": self.hub.root,
                "budget_s": cfg.budget_s, "trusted_evaluation": bool(cfg.evaluate.command),
                "api": "v1", "policy": {"p_value": self.hub.policy.p_value, "looks": list(self.hub.policy.looks),
                                        "min_effect": self.hub.policy.min_effect,
                                        "record_after_full_accepts": REPUTABLE_AFTER,
                                        "audit_one_in": AUDIT_RATE}}

    # -- claims, people, tried ------------------------------------------------------------------

    def claims(self, state: str | None = None) -> list[dict[str, Any]]:
        def build():
            with self.hub.sessions() as s:
                names = {w.id: w.name for w in s.scalars(select(Worker))}
                rows = list(s.scalars(select(Claim).order_by(Claim.id.desc()).limit(RECENT)))
            return [claim_summary(c, names.get(c.worker_id)) for c in rows]
        rows = self._timed_cached("claims", build)
        return [r for r in rows if state is None or r["state"] == state]

    def claim(self, claim_id: int) -> dict[str, Any] | None:
        with self.hub.sessions() as s:
            c = s.get(Claim, claim_id)
            if c is None:
                return None
            w = s.get(Worker, c.worker_id)
            return claim_summary(c, w.name if w else None)

    def leaderboard(self) -> list[dict[str, Any]]:
        """Contributors ranked by credit: each accepted commit's share of the chain's verified advance,
        to the worker whose commitment to that patch came first. A copy is refused at the gate
        (the same content as an earlier commitment), so copying a leader earns nothing; a commit
        refuted when tested again (service._reverify_job) earns nothing either."""
        def build():
            with self.hub.sessions() as s:
                gains: dict[int, float] = {}
                credit: dict[int, float] = {}
                refuted = set(s.scalars(select(Claim.id).where(Claim.check == REFUTED)))
                entries = [e for e in s.scalars(select(ChainEntry).where(ChainEntry.worker_id.is_not(None)))
                           if e.claim_id not in refuted]
                advance = sum(max(e.gain, 0.0) for e in entries)
                for e in entries:
                    gains[e.worker_id] = gains.get(e.worker_id, 0.0) + e.gain
                    earner = e.credit_worker_id or e.worker_id
                    credit[earner] = credit.get(earner, 0.0) + (max(e.gain, 0.0) / advance if advance else 0.0)
                rows = [{"worker": w.name, "worker_id": w.id, "kind": w.kind, "credit": round(credit.get(w.id, 0.0), 4),
                         "accepted": w.accepted, "verified_gain": gains.get(w.id, 0.0), "rejected": w.rejected,
                         "flagged": w.flagged, "verifier_runs": w.verifier_runs, "blocked": w.blocked}
                        for w in s.scalars(select(Worker))]
            rows = [r for r in rows if r["kind"] == "verifier" or r["accepted"] or r["rejected"] or r["credit"]]
            rows.sort(key=lambda r: (-r["credit"], -r["accepted"], r["rejected"]))
            for rank, r in enumerate(rows, 1):
                r["rank"] = rank
            return rows
        return self._timed_cached("leaderboard", build)

    def tried(self) -> list[dict[str, Any]]:
        def build():
            with self.hub.sessions() as s:
                names = {w.id: w.name for w in s.scalars(select(Worker))}
                local = [{"description": t.description, "diff_hash": t.diff_hash, "metric": t.metric,
                          "worker": names.get(t.worker_id), "base_commit": t.base_commit, "verified": False,
                          "created_at": t.created_at}
                         for t in s.scalars(select(Tried).order_by(Tried.id.desc()).limit(RECENT))]
                rejected = [{"description": c.description, "diff_hash": c.content_hash, "metric": None,
                             "worker": names.get(c.worker_id), "base_commit": c.base_commit, "verified": True,
                             "reason": c.reason, "created_at": c.created_at}
                            for c in s.scalars(select(Claim).where(Claim.state == REJECTED)
                                               .order_by(Claim.id.desc()).limit(RECENT))]
            return sorted(local + rejected, key=lambda r: -r["created_at"])
        return self._timed_cached("tried", build)


def claim_summary(c: Claim, worker: str | None) -> dict[str, Any]:
    return {"id": c.id, "worker": worker, "state": c.state, "reason": c.reason, "description": c.description,
            "agent": c.agent, "base_commit": c.base_commit, "candidate_commit": c.candidate_commit
            if c.state == ACCEPTED else None, "claimed_gain": c.claimed.get("gain"),
            "verified_gain": c.verified_gain, "verified_se": c.verified_se, "verifier_runs": c.verifier_runs,
            "rebases": c.rebases, "created_at": c.created_at, "decided_at": c.decided_at,
            "open": c.state in (QUEUED, VERIFYING),
            "check": c.check if c.state in (ACCEPTED, REJECTED) else None}  # an audit is not announced
