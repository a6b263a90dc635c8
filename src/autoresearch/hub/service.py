"""The hub's rules, without HTTP: registration, commit-then-reveal, the verification queue, the chain.

Invariants:
- Every write is attributed to an authenticated worker; tokens are stored as SHA-256 only.
- A claim is revealed only against a commitment the same worker made earlier; among equal patches
  (same content hash of the editable files) the earliest commitment wins, so a copy earns nothing.
- The chain is a line: each accepted commit's parent is the previous head. A claim verified on a
  base that is no longer the head is rebased (gitops.merge_files) and verified again there.
- Order of writes on accept: the candidate commit exists in git (made at reveal, under an archive
  ref) -> the database records the chain entry -> the branch `autoresearch/hub` moves. `start()`
  sets the branch to the database's head, so a kill -9 at any point leaves them agreeing.
- Jobs are leased with an expiry; an expired lease returns the job to the queue (a verifier or the
  hub died), and a report is taken only with the lease's own token.
- Adaptive replication: a worker whose last `REPUTABLE_AFTER` accepted claims (in a row, no reject)
  passed the full test, and that was never flagged, gets the cheap check (verify.cheap_check) on
  its next claims, except a random `AUDIT_RATE` of them, drawn at reveal with `secrets`, which get
  the full test. A reject resets the record; a mismatch (claimed far more than verified) flags
  the worker, and a flagged worker never gets the cheap check again; its claims accepted by the
  cheap check are tested again in full against their chain parents (REVERIFY jobs, first in the
  queue). One that does not hold is marked REFUTED: its chain entry stays (later commits build
  on it) but earns no credit, and the page says why.
- A rebased claim keeps the pairs measured on the same edit (patches.edit_hash: the lines it
  removes and adds, wherever they land); only a changed edit starts its evidence again.
All state changes happen under one lock in one process (the hub is one server process).
"""
from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from autoresearch.core.config import TaskConfig, frozen_files
from autoresearch.core.errors import AutoresearchError
from autoresearch.core.judge import check_guards
from autoresearch.core.metrics import valid_metric
from autoresearch.hub import verify
from autoresearch.hub.models import (
    ACCEPTED,
    AUDIT,
    CALIBRATE,
    CHEAP,
    FULL,
    JOB_DONE,
    JOB_LEASED,
    JOB_QUEUED,
    QUEUED,
    REFUTED,
    REJECTED,
    REVERIFIED,
    REVERIFY,
    SCREEN,
    VERIFYING,
    WHOLE,
    WORKER,
    ChainEntry,
    Claim,
    Commitment,
    Job,
    Meta,
    Pair,
    Tried,
    Worker,
)
from autoresearch.hub.patches import (
    PatchError,
    check_patch,
    commitment_digest,
    content_hash,
    edit_hash,
)
from autoresearch.repo import gitops
from autoresearch.research.measure import budget_limit

TAG = "hub"  # the chain is the branch autoresearch/hub of the task repository
CLAIM_REF = "refs/autoresearch/hub/claims/"  # every candidate commit stays reachable under one
MAX_REBASES = 3  # a claim whose base keeps moving under its verification is returned after this many
MAX_ATTEMPTS = 4  # a job whose lease expires (or whose base run fails) this often is given up
MAX_PENDING_NEW = 1  # queued claims of a worker with no accepted claim (a Sybil gets one at a time)
MAX_PENDING = 4  # queued claims of a worker with accepted ones
MAX_OPEN_COMMITMENTS = 8  # commitments not yet revealed, per worker
MAX_JUNK = 5  # rejected claims, none accepted: the worker is blocked from claiming
REPUTABLE_AFTER = 2  # accepted claims in a row verified in full: a record (each one a real, verified gain)
# 1 in this many claims of a reputable worker gets the full test anyway (an audit). What ends a
# liar's record is mostly the cheap check itself (a no-op fails it 70% of the time, and that reset
# costs two real gains): a record's expected noise accepts are 0.40 at 1 in 20, 0.42 at 1 in 50,
# 0.43 with none (docs/hub.md), while each audit costs an honest worker ~4 more pairs: 0.2 runs a
# claim at 1 in 20, 0.08 at 1 in 50. Audits stay as an unpredictable sample of full verdicts.
AUDIT_RATE = 50
# A claim's further pairs go before new screenings: a verification under way finishes before the
# chain moves under it (each move means a rebase and its runs again).
CONTINUE_FIRST = 1e6
SET_ASIDE = "set-aside"  # the edit tag of a claim's pairs once the cheap check has given up on them
LEASE_MARGIN_S = 30.0  # a lease lasts the job's runs at their hard timeout, plus this


