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
        if e.status in ("crash", "timeout", "pruned"):  # pruned: how far behind the best it was, and when
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
    """The system and user messages for one proposal, cut to `token_budget` (see _Sections.shrink).

    `files` overrides the context's files (a crash fix shows the crashed commit's files); `task`
    replaces the closing request (a crash fix asks for the fix).
    """
    system = SYSTEM_CLI if cli else SYSTEM_JSON if structured else SYSTEM_TEXT
    sections = _Sections.of(ctx, ctx.files if files is None else files, cli=cli, notebook=notebook_text,
                            rejected=rejected, task=task)
    cut: list[str] = []
    user = sections.render()
    while (excess := estimate_tokens(system) + estimate_tokens(user) - token_budget) > 0:
        what = sections.shrink(excess)
        if what is None:
            break
        _note(cut, what)
        user = sections.render()
    tokens = estimate_tokens(system) + estimate_tokens(user)
    return Prompt(system=system, user=user, tokens=tokens, dropped_history=sections.dropped, cut=cut,
                  over_budget=tokens > token_budget)


@dataclass
class _Sections:
    """The parts of the user message, in the order they are shown; shrink() cuts the least useful first."""

    program: str
    goal: str
    file_text: str
    notebook: str
    ideas: list[str]
    history: list[str]
    best: str
    pending: list[str]
    crashes: list[Experiment]
    rejected: list[str]
    closing: str
    dropped: int = 0  # older history lines cut
    program_floor: bool = False  # program.md is down to its minimum: nothing more to cut

    @classmethod
    def of(cls, ctx: Context, files: dict[str, str], *, cli: bool, notebook: str, rejected: Sequence[Rejection],
           task: str | None) -> _Sections:
        metric = ctx.config.metric
        best = ""
        if ctx.best is not None and ctx.best.metric is not None:
            best = f"Best so far: #{ctx.best.id} {metric.name} {ctx.best.metric:.6g}: {_short(ctx.best.description, 200)}"
        ideas = [f"[idea {i.id}] {_short(i.text, 300)}" for i in ctx.ideas[:MAX_IDEAS]]
        return cls(
            program=ctx.program.strip() or "(no program.md)",
            goal=f"Goal: {'lower' if metric.direction == 'minimize' else 'higher'} {metric.name} is better. "
                 f"Editable files: {', '.join(ctx.config.editable)}.",
            file_text="" if cli else "\n\n".join(_file_block(p, c) for p, c in sorted(files.items())),
            notebook=notebook.strip(), ideas=ideas, history=history_lines(ctx.history, metric.name), best=best,
            pending=[f"#{e.id} ({e.status}) {_short(e.description, 160)}" for e in ctx.pending[-MAX_PENDING:]],
            crashes=[e for e in ctx.history if e.status in ("crash", "timeout")][-MAX_CRASHES:],
            rejected=[f"- {_short(r.description, 120)}: {_short(r.reason, 300)}" for r in list(rejected)[-5:]],
            closing=task or ("Propose the next experiment." if not ideas else
                             "Propose the next experiment (an open idea is a good candidate; if you try one, "
                             "add a line IDEA: <number>)."))

    def render(self) -> str:
        parts = [f"# Instructions (program.md)\n\n{self.program}", self.goal]
        if self.file_text:
            parts.append(f"# Editable files at the current best\n\n{self.file_text}")
        if self.notebook:
            parts.append(f"# Lab notebook (insights from earlier experiments)\n\n{self.notebook}")
        if self.ideas:
            parts.append("# Open ideas from the humans\n\n" + "\n".join(self.ideas))
        if self.history:
            head = f"# History ({self.dropped} older experiments not shown)" if self.dropped else "# History"
            parts.append(head + "\n\n" + "\n".join(self.history))
        if self.best:
            parts.append(self.best)
        if self.pending:
            parts.append("# Being tried right now (results not known yet; do not propose these again)\n\n"
                         + "\n".join(self.pending))
        for e in self.crashes:
            tail = (e.log_tail or "")[-CRASH_TAIL_CHARS:].strip()
            parts.append(f"# Experiment #{e.id} ({_short(e.description, 120)}) ended in {e.status}: "
                         f"{_short(e.reason, 200)}\n\n```\n{tail}\n```")
        if self.rejected:
            parts.append("# Your recent proposals that were rejected before running\n\n" + "\n".join(self.rejected))
        parts.append(self.closing)
        return "\n\n".join(parts)

    def shrink(self, excess_tokens: int) -> str | None:
        """Cut one step, least useful first: the oldest history (several lines at a time when far
        over), the notebook, older crashes, rejections, ideas, the middle of program.md. Returns what
        was cut, or None when nothing is left to cut."""
        if self.history:
            n = max(1, min(len(self.history), excess_tokens // 30))
            self.history, self.dropped = self.history[n:], self.dropped + n
            return "history"
        if len(self.notebook) > 200:
            keep = len(self.notebook) // 2
            self.notebook = "[... earlier notes cut ...]\n" + self.notebook[-keep:].split("\n", 1)[-1]
            return "notebook"
        if self.notebook:
            self.notebook = ""
            return "notebook"
        if len(self.crashes) > 1:
            self.crashes = self.crashes[1:]
            return "crashes"
        if self.rejected:
            self.rejected = []
            return "rejected"
        if len(self.ideas) > 1:
            self.ideas = self.ideas[:-1]
            return "ideas"
        if self.crashes or self.ideas:
            self.crashes, self.ideas = [], []
            return "crashes"
        if len(self.program) > 400 and not self.program_floor:
            keep = max(200, len(self.program) - (excess_tokens * CHARS_PER_TOKEN + 100))
            self.program = (self.program[:keep // 2] + "\n[... middle of program.md cut for the token budget ...]\n"
                            + self.program[-(keep // 2):])
            self.program_floor = keep == 200
            return "program"
        return None


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
