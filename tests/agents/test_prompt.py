"""Prompts: what goes in, and what is dropped first when the token budget is tight."""
from __future__ import annotations

from pathlib import Path

from autoresearch.agents.base import Context
from autoresearch.agents.prompt import (
    Rejection,
    build_prompt,
    estimate_tokens,
    history_lines,
)
from autoresearch.core.config import load_config
from autoresearch.core.records import Experiment, Idea


def exp(i: int, status: str, metric: float | None, desc: str, **kw) -> Experiment:
    return Experiment(id=i, tag="t", parent_commit="p", commit=f"c{i}", agent="openai", description=desc,
                      status=status, metric=metric, **kw)


def context(task: Path, history: list[Experiment], ideas: list[Idea] | None = None, program: str | None = None):
    config = load_config(task)
    best = [e for e in history if e.status == "keep"][-1] if history else None
    return Context(config=config, program=program if program is not None else (task / "program.md").read_text(),
                   files={"train.py": (task / "train.py").read_text()}, history=history, ideas=ideas or [],
                   best=best, tag="t", notebook=task / ".autoresearch" / "notebooks" / "t.md")


def test_history_lines_show_decision_metric_and_delta_against_the_best_at_the_time():
    lines = history_lines([exp(1, "keep", 10.0, "baseline"), exp(2, "discard", 10.5, "worse idea"),
                           exp(3, "keep", 9.0, "better idea"), exp(4, "crash", None, "broken", reason="crash: exit 1"),
                           exp(5, "discard", 9.2, "close", info={"fix_of": 4, "fix_attempt": 1})], "score")
    assert lines[0] == "#1 keep    score 10 (baseline): baseline"
    assert "#2 discard score 10.5 (+0.5 vs best 10): worse idea" == lines[1]
    assert "(-1 vs best 10)" in lines[2]
    assert lines[3].startswith("#4 crash   no metric: broken [crash: exit 1]")
    assert "(+0.2 vs best 9)" in lines[4] and "[fix attempt 1 of #4]" in lines[4]


def test_prompt_holds_program_files_history_best_crashes_notebook_ideas_and_rejections(toy_task: Path):
    history = [exp(1, "keep", 9.9, "baseline"), exp(2, "crash", None, "divide by zero", reason="crash: exit 1",
                                                      log_tail="Traceback (most recent call last):\nZeroDivisionError")]
    ctx = context(toy_task, history, ideas=[Idea(id=7, text="try WIDTH=6")])
    p = build_prompt(ctx, notebook_text="- X above 4 never helps", rejected=[Rejection("bad", "SEARCH not found")])
    for needle in ("Minimise score by editing train.py", "X = 5.0", "#1 keep", "Best so far: #1 score 9.9",
                   "ZeroDivisionError", "X above 4 never helps", "[idea 7] try WIDTH=6", "SEARCH not found",
                   "lower score is better", "<<<<<<< SEARCH"):
        assert needle in p.user or needle in p.system, needle
    assert p.tokens == estimate_tokens(p.system) + estimate_tokens(p.user)
    assert not p.cut and not p.over_budget
    # Stable parts first (servers reuse a cached prefix): program, then files, then the rest.
    assert p.user.index("Minimise") < p.user.index("X = 5.0") < p.user.index("# History")


def test_oldest_history_is_dropped_first(toy_task: Path):
    history = [exp(1, "keep", 100.0, "baseline")] + \
              [exp(i, "discard", 100.0 + i, f"experiment number {i} " + "x" * 80) for i in range(2, 200)]
    ctx = context(toy_task, history)
    full = build_prompt(ctx, token_budget=10**6)
    small = build_prompt(ctx, token_budget=full.tokens // 3)
    assert small.tokens <= full.tokens // 3 and not small.over_budget
    assert small.dropped_history > 0 and small.cut == ["history"]
    assert "experiment number 199" in small.user and "experiment number 2 " not in small.user
    assert f"({small.dropped_history} older experiments not shown)" in small.user
    assert "X = 5.0" in small.user  # files are never cut


def test_notebook_is_cut_to_its_latest_part_after_history(toy_task: Path):
    notes = "".join(f"- note {i}: " + "y" * 60 + "\n" for i in range(300))
    ctx = context(toy_task, [exp(1, "keep", 1.0, "baseline"), exp(2, "discard", 2.0, "d")])
    p = build_prompt(ctx, notebook_text=notes, token_budget=2000)
    assert "history" in p.cut and "notebook" in p.cut and not p.over_budget
    assert "note 299" in p.user and "note 0:" not in p.user


def test_program_middle_is_cut_last_and_files_never(toy_task: Path):
    program = "START " + "z" * 40000 + " END"
    ctx = context(toy_task, [exp(1, "keep", 1.0, "baseline")], program=program)
    p = build_prompt(ctx, token_budget=1500)
    assert "program" in p.cut and "START" in p.user and "END" in p.user and "X = 5.0" in p.user
    assert p.tokens <= 1500


def test_impossible_budget_is_flagged_not_hidden(toy_task: Path):
    ctx = context(toy_task, [exp(1, "keep", 1.0, "baseline")])
    p = build_prompt(ctx, token_budget=50)
    assert p.over_budget and "X = 5.0" in p.user


def test_structured_and_cli_prompts(toy_task: Path):
    ctx = context(toy_task, [exp(1, "keep", 1.0, "baseline")])
    assert '"edits"' in build_prompt(ctx, structured=True).system
    cli = build_prompt(ctx, cli=True)
    assert "X = 5.0" not in cli.user  # the CLI reads the files itself
    assert "Do not run the experiment" in cli.system


def test_fix_task_replaces_the_closing_request(toy_task: Path):
    ctx = context(toy_task, [exp(1, "keep", 1.0, "baseline")])
    p = build_prompt(ctx, task="Fix the crash of #4.", files={"train.py": "CRASHED = 1\n"})
    assert p.user.rstrip().endswith("Fix the crash of #4.") and "CRASHED = 1" in p.user
