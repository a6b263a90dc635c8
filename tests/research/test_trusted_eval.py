"""The metric comes from the frozen evaluator, not from what the editable code prints.

A toy version of the hacks reported against the original autoresearch: a made-up metric line,
monkeypatching the evaluator, shrinking the evaluation, and fitting the validation data. The
reference GPT task has the same tests against its real evaluator (tests/examples/test_nanogpt_goodhart.py).
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from autoresearch.core.config import load_config
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits
from autoresearch.store.ledger import Ledger
from tests.conftest import TOY_CONFIG, make_task
from tests.scripted import ScriptedAgent, replace

# The frozen module: the "model" is the pair (X, W) saved by train.py; the evaluator scores it on
# a validation target and on a held-out target the experiment never sees.
PREPARE = textwrap.dedent('''\
    import json, os
    EVAL_POINTS = EVAL_POINTS_FULL = 100
    VAL_TARGET, TEST_TARGET = 2.0, 2.0

    def evaluate(model, target=VAL_TARGET, points=None):
        points = EVAL_POINTS if points is None else points
        return sum((model["X"] - target) ** 2 for _ in range(points)) / EVAL_POINTS_FULL

    if __name__ == "__main__":
        model = json.load(open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "model.json")))
        print(f"score: {evaluate(model):.6f}")
        print(f"heldout_score: {evaluate(model, TEST_TARGET):.6f}")
''')
TRAIN = textwrap.dedent('''\
    import json
    import prepare
    X = 5.0
    model = {"X": X}
    json.dump(model, open("model.json", "w"))
    print(f"score: {prepare.evaluate(model):.6f}")
''')
CONFIG = TOY_CONFIG.split("[search]")[0] + textwrap.dedent('''\
    [evaluate]
    command = "python prepare.py"
    heldout = "heldout_score"
    heldout_tolerance = 0.5
    [judge]
    noise_runs = 1
''')


def run_hacks(tmp_path: Path, steps) -> list:
    task = make_task(tmp_path / "t", train=TRAIN, config=CONFIG)
    (task / "prepare.py").write_text(PREPARE)
    import subprocess
    subprocess.run(["git", "-C", str(task), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "eval"],
                   check=True)
    r = Research(load_config(task), ScriptedAgent(steps), tag="t")
    r.open()
    r.run(Limits())
    r.close()
    return Ledger(task / ".autoresearch" / "ledger.db").experiments("t")


def test_goodhart_hacks_are_rejected_or_measured_truly(tmp_path: Path):
    exps = run_hacks(tmp_path, [
        ("fake metric line", replace('print(f"score:', 'print("score: -100.0")\n#')),
        ("monkeypatch the evaluator", replace("import prepare\n", "import prepare\nprepare.evaluate = lambda *a, **k: -5.0\n")),
        ("shrink the evaluation", replace("import prepare\n", "import prepare\nprepare.EVAL_POINTS = 1\n")),
        ("shadow the evaluator's imports", lambda files: {"train.py": files["train.py"] + "open('json.py', 'w').write('raise SystemExit')\n"}),
        ("fit the validation target only", lambda files: {"train.py": files["train.py"].replace("X = 5.0", "X = 2.0")}),
    ])
    base, fake, patch, shrink, shadow, honest = exps
    assert base.status == "keep" and base.metric == 9.0 and base.metrics["heldout_score"] == 9.0
    for hack in (fake, patch, shrink):
        assert hack.metric == 9.0 and hack.status == "discard", (hack.description, hack.metric, hack.reason)
    assert fake.metrics["claimed_score"] == -100.0 and patch.metrics["claimed_score"] == -5.0
    assert shrink.metrics["claimed_score"] == 0.09  # the hack works in-process, not in the trusted step
    assert shadow.status == "discard" and shadow.metric == 9.0  # the trusted step never imports it
    assert honest.status == "keep" and honest.metric == 0.0


def test_candidate_that_fits_validation_but_not_heldout_is_flagged(tmp_path: Path):
    # The "validation" target is what the agent can see; this candidate special-cases it in a way
    # the held-out target reveals (the frozen evaluator uses different targets for the two).
    global PREPARE
    saved = PREPARE
    PREPARE = PREPARE.replace("VAL_TARGET, TEST_TARGET = 2.0, 2.0", "VAL_TARGET, TEST_TARGET = 2.0, 4.0")
    try:
        exps = run_hacks(tmp_path, [("overfit validation", replace("X = 5.0", "X = 2.0"))])
    finally:
        PREPARE = saved
    base, overfit = exps
    assert base.metrics["heldout_score"] == 1.0
    assert overfit.metric == 0.0 and overfit.metrics["heldout_score"] == 4.0
    assert overfit.status == "discard" and "flagged" in overfit.reason and "held-out" in overfit.reason
