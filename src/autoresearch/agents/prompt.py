"""Prompts for LLM agents, within a token budget.

The prompt holds program.md, the editable files at the current best, the lab notebook, open ideas,
a compact history (one line per experiment: id, decision, metric and its change against the best
at the time, description), the best so far, recent crashes with the tail of their output, and the
proposals of this agent that the harness rejected. When it does not fit the budget, the oldest
history lines go first, then the notebook is cut to its latest part, then older crashes, ideas,
and finally the middle of program.md. The editable files are never cut: edits must quote them.

Stable parts come first so that servers which reuse a cached prompt prefix (llama.cpp, vLLM)
do not re-read program.md and the files on every call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from autoresearch.agents.base import Context
from autoresearch.core.records import Experiment

CHARS_PER_TOKEN = 4  # a plain estimate; close enough for code and English with common tokenizers
CRASH_TAIL_CHARS = 1500
MAX_CRASHES = 3
MAX_IDEAS = 20
MAX_PENDING = 16

SYSTEM_TEXT = """\
You are a researcher improving a program by experiments. Each experiment is one small change to \
the editable files; the harness runs it under a fixed time budget, measures the metric, and keeps \
the change only if the metric improves. You never run anything yourself.

Answer in exactly this format:

DESCRIPTION: <one line saying what the change is>
REASONING: <why it should improve the metric, briefly>
NOTEBOOK: <optional: a lasting insight worth remembering in later experiments>

<path of the file>
<<<<<<< SEARCH
<lines copied exactly from the current file>
=======
<the new lines>
>>>>>>> REPLACE

