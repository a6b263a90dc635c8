"""What a proposal must be to get a run, and how a stale candidate moves onto a newer best.

Everything here is git work and pure checks, safe without the coordinator's lock: nothing is
recorded in the ledger. The coordinator records the outcome (a queued experiment, a rejection
with its reason, a rebased commit) under its lock.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from autoresearch.agents.search_defaults import violation
from autoresearch.agents.source_constants import reapply_constants
from autoresearch.core.config import TaskConfig, edit_problem, normalize_path
from autoresearch.core.records import Experiment, Status
from autoresearch.repo import gitops


@dataclass(frozen=True)
class Refusal:
    """Why an experiment cannot run (where it stands now): recorded as its decision."""

    status: Status
    reason: str


@dataclass(frozen=True)
class Rebase:
    """A stale candidate re-made on a newer best: its new commit and what to record."""

    commit: str
    files: dict[str, str]  # the best's editable files
    merged: dict[str, str]  # the candidate's changes, as they are on the best
    digest: str  # content hash of the result
    params: dict[str, Any]


def normalized(edits: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """A proposal's edits under canonical paths, or why they cannot be taken (an odd path, two
    spellings of one file, content that is not text)."""
    out: dict[str, str] = {}
    for path, content in edits.items():
        try:
            norm = normalize_path(path)
        except ValueError as e:
            return {}, f"invalid path: {e}"
        if norm in out:
            return {}, f"{path!r} and another path both name {norm}"
        if not isinstance(content, str) or "\x00" in content:
            return {}, f"the new content of {norm} is not text"
        out[norm] = content
    return out, None


def validate(config: TaskConfig, proposed: dict[str, str], edits: dict[str, str]) -> str | None:
    """Why a proposal cannot be run, or None. No run is spent on an invalid proposal."""
    for path in proposed:
        problem = edit_problem(config, path)
        if problem:
            return problem
    if not edits:
        return "no change to any editable file"
    for path, content in edits.items():
        problem = edit_problem(config, path, content)
        if problem:
            return problem
    return None


def plan_rebase(config: TaskConfig, files: gitops.EditableFiles, exp: Experiment, best: Experiment) -> Rebase | Refusal:
    """Move a candidate proposed against an older best onto `best`: a change of constant values (a
    search proposal) is re-expressed there, its values set on the new best; anything else is merged
    as text. A conflict, a broken rule or nothing left to try refuses it unrun (not an experiment)."""
    assert exp.commit and exp.base_commit and best.commit
    now = files.at(best.commit)
    base, proposed = files.at(exp.base_commit), files.at(exp.commit)
    merged = reapply_constants(base, proposed, now)
    if merged is not None:
        problem = violation(params_of(config, {**now, **merged}), params_of(config, now))
        if problem:
            return Refusal(Status.REJECTED, f"re-expressed on #{best.id}, it would break a rule: {problem}")
    else:
        merged, conflicts = gitops.merge_files(base, now, proposed)
        if conflicts:
            return Refusal(Status.REJECTED, f"conflicts with #{best.id} ({one_line(best.description)[:60]}), kept "
                                            f"since it was proposed, in {', '.join(conflicts)}")
    if not merged:
        return Refusal(Status.REJECTED, f"nothing left to try: its change is already in the best (#{best.id})")
    commit = gitops.commit_files(config.root, best.commit, merged, commit_message(exp.description, exp.agent) +
                                 f"rebased from {exp.commit[:9]} onto #{best.id}\n")
    result = {**now, **merged}
    return Rebase(commit, now, merged, content_hash(result), params_of(config, result))


def content_hash(files: dict[str, str]) -> str:
    """The identity of a set of editable files: two experiments with equal hashes are duplicates."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path}\0{len(files[path])}\0".encode() + files[path].encode())
    return digest.hexdigest()


def params_of(config: TaskConfig, files: dict[str, str]) -> dict[str, Any]:
    """The numeric constants of `files` (what search agents learn from); {} when they do not parse."""
    try:
        from autoresearch.agents.source_constants import current_params
        return current_params(config, files)
    except Exception:  # noqa: BLE001 - a file that does not parse has no params; the agent will learn nothing from it
        return {}


def commit_message(description: str, agent: str) -> str:
    return f"{description}\n\nproposed by {agent} (autoresearch)\n"


def one_line(text: str) -> str:
    """A description as one line of at most 200 characters."""
    line = " ".join((text or "").split())
    return (line[:200] + "…") if len(line) > 200 else (line or "(no description)")
