"""Parallel slots and proposals ahead: rebase onto a moved best, no lost updates, no racing keeps,
duplicates of queued work skipped, queued work resumed after a stop."""
from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path

import pytest

from autoresearch.agents import make_agent
from autoresearch.core.config import ParallelConfig, load_config
from autoresearch.repo import gitops
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits
from autoresearch.run.slots import Slot, local_slots
from autoresearch.store.ledger import Ledger
from tests.conftest import TOY_CONFIG, make_task
from tests.scripted import ScriptedAgent, check_consistency, replace

# Constants far apart, so that changes to different ones merge cleanly; the pauses order the runs.
SPREAD_TRAIN = textwrap.dedent('''\
    import time

    X = 5.0
    PAUSE_X = 0.0

    # ----

    WIDTH = 3
    PAUSE_W = 0.0

    # ----

    time.sleep(PAUSE_X + PAUSE_W)
    score = (X - 2.0) ** 2 + 0.1 * (WIDTH - 6) ** 2
    print(f"score: {score:.6f}")
''')


# Slow enough that the other proposal is made and started on the same baseline meanwhile.
FAST_X2 = (lambda f: {"train.py": f["train.py"].replace("X = 5.0", "X = 2.0").replace("PAUSE_X = 0.0", "PAUSE_X = 0.5")})


def spread_task(tmp_path: Path) -> Path:
    return make_task(tmp_path / "spread", train=SPREAD_TRAIN)


def start(task: Path, agents, **parallel) -> Research:
    r = Research(load_config(task), agents, tag="t", parallel=ParallelConfig(**parallel))
    r.open()
    return r


def chain_is_consistent(task: Path) -> list:
    """Each keep was judged on top of the keep before it: its parent is that keep's commit."""
    check_consistency(task)
    ledger = Ledger(task / ".autoresearch" / "ledger.db")
    exps, kept = ledger.experiments("t"), ledger.kept("t")
    for before, after in zip(kept, kept[1:]):
        assert after.parent_commit == before.commit, (before.id, after.id)
        assert after.metric < before.metric
        assert gitops.git(task, "rev-parse", f"{after.commit}^") == before.commit
    return exps


def test_second_keep_is_rebased_and_rerun_on_the_new_best(tmp_path: Path):
    task = spread_task(tmp_path)
    agent = ScriptedAgent([("fast: X=2", FAST_X2),
                           ("slow: WIDTH=6", lambda f: {"train.py": f["train.py"].replace("WIDTH = 3", "WIDTH = 6")
                                                        .replace("PAUSE_W = 0.0", "PAUSE_W = 2.0")})])
    r = start(task, agent, slots=2, ahead=2)
    assert [s.name for s in r.slots] == ["cpu0", "cpu1"]
    assert r.run() == 3
    r.close()
    exps = chain_is_consistent(task)
    assert [(e.description, e.status) for e in exps] == [("baseline", "keep"), ("fast: X=2", "keep"),
                                                         ("slow: WIDTH=6", "keep")]
    slow = exps[2]
    assert slow.info["rebased"] == [{"from": slow.info["rebased"][0]["from"], "onto": 2}]
    assert slow.metric == pytest.approx(0.0)  # both changes, measured together
    runs = Ledger(task / ".autoresearch" / "ledger.db").runs(slow.id)
    # the run on the old base was set aside; the new best, kept on one run, is run once more ([judge] recheck)
    assert [r.status for r in runs] == ["superseded", "ok", "ok"]
    assert len({r.slot for r in Ledger(task / ".autoresearch" / "ledger.db").all_runs("t")}) == 2


def test_rebase_conflict_is_dropped_unrun_with_the_reason(tmp_path: Path):
    """A text edit that conflicts with a keep made meanwhile never runs: rejected (not an experiment,
    not in results.tsv), and it does not count against --max-experiments."""
    task = spread_task(tmp_path)
    agent = ScriptedAgent([("fast: X=2", FAST_X2),
                           ("slow: X=2.5", lambda f: {"train.py": f["train.py"].replace("X = 5.0", "X = 2.5  # by hand")
                                                      .replace("PAUSE_W = 0.0", "PAUSE_W = 2.0")}),
                           ("WIDTH=6", replace("WIDTH = 3", "WIDTH = 6"))])
    r = start(task, agent, slots=2, ahead=2)
    assert r.run(Limits(max_experiments=3)) == 3  # the baseline, X=2 and WIDTH=6: three runs
    r.close()
    exps = chain_is_consistent(task)
    assert [e.status for e in exps] == ["keep", "keep", "rejected", "keep"]
    assert exps[2].reason.startswith("conflicts with #2") and exps[2].metric is None
    assert "slow: X=2.5" not in (task / "results.tsv").read_text()


