"""Test doubles and checks shared by the research tests: a scripted agent, an edit helper, the
consistency check of ledger, results.tsv, branch and archive refs."""
from __future__ import annotations

from pathlib import Path

from autoresearch.agents.base import Context, NoProposal, Proposal
from autoresearch.core.config import ParallelConfig
from autoresearch.repo import gitops
from autoresearch.store.ledger import Ledger

SERIAL = ParallelConfig(ahead=0)  # propose only when the slot is free, as the original autoresearch


class ScriptedAgent:
    """Replays a fixed list of edits (a test double for the agent interface, not for the harness)."""

    name = "scripted"

    def __init__(self, steps):
        self.steps = list(steps)
        self.contexts: list[Context] = []

    def propose(self, ctx: Context) -> Proposal:
        self.contexts.append(ctx)
        if not self.steps:
            raise NoProposal("script finished")
        description, edit = self.steps.pop(0)
        edits = edit(ctx.files) if callable(edit) else edit
        return Proposal(description=description, edits=edits)


def replace(old: str, new: str, path: str = "train.py"):
    return lambda files: {path: files[path].replace(old, new)}


def check_consistency(task: Path, tag: str = "t") -> None:
    """Ledger, results.tsv, research branch and archive refs tell the same story."""
    ledger = Ledger(task / ".autoresearch" / "ledger.db")
    exps = ledger.experiments(tag)
    best = ledger.best(tag)
    branch = gitops.rev_parse(task, gitops.branch_ref(tag))
    assert best is not None and branch == best.commit
    for e in exps:
        assert e.status != "running"
        if e.commit:
            assert gitops.rev_parse(task, gitops.archive_ref(tag, e.id)) == e.commit
    rows = (task / "results.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["commit", "score", "memory_gb", "status", "description"]
    finished = [e for e in exps if e.status in ("keep", "discard", "crash", "timeout")]
    assert [r.split("\t")[3] for r in rows[1:]] == [e.status for e in finished]
    assert [r.split("\t")[0] for r in rows[1:]] == [e.commit[:7] for e in finished]
    # The chain of kept commits is the branch's first-parent history.
    kept = [e.commit for e in ledger.kept(tag)]
    history = gitops.git(task, "rev-list", "--first-parent", branch).splitlines()
    assert kept[::-1] == history[:len(kept)]
    assert not list((task / ".autoresearch" / "worktrees").glob("exp-*"))
    assert "worktrees" not in gitops.git(task, "worktree", "list")
