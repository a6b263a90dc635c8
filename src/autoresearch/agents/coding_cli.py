"""Coding-agent CLIs as research agents: Claude Code, Codex, aider, or any command template.

The command runs in a scratch git worktree of the current best commit (or of a crashed commit it
is asked to fix), under `<state>/worktrees/agent-<n>`, with the task's instructions as its prompt.
Afterwards the harness reads back what the agent left: every changed tracked file, and new files
that are editable, become the proposal's edits, which the loop validates like any other proposal
(a change to a frozen file gets the proposal rejected). The worktree is then removed. The agent
never runs the experiment: the harness does, so budgets and records stay trustworthy. The CLI's
environment may hold API keys (it is the agent); experiments never see them.

Templates are split like a shell command line (no shell runs them) and these placeholders are
filled in each word: {prompt} (the prompt text), {prompt_file} (a file holding it, outside the
worktree), {workdir}, {model}, {base_url}; a word that is exactly {files} becomes the editable
files, one word each.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from autoresearch.agents import options
from autoresearch.agents.base import Context, Proposal
from autoresearch.agents.llm import ModelUnavailable, crash_to_fix
from autoresearch.agents.prompt import Rejection, build_prompt
from autoresearch.core.config import TaskConfig, is_editable
from autoresearch.repo import gitops

OUTPUT_TAIL_CHARS = 4000
MAX_FAILURES_IN_A_ROW = 3

# Presets: the command and the environment each CLI needs to run unattended and offline of
# anything but its model. Options `model` and `base_url` add the matching flags.
PRESETS: dict[str, dict[str, Any]] = {
    "claude-code": {
        "command": ["claude", "-p", "{prompt}", "--permission-mode", "acceptEdits", "--output-format", "text"],
        "model_flags": ["--model", "{model}"],
        "env": {},
    },
    "codex": {
        "command": ["codex", "exec", "--sandbox", "workspace-write", "--skip-git-repo-check", "--ephemeral",
                    "{prompt}"],
        "model_flags": ["--model", "{model}"],
        "env": {},
    },
    "aider": {
        "command": ["aider", "--yes-always", "--no-auto-commits", "--no-dirty-commits", "--no-gitignore",
                    "--no-check-update", "--no-analytics", "--no-show-release-notes", "--no-pretty", "--no-stream",
                    "--no-fancy-input", "--map-tokens", "0", "--no-show-model-warnings",
                    "--message-file", "{prompt_file}", "{files}"],
        "model_flags": ["--model", "{model}"],
        "base_url_flags": ["--openai-api-base", "{base_url}"],
        # litellm (inside aider) would fetch its model price list from the internet at import.
        "env": {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "AIDER_ANALYTICS": "false",
                "AIDER_CHECK_UPDATE": "false"},
    },
}


class CodingCLIAgent:
    def __init__(self, config: TaskConfig, command: str | list[str] | None = None, *, name: str = "cli",
                 preset: str | None = None, model: str | None = None, base_url: str | None = None,
                 api_key_env: str | None = None, timeout_s: float = 1800.0, env: dict[str, str] | None = None,
                 prompt_token_budget: int = 24000, max_fix_attempts: int = 2, notebook: bool = True,
                 args: list[str] | None = None, seed: int | None = None):
        spec = PRESETS.get(preset or "", {})
        if command is None:
            if not spec:
                raise ValueError("the cli agent needs a command template, e.g. command = \"mytool --task {prompt}\"")
            argv = list(spec["command"])
            if model and spec.get("model_flags"):
                argv[1:1] = spec["model_flags"]
            if base_url and spec.get("base_url_flags"):
                argv[1:1] = spec["base_url_flags"]
        else:
            argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
        if not argv:
            raise ValueError("the cli agent's command is empty")
        if args:  # extra words for a preset (or a template), right after the program name
            argv[1:1] = [str(a) for a in args]
        if not any(p in a for a in argv for p in ("{prompt}", "{prompt_file}")):
            raise ValueError(f"the command {' '.join(argv)!r} passes no prompt: put {{prompt}} or {{prompt_file}} in it")
        self.config, self.argv, self.name = config, argv, name
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.timeout_s, self.budget = float(timeout_s), int(prompt_token_budget)
        self.env = {**spec.get("env", {}), **{k: str(v) for k, v in (env or {}).items()}}
        self.max_fix_attempts, self.use_notebook = int(max_fix_attempts), notebook
        self.runs = 0
        self.failures = 0
        self.rejections: list[Rejection] = []
        self._given_up: set[int] = set()

    # -- the protocol -------------------------------------------------------------------------

    def propose(self, ctx: Context) -> Proposal:
        fix = crash_to_fix(ctx.history, self.max_fix_attempts, self._given_up)
        commit = (ctx.best.commit if ctx.best and ctx.best.commit else
                  gitops.rev_parse(self.config.root, gitops.branch_ref(ctx.tag)))
        task, parent_id, info = None, None, {}
        files = ctx.files
        if fix is not None:
            crashed, root, attempt = fix
            self._given_up.add(crashed.id)  # one try per crashed experiment; a new crash gets its own
            commit, parent_id, files = crashed.commit, crashed.id, gitops.editable_files(self.config, crashed.commit)
            info.update(fix_of=root, fix_attempt=attempt)
            task = (f"Experiment #{crashed.id} ({crashed.description}) crashed with the output shown above; the "
                    f"files in the current directory are that experiment's version. Fix the crash with the "
                    f"smallest change that keeps its idea.")
        notebook = ctx.notebook.read_text(errors="replace") if self.use_notebook and ctx.notebook and \
            ctx.notebook.is_file() else ""
        prompt = build_prompt(ctx, token_budget=self.budget, cli=True, files=files, notebook_text=notebook,
                              rejected=self.rejections, task=task)
        text = f"{prompt.system}\n\n{prompt.user}"
        self.runs += 1
        workdir = self._worktree_path()
        prompt_file = self.config.state_dir / "agent-prompts" / f"{workdir.name}.md"
        prompt_file.parent.mkdir(parents=True, exist_ok=True)
        prompt_file.write_text(text)
        gitops.add_worktree(self.config.root, workdir, commit)
        try:
            argv = self._argv(text, prompt_file, workdir, sorted(files))
            start = time.monotonic()
            exit_code, output = self._run(argv, workdir)
            latency = time.monotonic() - start
            edits, ignored = self._changes(workdir, commit)
        finally:
            gitops.remove_worktree(self.config.root, workdir)
            prompt_file.unlink(missing_ok=True)
        info.update(model=self.model or Path(argv[0]).name, cli=Path(argv[0]).name, exit_code=exit_code,
                    latency_s=round(latency, 3), attempts=1, prompt_tokens_estimate=prompt.tokens,
                    output_tail=output[-OUTPUT_TAIL_CHARS:])
        if ignored:
            info["ignored_files"] = ignored
        description = _description(output) or f"{Path(argv[0]).name} edit"
        if fix is not None:
            description = f"fix #{fix[0].id}: {description}"
        if exit_code != 0 and not edits:
            self.failures += 1
            reason = f"{Path(argv[0]).name} exited with {exit_code} and changed nothing"
            if self.failures >= MAX_FAILURES_IN_A_ROW:
                raise ModelUnavailable(f"{self.name}: {reason}, {self.failures} times in a row; last output:\n"
                                       f"{output[-1500:]}")
            self.rejections.append(Rejection(description, reason))
            return Proposal(description=f"rejected: {description}", edits={}, info=info, parent_id=parent_id,
                            rejection=reason)
        self.failures = 0
        rejection = None
        if not edits:
            rejection = f"{Path(argv[0]).name} changed no file"
            self.rejections.append(Rejection(description, "changed no file"))
        return Proposal(description=description, edits=edits, info=info, parent_id=parent_id, rejection=rejection)

    # -- helpers --------------------------------------------------------------------------------

    def _worktree_path(self) -> Path:
        # Unique per call: several agents may think at once (parallel slots), each in its own worktree.
        return self.config.state_dir / "worktrees" / f"agent-{self.runs}-{uuid.uuid4().hex[:8]}"

    def _argv(self, prompt: str, prompt_file: Path, workdir: Path, files: list[str]) -> list[str]:
        values = {"prompt": prompt, "prompt_file": str(prompt_file), "workdir": str(workdir),
                  "model": self.model or "", "base_url": self.base_url or ""}
        argv: list[str] = []
        for word in self.argv:
            if word == "{files}":
                argv.extend(files)
                continue
            for key, value in values.items():
                word = word.replace("{" + key + "}", value)
            argv.append(word)
        return argv

    def _child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        if self.api_key_env and os.environ.get(self.api_key_env):
            env.setdefault("OPENAI_API_KEY", os.environ[self.api_key_env])
        elif self.base_url and "OPENAI_API_KEY" not in env:
            env["OPENAI_API_KEY"] = "sk-no-key-required"  # local servers ignore it, clients want one
        if self.base_url:
            env.setdefault("OPENAI_API_BASE", self.base_url)
            env.setdefault("OPENAI_BASE_URL", self.base_url)
        return env

    def _run(self, argv: list[str], workdir: Path) -> tuple[int, str]:
        try:
            proc = subprocess.Popen(argv, cwd=workdir, env=self._child_env(), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except FileNotFoundError:
            raise ModelUnavailable(f"{self.name}: the command {argv[0]!r} is not installed (or not on PATH)") from None
        try:
            out, _ = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, _ = proc.communicate()
            return 124, (out or b"").decode(errors="replace") + f"\n[autoresearch: killed after {self.timeout_s:g}s]"
        return proc.returncode, (out or b"").decode(errors="replace")

    def _changes(self, workdir: Path, commit: str) -> tuple[dict[str, str], list[str]]:
        """Edits the agent left: changed tracked files, and new editable files."""
        status = subprocess.run(["git", "-C", str(workdir), "status", "--porcelain", "--untracked-files=all", "-z"],
                                capture_output=True, text=True, check=True).stdout  # unstripped: "XY path"
        # Committed changes count too (aider and others may commit): compare with the start commit.
        committed = gitops.git(workdir, "diff", "--name-only", "-z", commit, "HEAD").split("\0")
        paths: dict[str, str] = {}
        entries = status.split("\0")
        i = 0
        while i < len(entries):
            entry = entries[i]
            i += 1
            if len(entry) < 4:
                continue
            code, path = entry[:2], entry[3:]
            if code[0] in "RC":  # a rename's source follows
                i += 1
            paths[path] = "new" if code == "??" else "changed"
        for path in committed:
            if path:
                paths.setdefault(path, "changed")
        edits, ignored = {}, []
        for path, kind in sorted(paths.items()):
            target = workdir / path
            if not target.is_file():
                ignored.append(f"{path} (deleted)")
                continue
            if kind == "new" and not is_editable(self.config, path):
                ignored.append(f"{path} (new, not editable)")
                continue
            content = target.read_text(errors="replace")
            if content != gitops.read_file(self.config.root, commit, path):
                edits[path] = content
        return edits, ignored


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _description(output: str) -> str:
    for line in reversed(output.splitlines()):
        stripped = line.strip().strip("*`")
        if stripped.upper().startswith("DESCRIPTION:"):
            return " ".join(stripped.split(":", 1)[1].split())[:200]
    return ""


def cli_agent(config: TaskConfig, command: str | list[str] | None = None, **options: Any) -> CodingCLIAgent:
    """`[agent] name = "cli"` with `command = "tool ... {prompt}"`."""
    return CodingCLIAgent(config, command, **options)


def _preset(name: str):
    def factory(config: TaskConfig, command: str | list[str] | None = None, **options: Any) -> CodingCLIAgent:
        return CodingCLIAgent(config, command, name=name, preset=name, **options)
    factory.__name__ = f"{name.replace('-', '_')}_agent"
    return factory


claude_code_agent = _preset("claude-code")
codex_agent = _preset("codex")
aider_agent = _preset("aider")
for _factory in (cli_agent, claude_code_agent, codex_agent, aider_agent):  # checked by agents.make_agent
    _factory.option_schema = options.schema(CodingCLIAgent.__init__)  # type: ignore[attr-defined]