def test_a_change_of_constants_made_ahead_is_re_expressed_on_the_new_best(tmp_path: Path):
    """Proposals made ahead that set constants on lines next to a kept change (a git conflict)
    have their values set on the new best and run there: --max-experiments 3 gives 3 experiments."""
    task = make_task(tmp_path / "dense", train=textwrap.dedent('''\
        import time
        X = 5.0
        WIDTH = 3
        PAUSE = 0.0
        time.sleep(PAUSE)
        print(f"score: {(X - 2.0) ** 2 + 0.1 * (WIDTH - 6) ** 2:.6f}")
    '''))
    agent = ScriptedAgent([("X=2", lambda f: {"train.py": f["train.py"].replace("X = 5.0", "X = 2.0")
                                              .replace("PAUSE = 0.0", "PAUSE = 0.3")}),
                           ("WIDTH=6", replace("WIDTH = 3", "WIDTH = 6")),
                           ("WIDTH=5", replace("WIDTH = 3", "WIDTH = 5"))])
    r = start(task, agent, slots=1, ahead=3)
    assert r.run(Limits(max_experiments=4)) == 4
    r.close()
    exps = chain_is_consistent(task)
    assert [e.status for e in exps[1:]] == ["keep", "keep", "discard"], [e.reason for e in exps]
    assert all(e.info["rebased"] for e in exps[2:]) and "conflicts" not in " ".join(e.reason for e in exps)
    assert exps[2].params == {"X": 2.0, "WIDTH": 6}  # the params of what ran (its proposal said X=5.0)
    assert exps[2].metric == pytest.approx(0.0)
    rows = [line.split("\t") for line in (task / "results.tsv").read_text().splitlines()[1:]]
    assert [row[3] for row in rows] == ["keep", "keep", "keep", "discard"]  # no conflict rows


def test_without_rerun_a_rebased_keep_is_judged_on_what_it_measured(tmp_path: Path):
    task = spread_task(tmp_path)
    agent = ScriptedAgent([("fast: X=2", FAST_X2),
                           ("slow: WIDTH=5", lambda f: {"train.py": f["train.py"].replace("WIDTH = 3", "WIDTH = 5")
                                                        .replace("PAUSE_W = 0.0", "PAUSE_W = 2.0")})])
    r = start(task, agent, slots=2, ahead=2, rerun_rebased=False)
    r.run()
    r.close()
    exps = Ledger(task / ".autoresearch" / "ledger.db").experiments("t")
    # WIDTH=5 measured 9.1 on the baseline: not better than X=2's 0.9, so it is not kept.
    assert exps[2].status == "discard" and "measured before rebasing onto #2" in exps[2].reason
    assert len(Ledger(task / ".autoresearch" / "ledger.db").runs(exps[2].id)) == 1
    chain_is_consistent(task)


def test_proposal_made_ahead_is_rebased_before_it_runs(toy_task: Path):
    # One slot, one proposal ahead: the second proposal is made while the first runs.
    agent = ScriptedAgent([("X=3", replace("X = 5.0", "X = 3.0")), ("WIDTH=5 # comment", replace(
        "print(f\"peak", "# a comment line\nprint(f\"peak"))])
    r = start(toy_task, agent, slots=1, ahead=1)
    r.run()
    r.close()
    exps = chain_is_consistent(toy_task)
    second = exps[2]
    assert second.info.get("rebased") and second.parent_commit == exps[1].commit
    assert [x.status for x in Ledger(toy_task / ".autoresearch" / "ledger.db").runs(second.id)] == ["ok"]


