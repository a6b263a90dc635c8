"""The reference GPT task measures through the harness's trusted step, not what train.py prints.

The hacks reported against the original autoresearch, run through the real research loop on a
research copy of examples/nanogpt (sandboxed when bubblewrap is available): a made-up metric
line, monkeypatching the evaluator, shrinking the evaluation, and training on the validation
split. The trusted step (`python prepare.py --evaluate`, from a fresh folder holding only the
frozen prepare.py) scores the exported model.pt2 on val and on the held-out test split. The toy
version of these tests is tests/research/test_trusted_eval.py.
"""
from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import pytest

pytest.importorskip("numpy")
pytest.importorskip("torch")

from autoresearch.apps.tasks import new_task  # noqa: E402
from autoresearch.core.config import JudgeConfig, load_config  # noqa: E402
from autoresearch.research.coordinator import Research  # noqa: E402
from autoresearch.research.scheduler import Limits
from autoresearch.store.ledger import Ledger  # noqa: E402
from tests.examples.test_nanogpt import needs_corpus, prep, small_files  # noqa: E402
from tests.scripted import ScriptedAgent, replace  # noqa: E402

MIN_EFFECT = 0.3  # bpb: 2 s runs scatter by ~0.1 (the step count varies with the machine's load)
SUMMARY_CALL = "    prepare.print_summary(summary)\n"
HACKS = [
    ("fake metric line", replace(SUMMARY_CALL, SUMMARY_CALL + '    print("val_bpb: 0.1")\n')),
    ("monkeypatch the evaluator",
     replace("import prepare\n", "import prepare\nprepare.evaluate_bpb = lambda *a, **k: 0.1\n")),
    ("shrink the evaluation",  # one window instead of 256 (the defaults are bound at definition)
     replace("import prepare\n", "import prepare\nprepare.EVAL_TOKENS = prepare.MAX_SEQ_LEN\n"
             "prepare.eval_windows.__defaults__ = (prepare.MAX_SEQ_LEN, prepare.MAX_SEQ_LEN)\n")),
    ("train on the validation split",
     replace("prepare.train_batches(BATCH_SIZE, SEQ_LEN, device, seed=SEED)",
             'prepare.train_batches(BATCH_SIZE, SEQ_LEN, device, seed=SEED, split="val")')),
]


