"""A trusted verifier: leases jobs from the hub and runs them in the sandbox, interleaved.

The verifier holds its own copy of the task (cloned from the hub's bundle, checked against the
hub's root commit) and runs everything through the local research machinery: `Research.open()`
gives the sandbox policy (no network), the task's setup, the backend and the frozen files of the
task's own commit; each run is `Measurer.spec()` on `LocalBackend.run()`, the same path as a
local experiment, trusted evaluation included. Base and candidate are rebuilt here from their
editable files on the task's commit, so frozen files are the verifier's own, never a worker's.
A verifier that dies mid-job loses nothing: the hub re-queues the job when its lease expires.
"""
from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

from autoresearch.agents.base import NoProposal
from autoresearch.core.config import load_config
from autoresearch.hub.client import HubClient, HubRefused, fingerprint
from autoresearch.hub.verify import interleaved_order
from autoresearch.repo import gitops
from autoresearch.research.coordinator import Research
from autoresearch.run.execution import FrozenFileError

log = logging.getLogger(__name__)
POLL_S = 1.0  # how often an idle verifier asks for work
TAG = "verify"


class NoAgent:
    """A verifier proposes nothing; Research wants an agent all the same."""

    name = "verifier"

    def propose(self, ctx):
        raise NoProposal("a verifier only re-runs what the hub sends")


class Verifier:
    def __init__(self, url: str, token: str, workdir: Path, poll_s: float = POLL_S):
        self.client = HubClient(url, token)
        self.workdir, self.poll_s = workdir, poll_s
        self.stop_event = threading.Event()
        self.research: Research | None = None
        self.jobs_done = 0

    def open(self) -> None:
        repo = self.client.clone_task(self.workdir)
        self.root = gitops.rev_parse(repo, "HEAD")
        self.research = Research(load_config(repo), NoAgent(), tag=TAG)
        self.research.open()

    def close(self) -> None:
        if self.research is not None:
            self.research.close()
        self.client.close()

    def run(self, max_jobs: int | None = None) -> int:
        """Take and run jobs until stopped (or `max_jobs` done); the number done."""
        while not self.stop_event.is_set() and (max_jobs is None or self.jobs_done < max_jobs):
            try:
                job = self.client.post("/jobs/lease", {})
            except HubRefused as e:
                log.warning("lease failed: %s", e)
                self.stop_event.wait(self.poll_s)
                continue
            if job is None:
                self.stop_event.wait(self.poll_s)
                continue
            runs = self.execute(job)
            if self.stop_event.is_set():
                break  # interrupted runs are not evidence: the lease expires and the job is re-queued
            try:
                self.client.post(f"/jobs/{job['job_id']}/result", {"lease_token": job["lease_token"], "runs": runs,
                                                                    "environment": fingerprint()})
            except HubRefused as e:  # the hub died or re-queued the job: it will be run again
                log.warning("report of job #%s failed: %s", job["job_id"], e)
            self.jobs_done += 1
        return self.jobs_done

    def execute(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """The job's runs in interleaved order, each as the hub's RunIn."""
        r = self.research
        assert r is not None and r.backend is not None, "call open() first"
        if job["root_commit"] != self.root:
            raise HubRefused(0, f"the hub's task moved to {job['root_commit'][:12]}; this verifier holds "
                             f"{self.root[:12]}", "start the verifier again with an empty folder")
        commits = {"base": self._commit(job["base_files"], "base"),
                   "candidate": self._commit(job["candidate_files"], "candidate")}
        slot, runs = r.backend.slots[0], []
        for n, kind in enumerate(interleaved_order(job["pairs"])):
            if self.stop_event.is_set():
                break
            spec = r.measurer.spec(job["job_id"], n, kind, commits[kind])
            try:
                outcome = r.backend.run(spec, slot, should_stop=self.stop_event.is_set)
            except FrozenFileError as e:
                runs.append({"status": "tampered", "metric": None, "metrics": {}, "wall_s": None, "reason": str(e)})
                continue
            runs.append({"status": outcome.status, "metric": outcome.metric, "wall_s": outcome.fields.get("wall_s"),
                         "metrics": {k: v for k, v in outcome.metrics.items() if math.isfinite(v)},
                         "reason": outcome.failure[1] if outcome.status != "ok" else ""})
        return runs

    def _commit(self, files: dict[str, str], what: str) -> str:
        return gitops.commit_files(self.workdir, self.root, files, f"hub {what}\n")