def test_duplicate_of_queued_work_is_skipped(toy_task: Path):
    same = ("X=3", replace("X = 5.0", "X = 3.0"))
    r = start(toy_task, [ScriptedAgent([same]), ScriptedAgent([same])], slots=1, ahead=4)
    r.run()
    r.close()
    exps = Ledger(toy_task / ".autoresearch" / "ledger.db").experiments("t")
    statuses = sorted(e.status for e in exps[1:])
    assert statuses == ["keep", "rejected"]
    rejected = next(e for e in exps if e.status == "rejected")
    assert rejected.reason.startswith("duplicate of experiment #") and "same editable files" in rejected.reason


@pytest.mark.parametrize("agents", [("random",), ("random", "search")])
def test_many_slots_tiny_experiments_stay_consistent(toy_task: Path, agents):
    config = load_config(toy_task)
    team = [make_agent(name, config, seed=i) for i, name in enumerate(agents)]
    r = start(toy_task, team, slots=4, ahead=2)
    runs = r.run(Limits(max_experiments=40))
    r.close()
    assert runs == 40
    exps = chain_is_consistent(toy_task)
    decided = [e for e in exps if e.status in ("keep", "discard", "crash", "timeout")]
    hashes = [e.content_hash for e in decided]
    assert len(hashes) == len(set(hashes)), "an idea ran twice"
    ledger = Ledger(toy_task / ".autoresearch" / "ledger.db")
    assert len({run.slot for run in ledger.all_runs("t")}) == 4
    best = ledger.best("t")
    assert best.metric == min(e.metric for e in decided if e.status == "keep")


def test_stop_leaves_queued_proposals_for_the_next_run(toy_task: Path):
    slow = replace("score = ", "import time; time.sleep(2)\nscore = ")
    agent = ScriptedAgent([("slow", slow), ("X=3", replace("X = 5.0", "X = 3.0")),
                           ("X=4", replace("X = 5.0", "X = 4.0"))])
    r = start(toy_task, agent, slots=1, ahead=3)
    ledger = r.ledger

    def stop_when_queued():
        deadline = time.time() + 30
        while time.time() < deadline:
            running = [e.id for e in ledger.experiments("t", ("running",))]
            if running and running[0] > 1 and len(ledger.experiments("t", ("queued",))) == 2:
                r.stop_event.set()
                return
            time.sleep(0.05)

    threading.Thread(target=stop_when_queued, daemon=True).start()
    r.run()
    r.close()
    exps = Ledger(toy_task / ".autoresearch" / "ledger.db").experiments("t")
    assert [e.status for e in exps] == ["keep", "interrupted", "queued", "queued"]
    r = start(toy_task, ScriptedAgent([]), slots=1)
    assert r.run() == 2
    r.close()
    exps = chain_is_consistent(toy_task)
    assert [e.status for e in exps] == ["keep", "interrupted", "keep", "discard"]


def test_local_slots():
    gpus = local_slots(gpus=["0", "3"], cores=8)
    assert [(s.name, s.env["CUDA_VISIBLE_DEVICES"], s.gpus) for s in gpus] == [("gpu0", "0", 1.0), ("gpu3", "3", 1.0)]
    assert gpus[0].env["OMP_NUM_THREADS"] == "4"
    shared = local_slots(4, gpus=["0", "1"], cores=8)
    assert [s.name for s in shared] == ["gpu0.0", "gpu1.0", "gpu0.1", "gpu1.1"]
    cpus = local_slots(3, gpus=[], cores=7)
    assert [s.name for s in cpus] == ["cpu0", "cpu1", "cpu2"] and cpus[0].env["OMP_NUM_THREADS"] == "2"
    assert local_slots(gpus=[], cores=7)[0].env == {}  # one slot: the libraries' own thread defaults
    with pytest.raises(ValueError):
        local_slots(0, gpus=[])


def test_parallel_config_errors(tmp_path: Path):
    from autoresearch.core.config import ConfigError

    for bad, key in (("slots = 0", "parallel.slots"), ("ahead = -1", "parallel.ahead"),
                     ("backend = \"mpi\"", "parallel.backend"), ("rerun_rebased = 1", "parallel.rerun_rebased"),
                     ("nope = 1", "parallel.nope")):
        task = make_task(tmp_path / key.replace(".", "_") / bad[:4], config=TOY_CONFIG + f"\n[parallel]\n{bad}\n")
        with pytest.raises(ConfigError) as e:
            load_config(task)
        assert e.value.key == key
    task = make_task(tmp_path / "ok", config=TOY_CONFIG + "\n[parallel]\nslots = 3\nahead = 0\nbackend = \"ray\"\n"
                     "address = \"auto\"\ngpus_per_slot = 0.5\n")
    p = load_config(task).parallel
    assert (p.slots, p.ahead, p.backend, p.address, p.gpus_per_slot) == (3, 0, "ray", "auto", 0.5)


