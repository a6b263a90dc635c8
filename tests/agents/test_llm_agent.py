"""LLM agents through the real SDKs against a real HTTP server on 127.0.0.1.

The server answers with canned responses (rate limits, server errors, recorded model replies), so
retries, feedback, crash fixes, the notebook and accounting are tested through the whole stack:
the official `openai`/`anthropic` SDK, HTTP, the agent, and the research loop. The real model is
tested in test_local_model_e2e.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from autoresearch.agents import make_agent
from autoresearch.agents.base import Context
from autoresearch.agents.chat import ChatError, OpenAIChat, RetryPolicy
from autoresearch.agents.edits import apply_reply, parse_reply
from autoresearch.agents.llm import LLMAgent, ModelUnavailable
from autoresearch.core.config import ConfigError, ParallelConfig, load_config
from autoresearch.core.loopback import is_loopback
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits
from tests.conftest import step

openai = pytest.importorskip("openai")

SECRET = "sk-test-secret-0123456789abcdef"

# Replies recorded from models (the first three from Gemma 3 270M served by llama.cpp on this
# task's prompt; they show what a small base model does with the format).
RECORDED_GARBAGE = [
    "I'm sorry, I cannot help with that. Please provide more details about the experiment.",
    "DESCRIPTION: Minimise score by editing train.py.\nREASONING: Minimise score by editing train.py.\n"
    "Minimise score by editing train.py.\nMinimise score by editing train.py.",
    "train.py\n```python\nimport os\n\nX = 5.0\nWIDTH = 3\n\nscore = (X - 2.0) ** 2 + 0.1 * (WIDTH - 6) ** 2\n",
]
GOOD_X = ("DESCRIPTION: move X towards 2\nREASONING: the score is quadratic around X=2\n"
          "NOTEBOOK: X near 2 minimises the first term\n\n"
          "train.py\n<<<<<<< SEARCH\nX = 5.0\n=======\nX = 2.5\n>>>>>>> REPLACE\n")
CRASHING = ("DESCRIPTION: use a helper\nREASONING: cleaner\n\n"
            "train.py\n<<<<<<< SEARCH\nX = 5.0\n=======\nX = helper(5.0)\n>>>>>>> REPLACE\n")
FIXING = ("DESCRIPTION: define the missing helper\nREASONING: NameError: helper is not defined\n\n"
          "train.py\n<<<<<<< SEARCH\nX = helper(5.0)\n=======\nX = 2.0\n>>>>>>> REPLACE\n")


def completion(text: str, prompt_tokens: int = 100, completion_tokens: int = 20) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "canned-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def anthropic_message(text: str | None = None, tool_input: dict | None = None) -> dict:
    content = [{"type": "text", "text": text}] if text is not None else \
        [{"type": "tool_use", "id": "toolu_1", "name": "propose_experiment", "input": tool_input}]
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-canned", "content": content,
            "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 120, "output_tokens": 30}}


class CannedServer(ThreadingHTTPServer):
    """Answers POSTs with queued (status, body, headers); the last one repeats. Records requests."""

    daemon_threads = True

    def __init__(self, responses):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.responses = list(responses)
        self.requests: list[dict] = []
        self.headers_seen: list[dict] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next(self):
        with self.lock:
            return self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.requests.append(json.loads(body or b"{}"))
        self.server.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        status, payload, headers = _unpack(self.server.next())
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _unpack(item):
    if isinstance(item, str):
        return 200, completion(item), {}
    if isinstance(item, dict):
        return 200, item, {}
    status, payload, *rest = item
    return status, payload, (rest[0] if rest else {})


ERROR_429 = (429, {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}},
             {"retry-after": "0"})
ERROR_500 = (500, {"error": {"message": "internal error", "type": "server_error"}})


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def agent_for(task: Path, server: CannedServer, sleeps: Sleeps | None = None, **options) -> LLMAgent:
    config = load_config(task)
    options.setdefault("max_retries", 3)
    options.setdefault("backoff_s", 0.01)
    agent = make_agent("openai", config, model="canned-model", base_url=server.url + "/v1", **options)
    if sleeps is not None:
        agent.backend.retry.sleep = sleeps
        agent.sleep = sleeps
    return agent


def research(task: Path, agent, tag: str = "t") -> Research:
    # Serial (the agent thinks only while nothing runs): the canned replies follow each other's results.
    r = Research(load_config(task), agent, tag=tag, parallel=ParallelConfig(ahead=0))
    r.open()
    return r


def ctx_for(task: Path) -> Context:
    config = load_config(task)
    return Context(config=config, program="Minimise score.", files={"train.py": (task / "train.py").read_text()},
                   history=[], ideas=[], best=None, tag="t")


# -- the backend: retries with backoff on a real server --------------------------------------------

def test_429_and_500_are_retried_with_backoff_then_succeed(toy_task: Path):
    sleeps = Sleeps()
    with CannedServer([ERROR_429, ERROR_500, GOOD_X]) as server:
        backend = OpenAIChat("canned-model", base_url=server.url + "/v1", api_key_env=None,
                                retry=RetryPolicy(max_retries=4, backoff_s=0.5, max_backoff_s=8, sleep=sleeps))
        result = backend.complete("system", [{"role": "user", "content": "hi"}], max_tokens=50)
    assert result.text == GOOD_X and result.attempts == 3
    assert (result.prompt_tokens, result.completion_tokens, result.model) == (100, 20, "canned-model")
    assert len(server.requests) == 3 and len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 0.625 and 1.0 <= sleeps[1] <= 1.25  # exponential, with jitter
    assert server.requests[0]["messages"][0] == {"role": "system", "content": "system"}


def test_retry_after_is_honoured_up_to_the_cap():
    sleeps = Sleeps()
    slow = (429, {"error": {"message": "slow down"}}, {"retry-after": "30"})
    with CannedServer([slow, "ok"]) as server:
        backend = OpenAIChat("m", base_url=server.url + "/v1", api_key_env=None,
                                retry=RetryPolicy(max_retries=2, backoff_s=0.1, max_backoff_s=5, sleep=sleeps))
        backend.complete("s", [{"role": "user", "content": "x"}], max_tokens=5)
    assert sleeps == [5]


def test_a_server_that_keeps_failing_raises_a_clear_error():
    sleeps = Sleeps()
    with CannedServer([ERROR_500]) as server:
        backend = OpenAIChat("m", base_url=server.url + "/v1", api_key_env=None,
                                retry=RetryPolicy(max_retries=2, backoff_s=0.01, sleep=sleeps))
        with pytest.raises(ChatError, match="still failing after 3 attempts") as e:
            backend.complete("s", [{"role": "user", "content": "x"}], max_tokens=5)
    assert e.value.status == 500 and not e.value.permanent and len(server.requests) == 3


def test_refused_connections_are_retried():
    sleeps = Sleeps()
    with CannedServer(["ok"]) as server:
        port = server.server_address[1]
    # The server is closed: the port now refuses connections.
    backend = OpenAIChat("m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env=None,
                            retry=RetryPolicy(max_retries=3, backoff_s=0.01, sleep=sleeps))
    with pytest.raises(ChatError, match="APIConnectionError") as e:
        backend.complete("s", [{"role": "user", "content": "x"}], max_tokens=5)
    assert e.value.attempts == 4 and len(sleeps) == 3


def test_auth_errors_fail_at_once_and_the_key_never_leaks(monkeypatch):
    monkeypatch.setenv("MY_KEY", SECRET)
    bad = (401, {"error": {"message": f"Incorrect API key provided: {SECRET}", "type": "invalid_request_error"}})
    with CannedServer([bad]) as server:
        backend = OpenAIChat("m", base_url=server.url + "/v1", api_key_env="MY_KEY",
                                retry=RetryPolicy(max_retries=5, sleep=Sleeps()))
        with pytest.raises(ChatError) as e:
            backend.complete("s", [{"role": "user", "content": "x"}], max_tokens=5)
    assert e.value.permanent and e.value.status == 401 and len(server.requests) == 1
    assert SECRET not in str(e.value) and "***" in str(e.value)
    assert server.headers_seen[0]["authorization"] == f"Bearer {SECRET}"  # it was sent, only to the server


def test_missing_key_for_a_remote_api_is_a_config_error(toy_task: Path, monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(ValueError, match="NOPE_KEY"):
        make_agent("openai", load_config(toy_task), model="gpt-x", api_key_env="NOPE_KEY")
    assert is_loopback("http://127.0.0.1:8080/v1") and is_loopback("http://localhost/v1")
    assert not is_loopback("https://api.example.com/v1")


def test_unknown_options_are_refused(toy_task: Path):
    with pytest.raises(ConfigError, match=r"(?s)\[agent.temprature\] is not an option.*fix: use one of"):
        make_agent("openai", load_config(toy_task), model="m", base_url="http://127.0.0.1:1/v1", temprature=0.1)


def test_json_schema_falls_back_to_json_object_for_llama_cpp_servers(toy_task: Path):
    rejected = (422, {"detail": [{"msg": "Input should be 'text' or 'json_object'"}]})
    reply = json.dumps({"description": "d", "reasoning": "r", "notebook": "",
                        "edits": [{"path": "train.py", "search": "WIDTH = 3", "replace": "WIDTH = 6"}]})
    with CannedServer([rejected, reply]) as server:
        agent = agent_for(toy_task, server, structured_output=True)
        proposal = agent.propose(ctx_for(toy_task))
    assert server.requests[0]["response_format"]["type"] == "json_schema"
    assert server.requests[1]["response_format"]["type"] == "json_object"
    assert "schema" in server.requests[1]["response_format"]
    assert agent.backend.structured == "json_object"
    assert "WIDTH = 6" in proposal.edits["train.py"]


def test_system_as_user_merges_the_system_prompt(toy_task: Path):
    with CannedServer([GOOD_X]) as server:
        agent = agent_for(toy_task, server, system_as_user=True)
        agent.propose(ctx_for(toy_task))
    messages = server.requests[0]["messages"]
    assert [m["role"] for m in messages] == ["user"] and "Answer in exactly this format" in messages[0]["content"]


# -- the agent in the loop ------------------------------------------------------------------------------

def test_feedback_retry_turns_a_bad_reply_into_a_good_proposal(toy_task: Path):
    bad = "train.py\n<<<<<<< SEARCH\nX = 4.0\n=======\nX = 2.0\n>>>>>>> REPLACE\n"
    with CannedServer([bad, GOOD_X]) as server:
        agent = agent_for(toy_task, server, price_per_mtok_in=2.0, price_per_mtok_out=10.0)
        r = research(toy_task, agent)
        r.run(Limits(max_experiments=2))
        exps = r.ledger.experiments("t")
    assert [e.status for e in exps] == ["keep", "keep"]
    info = exps[1].info
    assert info["attempts"] == 2 and info["prompt_tokens"] == 200 and info["completion_tokens"] == 40
    assert info["model"] == "canned-model" and info["latency_s"] > 0
    assert info["cost_usd"] == pytest.approx((200 * 2.0 + 40 * 10.0) / 1e6)
    assert "was not found in train.py" in info["feedback"][0]
    # The second request carried the rejected reply and the problem back to the model.
    second = server.requests[1]["messages"]
    assert second[-2] == {"role": "assistant", "content": bad}
    assert "could not be used" in second[-1]["content"] and "closest lines" in second[-1]["content"]
    assert exps[1].description == "move X towards 2"


def test_garbage_replies_become_a_rejected_experiment_not_an_exception(toy_task: Path):
    with CannedServer(RECORDED_GARBAGE) as server:
        agent = agent_for(toy_task, server, max_feedback_retries=2)
        r = research(toy_task, agent)
        step(r)  # baseline
        exp = step(r)
    assert exp.status == "rejected"
    assert exp.info["attempts"] == 3 and len(exp.info["feedback"]) == 3
    assert "could not be used after 3 tries" in exp.reason
    assert exp.description.startswith("rejected:")
    # The next prompt tells the model what was rejected.
    assert agent.rejections and "no edits" in agent.rejections[-1].reason


def test_syntax_errors_and_frozen_files_go_back_to_the_model(toy_task: Path):
    syntax = "train.py\n<<<<<<< SEARCH\nWIDTH = 3\n=======\nWIDTH = = 3\n>>>>>>> REPLACE\n"
    frozen = "prepare.py\n<<<<<<< SEARCH\nEVAL = 1\n=======\nEVAL = 0\n>>>>>>> REPLACE\n"
    with CannedServer([syntax, frozen, GOOD_X]) as server:
        agent = agent_for(toy_task, server, max_feedback_retries=2)
        proposal = agent.propose(ctx_for(toy_task))
    assert proposal.edits and proposal.info["attempts"] == 3
    assert "syntax error at line 5" in proposal.info["feedback"][0]
    assert "prepare.py may not be changed" in proposal.info["feedback"][1]
    assert "prepare.py may not be changed" in server.requests[2]["messages"][-1]["content"]


def test_crash_gets_fix_attempts_built_on_the_crashed_commit(toy_task: Path):
    with CannedServer([CRASHING, FIXING]) as server:
        agent = agent_for(toy_task, server, max_fix_attempts=2)
        r = research(toy_task, agent)
        r.run(Limits(max_experiments=3))
        exps = r.ledger.experiments("t")
    assert [e.status for e in exps] == ["keep", "crash", "keep"]
    crash, fix = exps[1], exps[2]
    assert "NameError" in crash.log_tail
    assert fix.parent_commit == crash.commit  # built on the crashed commit, judged against the best
    assert fix.info["fix_of"] == crash.id and fix.info["fix_attempt"] == 1
    assert fix.description.startswith(f"fix #{crash.id}:")
    fix_prompt = server.requests[1]["messages"][-1]["content"]
    assert "X = helper(5.0)" in fix_prompt and "NameError" in fix_prompt and "crashed" in fix_prompt


def test_fix_attempts_are_bounded(toy_task: Path):
    still = ("DESCRIPTION: another helper\n\ntrain.py\n<<<<<<< SEARCH\nX = helper(5.0)\n=======\n"
             "X = helper2(5.0)\n>>>>>>> REPLACE\n")
    again = ("DESCRIPTION: and another\n\ntrain.py\n<<<<<<< SEARCH\nX = helper2(5.0)\n=======\n"
             "X = helper3(5.0)\n>>>>>>> REPLACE\n")
    with CannedServer([CRASHING, still, again, GOOD_X]) as server:
        agent = agent_for(toy_task, server, max_fix_attempts=2)
        r = research(toy_task, agent)
        r.run(Limits(max_experiments=5))
        exps = r.ledger.experiments("t")
    assert [e.status for e in exps] == ["keep", "crash", "crash", "crash", "keep"]
    assert [e.info.get("fix_attempt") for e in exps[1:]] == [None, 1, 2, None]
    assert exps[4].parent_commit == exps[0].commit  # after two failed fixes: a fresh idea on the best


def test_model_may_decline_a_fix(toy_task: Path):
    with CannedServer([CRASHING, "SKIP", GOOD_X]) as server:
        agent = agent_for(toy_task, server)
        r = research(toy_task, agent)
        r.run(Limits(max_experiments=3))
        exps = r.ledger.experiments("t")
    assert [e.status for e in exps] == ["keep", "crash", "keep"]
    assert "fix_of" not in exps[2].info and exps[2].description == "move X towards 2"
    assert exps[2].info["attempts"] == 2 and exps[2].info["prompt_tokens"] == 200  # the SKIP call counts


def user_prompt(request: dict) -> str:
    return next(m["content"] for m in request["messages"] if m["role"] == "user")


def test_notebook_is_appended_and_read_back(toy_task: Path):
    closer = ("DESCRIPTION: X closer to 2\nNOTEBOOK: halving the distance to 2 keeps paying off\n\n"
              "train.py\n<<<<<<< SEARCH\nX = 2.5\n=======\nX = 2.2\n>>>>>>> REPLACE\n")
    with CannedServer([GOOD_X, closer]) as server:
        agent = agent_for(toy_task, server, max_feedback_retries=0)
        r = research(toy_task, agent)
        for _ in range(3):
            step(r)
        notebook = toy_task / ".autoresearch" / "notebooks" / "t.md"
        text = notebook.read_text()
        assert text.startswith("# Lab notebook: toy, research run t")
        assert "after #1" in text and "X near 2 minimises the first term" in text
        assert "after #2" in text and "halving the distance" in text
        # The next prompt carries the notebook ...
        assert "X near 2 minimises the first term" in user_prompt(server.requests[1])
        r.close()
        # ... and so does the first prompt after a restart (a new agent and loop).
        r2 = research(toy_task, agent_for(toy_task, server, max_feedback_retries=0))
        step(r2)
        assert "halving the distance to 2 keeps paying off" in user_prompt(server.requests[-1])


def test_the_api_key_is_never_recorded(toy_task: Path, monkeypatch):
    monkeypatch.setenv("CANNED_KEY", SECRET)
    with CannedServer([ERROR_500, GOOD_X]) as server:
        agent = agent_for(toy_task, server, api_key_env="CANNED_KEY")
        r = research(toy_task, agent)
        r.run(Limits(max_experiments=2))
        r.close()
    state = toy_task / ".autoresearch"
    for path in state.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert server.headers_seen[0]["authorization"] == f"Bearer {SECRET}"


def test_a_model_that_keeps_failing_stops_the_loop_cleanly(toy_task: Path):
    with CannedServer([ERROR_500]) as server:
        agent = agent_for(toy_task, server, max_retries=1)
        r = research(toy_task, agent)
        messages = []
        r.observer.message = messages.append
        runs = r.run(Limits(max_experiments=3))
    assert runs == 1  # the baseline; then the agent reports the model as unavailable
    assert any("still failing after 2 attempts" in m for m in messages)


def test_on_failure_wait_waits_then_recovers(toy_task: Path):
    sleeps = Sleeps()
    with CannedServer([ERROR_500, ERROR_500, GOOD_X]) as server:
        agent = agent_for(toy_task, server, sleeps, max_retries=0, on_failure="wait", failure_wait_s=30,
                          max_failure_wait_s=300)
        proposal = agent.propose(ctx_for(toy_task))
    assert proposal.edits and sleeps == [30, 30]
    with CannedServer([ERROR_500]) as server:
        agent = agent_for(toy_task, server, Sleeps(), max_retries=0, on_failure="wait", failure_wait_s=30,
                          max_failure_wait_s=60)
        with pytest.raises(ModelUnavailable, match="waited 60s"):
            agent.propose(ctx_for(toy_task))


def test_history_and_best_reach_the_prompt(toy_task: Path):
    worse = GOOD_X.replace("X = 2.5", "X = 9.0").replace("move X towards 2", "push X up")
    with CannedServer([worse, GOOD_X]) as server:
        agent = agent_for(toy_task, server)
        r = research(toy_task, agent)
        r.run(Limits(max_experiments=3))
    prompt = user_prompt(server.requests[-1])
    assert "#2 discard score 49.9" in prompt and "push X up" in prompt and "Best so far: #1" in prompt


# -- the Anthropic backend ---------------------------------------------------------------------------

def test_anthropic_backend_retries_overload_and_reads_text(toy_task: Path):
    pytest.importorskip("anthropic")
    overloaded = (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    with CannedServer([overloaded, anthropic_message(GOOD_X)]) as server:
        agent = make_agent("anthropic", load_config(toy_task), model="claude-canned", base_url=server.url,
                           max_retries=2, backoff_s=0.01)
        proposal = agent.propose(ctx_for(toy_task))
    assert "X = 2.5" in proposal.edits["train.py"]
    assert proposal.info["model"] == "claude-canned" and proposal.info["prompt_tokens"] == 120
    assert proposal.info["transport_retries"] == 1
    request = server.requests[-1]
    assert request["system"].startswith("You are a researcher") and request["messages"][0]["role"] == "user"


def test_anthropic_structured_output_forces_a_tool_call(toy_task: Path):
    pytest.importorskip("anthropic")
    edit = {"description": "widen", "reasoning": "r", "notebook": "",
            "edits": [{"path": "train.py", "search": "WIDTH = 3", "replace": "WIDTH = 6"}]}
    with CannedServer([anthropic_message(tool_input=edit)]) as server:
        agent = make_agent("anthropic", load_config(toy_task), model="claude-canned", base_url=server.url,
                           structured_output=True)
        proposal = agent.propose(ctx_for(toy_task))
    assert "WIDTH = 6" in proposal.edits["train.py"] and proposal.description == "widen"
    request = server.requests[0]
    assert request["tool_choice"] == {"type": "tool", "name": "propose_experiment"}
    assert request["tools"][0]["input_schema"]["properties"]["edits"]


# -- coding-agent CLIs ---------------------------------------------------------------------------------

EDITOR = """\
import pathlib, sys
prompt = pathlib.Path(sys.argv[1]).read_text()
assert "Do not run the experiment" in prompt
p = pathlib.Path("train.py")
p.write_text(p.read_text().replace("WIDTH = 3", "WIDTH = 6"))
pathlib.Path("scratch.log").write_text("tool junk")  # a new file that is not editable: ignored
print("DESCRIPTION: widen to 6")
"""


def test_cli_agent_edits_in_a_scratch_worktree_and_the_harness_runs_it(toy_task: Path, tmp_path: Path):
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    agent = make_agent("cli", load_config(toy_task), command=f"{sys.executable} {script} {{prompt_file}}")
    r = research(toy_task, agent)
    r.run(Limits(max_experiments=2))
    exps = r.ledger.experiments("t")
    assert [e.status for e in exps] == ["keep", "keep"]
    assert exps[1].description == "widen to 6" and exps[1].info["exit_code"] == 0
    assert exps[1].info["ignored_files"] == ["scratch.log (new, not editable)"]
    assert not list((toy_task / ".autoresearch" / "worktrees").glob("agent-*"))
    assert "agent-" not in subprocess.run(["git", "-C", str(toy_task), "worktree", "list"], capture_output=True,
                                          text=True).stdout


def test_cli_agent_touching_a_frozen_file_is_rejected_by_the_harness(toy_task: Path):
    code = "import pathlib; pathlib.Path('prepare.py').write_text('EVAL = 0\\n')"
    agent = make_agent("cli", load_config(toy_task), command=[sys.executable, "-c", code, "{prompt_file}"])
    r = research(toy_task, agent)
    step(r)
    exp = step(r)
    assert exp.status == "rejected" and "prepare.py is frozen" in exp.reason


def test_cli_agent_that_is_not_installed_stops_cleanly(toy_task: Path):
    agent = make_agent("cli", load_config(toy_task), command="no-such-coding-agent-xyz --task {prompt}")
    r = research(toy_task, agent)
    messages = []
    r.observer.message = messages.append
    assert r.run(Limits(max_experiments=3)) == 1
    assert any("not installed" in m for m in messages)


def test_cli_presets_and_template_checks(toy_task: Path):
    config = load_config(toy_task)
    aider = make_agent("aider", config, model="openai/gemma3-270m", base_url="http://127.0.0.1:8080/v1")
    assert aider.argv[0] == "aider" and "--openai-api-base" in aider.argv and "{files}" in aider.argv
    assert aider.env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert make_agent("claude-code", config).argv[:2] == ["claude", "-p"]
    assert make_agent("codex", config).argv[:2] == ["codex", "exec"]
    with pytest.raises(ValueError, match="passes no prompt"):
        make_agent("cli", config, command="tool --do-something")


def test_importing_autoresearch_does_not_import_the_sdks():
    code = "import sys, autoresearch.agents, autoresearch.apps.cli; print('openai' in sys.modules, 'anthropic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_recorded_small_model_replies_parse_without_exceptions():
    files = {"train.py": "X = 5.0\n"}
    for text in RECORDED_GARBAGE + ["", "{", "```", "<<<<<<< SEARCH", "=======\n>>>>>>> REPLACE", "\x00\x01"]:
        out = apply_reply(parse_reply(text, list(files)), files)
        assert not out.ok and out.problems