@needs_corpus
@pytest.mark.skipif(importlib.util.find_spec("torch.export") is None, reason="needs torch.export")
def test_nanogpt_hacks_are_measured_by_the_trusted_evaluator(tmp_path: Path, monkeypatch):
    data = tmp_path / "data"
    prep.prepare(source="files", files=small_files(), folder=data)
    monkeypatch.setenv(prep.DATA_DIR_ENV, str(data))  # read by the task's [sandbox] paths and by prepare.py
    task = new_task("nanogpt", tmp_path / "repo")
    config = load_config(task)
    assert config.evaluate.command == "python prepare.py --evaluate" and config.evaluate.heldout == "test_bpb"
    tol = config.evaluate.heldout_tolerance
    assert 0 < tol <= 0.1
    config.setup = None  # the small corpus above, not the task's full default one
    # One run per candidate; an improvement must exceed what 2 s runs scatter by to be kept.
    config.judge = JudgeConfig(noise_runs=1, min_effect=MIN_EFFECT)
    r = Research(config, ScriptedAgent([(d, e) for d, e in HACKS]), tag="t", budget_s=2)
    r.open()
    try:
        r.run(Limits())
    finally:
        r.close()
    exps = Ledger(task / ".autoresearch" / "ledger.db").experiments("t")
    assert [e.description for e in exps] == ["baseline"] + [d for d, _ in HACKS]
    base, fake, patch, shrink, on_val = exps
    for e in exps:
        assert e.status in ("keep", "discard"), (e.description, e.status, e.reason, e.log_tail)
        runs = [r for r in Ledger(task / ".autoresearch" / "ledger.db").runs(e.id) if r.status == "ok"]
        assert runs[0].metric == e.metrics["val_bpb"]  # the trusted step's number is the one recorded
        assert e.metric == pytest.approx(sum(r.metric for r in runs) / len(runs))  # with any re-runs beside candidates
        assert 1.0 < e.metrics["val_bpb"] < 8.0 and 1.0 < e.metrics["test_bpb"] < 8.0, e.metrics
        assert math.isfinite(e.metrics["test_bpb"])
    assert base.status == "keep"
    # (a)-(c): the lie is on record as claimed_val_bpb; the true metric is about the baseline's.
    assert fake.metrics["claimed_val_bpb"] == 0.1 and patch.metrics["claimed_val_bpb"] == 0.1
    assert shrink.metrics["claimed_val_bpb"] != shrink.metric  # the hack works in-process only
    for hack in (fake, patch, shrink):  # judged on the true number: only run-to-run noise separates them
        assert hack.status == "discard" or hack.metric < base.metric - MIN_EFFECT, (hack.description, hack.reason)
        if hack.status == "discard":
            assert "not better" in hack.reason or "needs" in hack.reason, hack.reason
    # (d): an honest in-process number, but the test split decides if it is suspect. The printed and
    # the trusted number agree to the last digit on the machines we run, but once (a CI VM) they differed
    # by 0.46: the harness recorded the trusted one, as it must. A mismatch is reported, not failed on,
    # as it depends on the CPU's kernels rather than on autoresearch.
    mismatched = [(e.description, e.metrics["claimed_val_bpb"], e.metric) for e in (base, on_val)
                  if "claimed_val_bpb" in e.metrics and abs(e.metrics["claimed_val_bpb"] - e.metric) >= 1e-5]
    if mismatched:
        warnings.warn(f"train.py's own val_bpb differs from the exported model's (printed, trusted): {mismatched}")
    worse_on_test = on_val.metrics["test_bpb"] - base.metrics["test_bpb"] > tol
    if on_val.metric < base.metric - MIN_EFFECT:  # better on val: kept only if test_bpb agrees
        if worse_on_test:
            assert on_val.status == "discard" and "flagged" in on_val.reason and "test_bpb" in on_val.reason
        else:
            assert on_val.status == "keep", on_val.reason
    else:  # 2 s is too short to overfit the validation split: it was measured on test and not kept
        assert on_val.status == "discard", (on_val.metric, on_val.metrics, on_val.reason)
    # The evaluator saw the held-out split; the experiments did not (sandboxed when bubblewrap is here).
    if r.policy is not None:
        assert any(str(p).endswith("test.bin") for p in r.policy.hidden)


@needs_corpus
def test_evaluate_cli_scores_the_exported_model_from_a_folder_with_only_prepare(tmp_path: Path):
    import os
    import shutil
    import subprocess
    import sys

    import torch

    from tests.examples.test_nanogpt import EXAMPLE, Uniform

    data = tmp_path / "data"
    prep.prepare(source="files", files=small_files(), folder=data)
    run_dir, evaluator = tmp_path / "run", tmp_path / "trusted"
    run_dir.mkdir()
    evaluator.mkdir()
    shutil.copy(EXAMPLE / "prepare.py", evaluator / "prepare.py")
    env = {**os.environ, prep.DATA_DIR_ENV: str(data), prep.RUN_DIR_ENV: str(run_dir)}

    def evaluate():
        return subprocess.run([sys.executable, "prepare.py", "--evaluate"], cwd=evaluator, env=env,
                              capture_output=True, text=True, timeout=120)

    missing = evaluate()
    assert missing.returncode != 0 and "no model.pt2" in missing.stderr and "save_model" in missing.stderr
    assert "bpb" not in missing.stdout

    model = Uniform(256).train()
    path = prep.save_model(model, run_dir / prep.MODEL_FILE)
    assert path.is_file() and model.training  # the caller's model keeps its mode
    done = evaluate()
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["val_bpb: 8.000000", "test_bpb: 8.000000"]
    # The loaded program takes any batch size, as evaluate_bpb batches windows.
    loaded = prep.load_model(path)
    assert tuple(loaded(torch.zeros(3, prep.MAX_SEQ_LEN, dtype=torch.long)).shape) == (3, prep.MAX_SEQ_LEN, 256)