def test_three_way_merge_of_neighbouring_lines():
    from autoresearch.repo.gitops import _merge_text

    base = "a\nX = 1\nW = 2\nc\n"
    assert _merge_text(base, base.replace("X = 1", "X = 5"), base.replace("W = 2", "W = 9")) == "a\nX = 5\nW = 9\nc\n"
    assert _merge_text(base, base.replace("X = 1", "X = 5"), base.replace("X = 1", "X = 9")) is None
    assert _merge_text(base, base.replace("X = 1", "X = 5"), base.replace("X = 1", "X = 5")) == \
        base.replace("X = 1", "X = 5")
    assert _merge_text(base, base + "d\n", "z\n" + base) == "z\n" + base + "d\n"
    assert _merge_text(base, base + "d\n", base + "e\n") is None  # two insertions at one place


def test_cli_runs_two_agents_on_two_slots(toy_task: Path):
    from tests.apps.test_cli import cli, events

    out = cli("run", str(toy_task), "--slots", "2", "--agent", "random", "--agent", "search", "--seed", "3",
              "--max-experiments", "9", "--json").stdout
    evs = events(out)
    assert any("2 slots on local: cpu0, cpu1" in e.get("text", "") for e in evs)
    assert {e["slot"] for e in evs if e["event"] == "started"} == {"cpu0", "cpu1"}
    assert evs[-1]["event"] == "done" and evs[-1]["runs"] == 9
    exps = Ledger(toy_task / ".autoresearch" / "ledger.db").experiments(evs[-1]["tag"])
    assert {e.agent for e in exps} >= {"baseline", "random", "search:tpe"}
    status = json.loads(cli("status", "-C", str(toy_task), "--json").stdout)
    assert status["counts"]["queued"] == 0 and status["counts"]["running"] == 0


def test_queued_row_without_its_commit_is_not_resumed(toy_task: Path):
    r = start(toy_task, ScriptedAgent([]), slots=1)
    r.run()
    exp_id = r.ledger.start_experiment(tag="t", parent_commit=r.base, agent="x", description="half admitted",
                                       status="queued")  # as if killed before its commit was recorded
    r.close()
    r = start(toy_task, ScriptedAgent([]), slots=1)
    assert r.run() == 0
    r.close()
    exp = Ledger(toy_task / ".autoresearch" / "ledger.db").get(exp_id)
    assert exp.status == "interrupted" and "queueing" in exp.reason


# -- pause and resume (the scheduler alone: a coordinator whose runs only take time) -------------

class FakeAgent:
    name = "fake"  # SlowRuns.propose stands for it


class SlowRuns:
    """The scheduler's Coordinator with a real ledger whose experiments only sleep RUN_S: the
    scheduler's timing alone, with no git or processes (the dashboard test pauses the real loop)."""

    RUN_S = 0.4

    def __init__(self, ledger: Ledger, slots: int = 2, ahead: int = 1):
        self.tag, self.ledger, self.stop_event, self.stop_reason = "t", ledger, threading.Event(), ""
        self.agents = [FakeAgent()]
        self.slots = [Slot(f"cpu{i}") for i in range(slots)]
        self.parallel = ParallelConfig(slots=slots, ahead=ahead)
        self.messages: list[str] = []
        self.pauses: list[bool] = []
        self.starts: list[tuple[float, int]] = []  # (time, experiment) of each start, the baseline's included
        self.observer = self

    # the observer
    def message(self, text: str) -> None: self.messages.append(text)
    def started(self, exp, budget_s) -> None: pass
    def output(self, line: str) -> None: pass
    def finished(self, exp, best) -> None: pass
    def paused(self, pause) -> None: self.pauses.append(pause is not None)

    # the coordinator
    def propose(self, agent):
        exp_id = self.ledger.start_experiment(tag=self.tag, parent_commit="0" * 40, agent="fake",
                                              description="sleep", status="queued")
        return self.ledger.get(exp_id)

    def baseline(self, slot: Slot):
        exp_id = self.ledger.start_experiment(tag=self.tag, parent_commit="0" * 40, agent="baseline",
                                              description="baseline")
        return self._run(exp_id, "keep")

    def process(self, exp_id: int, slot: Slot):
        self.ledger.update(exp_id, status="running", slot=slot.name)
        return self._run(exp_id, "discard")

    def _run(self, exp_id: int, status: str):
        self.starts.append((time.time(), exp_id))
        time.sleep(self.RUN_S)
        self.ledger.finish(exp_id, status, metric=1.0)
        return self.ledger.get(exp_id)

    def count(self, *statuses: str) -> int:
        return len(self.ledger.experiments(self.tag, statuses))


