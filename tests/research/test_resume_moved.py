"""Friction points met on real repositories: a task branch that moved under a research run, the
reason of experiments stopped by a failing agent, ideas that can never be tried, and a hint for a
path the sandbox does not show. Real research runs on the toy task."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch.agents.base import Context, Proposal
from autoresearch.core.config import ConfigError, ParallelConfig, load_config
from autoresearch.core.errors import ResearchError
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits
from autoresearch.run.sandbox import sandbox_available
from autoresearch.store.ledger import Ledger
from tests.conftest import step
from tests.scripted import ScriptedAgent


def commit(repo: Path, path: str, text: str) -> None:
    (repo / path).write_text(text)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "move"],
                   check=True)


def open_research(repo: Path, agent=None, explicit: bool = True, **kw) -> Research:
    r = Research(load_config(repo), agent or ScriptedAgent([]), tag="t", **kw)
    r.explicit_tag = explicit
    r.open()
    return r


def test_resuming_after_the_branch_moved_says_what_to_do(toy_task: Path) -> None:
    r = open_research(toy_task)
    step(r)
    r.close()
    commit(toy_task, "train.py", (toy_task / "train.py").read_text().replace("X = 5.0", "X_START = 5.0\nX = X_START"))
    moved = Research(load_config(toy_task), ScriptedAgent([]), tag="t")
    moved.explicit_tag = False  # `run` without --tag
    with pytest.raises(ResearchError) as info:
        moved.open()
    moved.close()
    text = str(info.value)
    assert "research run 't' started from" in text and "1 commit(s) the research does not have" in text
    assert "--tag NEW_NAME" in text and "git merge autoresearch/t" in text and "--tag t" in text
    assert text.count("fix:") == 1
    r = open_research(toy_task, explicit=True)  # `--tag t`: continue on the old base, as asked
    assert r.base != subprocess.run(["git", "-C", str(toy_task), "rev-parse", "HEAD"], capture_output=True,
                                    text=True, check=True).stdout.strip()
    r.close()


def test_resuming_on_the_research_branch_itself_is_no_move(toy_task: Path) -> None:
    r = open_research(toy_task)
    step(r)
    r.close()
    subprocess.run(["git", "-C", str(toy_task), "checkout", "-q", "autoresearch/t"], check=True)
    open_research(toy_task, explicit=False).close()


def test_a_search_name_that_is_no_constant_has_one_prefix(toy_task: Path) -> None:
    config = (toy_task / "autoresearch.toml").read_text().replace("X = { low", "LEARNING_RATE = { low")
    (toy_task / "autoresearch.toml").write_text(config)
    with pytest.raises(ConfigError) as info:
        open_research(toy_task)
    assert "[search] names LEARNING_RATE" in str(info.value) and "[search] [search]" not in str(info.value)


class FailingAgent:
    """Proposes one slow experiment, then fails while it runs."""

    name = "failing"

    def __init__(self) -> None:
        self.calls = 0

    def propose(self, ctx: Context) -> Proposal:
        self.calls += 1
        if self.calls == 1:
            return Proposal("slow", {"train.py": "import time\ntime.sleep(20)\n" + ctx.files["train.py"]})
        import time
        time.sleep(1.0)  # the slow experiment is running by now
        raise RuntimeError("the model server went away")


def test_experiments_stopped_by_a_failing_agent_say_so(toy_task: Path) -> None:
    r = open_research(toy_task, FailingAgent(), parallel=ParallelConfig(ahead=1))
    try:
        step(r)  # the baseline
        with pytest.raises(RuntimeError, match="model server"):
            r.run(Limits(max_experiments=5))
    finally:
        r.close()
    stopped = [e for e in Ledger(toy_task / ".autoresearch" / "ledger.db").experiments("t") if e.status == "interrupted"]
    assert stopped and "stopped because agent failing failed: RuntimeError: the model server went away" in \
        stopped[0].reason
    assert "stopped by the user" not in stopped[0].reason


def test_an_idea_outside_the_search_choices_is_closed(toy_task: Path) -> None:
    config = (toy_task / "autoresearch.toml").read_text().replace("WIDTH = { low = 1, high = 12 }",
                                                                     "WIDTH = { choices = [2, 4, 8] }")
    (toy_task / "autoresearch.toml").write_text(config)
    ledger = Ledger(toy_task / ".autoresearch" / "ledger.db")
    idea = ledger.add_idea("WIDTH=5")
    from autoresearch.agents.search import SearchAgent

    r = open_research(toy_task, SearchAgent(load_config(toy_task), seed=1), ledger=ledger)
    try:
        step(r)
        exp = step(r)
    finally:
        r.close()
    assert exp.status == "rejected" and "WIDTH=5 is not one of the [search] choices [2, 4, 8]" in exp.reason
    tried = Ledger(toy_task / ".autoresearch" / "ledger.db").ideas()[0]
    assert tried.id == idea and tried.status == "tried" and "choices" in tried.outcome


@pytest.mark.skipif(not sandbox_available(), reason="the hint is about the sandbox's view")
def test_a_path_under_tmp_gets_a_hint_instead_of_a_bare_exit_code(toy_task: Path, tmp_path: Path) -> None:
    outside = Path("/tmp") / f"autoresearch-hint-{tmp_path.name}"
    outside.mkdir(exist_ok=True)
    (outside / "tool.sh").write_text("echo score: 1\n")
    config = (toy_task / "autoresearch.toml").read_text().replace('run = "python train.py"',
                                                                     f'run = "sh {outside}/tool.sh"')
    (toy_task / "autoresearch.toml").write_text(config)
    r = open_research(toy_task)
    try:
        with pytest.raises(ResearchError) as info:
            step(r)
    finally:
        r.close()
        (outside / "tool.sh").unlink()
        outside.rmdir()
    assert f"hint: {outside}/tool.sh exists on this machine, but the sandbox does not show it" in str(info.value)
    assert "[sandbox] readable" in str(info.value)


def test_idea_list_keeps_the_status(toy_task: Path) -> None:
    Ledger(toy_task / ".autoresearch" / "ledger.db").add_idea("LEARNING_RATE=0.01")
    out = subprocess.run([sys.executable, "-m", "autoresearch", "idea", "list", "-C", str(toy_task)],
                         capture_output=True, text=True, check=True).stdout
    assert "#1 [open] LEARNING_RATE=0.01" in out
