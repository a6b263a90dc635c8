"""The hub's tables (SQLAlchemy 2, typed ORM): who contributes, what they claim, how it was checked.

Invariants the server keeps: a token is stored only as its SHA-256 (`token_hash`); a claim exists
only for a commitment made earlier by the same worker (commit-then-reveal); `chain` is a line,
each entry's `parent_commit` the previous entry's `commit`, and the git branch of the hub follows
it (the database is written first, the branch moved after); a verification job is `leased` only
with an expiry, and an expired lease goes back to `queued`. The schema is created by the Alembic
migrations in `migrations/`, which must match these classes (tests/hub/test_storage.py checks it).
"""
from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Claim states, in order of their life.
QUEUED, VERIFYING, ACCEPTED, REJECTED = "queued", "verifying", "accepted", "rejected"
CLAIM_STATES = (QUEUED, VERIFYING, ACCEPTED, REJECTED)
# Job states and phases.
JOB_QUEUED, JOB_LEASED, JOB_DONE = "queued", "leased", "done"
SCREEN, FULL, CALIBRATE = "screen", "full", "calibrate"
REVERIFY = "reverify"  # an accepted claim of a worker flagged since, tested in full against its chain parent
# Which check a claim gets (service.py, verify.py): the full test, the cheap check of a reputable
# worker, or the full test drawn at random for a reputable worker (an audit).
# A claim accepted by the cheap check whose worker was flagged later is tested again in full:
# REVERIFIED when it holds, REFUTED when not (its chain entry stays, but earns no credit).
WHOLE, CHEAP, AUDIT, REVERIFIED, REFUTED = "full", "cheap", "audit", "reverified", "refuted"
WORKER, VERIFIER = "worker", "verifier"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON}


class _ByWorker:
    """The columns of a row that a worker made: commitments, claims and tried experiments."""

    id: Mapped[int] = mapped_column(primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"), index=True)
    created_at: Mapped[float] = mapped_column(Float)


class Worker(Base):
    """A registered contributor (`worker`) or a trusted verifier machine (`verifier`)."""

    __tablename__ = "workers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default=WORKER)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[float] = mapped_column(Float)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    flagged: Mapped[int] = mapped_column(Integer, default=0)  # claimed gains the verifier contradicted
    clean_streak: Mapped[int] = mapped_column(Integer, default=0)  # accepted in a row, no mismatch
    full_streak: Mapped[int] = mapped_column(Integer, default=0)  # of those, verified by the full test
    verifier_runs: Mapped[int] = mapped_column(Integer, default=0)  # runs spent on its claims / runs given
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)


class Commitment(_ByWorker, Base):
    """The hash of a patch with a nonce, made before the patch is shown (the earliest one wins)."""

    __tablename__ = "commitments"
    digest: Mapped[str] = mapped_column(String(64))
    revealed: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (UniqueConstraint("worker_id", "digest"),)


class Claim(_ByWorker, Base):
    """A revealed patch against a hub commit, with what the worker says it measured."""

    __tablename__ = "claims"
    commitment_id: Mapped[int] = mapped_column(ForeignKey("commitments.id"), unique=True)
    committed_at: Mapped[float] = mapped_column(Float)
    decided_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    base_commit: Mapped[str] = mapped_column(String(40))  # what it is verified against now (after rebases)
    submitted_base: Mapped[str] = mapped_column(String(40))  # what the worker named
    candidate_commit: Mapped[str] = mapped_column(String(40))
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    files: Mapped[dict[str, Any]] = mapped_column(JSON)  # path -> whole new content of the changed files
    description: Mapped[str] = mapped_column(Text)
    agent: Mapped[str] = mapped_column(String(64))
    claimed: Mapped[dict[str, Any]] = mapped_column(JSON)  # gain, base_runs, candidate_runs, metrics
    environment: Mapped[dict[str, Any]] = mapped_column(JSON)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default=QUEUED, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    verified_gain: Mapped[float | None] = mapped_column(Float, nullable=True)
    verified_se: Mapped[float | None] = mapped_column(Float, nullable=True)
    verifier_runs: Mapped[int] = mapped_column(Integer, default=0)
    rebases: Mapped[int] = mapped_column(Integer, default=0)  # rebases that changed its edit (its pairs lost)
    edit_hash: Mapped[str] = mapped_column(String(64), default="")  # patches.edit_hash against its base
    check: Mapped[str] = mapped_column(String(16), default=WHOLE)  # WHOLE, CHEAP, AUDIT, REVERIFIED, REFUTED


class Job(Base):
    """Runs for a verifier: `pairs` interleaved runs of base and candidate (a calibration job runs the
    base against itself to measure the noise of paired differences)."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    claim_id: Mapped[int | None] = mapped_column(ForeignKey("claims.id"), nullable=True, index=True)
    phase: Mapped[str] = mapped_column(String(16))
    base_commit: Mapped[str] = mapped_column(String(40))
    candidate_commit: Mapped[str] = mapped_column(String(40))
    pairs: Mapped[int] = mapped_column(Integer)
    priority: Mapped[float] = mapped_column(Float, default=0.0)  # higher first
    state: Mapped[str] = mapped_column(String(16), default=JOB_QUEUED, index=True)
    lease_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires: Mapped[float | None] = mapped_column(Float, nullable=True)
    verifier_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id"), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str] = mapped_column(Text, default="")


class Pair(Base):
    """One interleaved pair of runs on a verifier: the unit of evidence (differences are judged)."""

    __tablename__ = "pairs"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    claim_id: Mapped[int | None] = mapped_column(ForeignKey("claims.id"), nullable=True, index=True)
    base_commit: Mapped[str] = mapped_column(String(40))
    edit_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the claim's edit when measured
    base_value: Mapped[float] = mapped_column(Float)
    candidate_value: Mapped[float] = mapped_column(Float)
    base_metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    candidate_metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    verifier_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    created_at: Mapped[float] = mapped_column(Float)


class ChainEntry(Base):
    """An accepted commit: height 0 is the task's own commit, each later one a verified gain."""

    __tablename__ = "chain"
    height: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    commit: Mapped[str] = mapped_column(String(40), unique=True)
    parent_commit: Mapped[str | None] = mapped_column(String(40), nullable=True)
    claim_id: Mapped[int | None] = mapped_column(ForeignKey("claims.id"), nullable=True, unique=True)
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id"), nullable=True)
    # who earns the credit when not the claim's worker: an earlier commitment to the same patch
    credit_worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id"), nullable=True)
    gain: Mapped[float] = mapped_column(Float, default=0.0)
    gain_se: Mapped[float | None] = mapped_column(Float, nullable=True)
    description: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class Tried(_ByWorker, Base):
    """An experiment a worker ran and discarded locally: unverified, shared so nobody repeats it."""

    __tablename__ = "tried"
    base_commit: Mapped[str] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(Text)
    diff_hash: Mapped[str] = mapped_column(String(64))
    metric: Mapped[float | None] = mapped_column(Float, nullable=True)


class RateBucket(Base):
    """A token bucket of the server's rate limits (server.RateLimiter), kept here so a restart does
    not refill it: `tokens` left at time `at` (wall clock, seconds)."""

    __tablename__ = "rate_buckets"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    at: Mapped[float] = mapped_column(Float)


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
