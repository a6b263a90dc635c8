"""Ablation and transfer checks of a research run: does each kept change still pull its weight in
the best, and does the best's gain hold in another setting (a longer budget)?

Both are paired re-executions, like the hub's verification: a reference and a variant run in turn
on one slot (reference first in even pairs, variant first in odd ones), so slow drift of the
machine hits both alike; the evidence is the list of paired differences. Each pair is durable in
the ledger's `checks` table before the next run starts. Checks never touch the experiments, their
runs or the branch: the judge's evidence and the research stay what they were, and a check can be
run again at any time.

- ablation: for each kept change of the chain (baseline excluded), the best with that change
  reverted (a three-way merge of the reverse change onto the best; a conflict is noted, not run).
- transfer: the research base against the best, under another budget.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from autoresearch.core.records import Check, Experiment
from autoresearch.repo import gitops
from autoresearch.research.admission import commit_message, one_line
from autoresearch.research.coordinator import Research
from autoresearch.research.measure import run_env

CHECK_RUN_OFFSET = 1_000_000  # run numbers of check runs: far from any experiment's own runs
CHECK_REF_PREFIX = "refs/autoresearch-checks/"  # the ablated variants' commits (not experiments: doctor ignores them)


@dataclass(frozen=True)
class Variant:
    """One check to make: what runs as reference and as variant, and under which budget."""

    kind: str
    experiment_id: int | None
    label: str
    reference: str  # commit
    variant: str | None  # commit; None when it could not be made (see note)
    budget_s: float
    note: str = ""


def kept_changes(research: Research) -> list[Experiment]:
    """The kept experiments of the chain, in the order they were kept, baseline excluded."""
    return [e for e in research.ledger.kept(research.tag) if e.agent != "baseline" and e.commit]


def ablations(research: Research, only: list[int] | None = None) -> list[Variant]:
    """The best without each kept change (or only those in `only`)."""
    best = research.ledger.best(research.tag)
    if best is None or not best.commit:
        return []
    out, files = [], research.files
    now = files.at(best.commit)
    for exp in kept_changes(research):
        if only and exp.id not in only:
            continue
        label = f"without #{exp.id} ({one_line(exp.description)[:60]})"
        merged, conflicts = gitops.merge_files(files.at(exp.commit), now, files.at(exp.parent_commit))
        if conflicts:
            out.append(Variant("ablation", exp.id, label, best.commit, None, research.budget_s,
                               f"cannot revert it from the best: later changes touch the same lines of "
                               f"{', '.join(conflicts)}"))
            continue
        if not merged:
            out.append(Variant("ablation", exp.id, label, best.commit, None, research.budget_s,
                               "nothing to revert: later changes undid it"))
            continue
        commit = gitops.commit_files(research.repo, best.commit, merged,
                                     commit_message(f"ablation: the best without #{exp.id}", "autoresearch"))
        gitops.update_ref(research.repo, f"{CHECK_REF_PREFIX}{research.tag}/without-{exp.id}", commit)
        out.append(Variant("ablation", exp.id, label, best.commit, commit, research.budget_s))
    return out


def transfer(research: Research, budget_s: float) -> Variant | None:
    """The research base against the best under `budget_s` seconds."""
    best = research.ledger.best(research.tag)
    if best is None or not best.commit or best.commit == research.base:
        return None
    return Variant("transfer", best.id, f"base vs best #{best.id} at a {budget_s:g}s budget", research.base,
                   best.commit, budget_s)


def run_check(research: Research, variant: Variant, pairs: int,
              on_run: Callable[[str], None] = lambda _: None) -> Check:
    """Make `pairs` interleaved pairs of reference and variant runs on the first slot, recording each
    pair as it completes; a failed run ends the check with a note."""
    ledger, cfg = research.ledger, research.config
    check_id = ledger.add_check(research.tag, variant.kind, variant.experiment_id,
                                {"budget_s": variant.budget_s, "label": variant.label,
                                 "reference": variant.reference, "variant": variant.variant},
                                direction=cfg.metric.direction)
    if variant.variant is None:
        ledger.note_check(check_id, variant.note)
        return _get(research, check_id)
    slot = research.slots[0]
    for i in range(pairs):
        order = ("reference", "variant") if i % 2 == 0 else ("variant", "reference")
        values: dict[str, float] = {}
        for which in order:
            if research.stop_event.is_set():
                ledger.note_check(check_id, "stopped by the user")
                return _get(research, check_id)
            on_run(f"{variant.label}: pair {i + 1}/{pairs}, {which}")
            outcome = research.backend.run(_spec(research, variant, check_id, 2 * i + len(values), which), slot,
                                           should_stop=research.stop_event.is_set)
            if outcome.status != "ok" or outcome.metric is None:
                ledger.note_check(check_id, f"the {which} run failed ({outcome.status}): {outcome.failure[1][:300]}")
                return _get(research, check_id)
            values[which] = outcome.metric
        ledger.add_check_pair(check_id, values["reference"], values["variant"])
    return _get(research, check_id)


def _spec(research: Research, variant: Variant, check_id: int, n: int, which: str):
    """The run of one side of a check: the experiments' spec (sandbox, limits, evaluation), its own
    log and worktree names, the check's budget and the hard timeout (not the candidates' limit,
    which is measured at the research's own budget)."""
    commit = variant.reference if which == "reference" else variant.variant
    exp_id = variant.experiment_id or 0
    spec = research.measurer.spec(exp_id, CHECK_RUN_OFFSET + check_id * 1000 + n, f"check-{variant.kind}", commit)
    timeout = research.config.timeout_s + max(0.0, variant.budget_s - research.config.budget_s)
    return dataclasses.replace(spec, env=run_env(research.config, variant.budget_s, exp_id), timeout_s=timeout,
                               log_name=f"{research.tag}/checks/{check_id}.{n}.{which}.log")


def _get(research: Research, check_id: int) -> Check:
    return next(c for c in research.ledger.checks(research.tag) if c.id == check_id)
