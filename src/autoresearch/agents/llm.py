"""The LLM agent: prompt → chat backend → parse → validated edits → Proposal.

One `propose()` may call the model several times: a reply whose edits do not apply, touch a file
that is not editable, or do not compile is sent back with the problems, up to
`max_feedback_retries` times, so that no run is spent on it. What still fails becomes a proposal
without edits that the harness records as rejected (with the problems in `info`), never an
exception. After a crash the agent gets the traceback and up to `max_fix_attempts` tries to fix
it, each built on the crashed commit (`Proposal.parent_id`) and recorded as its own experiment.

Every proposal records in `info`: model, prompt_tokens, completion_tokens, latency_s, attempts
(model calls), cost_usd (when prices are configured), and what the agent did along the way.

The model may add a NOTEBOOK section; its text is appended to the research run's lab notebook,
which later prompts include (its latest part, within the token budget).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from autoresearch.agents import options
from autoresearch.agents.base import Context, NoProposal, Proposal
from autoresearch.agents.chat import AnthropicChat, ChatError, OpenAIChat, RetryPolicy
from autoresearch.agents.edits import Applied, apply_reply, parse_reply, reply_schema
from autoresearch.agents.prompt import Rejection, build_prompt
from autoresearch.core.config import TaskConfig, edit_problem, is_editable
from autoresearch.core.records import Experiment
from autoresearch.repo import gitops

MAX_ECHO_CHARS = 6000  # a rejected reply sent back to the model is cut to this
NOTE_MAX_CHARS = 800  # one notebook entry
MAX_FIX_REJECTIONS = 2  # propose() calls spent on fixing one crash whose replies were all rejected


class ModelUnavailable(NoProposal):
    """The model backend keeps failing; the loop stops (with this message) instead of crashing."""


class LLMAgent:
    def __init__(self, config: TaskConfig, backend: Any, *, name: str = "llm", max_tokens: int = 4096,
                 temperature: float | None = None, prompt_token_budget: int = 24000,
                 price_per_mtok_in: float | None = None, price_per_mtok_out: float | None = None,
                 max_feedback_retries: int = 2, max_fix_attempts: int = 2, structured_output: bool = False,
                 whole_file_max_lines: int = 200, max_edits: int = 4, notebook: bool = True,
                 on_failure: str = "stop",
                 failure_wait_s: float = 60.0, max_failure_wait_s: float = 3600.0, seed: int | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        if on_failure not in ("stop", "wait"):
            raise ValueError(f"on_failure {on_failure!r}: use \"stop\" or \"wait\"")
        for key, value in (("max_tokens", max_tokens), ("prompt_token_budget", prompt_token_budget)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        self.config, self.backend, self.name = config, backend, name
        self.max_tokens, self.temperature, self.budget = max_tokens, temperature, prompt_token_budget
        self.price_in, self.price_out = price_per_mtok_in, price_per_mtok_out
        self.max_feedback_retries, self.max_fix_attempts = max(0, int(max_feedback_retries)), max(0, int(max_fix_attempts))
        self.structured = bool(structured_output)
        self.whole_file_max_lines, self.use_notebook = whole_file_max_lines, notebook
        self.max_edits = max(1, int(max_edits))  # edits per structured reply
        self.on_failure, self.failure_wait_s, self.max_failure_wait_s = on_failure, failure_wait_s, max_failure_wait_s
        self.seed, self.sleep = seed, sleep
        self.calls = 0
        self.rejections: list[Rejection] = []  # this agent's proposals that were not run (kept across calls)
        self._fix_rejections: dict[int, int] = {}  # crashed experiment id -> fix replies all rejected
        self._skipped_fixes: set[int] = set()  # crashes the model declined to fix
        self._carry: dict[str, Any] = {}

    # -- the protocol -----------------------------------------------------------------------------

    def propose(self, ctx: Context) -> Proposal:
        fix = self._crash_to_fix(ctx)
        if fix is not None:
            proposal = self._propose(ctx, fix)
            if proposal is not None:
                return proposal
        proposal = self._propose(ctx, None)
        assert proposal is not None
        return proposal

    # -- one proposal -------------------------------------------------------------------------------

    def _propose(self, ctx: Context, fix: tuple[Experiment, int, int] | None) -> Proposal | None:
        files, task, parent_id = ctx.files, None, None
        info: dict[str, Any] = {"model": getattr(self.backend, "model", "?"), "prompt_tokens": 0,
                                "completion_tokens": 0, "latency_s": 0.0, "attempts": 0}
        info.update(self._carry)  # a declined fix's calls count towards the proposal that follows
        self._carry = {}
        if fix is not None:
            crashed, root, attempt = fix
            files, parent_id, task = gitops.editable_files(self.config, crashed.commit), crashed.id, self._fix_task(fix)
            info.update(fix_of=root, fix_attempt=attempt)
        notebook_text = self._read_notebook(ctx.notebook)
        prompt = build_prompt(ctx, token_budget=self.budget, structured=self.structured, files=files,
                              notebook_text=notebook_text, rejected=self.rejections, task=task)
        info.update(prompt_tokens_estimate=prompt.tokens)
        if prompt.dropped_history:
            info["history_dropped"] = prompt.dropped_history
        if prompt.cut:
            info["prompt_cut"] = prompt.cut
        schema = reply_schema(files, max_edits=self.max_edits) if self.structured else None
        messages = [{"role": "user", "content": prompt.user}]
        feedback: list[str] = []
        reply_text, applied, reply = "", Applied(), None
        for round_ in range(1 + self.max_feedback_retries):
            result = self._complete(prompt.system, messages, schema)
            _tally(info, result)
            reply_text = result.text
            reply = parse_reply(reply_text, list(files))
            if fix is not None and reply.skip and not reply.blocks:
                self._skipped_fixes.add(fix[0].id)
                self._carry = {k: info[k] for k in ("prompt_tokens", "completion_tokens", "latency_s", "attempts")}
                return None
            applied = apply_reply(reply, files, whole_file_max_lines=self.whole_file_max_lines,
                                  may_edit=self._may_edit)
            problems = applied.problems or self._validate(applied.edits)
            if not problems:
                break
            feedback.append("; ".join(problems)[:1000])
            if round_ < self.max_feedback_retries:
                messages += [{"role": "assistant", "content": _cut(reply_text, MAX_ECHO_CHARS)},
                             {"role": "user", "content": self._feedback(problems, result.finish_reason)}]
        self._account(info)
        if feedback:
            info["feedback"] = feedback
        if reply is not None and reply.reasoning:
            info["reasoning"] = _cut(reply.reasoning, 1000)
        description = (reply.description if reply else "") or "(no description)"
        if not applied.ok or problems:
            return self._rejected(description, feedback[-1], reply_text, info, fix, parent_id)
        if reply.notebook and self.use_notebook and ctx.notebook is not None:
            self._append_notebook(ctx, reply.notebook)
            info["notebook"] = True
        idea_id = reply.idea_id if reply.idea_id in {i.id for i in ctx.ideas} else None
        if fix is not None:
            description = f"fix #{fix[0].id}: {description}"
        return Proposal(description=description, edits=applied.edits, idea_id=idea_id, info=info,
                        parent_id=parent_id)

    def _fix_task(self, fix: tuple[Experiment, int, int]) -> str:
        crashed, _, attempt = fix
        return (f"Experiment #{crashed.id} ({crashed.description}) crashed; its output ends with the "
                f"traceback shown above. The files above are that experiment's version. Fix the crash "
                f"with the smallest change that keeps the experiment's idea (fix attempt {attempt} of "
                f"{self.max_fix_attempts}). If the idea itself cannot work, answer only: SKIP")

    def _rejected(self, description: str, problem: str, reply_text: str, info: dict[str, Any],
                  fix: tuple[Experiment, int, int] | None, parent_id: int | None) -> Proposal:
        """A reply that could not be used even after feedback: a rejection the model hears of next time."""
        info["reply_tail"] = _cut(reply_text[-1500:], 1500)
        self.rejections = [*self.rejections, Rejection(description, problem)][-10:]
        if fix is not None:
            self._fix_rejections[fix[0].id] = self._fix_rejections.get(fix[0].id, 0) + 1
        reason = f"the model's reply could not be used after {info['attempts']} tries: {problem}"
        return Proposal(description=f"rejected: {description}", edits={}, info=info, parent_id=parent_id,
                        rejection=reason[:1500])

    def _complete(self, system: str, messages: list[dict[str, str]], schema: dict | None):
        waited = 0.0
        while True:
            self.calls += 1
            seed = None if self.seed is None else self.seed + self.calls
            try:
                return self.backend.complete(system, messages, max_tokens=self.max_tokens,
                                             temperature=self.temperature, schema=schema, seed=seed)
            except ChatError as e:
                if e.permanent or self.on_failure == "stop" or waited >= self.max_failure_wait_s:
                    extra = f" (waited {waited:.0f}s in all)" if waited else ""
                    raise ModelUnavailable(f"{self.name}: {e}{extra}") from e
                wait = min(self.failure_wait_s, self.max_failure_wait_s - waited)
                self.sleep(wait)
                waited += wait

    # -- helpers --------------------------------------------------------------------------------

    def _crash_to_fix(self, ctx: Context) -> tuple[Experiment, int, int] | None:
        excluded = self._skipped_fixes | {i for i, n in self._fix_rejections.items() if n >= MAX_FIX_REJECTIONS}
        return crash_to_fix(ctx.history, self.max_fix_attempts, excluded)

    def _may_edit(self, path: str) -> bool:
        return is_editable(self.config, path)

    def _validate(self, edits: dict[str, str]) -> list[str]:
        """The harness's checks, done here so that a problem goes back to the model, not into a run."""
        problems = [edit_problem(self.config, path, content) for path, content in edits.items()]
        return [f"after your edits {p}" if "syntax error" in p else p for p in problems if p]

    def _feedback(self, problems: list[str], finish_reason: str | None) -> str:
        text = "Your answer could not be used:\n- " + "\n- ".join(problems)
        if finish_reason == "length":
            text += "\n(Your answer was cut off at the token limit: make it shorter.)"
        return text + "\nAnswer again in full, in the same format, with corrected edits."

    def _account(self, info: dict[str, Any]) -> None:
        if self.price_in is not None or self.price_out is not None:
            cost = info["prompt_tokens"] * (self.price_in or 0.0) + info["completion_tokens"] * (self.price_out or 0.0)
            info["cost_usd"] = round(cost / 1e6, 8)

    def _read_notebook(self, path: Path | None) -> str:
        if not self.use_notebook or path is None or not path.is_file():
            return ""
        return path.read_text(errors="replace")

    def _append_notebook(self, ctx: Context, note: str) -> None:
        path = ctx.notebook
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        after = f"after #{ctx.history[-1].id}" if ctx.history else "at the start"
        entry = " ".join(note.split())[:NOTE_MAX_CHARS]
        new = not path.exists()
        with open(path, "a") as f:
            if new:
                f.write(f"# Lab notebook: {ctx.config.name}, research run {ctx.tag}\n\n")
            f.write(f"- ({time.strftime('%Y-%m-%d %H:%M')}, {after}, {self.name}) {entry}\n")