def in_thread(r: SlowRuns, limit: int) -> tuple[threading.Thread, list]:
    from autoresearch.research.scheduler import Scheduler

    made: list = []
    thread = threading.Thread(target=lambda: made.append(Scheduler(r, Limits(max_experiments=limit)).run()),
                              daemon=True)
    thread.start()
    return thread, made


def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_paused_nothing_new_starts_until_resumed(tmp_path: Path):
    ledger = Ledger(tmp_path / "ledger.db")
    r = SlowRuns(ledger, slots=2, ahead=1)
    thread, made = in_thread(r, limit=12)
    wait_for(lambda: len(r.starts) >= 4)  # the baseline and experiments on both slots
    ledger.pause("t", source="test")
    time.sleep(0.1)  # a slot that read the flag just before it was set may still start one
    before = len(r.starts)
    time.sleep(3 * SlowRuns.RUN_S + 1.0)  # what ran has finished; nothing else started
    assert len(r.starts) == before and r.count("running") == 0
    assert r.pauses == [True]
    assert r.count("queued") <= 2  # agents keep the `ahead` stock (1 per slot), not more
    resumed_at = time.time()
    ledger.resume("t")
    wait_for(lambda: len(r.starts) > before, timeout_s=5)
    assert r.starts[before][0] - resumed_at < 2.0  # a waiting slot reads the flag every WAIT_S (0.5 s)
    thread.join(timeout=60)
    assert made == [12] and r.pauses == [True, False]
    assert [e.status for e in ledger.experiments("t")].count("discard") == 11


def test_paused_before_start_stays_paused_and_says_so(tmp_path: Path):
    """The flag outlives the process: a research run paused while no loop ran starts paused
    (not even the baseline runs) and says so at start."""
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.pause("t", source="cli")
    r = SlowRuns(ledger, slots=1, ahead=2)
    thread, made = in_thread(r, limit=3)
    time.sleep(1.5)
    assert r.starts == [] and r.pauses == [True]
    assert any("is paused" in m and "by cli" in m and "autoresearch resume" in m for m in r.messages), r.messages
    assert r.count("queued") == 2  # the agent thought ahead meanwhile, as far as the stock goes
    ledger.resume("t")
    thread.join(timeout=30)
    assert made == [3] and r.pauses == [True, False]
    assert ledger.get(r.starts[0][1]).agent == "baseline"  # first, once resumed


def test_no_noise_re_measurement_starts_while_paused(tmp_path: Path):
    """A keep that is due a re-measurement of the noise (`reestimate_every`) gets it only when not paused:
    those are new runs of the best, not part of judging the experiment that was running."""
    from tests.conftest import step

    counts = []
    for paused in (False, True):
        task = make_task(tmp_path / str(paused), config=TOY_CONFIG + "\n[judge]\nreestimate_every = 1\n")
        r = start(task, ScriptedAgent([("X=3", replace("X = 5.0", "X = 3.0"))]), slots=1)
        step(r)  # the baseline
        if paused:
            r.ledger.pause("t", source="test")
        kept = step(r)  # run directly, as a slot already running it would
        assert kept.status == "keep"
        counts.append(sum(run.kind == "noise" for run in r.ledger.runs(kept.id)))
        r.close()
    assert counts[0] >= 1 and counts[1] == 0
