"""The offline search agents (search, tpe, cmaes): default ranges by name, the rules a setting must
pass, the local start around the best, which sampler proposed what, and what the samplers learn
from guard violations, crashes and pruned runs; then a run through the real loop."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
from optuna.trial import TrialState

from autoresearch.agents import CmaEsAgent, SearchAgent, TpeAgent, make_agent
from autoresearch.agents import search_local as region
from autoresearch.agents.base import Context
from autoresearch.agents.search import choose_sampler
from autoresearch.agents.search_defaults import (
    coupled_learning_rates,
    default_param,
    dominates,
    violation,
)
from autoresearch.agents.source_constants import (
    current_params,
    reapply_constants,
    search_space,
    set_constants,
)
from autoresearch.core.config import Guard, parse_config
from autoresearch.core.records import Experiment

# A nanoGPT-like head of train.py: ten constants, no [search] table.
GPT = textwrap.dedent('''\
    LEARNING_RATE = 0.004
    BATCH_SIZE = 8
    DEPTH = 2
    N_EMBD = 96
    N_HEAD = 4
    WEIGHT_DECAY = 0.1
    BETA2 = 0.99
    WARMUP_FRAC = 0.05
    DROPOUT = 0.0
    GRAD_CLIP = 1.0
    SEED = 1337
    LOG_EVERY_S = 10.0
''')


def config(tmp_path: Path, guards: list[Guard] | None = None, direction: str = "minimize"):
    (tmp_path / "train.py").write_text(GPT)
    cfg = parse_config({"task": {"run": "python train.py", "editable": ["train.py"]},
                        "metric": {"name": "val_bpb", "direction": direction}}, tmp_path, tmp_path / "autoresearch.toml")
    cfg.guards = guards or []
    return cfg


def experiment(i: int, params: dict, metric: float | None, status: str = "discard", reason: str = "",
               metrics: dict | None = None, agent: str = "search:tpe", info: dict | None = None) -> Experiment:
    return Experiment(id=i, tag="t", parent_commit="p", commit="c", agent=agent, description=f"#{i}", status=status,
                      params=dict(params), metric=metric, reason=reason, info=dict(info or {}),
                      metrics=dict(metrics if metrics is not None else ({} if metric is None else {"val_bpb": metric})))


def context(cfg, history: list[Experiment], files: dict | None = None) -> Context:
    return Context(config=cfg, program="", files=dict(files or {"train.py": GPT}), history=history, ideas=[],
                   best=next((e for e in reversed(history) if e.status == "keep"), None))


def baseline(cfg, metric: float = 2.5) -> Experiment:
    return experiment(1, current_params(cfg, {"train.py": GPT}), metric, status="keep", agent="baseline")


def toy_loss(p: dict) -> float:
    """Lower with a higher learning rate and no dropout; a wrong head count is infinitely bad."""
    return math.log10(p["LEARNING_RATE"] / 0.012) ** 2 + p["DROPOUT"] + (0 if p["N_EMBD"] % p["N_HEAD"] == 0 else 9)


# -- default ranges and rules ----------------------------------------------------------------------

def test_default_ranges_follow_the_names(tmp_path):
    space = {n: p for n, (_, p) in search_space(config(tmp_path), {"train.py": GPT}).items()}
    assert "SEED" not in space and "LOG_EVERY_S" not in space  # not hyperparameters
    lr = space["LEARNING_RATE"]
    assert lr.log and lr.low == pytest.approx(0.0004) and lr.high == pytest.approx(0.04)
    beta2 = space["BETA2"]
    assert 0.5 <= beta2.low < 0.99 < beta2.high < 1 and not beta2.log
    assert (space["DROPOUT"].low, space["DROPOUT"].high) == (0.0, 0.5)  # searched although it is 0
    assert space["WEIGHT_DECAY"].low == 0.0 and space["WEIGHT_DECAY"].high >= 0.1
    assert 0.0 == space["WARMUP_FRAC"].low < space["WARMUP_FRAC"].high <= 1.0
    assert space["BATCH_SIZE"].choices == (2, 4, 8, 16, 32)  # a power of two stays one
    assert space["N_EMBD"].choices == (32, 64, 96, 128, 160, 192)  # multiples of its grain, 32
    assert space["DEPTH"].integer and (space["DEPTH"].low, space["DEPTH"].high) == (1, 4)
    assert default_param("BETA1", 0.9, "float").high < 1
    assert default_param("MOMENTUM", 0.999, "float").high <= 0.9999
    assert default_param("COMPILE", 1, "int") is None and default_param("OFFSET", -3.0, "float") is None


def test_settings_the_task_would_reject():
    current = {"N_EMBD": 96, "N_HEAD": 4, "BATCH_SIZE": 8, "DEPTH": 2, "LEARNING_RATE": 0.004}
    assert "does not divide N_EMBD=96" in violation({**current, "N_HEAD": 5}, current)
    assert "does not divide N_HEAD=8" in violation({**current, "N_HEAD": 8, "N_KV_HEAD": 3},
                                                    {**current, "N_KV_HEAD": 1})
    assert "grow 4.0x" in violation({**current, "BATCH_SIZE": 16, "DEPTH": 4}, current)
    assert violation({**current, "BATCH_SIZE": 16, "LEARNING_RATE": 0.04}, current) is None  # 2x is fine
    assert violation({**current, "N_EMBD": 128}, current) is None
    failed = {**current, "BATCH_SIZE": 16}
    assert dominates({**current, "BATCH_SIZE": 16, "DEPTH": 3}, failed)
    assert not dominates({**current, "BATCH_SIZE": 16, "DEPTH": 1}, failed)


def test_a_batch_size_changed_alone_takes_the_learning_rates_with_it(tmp_path):
    """The square-root rule: a larger batch measured at the old learning rate mostly loses (on
    benchmarks/search_yield.py's task doubling the batch alone was worse, with the rate x1.41 better)."""
    current = {"BATCH_SIZE": 8, "LEARNING_RATE": 0.004, "EMBEDDING_LR": 0.2, "MIN_LR_FRAC": 0.1,
               "EVAL_BATCH_SIZE": 32, "DEPTH": 2}
    coupled = coupled_learning_rates({**current, "BATCH_SIZE": 16, "DEPTH": 3}, current)
    assert coupled == pytest.approx({"LEARNING_RATE": 0.004 * 2 ** 0.5, "EMBEDDING_LR": 0.2 * 2 ** 0.5})
    assert coupled_learning_rates({**current, "BATCH_SIZE": 4, "LEARNING_RATE": 0.005}, current) == {}  # chosen
    assert coupled_learning_rates({**current, "EVAL_BATCH_SIZE": 64}, current) == {}  # speed only
    assert coupled_learning_rates({**current, "DEVICE_BATCH_SIZE": 4}, {**current, "DEVICE_BATCH_SIZE": 8}) == {}
    # through the agent: no proposal moves the batch size without the learning rate
    cfg = config(tmp_path)
    history, moved = [baseline(cfg)], 0
    agent = SearchAgent(cfg, seed=3)
    for i in range(30):
        p = agent.propose(context(cfg, history))
        if p.params["BATCH_SIZE"] != 8:
            assert p.params["LEARNING_RATE"] != 0.004, p.description
            moved += 1
        history.append(experiment(i + 2, p.params, 3.0))
    assert moved >= 2


def test_reapply_constants_sets_the_values_on_other_files():
    base = {"train.py": GPT}
    proposed = {"train.py": set_constants(GPT, {"DEPTH": 3})}
    moved = {"train.py": set_constants(GPT, {"BATCH_SIZE": 16, "DEPTH": 4})}
    assert reapply_constants(base, proposed, moved) == {"train.py": set_constants(GPT, {"BATCH_SIZE": 16, "DEPTH": 3})}
    assert reapply_constants(base, {"train.py": GPT.replace("DEPTH = 2", "DEPTH = 3  # deeper")}, moved) is None
    assert reapply_constants(base, {"train.py": GPT + "X = 1\n"}, moved) is None  # a new constant: text merge
    assert reapply_constants(base, proposed, {"train.py": set_constants(GPT, {"DEPTH": 3})}) == {}  # already there


# -- the local start -------------------------------------------------------------------------------

@pytest.mark.parametrize("agent_class", [SearchAgent, TpeAgent, CmaEsAgent])
def test_the_first_proposals_change_one_to_three_constants_near_the_best(tmp_path, agent_class):
    cfg = config(tmp_path)
    history = [baseline(cfg)]
    agent = agent_class(cfg, seed=4)
    space = search_space(cfg, {"train.py": GPT})
    sizes = []
    for i in range(region.local_trials(len(space))):
        p = agent.propose(context(cfg, history))
        changed = p.info["changed"]
        assert 1 <= len(changed) <= 3 and p.info["phase"] == "local" and p.info["sampler"] == "tpe"
        for name in changed:  # within the local radius of the best, on the range's own scale
            param = space[name][1]
            old, new = history[0].params[name], p.params[name]
            assert abs(region.position(new, param) - region.position(old, param)) <= region.RADIUS_START + 0.26
        assert violation(p.params, history[0].params) is None
        sizes.append(len(changed))
        history.append(experiment(i + 2, p.params, toy_loss(p.params), info=p.info))
    assert sizes.count(1) >= len(sizes) / 3  # mostly one constant: its effect is measured alone


def test_a_constant_that_lost_one_way_is_tried_the_other_way(tmp_path):
    cfg = config(tmp_path)
    history = [baseline(cfg), experiment(2, {**baseline(cfg).params, "LEARNING_RATE": 0.002}, 2.9)]
    lost = region.lost_sides(history, history[0].params, list(history[0].params))
    assert lost == {"LEARNING_RATE": (-1,)}
    space = search_space(cfg, {"train.py": GPT})
    step = region.step("LEARNING_RATE", space["LEARNING_RATE"][1], 0.004, region.RADIUS_START, lost["LEARNING_RATE"])
    assert all(step.value(s) > 0.004 for s in (-1.0, -0.3, 0.0, 0.5, 1.0))
    assert step.coordinate(0.004) == 0.0 and step.coordinate(0.04) is None  # outside the region
    # lost on both sides: both allowed again, with the radius shrunk by SHRINK (a finer step)
    finer = region.step("LEARNING_RATE", space["LEARNING_RATE"][1], 0.004, region.RADIUS_START, (-1, 1))
    assert finer.side == 0 and finer.longest == pytest.approx(step.longest * region.SHRINK)
    assert finer.value(-1.0) < 0.004 < finer.value(1.0) < step.value(1.0)


def test_a_side_that_only_lost_in_joint_changes_is_not_tried_again_first(tmp_path):
    """Found by benchmarks/search_yield.py: DEPTH=1 (catastrophic there) came back in three joint
    changes of the first twelve, since only a constant's single changes marked a side as lost."""
    cfg = config(tmp_path)
    base = baseline(cfg).params
    history = [baseline(cfg),
               experiment(2, {**base, "DEPTH": 1, "LEARNING_RATE": 0.0033}, 3.0),
               experiment(3, {**base, "DEPTH": 1, "N_EMBD": 128}, 2.7),
               experiment(4, {**base, "DROPOUT": 0.05, "N_EMBD": 64}, 2.6),
               experiment(5, {**base, "DROPOUT": 0.05}, 2.4, status="keep")]
    current = history[-1].params
    blamed = region.blamed_sides(history, current, list(current))
    # DEPTH lost down, LEARNING_RATE down, in joint changes only; N_EMBD moved both ways (no blame);
    # DROPOUT's move up (to the current value) was kept: the others differ from it by moving it down
    assert blamed == {"DEPTH": -1, "LEARNING_RATE": -1}
    space = search_space(cfg, {"train.py": GPT})
    depth = region.step("DEPTH", space["DEPTH"][1], 2, region.RADIUS_START, (), blamed["DEPTH"])
    assert depth.side == 1 and all(depth.value(s) > 2 for s in (-1.0, 0.0, 1.0))
    # a single change from here is better evidence than blame: it decides the side
    single = region.step("DEPTH", space["DEPTH"][1], 2, region.RADIUS_START, (1,), blamed["DEPTH"])
    assert single.side == -1
    # through the agent: no proposal moves DEPTH down again, nor the learning rate, until they are
    # measured the other way
    agent = SearchAgent(cfg, seed=1)
    for _ in range(10):
        p = agent.propose(context(cfg, history))
        assert p.params["DEPTH"] >= 2 and p.params["LEARNING_RATE"] >= 0.004, p.description


def test_a_value_at_the_radius_is_a_coordinate_inside_the_sampler_s_range():
    """Found by benchmarks/search_yield.py: WARMUP_FRAC 0.1215 -> 0.2715 (the full step up, in a
    [0, 0.3] range) came back as the coordinate 1.0000000000000002, which Optuna's distribution
    refuses: the agent raised and the research run stopped."""
    param = default_param("WARMUP_FRAC", 0.05, "float")
    st = region.step("WARMUP_FRAC", param, 0.1215, 0.5, (-1,))
    assert st is not None and st.value(1.0) == pytest.approx(0.2715)
    assert st.coordinate(st.value(1.0)) == 1.0 and st.coordinate(st.value(-1.0)) == 1.0  # one side only


def test_the_region_widens_with_experience():
    assert region.schedule(0, 10) == (3, region.RADIUS_START)
    most, radius = region.schedule(200, 10)
    assert most == 10 and radius == region.RADIUS_MAX


# -- which sampler -------------------------------------------------------------------------------

def test_the_sampler_is_chosen_by_task_size_and_recorded(tmp_path):
    assert choose_sampler(2, 1000) == "tpe"  # few constants: TPE models them well
    assert choose_sampler(10, 79) == "tpe" and choose_sampler(10, 80) == "cmaes"
    cfg = config(tmp_path)
    history = [baseline(cfg)]
    assert SearchAgent(cfg, seed=0).propose(context(cfg, history)).agent == "search:tpe"
    assert TpeAgent(cfg, seed=0).propose(context(cfg, history)).agent == "tpe"
    assert make_agent("cmaes", cfg, seed=0).propose(context(cfg, history)).agent == "cmaes:tpe"  # its local start


def test_cmaes_starts_at_the_best_and_learns_from_its_results(tmp_path):
    cfg = config(tmp_path)
    history = [baseline(cfg, metric=toy_loss(baseline(cfg).params))]
    history += [experiment(i + 2, history[0].params, 3.0 + i) for i in range(region.local_trials(10))]  # local start
    agent = CmaEsAgent(cfg, seed=1)
    trials = set()
    for i in range(24):
        p = agent.propose(context(cfg, history))
        assert p.agent == "cmaes" and p.info["sampler"] == "cmaes" and p.info["phase"] == "wide"
        assert violation(p.params, history[0].params) is None
        trials.add(p.info["trial"])
        history.append(experiment(len(history) + 1, p.params, toy_loss(p.params), info=p.info))
    study = agent._cma.study
    told = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(told) >= 24  # the best at its centre, then every result
    assert told[0].params == {n: 0.0 for n in told[0].params}  # the centre is the best
    generations = {t.system_attrs.get("cma:generation") for t in told[1:]}
    assert len(generations) >= 2  # CMA-ES updated its distribution from what it was told


# -- what the samplers learn ---------------------------------------------------------------------

def test_guard_violations_crashes_and_pruned_runs_inform_the_study(tmp_path):
    cfg = config(tmp_path, guards=[Guard("peak_memory_mb", max_ratio=1.5)])
    base = baseline(cfg)
    base.metrics = {"val_bpb": 2.5, "peak_memory_mb": 100.0}
    p = base.params
    history = [base,
               experiment(2, {**p, "LEARNING_RATE": 0.006}, 2.0, metrics={"val_bpb": 2.0, "peak_memory_mb": 900.0}),
               experiment(3, {**p, "LEARNING_RATE": 0.0065}, None, status="crash"),
               experiment(4, {**p, "LEARNING_RATE": 0.005}, 2.4, reason="discard: over budget: ran 9.0s",
                          metrics={"val_bpb": 2.4, "peak_memory_mb": 100.0}),
               experiment(5, {**p, "LEARNING_RATE": 0.003}, 2.7, status="pruned"),
               experiment(6, {**p, "LEARNING_RATE": 0.0045}, 2.45, metrics={"val_bpb": 2.45, "peak_memory_mb": 90.0})]
    agent = SearchAgent(cfg, seed=0)
    space = search_space(cfg, {"train.py": GPT})
    steps = {n: region.step(n, space[n][1], p[n], region.RADIUS_START) for n in space}
    study = agent._tpe_study(context(cfg, history), {"LEARNING_RATE": steps["LEARNING_RATE"]}, steps)
    states = [(t.state, t.value, bool(t.constraints)) for t in study.trials]
    assert states[0] == (TrialState.COMPLETE, 2.5, False) and states[5] == (TrialState.COMPLETE, 2.45, False)
    assert states[1] == (TrialState.COMPLETE, 2.0, True)  # broke the memory guard: infeasible
    assert states[2] == (TrialState.COMPLETE, 2.7, True)  # crashed: infeasible, the worst value seen
    assert states[3] == (TrialState.COMPLETE, 2.4, True)  # over budget: infeasible
    assert study.trials[4].state == TrialState.PRUNED and study.trials[4].intermediate_values == {0: 2.7}
    assert len(study.trials) == 6
    # a setting needing at least the memory of the one that broke the guard is not proposed
    big = experiment(7, {**p, "BATCH_SIZE": 16}, 2.0, metrics={"val_bpb": 2.0, "peak_memory_mb": 900.0})
    assert agent._memory_failures(context(cfg, [base, big])) == [big.params]
    for _ in range(10):
        q = agent.propose(context(cfg, [base, big]))
        assert not (q.params["BATCH_SIZE"] >= 16 and q.params["DEPTH"] >= 2 and q.params["N_EMBD"] >= 96)


# -- through the real loop -----------------------------------------------------------------------

NANO_TOY = textwrap.dedent('''\
    """nanoGPT-like: adjacent constants (a keep conflicts in git with every other change)."""
    import math
    LEARNING_RATE = 0.004
    BATCH_SIZE = 8
    DEPTH = 2
    N_EMBD = 96
    N_HEAD = 4
    DROPOUT = 0.1
    assert N_EMBD % N_HEAD == 0, "N_HEAD must divide N_EMBD"
    loss = 2 + math.log10(LEARNING_RATE / 0.012) ** 2 + DROPOUT + 0.1 * abs(math.log2(BATCH_SIZE / 16)) + 0.1 * abs(DEPTH - 3)
    print(f"val_bpb: {loss:.6f}")
''')
NANO_CONFIG = textwrap.dedent('''\
    [task]
    editable = ["train.py"]
    run = "python train.py"
    [budget]
    seconds = 2
    timeout = 30
    [metric]
    name = "val_bpb"
    direction = "minimize"
    [judge]
    noise_runs = 1
''')


def test_max_experiments_3_runs_3_real_experiments(tmp_path: Path):
    """Issue 12: queued proposals must not turn into conflict discards after a keep."""
    from tests.apps.test_cli import cli, events
    from tests.conftest import make_task

    task = make_task(tmp_path / "nano", train=NANO_TOY, config=NANO_CONFIG)
    evs = events(cli("run", str(task), "--seed", "2", "--max-experiments", "4", "--ahead", "3", "--json").stdout)
    assert evs[-1]["event"] == "done" and evs[-1]["runs"] == 4
    from autoresearch.store.ledger import Ledger
    ledger = Ledger(task / ".autoresearch" / "ledger.db")
    exps = ledger.experiments(evs[-1]["tag"])
    ledger.close()
    ran = [e for e in exps[1:] if e.status in ("keep", "discard", "crash", "timeout")]
    assert len(ran) == 3 and all(e.metric is not None for e in ran), [(e.status, e.reason) for e in exps]
    assert all(e.agent == "search:tpe" and 1 <= len(e.info["changed"]) <= 3 for e in ran)
    assert not any("conflicts" in e.reason for e in exps)
    rows = (task / "results.tsv").read_text().splitlines()[1:]
    assert len(rows) == 4 and not any("\t0.000000\t" in row for row in rows)
    assert ran[0].status == "keep" and all(e.info.get("rebased") for e in ran[1:])  # proposed ahead, re-expressed