def crash_to_fix(history: list[Experiment], max_fix_attempts: int,
                 excluded: set[int] = frozenset()) -> tuple[Experiment, int, int] | None:  # type: ignore[assignment]
    """The latest experiment if it crashed and has fix attempts left: (it, the first crash, attempt number).

    Fixes chain: a fix that crashes again is fixed in turn, up to `max_fix_attempts` per first crash.
    """
    if max_fix_attempts <= 0 or not history:
        return None
    last = history[-1]
    if last.status != "crash" or not last.commit or last.agent == "baseline":
        return None
    root = int(last.info.get("fix_of") or last.id)
    attempt = int(last.info.get("fix_attempt") or 0) + 1
    if attempt > max_fix_attempts or last.id in excluded or root in excluded:
        return None
    return last, root, attempt


def _tally(info: dict[str, Any], result) -> None:
    """One model call's cost and quirks, added to the proposal's record."""
    info["attempts"] += 1
    info["prompt_tokens"] += result.prompt_tokens
    info["completion_tokens"] += result.completion_tokens
    info["latency_s"] = round(info["latency_s"] + result.latency_s, 3)
    info["model"] = result.model
    if result.attempts > 1:
        info["transport_retries"] = info.get("transport_retries", 0) + result.attempts - 1
    if result.tokens_estimated:
        info["tokens_estimated"] = True
    if result.finish_reason == "length":
        info["truncated_replies"] = info.get("truncated_replies", 0) + 1


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n[...]"