Rules: the SEARCH part must copy the current lines exactly and match only once; include a few \
surrounding lines when needed. Use one block per place you change. You may replace a small file \
whole with a line `FILE: <path>` followed by the complete new content in a ``` fenced block. \
Change only the editable files. Make one focused change per experiment."""

SYSTEM_JSON = """\
You are a researcher improving a program by experiments. Each experiment is one small change to \
the editable files; the harness runs it under a fixed time budget, measures the metric, and keeps \
the change only if the metric improves. You never run anything yourself.

Answer with one JSON object: {"description": one line saying what the change is, "reasoning": \
why it should help, "notebook": a lasting insight or "", "edits": [{"path": file, "search": an \
exact line of the current file, "replace": the new text for it}]}. Make one focused change."""

SYSTEM_CLI = """\
You are a researcher improving a program by experiments. Make one small, focused change to the \
editable files in the current directory to improve the metric. Do not run the experiment or any \
training: the harness runs it afterwards under a fixed time budget and keeps the change only if \
the metric improves. Change only the editable files. When done, print one line \
`DESCRIPTION: <what you changed>`."""


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass
class Prompt:
    system: str
    user: str
    tokens: int  # estimated tokens of system + user
    dropped_history: int = 0  # history lines left out for the budget
    cut: list[str] = field(default_factory=list)  # sections shortened for the budget
    over_budget: bool = False  # the parts that are never cut already exceed the budget


@dataclass
class Rejection:
    """One of this agent's proposals that was not run, and why."""

    description: str
    reason: str


def history_lines(history: Sequence[Experiment], metric_name: str) -> list[str]:
    """One line per finished experiment: decision, metric, change against the best at the time."""
    lines, best = [], None
    for e in history:
        value = f"{metric_name} {e.metric:.6g}" if e.metric is not None else "no metric"
        delta = ""
        if e.metric is not None and best is not None:
            delta = f" ({e.metric - best:+.4g} vs best {best:.6g})"
        elif best is None and e.status == "keep":
            delta = " (baseline)"
        note = ""
        if e.status in ("crash", "timeout"):
            note = f" [{_short(e.reason, 100)}]"
        if e.info.get("fix_of"):
            note += f" [fix attempt {e.info.get('fix_attempt', '?')} of #{e.info['fix_of']}]"
        lines.append(f"#{e.id} {e.status:<7} {value}{delta}: {_short(e.description, 160)}{note}")
        if e.status == "keep" and e.metric is not None:
            best = e.metric
    return lines


def build_prompt(ctx: Context, *, token_budget: int = 24000, structured: bool = False, cli: bool = False,
                 files: dict[str, str] | None = None, notebook_text: str = "",
                 rejected: Sequence[Rejection] = (), task: str | None = None) -> Prompt:
    """The system and user messages for one proposal.

    `files` overrides the context's files (a crash fix shows the crashed commit's files); `task`
    replaces the closing request (a crash fix asks for the fix).
    """
    files = ctx.files if files is None else files
    system = SYSTEM_CLI if cli else SYSTEM_JSON if structured else SYSTEM_TEXT
    metric = ctx.config.metric
    goal = f"Goal: {'lower' if metric.direction == 'minimize' else 'higher'} {metric.name} is better. " \
           f"Editable files: {', '.join(ctx.config.editable)}."
    program = ctx.program.strip() or "(no program.md)"
    file_text = "" if cli else "\n\n".join(_file_block(p, c) for p, c in sorted(files.items()))
    lines = history_lines(ctx.history, metric.name)
    best = ""
    if ctx.best is not None and ctx.best.metric is not None:
        best = f"Best so far: #{ctx.best.id} {metric.name} {ctx.best.metric:.6g}: {_short(ctx.best.description, 200)}"
    crashes = [e for e in ctx.history if e.status in ("crash", "timeout")][-MAX_CRASHES:]
    ideas = [f"[idea {i.id}] {_short(i.text, 300)}" for i in ctx.ideas[:MAX_IDEAS]]
    pending = [f"#{e.id} ({e.status}) {_short(e.description, 160)}" for e in ctx.pending[-MAX_PENDING:]]
    notebook = notebook_text.strip()
    rejected_lines = [f"- {_short(r.description, 120)}: {_short(r.reason, 300)}" for r in list(rejected)[-5:]]
    closing = task or ("Propose the next experiment." if not ideas else
                       "Propose the next experiment (an open idea is a good candidate; if you try one, "
                       "add a line IDEA: <number>).")

    cut: list[str] = []
    dropped = 0

    def render() -> str:
        parts = [f"# Instructions (program.md)\n\n{program}", goal]
        if file_text:
            parts.append(f"# Editable files at the current best\n\n{file_text}")
        if notebook:
            parts.append(f"# Lab notebook (insights from earlier experiments)\n\n{notebook}")
        if ideas:
            parts.append("# Open ideas from the humans\n\n" + "\n".join(ideas))
        if lines:
            head = f"# History ({dropped} older experiments not shown)" if dropped else "# History"
            parts.append(head + "\n\n" + "\n".join(lines))
        if best:
            parts.append(best)
        if pending:
            parts.append("# Being tried right now (results not known yet; do not propose these again)\n\n"
                         + "\n".join(pending))
        for e in crashes:
            tail = (e.log_tail or "")[-CRASH_TAIL_CHARS:].strip()
            parts.append(f"# Experiment #{e.id} ({_short(e.description, 120)}) ended in {e.status}: "
                         f"{_short(e.reason, 200)}\n\n```\n{tail}\n```")
        if rejected_lines:
            parts.append("# Your recent proposals that were rejected before running\n\n" + "\n".join(rejected_lines))
        parts.append(closing)
        return "\n\n".join(parts)

    def total(text: str) -> int:
        return estimate_tokens(system) + estimate_tokens(text)

    user = render()
    while total(user) > token_budget:
        if lines:  # the oldest history first (several at a time when far over)
            excess = total(user) - token_budget
            n = max(1, min(len(lines), excess // 30))
            lines, dropped = lines[n:], dropped + n
            _note(cut, "history")
        elif len(notebook) > 200:
            keep = len(notebook) // 2
            notebook = "[... earlier notes cut ...]\n" + notebook[-keep:].split("\n", 1)[-1]
            _note(cut, "notebook")
        elif notebook:
            notebook = ""
            _note(cut, "notebook")
        elif len(crashes) > 1:
            crashes = crashes[1:]
            _note(cut, "crashes")
        elif rejected_lines:
            rejected_lines = []
            _note(cut, "rejected")
        elif len(ideas) > 1:
            ideas = ideas[:-1]
            _note(cut, "ideas")
        elif crashes or ideas:
            crashes, ideas = [], []
            _note(cut, "crashes")
        elif len(program) > 400:
            excess_chars = (total(user) - token_budget) * CHARS_PER_TOKEN + 100
            keep = max(200, len(program) - excess_chars)
            program = program[:keep // 2] + "\n[... middle of program.md cut for the token budget ...]\n" + \
                program[-(keep // 2):]
            _note(cut, "program")
            if keep == 200:
                user = render()
                break
        else:
            break
        user = render()
    tokens = total(user)
    return Prompt(system=system, user=user, tokens=tokens, dropped_history=dropped, cut=cut,
                  over_budget=tokens > token_budget)


def _file_block(path: str, content: str) -> str:
    lang = "python" if path.endswith(".py") else ""
    fence = "````" if "```" in content else "```"
    return f"{path}\n{fence}{lang}\n{content.rstrip(chr(10))}\n{fence}"


def _note(cut: list[str], name: str) -> None:
    if name not in cut:
        cut.append(name)


def _short(text: str, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
