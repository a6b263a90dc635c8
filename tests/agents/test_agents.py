"""The non-LLM agents: constants in the source, the random agent, the TPE search agent, the registry."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from autoresearch.agents import (
    AGENTS,
    RandomAgent,
    SearchAgent,
    make_agent,
    register_agent,
)
from autoresearch.agents.base import Agent, Context, NoProposal, Proposal
from autoresearch.agents.source_constants import (
    current_params,
    find_constants,
    literal_text,
    parse_setting_idea,
    search_space,
    set_constants,
)
from autoresearch.core.config import Guard, TaskConfig, parse_config
from autoresearch.core.records import Experiment, Idea

TRAIN = '''"""A toy training script."""
import math

# -- hyperparameters --
LEARNING_RATE = 0.003   # peak learning rate
DEPTH: int = 4          # layers
WARMUP = 0.0
SEED = 1337
NAME = "toy"
USE_BIAS = True
BETAS = (0.9, 0.95)


def main():
    LOCAL = 5
    print(f"score: {LEARNING_RATE * DEPTH}")
'''


def make_config(tmp_path: Path, search: dict | None = None, direction: str = "minimize",
                guards: list[Guard] | None = None) -> TaskConfig:
    (tmp_path / "train.py").write_text(TRAIN)
    data = {"task": {"run": "python train.py", "editable": ["train.py"]},
            "metric": {"name": "score", "direction": direction}}
    if search:
        data["search"] = search
    cfg = parse_config(data, tmp_path, tmp_path / "autoresearch.toml")
    cfg.guards = guards or []
    return cfg


def exp(i: int, params: dict, metric: float | None, status: str | None = None, agent: str = "test",
        metrics: dict | None = None) -> Experiment:
    status = status or ("crash" if metric is None else "discard")
    return Experiment(id=i, tag="t", parent_commit="p", commit="c", agent=agent, description=f"exp {i}",
                      status=status, params=dict(params), metric=metric,
                      metrics=dict(metrics or ({} if metric is None else {"score": metric})))


def ctx(cfg: TaskConfig, files: dict[str, str], history: list[Experiment] | None = None,
        ideas: list[Idea] | None = None) -> Context:
    history = history or []
    return Context(config=cfg, program="", files=dict(files), history=history, ideas=ideas or [],
                   best=history[-1] if history else None)


def toy(params: dict) -> float:
    """Minimum at LEARNING_RATE = 0.01, DEPTH = 6."""
    return math.log10(params["LEARNING_RATE"] / 0.01) ** 2 + ((params["DEPTH"] - 6) / 4) ** 2


def baseline(cfg: TaskConfig) -> Experiment:
    params = current_params(cfg, {"train.py": TRAIN})
    return exp(1, params, toy(params), status="keep", agent="baseline")


# -- constants -------------------------------------------------------------------------------------

def test_find_constants_reads_numeric_module_level_literals():
    consts = find_constants(TRAIN + "NEG = -2.5\nDUP = 1\nDUP = 2\nBUMP = 3\nBUMP += 1\nA = B = 4\n")
    assert set(consts) == {"LEARNING_RATE", "DEPTH", "WARMUP", "SEED", "NEG"}
    lr = consts["LEARNING_RATE"]
    assert (lr.value, lr.kind, lr.lineno) == (0.003, "float", 5)
    assert TRAIN.splitlines()[4][lr.col:lr.end_col] == "0.003"
    assert consts["DEPTH"].kind == "int" and consts["DEPTH"].value == 4
    assert consts["NEG"].value == -2.5


def test_set_constants_rewrites_only_the_literals():
    out = set_constants(TRAIN, {"LEARNING_RATE": 0.0071, "DEPTH": 6.4})
    expected = (TRAIN.replace("LEARNING_RATE = 0.003   # peak", "LEARNING_RATE = 0.0071   # peak")
                .replace("DEPTH: int = 4 ", "DEPTH: int = 6 "))
    assert out == expected  # comments, spacing, the rest: byte for byte
    consts = find_constants(out)
    assert consts["DEPTH"].value == 6 and isinstance(consts["DEPTH"].value, int)  # ints stay ints
    assert set_constants(out, {"LEARNING_RATE": 0.003, "DEPTH": 4}) == TRAIN  # round trip
    assert set_constants(TRAIN, {}) == TRAIN


def test_set_constants_signs_exponents_and_line_endings():
    src = "A = -1e-3\r\nB = 2  # two\r\nC = 1.0; D = 'é'; E = 5\r\n"
    out = set_constants(src, {"A": 1e-5, "B": -3, "C": 100, "E": 6})
    assert out == "A = 1e-5\r\nB = -3  # two\r\nC = 100.0; D = 'é'; E = 6\r\n"
    assert literal_text(1e-4, "float") == "0.0001"
    assert literal_text(2.5e-7, "float") == "2.5e-7"
    assert literal_text(3.6, "int") == "4"
    with pytest.raises(ValueError):
        set_constants(src, {"A": float("nan")})


def test_set_constants_unknown_or_ambiguous_name():
    with pytest.raises(KeyError, match="NOPE"):
        set_constants(TRAIN, {"NOPE": 1})
    with pytest.raises(KeyError, match="more than once"):
        set_constants("X = 1\nX = 2\n", {"X": 3})
    with pytest.raises(KeyError, match="not a plain"):
        set_constants(TRAIN, {"USE_BIAS": 1})


def test_default_search_space(tmp_path):
    cfg = make_config(tmp_path)
    space = search_space(cfg, {"train.py": TRAIN})
    assert set(space) == {"LEARNING_RATE", "DEPTH", "WARMUP"}  # SEED is skipped, the rest are not numbers
    assert (space["WARMUP"][1].low, space["WARMUP"][1].high) == (0.0, 0.3)  # a fraction, 0 included
    path, lr = space["LEARNING_RATE"]
    assert path == "train.py" and lr.log and not lr.integer
    assert lr.low == pytest.approx(0.0003) and lr.high == pytest.approx(0.03)
    depth = space["DEPTH"][1]
    assert (depth.low, depth.high, depth.integer) == (2, 8, True)
    # ranges are anchored to the baseline's values, not to wherever the best has moved
    moved = set_constants(TRAIN, {"LEARNING_RATE": 0.02})
    anchored = search_space(cfg, {"train.py": moved}, anchor={"LEARNING_RATE": 0.003, "DEPTH": 4})
    assert anchored["LEARNING_RATE"][1].high == pytest.approx(0.03)
    # fractions stay below 1
    assert search_space(cfg, {"train.py": "DROPOUT = 0.2\n"})["DROPOUT"][1].high < 1.0
    # non-editable and non-Python files are not searched
    assert search_space(cfg, {"other.py": "X = 3\n", "train.py": "Y = 2\n"}).keys() == {"Y"}


def test_configured_search_space(tmp_path):
    cfg = make_config(tmp_path, search={"LEARNING_RATE": {"low": 1e-4, "high": 1e-1, "log": True},
                                        "DEPTH": {"low": 1.5, "high": 9.5}, "SEED": [1, 2, 3]})
    space = search_space(cfg, {"train.py": TRAIN})
    assert list(space) == ["LEARNING_RATE", "DEPTH", "SEED"]
    assert space["DEPTH"][1].integer and (space["DEPTH"][1].low, space["DEPTH"][1].high) == (2, 9)
    assert space["SEED"][1].choices == (1, 2, 3)
    assert current_params(cfg, {"train.py": TRAIN}) == {"LEARNING_RATE": 0.003, "DEPTH": 4, "SEED": 1337}
    bad = make_config(tmp_path, search={"MISSING": {"low": 1, "high": 2}})
    with pytest.raises(ValueError, match="MISSING"):
        search_space(bad, {"train.py": TRAIN})


def test_current_params_records_every_numeric_constant(tmp_path):
    cfg = make_config(tmp_path)
    assert current_params(cfg, {"train.py": TRAIN}) == {"LEARNING_RATE": 0.003, "DEPTH": 4, "WARMUP": 0.0,
                                                         "SEED": 1337}


def test_parse_setting_idea():
    assert parse_setting_idea("LEARNING_RATE=0.01") == {"LEARNING_RATE": 0.01}
    assert parse_setting_idea(" LEARNING_RATE = 1e-2 ; DEPTH=6, WARMUP=.5,") == {
        "LEARNING_RATE": 0.01, "DEPTH": 6, "WARMUP": 0.5}
    assert isinstance(parse_setting_idea("DEPTH=6")["DEPTH"], int)
    assert parse_setting_idea("NEG=-3")["NEG"] == -3
    for text in ("try a bigger model", "LEARNING_RATE=0.01 please", "lr=0.01", "A=1, A=2", "A=", ""):
        assert parse_setting_idea(text) is None, text


# -- random agent ----------------------------------------------------------------------------------

def test_random_agent_stays_in_range_and_changes_the_file(tmp_path):
    cfg = make_config(tmp_path)
    agent = RandomAgent(cfg, seed=3)
    assert isinstance(agent, Agent) and agent.name == "random"
    c = ctx(cfg, {"train.py": TRAIN}, [baseline(cfg)])
    for _ in range(50):
        p = agent.propose(c)
        assert list(p.edits) == ["train.py"] and p.edits["train.py"] != TRAIN
        values = find_constants(p.edits["train.py"])
        lr, depth, warmup = values["LEARNING_RATE"].value, values["DEPTH"].value, values["WARMUP"].value
        assert 0.0003 <= lr <= 0.03 and isinstance(depth, int) and 2 <= depth <= 8 and 0 <= warmup <= 0.3
        assert p.params == current_params(cfg, p.edits)
        changed = [n for n, v in (("LEARNING_RATE", lr), ("DEPTH", depth), ("WARMUP", warmup))
                   if v != find_constants(TRAIN)[n].value]
        assert 1 <= len(changed) <= 2
        assert p.description.startswith("random: ") and " -> " in p.description
        assert p.idea_id is None


def test_random_agent_tries_setting_ideas_first(tmp_path):
    cfg = make_config(tmp_path)
    ideas = [Idea(1, "use a cosine schedule"), Idea(2, "DEPTH=6")]
    p = RandomAgent(cfg, seed=0).propose(ctx(cfg, {"train.py": TRAIN}, [baseline(cfg)], ideas))
    assert p.idea_id == 2 and p.params["DEPTH"] == 6 and p.params["LEARNING_RATE"] == 0.003
    assert p.description == "random: idea #2: DEPTH 4 -> 6"
    # a free-text idea alone is ignored
    p = RandomAgent(cfg, seed=0).propose(ctx(cfg, {"train.py": TRAIN}, [baseline(cfg)], ideas[:1]))
    assert p.idea_id is None


# -- search agent (more in test_search_agent.py) ---------------------------------------------------

def test_search_agent_exhausts_a_tiny_space(tmp_path):
    cfg = make_config(tmp_path, search={"DEPTH": [2, 4, 8], "SEED": [1, 1337]})
    files = {"train.py": TRAIN}
    history = [exp(1, current_params(cfg, files), 1.0, status="keep", agent="baseline")]
    agent = SearchAgent(cfg, seed=0)
    for i in range(5):
        p = agent.propose(ctx(cfg, files, history))
        assert p.params["DEPTH"] in (2, 4, 8) and p.params["SEED"] in (1, 1337)
        history.append(exp(i + 2, p.params, float(p.params["DEPTH"])))
    assert len({(e.params["DEPTH"], e.params["SEED"]) for e in history}) == 6  # no repeats
    with pytest.raises(NoProposal):
        agent.propose(ctx(cfg, files, history))
    with pytest.raises(NoProposal):
        RandomAgent(cfg, seed=0).propose(ctx(cfg, files, history))


def test_no_search_space_is_no_proposal(tmp_path):
    cfg = make_config(tmp_path)
    for agent in (RandomAgent(cfg), SearchAgent(cfg)):
        with pytest.raises(NoProposal):
            agent.propose(ctx(cfg, {"train.py": "print('hi')\n"}))


# -- registry --------------------------------------------------------------------------------------

def test_registry(tmp_path):
    cfg = make_config(tmp_path)
    assert isinstance(make_agent("random", cfg, seed=1), RandomAgent)
    assert isinstance(make_agent("search", cfg), SearchAgent)
    with pytest.raises(ValueError, match="random, search"):
        make_agent("nope", cfg)

    class Echo:
        name = "echo"

        def __init__(self, config, **options):
            self.options = options

        def propose(self, ctx):
            return Proposal("nothing", {})

    try:
        register_agent("echo", Echo)
        assert make_agent("echo", cfg, model="x").options == {"model": "x"}
        with pytest.raises(ValueError, match="already registered"):
            register_agent("echo", lambda config: Echo(config))
    finally:
        AGENTS.pop("echo", None)


# -- through the real loop -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["search", "random"])
def test_agents_drive_the_research_loop(toy_task: Path, name: str):
    from autoresearch.core.config import load_config
    from autoresearch.research.coordinator import Research
    from autoresearch.research.scheduler import Limits
    from autoresearch.store.ledger import Ledger

    r = Research(load_config(toy_task), make_agent(name, load_config(toy_task), seed=0), tag="t")
    r.open()
    r.ledger.add_idea("X=2.0, WIDTH=6")
    r.ledger.add_idea("try a transformer")
    try:
        assert r.run(Limits(max_experiments=6)) == 6
    finally:
        r.close()
    ledger = Ledger(toy_task / ".autoresearch" / "ledger.db")
    exps = ledger.experiments("t")
    assert [e.status for e in exps].count("rejected") == 0
    assert exps[0].params == {"X": 5.0, "WIDTH": 3}  # the baseline's params come from current_params
    assert exps[1].idea_id == 1 and exps[1].params == {"X": 2.0, "WIDTH": 6} and exps[1].status == "keep"
    assert [i.status for i in ledger.ideas()] == ["tried", "open"]
    settings = [tuple(e.params.values()) for e in exps]
    assert len(set(settings)) == len(settings)
    for e in exps[2:]:
        assert e.agent == {"search": "search:tpe"}.get(name, name) and e.description.startswith(f"{name}: ")
        assert -5.0 <= e.params["X"] <= 10.0 and 1 <= e.params["WIDTH"] <= 12
    ledger.close()


@pytest.mark.parametrize("agent, options, key, problem", [
    ("openai", {"model": "m", "max_tokens": "lots"}, "agent.max_tokens", "'lots' is not a whole number"),
    ("openai", {"model": "m", "temprature": 0.2}, "agent.temprature", "is not an option of the openai agent"),
    ("anthropic", {"model": "m", "notebook": "yes"}, "agent.notebook", "'yes' is not true or false"),
    ("cli", {"command": 5}, "agent.command", "5 is not a string or a list of strings"),
    ("search", {"n_startup_trials": 2.5}, "agent.n_startup_trials", "2.5 is not a whole number"),
    ("nosuch", {}, "agent.name", "'nosuch' is not an agent"),
])
def test_agent_options_are_checked_against_a_typed_schema(tmp_path, agent, options, key, problem):
    from autoresearch.agents import make_agent
    from autoresearch.core.config import ConfigError

    cfg = make_config(tmp_path)
    with pytest.raises(ConfigError) as info:
        make_agent(agent, cfg, **options)
    assert info.value.key == key and problem in info.value.problem, str(info.value)
    assert "fix:" in str(info.value)


def test_agent_options_of_the_right_type_pass(tmp_path):
    from autoresearch.agents import make_agent

    agent = make_agent("openai", make_config(tmp_path), model="m", base_url="http://127.0.0.1:9/v1", max_tokens=64,
                       temperature=0, structured_output="json_schema", max_retries=0)
    assert agent.name == "openai"