# -- factories for the registry ------------------------------------------------------------------

AGENT_KEYS = tuple(options.schema(LLMAgent.__init__))  # what LLMAgent takes; the rest is the chat client's
RETRY_OPTIONS = {"max_retries": int, "backoff_s": float, "max_backoff_s": float}  # -> RetryPolicy


def _retry(options: dict[str, Any]) -> RetryPolicy:
    return RetryPolicy(max_retries=int(options.pop("max_retries", 5)), backoff_s=float(options.pop("backoff_s", 1.0)),
                       max_backoff_s=float(options.pop("max_backoff_s", 60.0)))


def _split(options: dict[str, Any], allowed_backend: set[str], kind: str) -> tuple[dict, dict]:
    agent = {k: options.pop(k) for k in list(options) if k in AGENT_KEYS}
    backend = {k: options.pop(k) for k in list(options) if k in allowed_backend}
    if options:
        known = sorted(set(AGENT_KEYS) | allowed_backend | {"model", "structured_output", "max_retries", "backoff_s",
                                                            "max_backoff_s"})
        raise TypeError(f"unknown option(s) for the {kind} agent: {', '.join(sorted(options))}; "
                        f"known: {', '.join(known)}")
    return agent, backend


def openai_agent(config: TaskConfig, model: str = "", **options: Any) -> LLMAgent:
    """`[agent] name = "openai"`: OpenAI or any OpenAI-compatible server (base_url)."""
    options = dict(options)
    structured = options.pop("structured_output", False)
    mode = {True: "json_schema", False: None}.get(structured, structured) if isinstance(structured, bool) \
        else structured
    retry = _retry(options)
    agent, backend = _split(options, {"base_url", "api_key_env", "timeout_s", "extra_body", "system_as_user"},
                             "openai")
    if "timeout_s" in backend:
        backend["timeout_s"] = float(backend["timeout_s"])
    return LLMAgent(config, OpenAIChat(model, retry=retry, structured=mode, **backend), name="openai",
                    structured_output=bool(mode), **agent)


def anthropic_agent(config: TaskConfig, model: str = "", **options: Any) -> LLMAgent:
    """`[agent] name = "anthropic"`: Claude models through the Messages API."""
    options = dict(options)
    structured = bool(options.pop("structured_output", False))
    retry = _retry(options)
    agent, backend = _split(options, {"base_url", "api_key_env", "timeout_s"}, "anthropic")
    agent.setdefault("max_tokens", 4096)
    return LLMAgent(config, AnthropicChat(model, retry=retry, structured=structured, **backend), name="anthropic",
                    structured_output=structured, **agent)


# The [agent] options each factory takes, typed (checked by agents.make_agent before the call).
openai_agent.option_schema = options.schema(  # type: ignore[attr-defined]
    LLMAgent.__init__, OpenAIChat.__init__, extra={**RETRY_OPTIONS, "structured_output": bool | str})
anthropic_agent.option_schema = options.schema(  # type: ignore[attr-defined]
    LLMAgent.__init__, AnthropicChat.__init__, extra=RETRY_OPTIONS)
