"""The research loop on a toy task: baseline, keep, discard, reject, crash, timeout, consistency."""
from __future__ import annotations

from pathlib import Path

import pytest

from autoresearch.core.config import load_config
from autoresearch.core.errors import ResearchError
from autoresearch.repo import gitops
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits
from autoresearch.store.ledger import Ledger
from tests.scripted import SERIAL, ScriptedAgent, check_consistency, replace


def research(task: Path, agent, tag: str = "t", **kw) -> Research:
    r = Research(load_config(task), agent, tag=tag, **kw)
    r.open()
    return r


def test_planted_improvement_is_kept_and_worse_discarded(toy_task: Path):
    user_head = gitops.rev_parse(toy_task, "HEAD")
    (toy_task / "train.py").write_text((toy_task / "train.py").read_text() + "# uncommitted user work\n")
    agent = ScriptedAgent([
        ("worse: X=9", replace("X = 5.0", "X = 9.0")),
        ("better: X=2.5", replace("X = 5.0", "X = 2.5")),
        ("touch frozen", {"prepare.py": "EVAL = 0\n"}),
        ("syntax error", replace("WIDTH = 3", "WIDTH = = 3")),
        ("crash", replace("score = ", "raise SystemExit(3)\nscore = ")),
        ("no-op", lambda files: dict(files)),
        ("better again: WIDTH=6", replace("WIDTH = 3", "WIDTH = 6")),
    ])
    r = research(toy_task, agent)
    runs = r.run(Limits(max_experiments=50))
    r.close()
    exps = Ledger(toy_task / ".autoresearch" / "ledger.db").experiments("t")
    got = [(e.description, e.status) for e in exps]
    assert got == [("baseline", "keep"), ("worse: X=9", "discard"), ("better: X=2.5", "keep"),
                   ("touch frozen", "rejected"), ("syntax error", "rejected"), ("crash", "crash"),
                   ("no-op", "rejected"), ("better again: WIDTH=6", "keep")]
    assert runs == 5
    assert exps[0].metric == pytest.approx(9.9) and exps[-1].metric == pytest.approx(0.25)
    assert "frozen" in exps[3].reason and "syntax error" in exps[4].reason
    assert "SystemExit" in exps[5].log_tail or exps[5].exit_code == 3
    assert exps[1].metrics["budget"] if "budget" in exps[1].metrics else True
    assert "discard" in exps[1].reason and "keep" in exps[2].reason
    # The second proposal was made against the kept X=2.5, not the baseline.
    assert "X = 2.5" in agent.contexts[-1].files["train.py"]
    check_consistency(toy_task)
    # The user's checkout and uncommitted work are untouched.
    assert gitops.rev_parse(toy_task, "HEAD") == user_head
    assert (toy_task / "train.py").read_text().endswith("# uncommitted user work\n")
    assert gitops.git(toy_task, "status", "--porcelain") == "M train.py"
    # Every experiment is reproducible from its commit.
    best = Ledger(toy_task / ".autoresearch" / "ledger.db").best("t")
    assert "WIDTH = 6" in gitops.read_file(toy_task, best.commit, "train.py")


def test_budget_reaches_the_experiment_and_timeout_kills(toy_task: Path):
    slow = ("sleep forever", replace("score = ", "import time; time.sleep(60)\nscore = "))
    r = research(toy_task, ScriptedAgent([slow]), budget_s=1.5)
    r.measurer.timeout_s = 2.0  # the hard limit, below the 60 s sleep
    r.run()
    r.close()
    exps = Ledger(toy_task / ".autoresearch" / "ledger.db").experiments("t")
    assert "budget: 1.5" in Path(exps[0].log_path).read_text()
    assert exps[1].status == "timeout" and exps[1].wall_s < 10
    check_consistency(toy_task)


def test_broken_baseline_stops_with_log(tmp_path: Path):
    from tests.conftest import TOY_TRAIN, make_task

    task = make_task(tmp_path / "broken", train=TOY_TRAIN.replace("score = ", "1/0\nscore = "))
    r = research(task, ScriptedAgent([]))
    with pytest.raises(ResearchError, match="ZeroDivisionError"):
        r.run()
    r.close()


def test_resume_continues_the_same_branch(toy_task: Path):
    r = research(toy_task, ScriptedAgent([("better: X=3", replace("X = 5.0", "X = 3.0"))]))
    r.run()
    r.close()
    r = research(toy_task, ScriptedAgent([("better: X=2", replace("X = 3.0", "X = 2.0"))]))
    r.run()
    r.close()
    exps = Ledger(toy_task / ".autoresearch" / "ledger.db").experiments("t")
    assert [e.status for e in exps] == ["keep", "keep", "keep"]
    check_consistency(toy_task)


def test_second_process_is_locked_out(toy_task: Path):
    r = research(toy_task, ScriptedAgent([]))
    with pytest.raises(ResearchError, match="another autoresearch process"):
        research(toy_task, ScriptedAgent([]))
    r.close()


def test_frozen_file_tampered_during_run_is_not_kept(toy_task: Path):
    cheat = ("cheat", replace("score = ", "open('prepare.py', 'a').write('# hacked')\nscore = -100.0 + 0 * ")
             )
    r = research(toy_task, ScriptedAgent([cheat]))
    r.run()
    r.close()
    exps = Ledger(toy_task / ".autoresearch" / "ledger.db").experiments("t")
    assert exps[1].status == "discard" and "frozen" in exps[1].reason


def test_search_name_that_is_no_constant_fails_at_start(tmp_path: Path):
    from autoresearch.core.config import ConfigError
    from tests.conftest import TOY_CONFIG, make_task

    task = make_task(tmp_path / "t", config=TOY_CONFIG + "NOPE = { low = 1, high = 2 }\n")
    r = Research(load_config(task), ScriptedAgent([]), tag="t")
    with pytest.raises(ConfigError, match="NOPE"):
        r.open()
    r.close()


def test_duplicate_proposals_are_skipped(toy_task: Path):
    agent = ScriptedAgent([("X=3", replace("X = 5.0", "X = 3.0")),
                           ("X=9 (worse)", replace("X = 3.0", "X = 9.0")),
                           ("X=9 again", replace("X = 3.0", "X = 9.0")),
                           ("back to the baseline", replace("X = 3.0", "X = 5.0"))])
    r = research(toy_task, agent, parallel=SERIAL)  # each step edits the previous step's result
    r.run()
    r.close()
    exps = Ledger(toy_task / ".autoresearch" / "ledger.db").experiments("t")
    assert [e.status for e in exps] == ["keep", "keep", "discard", "rejected", "rejected"]
    assert exps[3].reason == "duplicate of experiment #3 (discard): same editable files"
    assert exps[4].reason.startswith("duplicate of experiment #1 (keep)")
