"""`autoresearch ablate` and `autoresearch transfer`: checks of a finished research run
(research/checks.py), recorded in its ledger and shown by `report` and the dashboard.
cli.py registers them with one call to `register`."""
from __future__ import annotations

import json
import signal

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from autoresearch.agents.base import Idle
from autoresearch.core.config import load_config
from autoresearch.core.errors import AutoresearchError
from autoresearch.core.records import Check

DEFAULT_PAIRS = 3  # pairs of runs per check: enough to see a 3σ change, cheap next to the research


class CheckError(AutoresearchError):
    """A check that cannot be made: which research run, and what to do."""


def register(sub, task_args, open_run) -> None:
    """`task_args` adds -C/--tag/--json; `open_run(args)` gives (root, ledger, tag) of the research run."""
    c = sub.add_parser("ablate", help="re-run the best without each kept change: does each still pull its weight?")
    task_args(c)
    c.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help=f"paired runs per change (default {DEFAULT_PAIRS})")
    c.add_argument("--only", type=int, action="append", metavar="ID", help="only this kept experiment (repeatable)")
    c.set_defaults(func=lambda args: cmd_ablate(args, open_run))
    c = sub.add_parser("transfer", help="re-run the base and the best under another budget: does the gain hold?")
    task_args(c)
    c.add_argument("--budget", type=float, required=True, help="seconds per run for the check (e.g. 4x the task's)")
    c.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help=f"paired runs (default {DEFAULT_PAIRS})")
    c.set_defaults(func=lambda args: cmd_transfer(args, open_run))


def cmd_ablate(args, open_run) -> int:
    from autoresearch.research import checks
    return _run(args, open_run, lambda r: checks.ablations(r, args.only))


def cmd_transfer(args, open_run) -> int:
    from autoresearch.research import checks
    if not args.budget > 0:
        raise CheckError(f"--budget {args.budget:g}: give a positive number of seconds")
    return _run(args, open_run, lambda r: [v for v in [checks.transfer(r, args.budget)] if v is not None])


def _run(args, open_run, variants_of) -> int:
    from autoresearch.research import checks
    from autoresearch.research.coordinator import Research

    if args.pairs < 1:
        raise CheckError(f"--pairs {args.pairs}: give at least 1")
    root, ledger, tag = open_run(args)
    config = load_config(root)
    console = Console(stderr=True, quiet=args.json)
    research = Research(config, Idle(), tag=tag, ledger=ledger)
    previous = signal.signal(signal.SIGINT, lambda *_: research.stop_event.set())
    results: list[Check] = []
    try:
        research.open()
        variants = variants_of(research)
        if not variants:
            raise CheckError(f"research run {tag!r} has nothing to check: its best is the base"
                             "\n  fix: let it keep a change first")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("checks", total=sum(2 * args.pairs for v in variants if v.variant))
            for variant in variants:
                results.append(checks.run_check(research, variant, args.pairs, on_run=lambda text: (
                    bar.update(task, description=text), bar.advance(task))))
    finally:
        signal.signal(signal.SIGINT, previous)
        research.close()
    if args.json:
        print(json.dumps([c.to_dict() for c in results], default=str))
    else:
        Console().print(table(results, config.metric.name))
    return 0 if all(not c.note for c in results) else 1


def table(results: list[Check], metric: str) -> Table:
    t = Table(title=f"{metric}: gain > 0 means better (ablation: the change helps; transfer: the best wins)")
    for col in ("check", "what", "pairs", "gain ± se", "note"):
        t.add_column(col)
    for c in results:
        t.add_row(f"#{c.id} {c.kind}", str(c.setting.get("label", "")), str(len(c.pairs)), c.gain_text(), c.note or "")
    return t