class HubError(AutoresearchError):
    """A request the hub refuses; `status` is the HTTP status the server answers with."""

    def __init__(self, status: int, message: str, fix: str = ""):
        super().__init__(message + (f"\n  fix: {fix}" if fix else ""))
        self.status, self.message, self.fix = status, message, fix


class EarlierCommitment(HubError):
    """A reveal of a patch already accepted, committed before the accepted claim was: refused as a
    duplicate, but the credit of chain entry `height` moves to this worker (not counted as junk)."""

    def __init__(self, height: int):
        super().__init__(409, f"duplicate: the chain holds this patch already (height {height}); your "
                         "commitment came first, so its credit is yours")
        self.height = height


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Submission:
    """A revealed claim as the worker sends it (validated by the server's schema first)."""

    commitment_id: int
    nonce: str
    base_commit: str
    files: dict[str, str]
    description: str
    agent: str
    claimed: dict[str, Any]
    environment: dict[str, Any]
    log_tail: str = ""


class Hub:
    def __init__(self, config: TaskConfig, sessions: sessionmaker[Session], *, lease_s: float | None = None,
                 clock: Callable[[], float] = time.time):
        self.config, self.sessions, self.clock = config, sessions, clock
        self.repo = config.root
        self.lease_s = lease_s
        self.policy = verify.Policy(direction=config.metric.direction, min_effect=config.judge.min_effect)
        self.lock = threading.RLock()
        self.files = gitops.EditableFiles(self.config, 512)
        self.head_height = 0
        self.root = ""

    # -- start-up -------------------------------------------------------------------------------

    def start(self) -> None:
        """Record the task's commit as height 0 (first start), then make git agree with the database."""
        with self.lock, self.sessions.begin() as s:
            root = s.get(Meta, "root_commit")
            if root is None:
                head = gitops.rev_parse(self.repo, "HEAD")
                s.add(Meta(key="root_commit", value=head))
                s.add(ChainEntry(height=0, commit=head, parent_commit=None, description="the task as published",
                                 created_at=self.clock()))
                root = Meta(key="root_commit", value=head)
            self.root = root.value
            top = s.scalars(select(ChainEntry).order_by(ChainEntry.height.desc()).limit(1)).one()
            self.head_height = top.height
            self._requeue_expired(s)
            self._ensure_calibration(s)
        gitops.update_ref(self.repo, gitops.branch_ref(TAG), top.commit)
        self.frozen = {p: hashlib.sha256((gitops.read_file(self.repo, self.root, p) or "").encode()).hexdigest()
                       for p in frozen_files(self.config)}

    def editable_at(self, commit: str) -> dict[str, str]:
        return self.files.at(commit)

    # -- workers --------------------------------------------------------------------------------

    def register(self, name: str, kind: str = WORKER) -> tuple[int, str]:
        token = secrets.token_urlsafe(32)
        with self.sessions.begin() as s:
            w = Worker(name=name, kind=kind, token_hash=token_hash(token), created_at=self.clock(), accepted=0,
                       rejected=0, flagged=0, clean_streak=0, full_streak=0, verifier_runs=0, blocked=False)
            s.add(w)
            s.flush()
            return w.id, token

    def authenticate(self, token: str | None, kind: str = WORKER) -> Worker:
        if not token:
            raise HubError(401, "this request needs a token", "send `Authorization: Bearer <token>` "
                           "(POST /api/v1/workers registers and returns one)")
        with self.sessions() as s:
            w = s.scalars(select(Worker).where(Worker.token_hash == token_hash(token))).one_or_none()
        if w is None or w.kind != kind:
            raise HubError(401 if w is None else 403, "unknown token" if w is None else f"a {w.kind} token cannot do this")
        return w

    # -- commit, then reveal ------------------------------------------------------------------------

    def commit(self, worker: Worker, digest: str) -> Commitment:
        with self.lock, self.sessions.begin() as s:
            open_count = s.scalar(select(func.count()).select_from(Commitment).where(
                Commitment.worker_id == worker.id, Commitment.revealed.is_(False)))
            if open_count >= MAX_OPEN_COMMITMENTS:
                raise HubError(429, f"{open_count} commitments are not revealed yet (at most {MAX_OPEN_COMMITMENTS})",
                               "reveal or abandon earlier ones first")
            if s.scalars(select(Commitment).where(Commitment.worker_id == worker.id,
                                                  Commitment.digest == digest)).first():
                raise HubError(409, "this digest was committed already", "use a fresh nonce for each commitment")
            c = Commitment(worker_id=worker.id, digest=digest, created_at=self.clock(), revealed=False)
            s.add(c)
            s.flush()
            return c

    def reveal(self, worker: Worker, sub: Submission) -> Claim:
        """Check a revealed patch against its commitment and the rules, commit it, queue its screening.

        Once the digest matches, the commitment is spent whatever the verdict, and a refused patch
        counts against the worker as junk (except an earlier commitment to an accepted patch)."""
        with self.lock:
            spent = False
            try:
                with self.sessions.begin() as s:
                    me = s.get(Worker, worker.id)
                    c = s.get(Commitment, sub.commitment_id)
                    if c is None or c.worker_id != me.id:
                        raise HubError(404, f"no commitment #{sub.commitment_id} of yours",
                                       "POST /api/v1/commitments first")
                    if c.revealed:
                        raise HubError(409, f"commitment #{c.id} was revealed already (a replay)",
                                       "commit a new digest")
                    if commitment_digest(sub.base_commit, sub.files, sub.nonce) != c.digest:
                        raise HubError(400, "the patch, base and nonce do not hash to the commitment's digest",
                                       "send exactly what was hashed (patches.commitment_digest)")
                    spent = True
                    c.revealed = True
                    return self._admit(s, me, c, sub)
            except HubError as e:
                if spent:
                    with self.sessions.begin() as s:
                        s.get(Commitment, sub.commitment_id).revealed = True
                        if isinstance(e, EarlierCommitment):  # no junk: its finder, just late
                            s.get(ChainEntry, e.height).credit_worker_id = worker.id
                        else:
                            w = s.get(Worker, worker.id)
                            w.rejected += 1
                            w.blocked = w.blocked or (w.rejected >= MAX_JUNK and w.accepted == 0)
                raise

    def _admit(self, s: Session, me: Worker, c: Commitment, sub: Submission) -> Claim:
        if me.blocked:
            raise HubError(403, "this worker is blocked: too many rejected claims and none accepted")
        pending = s.scalar(select(func.count()).select_from(Claim).where(
            Claim.worker_id == me.id, Claim.state.in_((QUEUED, VERIFYING))))
        quota = MAX_PENDING if me.accepted else MAX_PENDING_NEW
        if pending >= quota:
            raise HubError(429, f"{pending} of your claims are still being verified (at most {quota})",
                           "wait for their verdict")
        base = s.scalars(select(ChainEntry).where(ChainEntry.commit == sub.base_commit)).one_or_none()
        if base is None:
            raise HubError(400, f"{sub.base_commit[:12]!r} is no commit of the hub's chain",
                           "base the patch on GET /api/v1/best")
        base_files = self.editable_at(base.commit)
        try:
            changed = check_patch(self.config, base_files, sub.files)
        except PatchError as e:
            raise HubError(422, f"patch refused: {e}") from None
        head = self._head(s)
        files, base_commit = {**base_files, **changed}, base.commit
        self._credit_earliest(s, c, base.commit, content_hash(files))
        if base.commit != head.commit:
            changed, base_commit = self._rebased(base_files, files, head.commit, f"height {head.height}"), head.commit
            files = {**self.editable_at(head.commit), **changed}
        digest = content_hash(files)
        self._refuse_duplicate(s, digest, c)
        commit = gitops.commit_files(self.repo, base_commit, changed, f"{sub.description[:200]}\n\nhub claim by "
                                     f"{me.name} (worker #{me.id})\n")
        gitops.update_ref(self.repo, CLAIM_REF + commit, commit)
        claim = Claim(worker_id=me.id, commitment_id=c.id, committed_at=c.created_at, created_at=self.clock(),
                      base_commit=base_commit, submitted_base=base.commit, candidate_commit=commit,
                      content_hash=digest, files=changed, description=sub.description, agent=sub.agent,
                      claimed=sub.claimed, environment=sub.environment, log_tail=sub.log_tail[-4000:],
                      state=QUEUED, reason="queued for screening", verifier_runs=0, rebases=0,
                      edit_hash=edit_hash(self.editable_at(base_commit), changed), check=self._check_for(me))
        s.add(claim)
        s.flush()
        self._queue(s, claim, SCREEN, verify.LOOKS[0], me)
        return claim

    def _check_for(self, worker: Worker) -> str:
        """Which check a new claim of this worker gets; an audit is drawn here, unpredictably."""
        if not reputable(worker):
            return WHOLE
        return AUDIT if secrets.randbelow(AUDIT_RATE) == 0 else CHEAP

    def _credit_earliest(self, s: Session, c: Commitment, base_commit: str, digest: str) -> None:
        """A patch already accepted on the same base, committed to here earlier than by the claim that
        was accepted: the credit is this worker's (the earliest commitment wins; reveal() records
        it). It is refused all the same, as the duplicate it is."""
        for entry in s.scalars(select(ChainEntry).where(ChainEntry.parent_commit == base_commit)):
            if content_hash(self.editable_at(entry.commit)) != digest or entry.claim_id is None:
                continue
            if c.created_at < s.get(Claim, entry.claim_id).committed_at:
                raise EarlierCommitment(entry.height)
            raise HubError(409, f"duplicate: the chain holds this patch already (height {entry.height})")

    def _rebased(self, old_base: dict[str, str], files: dict[str, str], onto: str, where: str) -> dict[str, str]:
        """The files a patch changes once moved from `old_base` onto the commit `onto` (`where`: for
        the errors, e.g. "height 7")."""
        merged, conflicts = gitops.merge_files(old_base, self.editable_at(onto), files)
        if conflicts:
            raise HubError(409, f"the patch conflicts with the chain's head ({where}) in "
                           f"{', '.join(conflicts)}", "rebase it onto GET /api/v1/best and claim again")
        if not merged:
            raise HubError(409, f"nothing left: its change is already in the chain ({where})")
        return merged

    def _refuse_duplicate(self, s: Session, digest: str, c: Commitment, claim_id: int | None = None) -> None:
        """Equal patches: the earliest commitment wins; a later one is refused, an earlier one
        supersedes a pending claim committed after it."""
        for entry in s.scalars(select(ChainEntry)):
            if content_hash(self.editable_at(entry.commit)) == digest:
                raise HubError(409, f"duplicate: the chain holds this content already (height {entry.height})")
        for other in s.scalars(select(Claim).where(Claim.content_hash == digest, Claim.state != REJECTED)):
            if other.id == claim_id:
                continue
            if other.committed_at <= c.created_at or other.state == ACCEPTED:
                raise HubError(409, f"duplicate of claim #{other.id}, committed earlier")
            self._decide(s, other, REJECTED, "superseded: an earlier commitment revealed the same patch")

    # -- verification jobs ------------------------------------------------------------------------

    def _queue(self, s: Session, claim: Claim | None, phase: str, pairs: int, worker: Worker | None) -> Job:
        priority = 1e9 if claim is None else _reputation(worker) + (CONTINUE_FIRST if phase == FULL else 0.0)
        base = self._head(s).commit if claim is None else claim.base_commit
        job = Job(claim_id=claim.id if claim else None, phase=phase, base_commit=base,
                  candidate_commit=base if claim is None else claim.candidate_commit, pairs=pairs, priority=priority,
                  state=JOB_QUEUED, attempts=0, created_at=self.clock(), outcome="")
        s.add(job)
        s.flush()
        return job

    def _ensure_calibration(self, s: Session) -> None:
        _, dof = verify.pooled_sigma(self._noise(s))
        waiting = s.scalars(select(Job).where(Job.phase == CALIBRATE, Job.state != JOB_DONE)).first()
        if dof < verify.MIN_NOISE_DOF and waiting is None:
            self._queue(s, None, CALIBRATE, verify.CALIBRATION_PAIRS, None)

    def _noise(self, s: Session, exclude_claim: int | None = None) -> list[list[float]]:
        """The paired differences of all verifications so far, one group per set of replicates: the
        same claim's same edit on the same base and verifier, over all its jobs (a claim verified
        in four one-pair jobs gives σ_d 3 degrees of freedom, not 0), or one calibration job."""
        groups: dict[tuple, list[tuple[float, float]]] = {}
        for p in s.scalars(select(Pair)):
            if exclude_claim is None or p.claim_id != exclude_claim:
                key = ("job", p.job_id) if p.claim_id is None else (p.claim_id, p.edit_hash, p.base_commit, p.verifier_id)
                groups.setdefault(key, []).append((p.base_value, p.candidate_value))
        return [verify.differences(self.policy.direction, g) for g in groups.values()]

    def _requeue_expired(self, s: Session) -> int:
        now = self.clock()
        expired = list(s.scalars(select(Job).where(Job.state == JOB_LEASED, Job.lease_expires < now)))
        for job in expired:
            job.state, job.lease_hash, job.lease_expires = JOB_QUEUED, None, None
            job.outcome = f"lease expired at attempt {job.attempts}: re-queued"
        return len(expired)

    def lease(self, verifier: Worker) -> dict[str, Any] | None:
        """The next job for a verifier, leased to it, with the files it must run; None when idle."""
        with self.lock, self.sessions.begin() as s:
            self._requeue_expired(s)
            while True:
                job = s.scalars(select(Job).where(Job.state == JOB_QUEUED)
                                .order_by(Job.priority.desc(), Job.id).limit(1)).first()
                if job is None:
                    return None
                claim = s.get(Claim, job.claim_id) if job.claim_id and job.phase != REVERIFY else None
                if claim is not None and not self._refresh(s, claim, job):
                    continue
                token = secrets.token_urlsafe(24)
                timeout = self.config.timeout_s + (self.config.evaluate.timeout_s if self.config.evaluate.command else 0)
                lease_s = self.lease_s or 2 * job.pairs * timeout + LEASE_MARGIN_S
                job.state, job.lease_hash, job.verifier_id = JOB_LEASED, token_hash(token), verifier.id
                job.lease_expires, job.attempts = self.clock() + lease_s, job.attempts + 1
                if claim is not None:
                    claim.state, claim.reason = VERIFYING, f"{job.phase}: {job.pairs} pair(s) on a verifier"
                return {"job_id": job.id, "lease_token": token, "phase": job.phase, "pairs": job.pairs,
                        "root_commit": self.root, "base_commit": job.base_commit,
                        "candidate_commit": job.candidate_commit, "lease_expires": job.lease_expires,
                        "base_files": self.editable_at(job.base_commit),
                        "candidate_files": self.editable_at(job.candidate_commit)}

    def _refresh(self, s: Session, claim: Claim, job: Job) -> bool:
        """Rebase a claim about to be leased onto where its pairs should run; False when it cannot be
        (rejected). That is the head, or on top of a claim whose cheap check on the head is on a
        verifier right now (`_speculative_base`), when the edit lands there unchanged."""
        head = self._head(s)
        ahead = self._speculative_base(s, head, claim)
        if ahead is not None:
            if claim.base_commit == ahead:
                return True
            with contextlib.suppress(HubError):  # a conflict with a claim not yet on the chain: no reason to reject
                if self._rebase(s, claim, job, ahead, f"claim {ahead[:12]} on a verifier", speculative=True):
                    return True
        if claim.base_commit == head.commit:
            return True
        try:
            return self._rebase(s, claim, job, head.commit, f"height {head.height}")
        except HubError as e:
            self._decide(s, claim, REJECTED, f"after the chain moved to height {head.height}: {e.message}")
            return False

    def _speculative_base(self, s: Session, head: ChainEntry, claim: Claim) -> str | None:
        """The candidate of another claim whose cheap check on the head is on a verifier now (its
        first pair or a further look: a claim stays CHEAP only while the cheap check may accept it), if any.
        Most honest cheap checks are accepted, and then pairs measured on top of that candidate are
        pairs on the new head already, instead of being run again there once it moves (with several
        verifiers, that was most of what rebases cost). Should it not be accepted, the next lease
        moves this claim back onto the head, keeping the pairs of its unchanged edit, as any rebase."""
        for job in s.scalars(select(Job).where(Job.state == JOB_LEASED, Job.phase.in_((SCREEN, FULL)),
                                               Job.base_commit == head.commit, Job.claim_id != claim.id)
                             .order_by(Job.lease_expires, Job.id)):
            other = s.get(Claim, job.claim_id)
            if other is not None and other.check == CHEAP and job.candidate_commit == other.candidate_commit:
                return other.candidate_commit
        return None

    def _rebase(self, s: Session, claim: Claim, job: Job, onto: str, where: str, speculative: bool = False) -> bool:
        """Move the claim (and its job) onto the commit `onto`; raises HubError when it cannot move
        there; False when its edit changes there too often (rejected) or, `speculative`, at all."""
        old = self.editable_at(claim.base_commit)
        changed = self._rebased(old, {**old, **claim.files}, onto, where)
        digest = content_hash({**self.editable_at(onto), **changed})
        self._refuse_duplicate(s, digest, s.get(Commitment, claim.commitment_id), claim.id)
        edit = edit_hash(self.editable_at(onto), changed)
        if speculative and edit != claim.edit_hash:
            return False
        lost = edit != claim.edit_hash and s.scalars(select(Pair).where(Pair.claim_id == claim.id)).first() is not None
        if lost and claim.rebases >= MAX_REBASES:  # waiting in the queue costs nothing: only lost runs count
            self._decide(s, claim, REJECTED, f"the chain moved {claim.rebases + 1} times under it, changing its edit")
            return False
        commit = gitops.commit_files(self.repo, onto, changed, f"{claim.description[:200]}\n\nhub claim "
                                     f"#{claim.id}, rebased onto {where}\n")
        gitops.update_ref(self.repo, CLAIM_REF + commit, commit)
        claim.base_commit, claim.candidate_commit, claim.files, claim.content_hash = onto, commit, changed, digest
        if edit != claim.edit_hash:  # a new edit: its evidence starts again with a screening pair
            job.phase, job.pairs = SCREEN, verify.LOOKS[0]
        claim.rebases, claim.edit_hash = claim.rebases + int(lost), edit
        job.base_commit, job.candidate_commit = onto, commit
        return True

    def report(self, verifier: Worker, job_id: int, lease_token: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
        """Take a verifier's runs of a leased job (in `verify.interleaved_order`), judge, maybe advance."""
        moved = None
        with self.lock, self.sessions.begin() as s:
            job = s.get(Job, job_id)
            if job is None or job.state != JOB_LEASED or job.verifier_id != verifier.id or \
                    not secrets.compare_digest(job.lease_hash or "", token_hash(lease_token)):
                raise HubError(409, f"job #{job_id} is not leased to you (its lease expired and it was re-queued, "
                               "or it is done)", "lease a new job")
            order = verify.interleaved_order(job.pairs)
            if len(runs) != len(order):
                raise HubError(422, f"job #{job_id} needs {len(order)} runs in interleaved order, got {len(runs)}")
            job.state, job.finished_at, job.lease_hash = JOB_DONE, self.clock(), None
            me = s.get(Worker, verifier.id)
            me.verifier_runs += len(runs)
            claim = s.get(Claim, job.claim_id) if job.claim_id else None
            if job.phase == REVERIFY:
                outcome = self._reverify_job(s, job, claim, order, runs)
                job.outcome = outcome
                return {"job_id": job_id, "outcome": outcome}
            outcome = self._judge_job(s, job, claim, order, runs, me)
            job.outcome = outcome
            if claim is not None and claim.state == ACCEPTED:
                moved = self._head(s)
        if moved is not None:  # committed: now readers may build the views of the new height
            self.head_height = moved.height
            gitops.update_ref(self.repo, gitops.branch_ref(TAG), moved.commit, moved.parent_commit)
        return {"job_id": job_id, "outcome": outcome}

    def _judge_job(self, s: Session, job: Job, claim: Claim | None, order: list[str], runs: list[dict[str, Any]],
                   verifier: Worker) -> str:
        base_runs = [r for kind, r in zip(order, runs) if kind == "base"]
        cand_runs = [r for kind, r in zip(order, runs) if kind == "candidate"]
        failed_base = next((r for r in base_runs if not _ok(r)), None)
        if failed_base is not None:
            return self._base_failed(s, job, claim, failed_base)
        if claim is not None:
            claim.verifier_runs += len(runs)
            s.get(Worker, claim.worker_id).verifier_runs += len(runs)
            failed = next((r for r in cand_runs if not _ok(r)), None)
            problem = (f"the candidate failed on the verifier: {failed.get('status')}: {failed.get('reason', '')}"[:500]
                       if failed is not None else self._violation(base_runs, cand_runs))
            if problem:
                self._decide(s, claim, REJECTED, problem)
                return problem
        for b, c in zip(base_runs, cand_runs):
            s.add(Pair(job_id=job.id, claim_id=job.claim_id, base_commit=job.base_commit,
                       edit_hash=claim.edit_hash if claim is not None else None, base_value=b["metric"],
                       candidate_value=c["metric"], base_metrics=b.get("metrics", {}),
                       candidate_metrics=c.get("metrics", {}), verifier_id=verifier.id, created_at=self.clock()))
        s.flush()
        if claim is None:
            self._ensure_calibration(s)
            return f"calibration: {job.pairs} base-against-base pairs"
        return self._verdict(s, claim)

    def _violation(self, base_runs: list[dict], cand_runs: list[dict]) -> str | None:
        """A guard or the time budget broken by a candidate run, compared with its paired base run."""
        for b, c in zip(base_runs, cand_runs):
            limit = budget_limit(self.config.budget_s, b.get("wall_s"), self.config.overrun)
            if c.get("wall_s") is not None and c["wall_s"] > limit:
                return f"over budget on the verifier: ran {c['wall_s']:.1f}s, limit {limit:.1f}s"
            guard = check_guards(self.config.guards, c.get("metrics", {}), b.get("metrics", {}))
            if guard:
                return f"on the verifier: {guard}"
        return None

    def _base_failed(self, s: Session, job: Job, claim: Claim | None, run: dict[str, Any]) -> str:
        why = f"the base failed on the verifier ({run.get('status')}: {str(run.get('reason', ''))[:200]})"
        if job.attempts >= MAX_ATTEMPTS:
            if claim is not None:
                self._decide(s, claim, REJECTED, f"{why}, {job.attempts} times; not judged")
            return why
        self._requeue_copy(s, job, claim)
        return f"{why}: re-queued"

    def _requeue_copy(self, s: Session, job: Job, claim: Claim | None) -> None:
        again = Job(claim_id=job.claim_id, phase=job.phase, base_commit=job.base_commit,
                    candidate_commit=job.candidate_commit, pairs=job.pairs, priority=job.priority, state=JOB_QUEUED,
                    attempts=job.attempts, created_at=self.clock(), outcome="")
        s.add(again)
        if claim is not None:
            claim.state = QUEUED

    def _verdict(self, s: Session, claim: Claim) -> str:
        pairs = [(p.base_value, p.candidate_value) for p in s.scalars(
            select(Pair).where(Pair.claim_id == claim.id, Pair.edit_hash == claim.edit_hash).order_by(Pair.id))]
        worker = s.get(Worker, claim.worker_id)
        v = verify.judge(self.policy, pairs, self._noise(s, exclude_claim=claim.id),
                         claimed=verify.claimed_evidence(self.policy.direction, claim.claimed),
                         cheap=claim.check == CHEAP and reputable(worker))
        claim.verified_gain, claim.verified_se = v.gain, v.se
        if claim.check == CHEAP and not v.cheap:  # the cheap check failed (or the record is gone): the full test
            claim.check = WHOLE
        if v.fresh:  # ... on new pairs: those the cheap check drew stay for σ_d, not as this claim's evidence
            for p in s.scalars(select(Pair).where(Pair.claim_id == claim.id, Pair.edit_hash == claim.edit_hash)):
                p.edit_hash = SET_ASIDE
        if v.mismatch:
            if worker.flagged == 0:
                self._queue_reverify(s, worker)
            worker.flagged += 1
            worker.clean_streak = worker.full_streak = 0
        if v.action == "more":
            claim.state, claim.reason = QUEUED, v.reason
            self._queue(s, claim, FULL, v.more_pairs, worker)
        elif v.action == "reject":
            self._decide(s, claim, REJECTED, v.reason)
        else:
            self._accept(s, claim, v)
        return v.reason

    def _queue_reverify(self, s: Session, worker: Worker) -> None:
        """The claims of a worker just flagged that the cheap check accepted: each tested in full again."""
        for entry in s.scalars(select(ChainEntry).join(Claim, Claim.id == ChainEntry.claim_id)
                               .where(Claim.worker_id == worker.id, Claim.check == CHEAP)):
            s.add(Job(claim_id=entry.claim_id, phase=REVERIFY, base_commit=entry.parent_commit,
                      candidate_commit=entry.commit, pairs=verify.LOOKS[0], priority=2 * CONTINUE_FIRST,
                      state=JOB_QUEUED, attempts=0, created_at=self.clock(), outcome=""))

    def _reverify_job(self, s: Session, job: Job, claim: Claim, order: list[str], runs: list[dict[str, Any]]) -> str:
        """The full test of an accepted claim again, on its own chain parent: REVERIFIED or REFUTED."""
        base_runs = [r for kind, r in zip(order, runs) if kind == "base"]
        cand_runs = [r for kind, r in zip(order, runs) if kind == "candidate"]
        failed_base = next((r for r in base_runs if not _ok(r)), None)
        failed = next((r for r in cand_runs if not _ok(r)), None)
        if failed_base is not None:  # the verifier's trouble, not the claim's: again, up to MAX_ATTEMPTS
            if job.attempts < MAX_ATTEMPTS:
                self._requeue_copy(s, job, None)
            return f"reverify: the base failed ({failed_base.get('status')})"
        if failed is not None:
            verdict = verify.Verdict("reject", f"the candidate failed: {failed.get('status')}")
        else:
            for b, c in zip(base_runs, cand_runs):
                s.add(Pair(job_id=job.id, claim_id=claim.id, base_commit=job.base_commit, edit_hash=REVERIFY,
                           base_value=b["metric"], candidate_value=c["metric"], base_metrics=b.get("metrics", {}),
                           candidate_metrics=c.get("metrics", {}), verifier_id=job.verifier_id,
                           created_at=self.clock()))
            s.flush()
            pairs = [(p.base_value, p.candidate_value) for p in s.scalars(
                select(Pair).where(Pair.claim_id == claim.id, Pair.edit_hash == REVERIFY).order_by(Pair.id))]
            verdict = verify.judge(self.policy, pairs, self._noise(s, exclude_claim=claim.id))
        if verdict.action == "more":
            s.add(Job(claim_id=claim.id, phase=REVERIFY, base_commit=job.base_commit,
                      candidate_commit=job.candidate_commit, pairs=verdict.more_pairs, priority=job.priority,
                      state=JOB_QUEUED, attempts=0, created_at=self.clock(), outcome=""))
            return f"reverify: {verdict.reason}"
        claim.check = REVERIFIED if verdict.action == "accept" else REFUTED
        claim.reason += f"; tested again after its worker was flagged: {verdict.reason}"[:2000]
        return f"reverify: {claim.check}: {verdict.reason}"

    def _accept(self, s: Session, claim: Claim, v: verify.Verdict) -> None:
        head = self._head(s)
        if claim.base_commit != head.commit:  # another claim was accepted while this one ran: again on top
            job = self._queue(s, claim, SCREEN, verify.LOOKS[0], s.get(Worker, claim.worker_id))
            claim.state, claim.reason = QUEUED, f"{v.reason}; the chain moved meanwhile: verifying on the new head"
            self._refresh(s, claim, job)
            return
        s.add(ChainEntry(height=head.height + 1, commit=claim.candidate_commit, parent_commit=head.commit,
                         claim_id=claim.id, worker_id=claim.worker_id, gain=v.gain or 0.0, gain_se=v.se,
                         description=claim.description, created_at=self.clock()))
        self._decide(s, claim, ACCEPTED, v.reason, mismatch=v.mismatch)

    def _decide(self, s: Session, claim: Claim, state: str, reason: str, mismatch: bool = False) -> None:
        claim.state, claim.reason, claim.decided_at = state, reason, self.clock()
        worker = s.get(Worker, claim.worker_id)
        for job in s.scalars(select(Job).where(Job.claim_id == claim.id, Job.state != JOB_DONE)):
            job.state, job.outcome = JOB_DONE, f"claim {state}"
        if state == ACCEPTED:
            worker.accepted += 1
            worker.clean_streak = 0 if mismatch else worker.clean_streak + 1
            worker.full_streak = 0 if mismatch else worker.full_streak + (claim.check != CHEAP)
        else:
            worker.rejected += 1
            worker.clean_streak = worker.full_streak = 0
            if worker.rejected >= MAX_JUNK and worker.accepted == 0:
                worker.blocked = True

    def _head(self, s: Session) -> ChainEntry:
        return s.scalars(select(ChainEntry).order_by(ChainEntry.height.desc()).limit(1)).one()

    # -- tried and failed -------------------------------------------------------------------------

    def add_tried(self, worker: Worker, base_commit: str, description: str, diff_hash: str,
                  metric: float | None) -> int:
        with self.sessions.begin() as s:
            t = Tried(worker_id=worker.id, base_commit=base_commit, description=description, diff_hash=diff_hash,
                      metric=metric if metric is not None and valid_metric(metric) else None, created_at=self.clock())
            s.add(t)
            s.flush()
            return t.id


def _ok(run: dict[str, Any]) -> bool:
    metric = run.get("metric")
    return run.get("status") == "ok" and isinstance(metric, (int, float)) and valid_metric(metric)


def reputable(worker: Worker) -> bool:
    """A clean record: the last REPUTABLE_AFTER accepted claims in a row passed the full test, never flagged."""
    return worker.flagged == 0 and worker.full_streak >= REPUTABLE_AFTER


def _reputation(worker: Worker | None) -> float:
    """Queue priority: accepted work first, junk last, so a flood of new tokens waits behind honest work."""
    if worker is None:
        return 0.0
    return 2.0 * worker.accepted - worker.rejected - 3.0 * worker.flagged + (0.5 if worker.clean_streak else 0.0)

