"""`autoresearch init --probe`: run the guessed task once, as research would, and report what it printed.

The probe is a real research start-up on a scratch tag of its own: the environment is built, the
setup runs with its access, then the unmodified run command runs once in the sandbox under the
budget. Its ledger is a temporary file and its refs are deleted afterwards, so the task's research
history never sees it (the setup's outputs and the built environment are kept: the first `run`
reuses them).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from autoresearch.agents.base import Idle
from autoresearch.core.config import TaskConfig
from autoresearch.repo import gitops
from autoresearch.store.ledger import Ledger

PROBE_TAG = "init-probe"


def probe(config: TaskConfig, budget_s: float | None = None) -> dict[str, Any]:
    """Run the base once: {"status", "metrics" (every `name: value` line), "reason", "log_tail", "wall_s"}."""
    from autoresearch.research.coordinator import Research

    with tempfile.TemporaryDirectory(prefix="autoresearch-probe-") as scratch:
        ledger = Ledger(Path(scratch) / "probe.db")
        research = Research(config, Idle(), tag=PROBE_TAG, budget_s=budget_s, ledger=ledger)
        try:
            research.open()
            exp_id = ledger.start_experiment(tag=PROBE_TAG, parent_commit=research.base, agent="probe",
                                             description="init --probe")
            outcome = research.measurer.execute(exp_id, research.base, "primary", research.slots[0])
        finally:
            research.close()
            _forget(config.root)
    return {"status": outcome.status, "metrics": outcome.fields.get("metrics", {}),
            "reason": "" if outcome.status == "ok" else outcome.failure[1],
            "log_tail": outcome.fields.get("log_tail", ""), "wall_s": outcome.fields.get("wall_s")}


def _forget(repo: Path) -> None:
    refs = gitops.git(repo, "for-each-ref", "--format=%(refname)", f"refs/heads/autoresearch/{PROBE_TAG}",
                      f"{gitops.ARCHIVE_PREFIX}{PROBE_TAG}/").split()
    for ref in refs:
        gitops.git(repo, "update-ref", "-d", ref)
