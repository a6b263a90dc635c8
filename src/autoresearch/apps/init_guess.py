"""`autoresearch init`: guess a task config from a repository as it is, and say what was guessed.

Every guess is a `Guess` (the config key, the value, why): `render` writes them as a commented
autoresearch.toml, `summary` as one line each with the key to change. Warnings say where a guess is
weak (no metric printed anywhere, a run bounded by iterations rather than time, a download at
import). Nothing here runs the repository's code: `init --probe` (apps/probe.py) does that.

The rules, in order of trust: a `train.py` is the editable file; a benchmark or scoring script
(`bench*.py`, `score*.py`, `eval*.py`) is frozen and is what runs, and the module it imports is
editable; a metric is a `name: value` line some print statement writes (a heading such as
`print("vocabulary:")` prints no value and is no metric); the environment follows the repository's
packaging (`pyproject.toml` + `uv.lock`: uv; `.venv`: that venv; `requirements.txt`: a venv built
at setup).
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoresearch.agents.source_constants import Constant, find_constants

SCORER_RE = re.compile(r"^(bench|benchmark|score|scorer|evaluate|eval)[\w]*\.py$")
# `print(f"name: {value}")`, `print("name:", value)`, `print(f"name: %f" % v)`: a name with a value.
LINE_METRIC_RE = re.compile(r"""print\(\s*f?["']\s*([A-Za-z_][A-Za-z0-9_]*):\s*(?:\{|%|["']\s*,)""")
# `print(f"... val loss {x:.4f}")`: a name followed by a formatted number (read with a regex).
SPACED_METRIC_RE = re.compile(r"""([A-Za-z_]+(?: [A-Za-z_]+)?) \{[^}]*:\.\d+f\}""")
# `print(f"took {t1 - t0:.2f} seconds")`: a time with its unit.
TIMING_RE = re.compile(r"""\{[^}]*\}\s*(seconds|secs|ms|us)\b""")
TIMER_RE = re.compile(r"time\.(perf_counter|time|monotonic|process_time)\(|timeit")
GOOD_METRICS = ("val_bpb", "val_loss", "val loss", "loss", "error", "score", "accuracy", "seconds", "time")
MAXIMIZE_RE = re.compile(r"acc|score|reward|auc|throughput|per_s|ops|speed")
# Constants that feed printouts or name things, never the result: warned about, left out of [search].
NOT_HYPERPARAMETER_RE = re.compile(r"FLOPS|PEAK|SEED|VERSION|PORT|_DIR$|_PATH$|^LOG_|_INTERVAL$|VERBOSE|ITERS$|^EVAL_")
DOWNLOAD_AT_IMPORT_RE = re.compile(r"get_kernel\(|from_pretrained\(|requests\.get\(|urlopen\(|hf_hub_download\(")
HOME_CACHE_RE = re.compile(r"""expanduser\(\s*["']~["']\s*\)\s*,\s*["'](\.[\w.-]+)["']\s*,\s*["']([\w.-]+)["']|"""
                           r"""["']~/(\.[\w.-]+/[\w.-]+)""")
NETWORK_RE = re.compile(r"https?://|import requests|urllib|huggingface_hub|datasets\.load_dataset")


@dataclass
class Guess:
    key: str  # the config key, e.g. "task.editable"
    value: Any
    why: str


@dataclass
class TaskGuess:
    root: Path
    guesses: dict[str, Guess] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    search: dict[str, dict[str, Any]] = field(default_factory=dict)  # [search] ranges written out
    left_out: dict[str, str] = field(default_factory=dict)  # constant -> why it is not searched

    def put(self, key: str, value: Any, why: str) -> None:
        self.guesses[key] = Guess(key, value, why)

    def get(self, key: str, default: Any = None) -> Any:
        return self.guesses[key].value if key in self.guesses else default

    def to_dict(self) -> dict[str, Any]:
        return {"guesses": {k: {"value": g.value, "why": g.why} for k, g in self.guesses.items()},
                "warnings": self.warnings, "search": self.search, "left_out": self.left_out}


def guess(root: Path) -> TaskGuess:
    root = Path(root).resolve()
    g = TaskGuess(root)
    py = sorted(p.name for p in root.glob("*.py"))
    _guess_files(g, py)
    _guess_metric(g)
    _guess_budget(g, py)
    _guess_environment(g)
    _guess_setup(g, py)
    _guess_search(g)
    return g


# -- the files ---------------------------------------------------------------------------------

def _guess_files(g: TaskGuess, py: list[str]) -> None:
    packages = {p.parent.name for p in g.root.glob("*/__init__.py")}
    local = {p[:-3] for p in py} | packages
    scorers = [p for p in py if SCORER_RE.match(p) or _is_benchmark(g.root / p, local)]
    frozen = [p for p in ("prepare.py",) if p in py]
    if "train.py" in py and "train.py" not in scorers:
        editable, run, why = ["train.py"], "python train.py", "train.py is the training script"
        config = _nanogpt_config(g.root)
        if config:
            editable = ["train.py", "model.py", config] if "model.py" in py else ["train.py", config]
            run = f"python train.py {config}" + _cpu_flags(g.root)
            why = f"train.py reads its settings from {config} (configurator.py pattern)"
    elif scorers:
        scorer = scorers[0]
        imported = sorted(_imports(g.root / scorer) & local - {scorer[:-3]})
        editable = [f"{m}/*.py" if m in packages else f"{m}.py" for m in imported] or \
            [p for p in py if p not in scorers][:1] or [scorer]
        run = f"python {scorer}"
        frozen.append(scorer)
        why = f"{scorer} is a benchmark/scorer: it is frozen and runs; it imports {', '.join(editable)}"
    else:
        editable = [p for p in py if p not in frozen][:1] or ["main.py"]
        run, why = f"python {editable[0]}", "the first Python file at the root"
    g.put("task.editable", editable, why)
    g.put("task.frozen", frozen, "a data/evaluation script or the scorer: nobody may change it" if frozen else
          "nothing looks like an evaluator")
    g.put("task.run", run, "runs the scorer, which imports the editable code" if run.endswith(tuple(scorers)) and
          scorers else "runs the training script")


def _is_benchmark(path: Path, local: set[str]) -> bool:
    """A script that times code it imports from the repository and has no code of its own (minbpe's
    train.py): what it measures is the imported code, so that is what agents edit."""
    text = path.read_text(errors="replace")
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    own_code = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body)
    return not own_code and bool(TIMER_RE.search(text)) and bool(_imports(path) & local)


def _nanogpt_config(root: Path) -> str | None:
    """The cheapest `config/train_*.py` when train.py exec()s configurator.py (nanoGPT's pattern)."""
    train = (root / "train.py").read_text(errors="replace")
    if "configurator.py" not in train:
        return None
    best: tuple[float, str] | None = None
    for path in sorted((root / "config").glob("train_*.py")):
        consts = _consts(path)
        iters = float(consts["max_iters"].value) if "max_iters" in consts else float("inf")
        if best is None or iters < best[0]:
            best = (iters, path.relative_to(root).as_posix())
    return best[1] if best else None


def _cpu_flags(root: Path) -> str:
    from autoresearch.run.slots import visible_gpus

    train = (root / "train.py").read_text(errors="replace")
    if visible_gpus() or not re.search(r"^device = ", train, re.MULTILINE):
        return ""
    return " --device=cpu" + (" --compile=False" if re.search(r"^compile = ", train, re.MULTILINE) else "")


def _imports(path: Path) -> set[str]:
    try:
        tree = ast.parse(path.read_text(errors="replace"))
    except SyntaxError:
        return set()
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


def _consts(path: Path) -> dict[str, Constant]:
    try:
        return find_constants(path.read_text(errors="replace"))
    except (SyntaxError, ValueError, OSError):
        return {}


# -- the metric --------------------------------------------------------------------------------

def _guess_metric(g: TaskGuess) -> None:
    sources = [*g.get("task.editable"), *g.get("task.frozen")]
    text = "\n".join((g.root / p).read_text(errors="replace") for p in sources if (g.root / p).is_file())
    printed = list(dict.fromkeys(LINE_METRIC_RE.findall(text)))
    spaced = list(dict.fromkeys(SPACED_METRIC_RE.findall(text)))
    pick = _preferred(printed)
    if pick:
        g.put("metric.name", pick, f"printed as `{pick}: <number>` by {', '.join(sources)}")
    elif _preferred(spaced):
        name = _preferred(spaced)
        g.put("metric.name", name.replace(" ", "_"), f"printed as `{name} <number>`, read with a regex")
        g.put("metric.source", "regex", "the value follows the name without a colon")
        g.put("metric.pattern", rf"{re.escape(name)} ([-+0-9.eE]+)", "the last match counts")
    elif TIMING_RE.search(text):
        unit = TIMING_RE.search(text).group(1)
        g.put("metric.name", unit, f"printed as `<number> {unit}` (a timing), read with a regex")
        g.put("metric.source", "regex", "the value comes before its unit")
        g.put("metric.pattern", rf"([-+0-9.eE]+) {unit}\b", "the last match counts")
    else:
        g.put("metric.name", "score", "a placeholder: nothing prints a `name: value` line")
        g.warnings.append(f"no print of a `name: value` line in {', '.join(sources)}: set [metric] name to what the "
                          "run prints (or run `autoresearch init --probe` to see it)")
    name = g.get("metric.name")
    g.put("metric.direction", "maximize" if MAXIMIZE_RE.search(name) else "minimize",
          "higher is better for accuracies, scores, throughputs" if MAXIMIZE_RE.search(name) else
          "lower is better for losses, errors, times")


def _preferred(names: list[str]) -> str | None:
    for wanted in GOOD_METRICS:
        for n in names:
            if n == wanted:
                return n
    for wanted in GOOD_METRICS:
        for n in reversed(names):
            if wanted.replace(" ", "_") in n.replace(" ", "_"):
                return n
    return None


# -- budget, environment, setup ----------------------------------------------------------------

def _guess_budget(g: TaskGuess, py: list[str]) -> None:
    budget, why = 300.0, "the default"
    m = re.search(r"^TIME_BUDGET\s*=\s*([0-9.]+)", (g.root / "prepare.py").read_text(errors="replace"), re.MULTILINE) \
        if "prepare.py" in py else None
    if m:
        budget, why = float(m.group(1)), "TIME_BUDGET in prepare.py"
    g.put("budget.seconds", budget, why)
    g.put("budget.timeout", budget * 2 + 60, "twice the budget plus a minute for start-up and evaluation")
    editable = "\n".join((g.root / p).read_text(errors="replace") for p in g.get("task.editable") if
                         (g.root / p).is_file())
    if "AUTORESEARCH_TIME_BUDGET" not in editable and "TIME_BUDGET" not in editable and "max_iters" in editable:
        g.warnings.append("the run stops after max_iters, not after a time budget: fix max_iters in the run command "
                          "(where the search cannot change it); a candidate that makes the run slower than the "
                          "baseline plus [budget] overrun x seconds is stopped there and discarded")
    download = DOWNLOAD_AT_IMPORT_RE.search(editable)
    if download:
        g.warnings.append(f"the editable code may download at run time (`{download.group(0)}`): experiments have no "
                          "network; if the run needs it, set [sandbox] network = true, or fetch it in the setup "
                          "into a [setup] output")


def _guess_environment(g: TaskGuess) -> None:
    root = g.root
    if (root / "pyproject.toml").is_file() and (root / "uv.lock").is_file():
        g.put("environment.kind", "uv", "pyproject.toml + uv.lock: uv syncs the locked packages at setup")
        g.put("setup.network", True, "the first `uv sync` downloads the locked packages (cached after that)")
    elif (root / ".venv" / "bin" / "python").exists():
        g.put("environment.kind", "venv", "the repository has a .venv")
    elif (root / "requirements.txt").is_file():
        g.put("environment.kind", "venv", "requirements.txt: a venv is built from it at setup")
        g.put("environment.requirements", "requirements.txt", "what the venv installs")
        g.put("setup.network", True, "installing the requirements downloads them")
    else:
        g.put("environment.kind", "autoresearch", "no packaging found: the Python autoresearch runs under")


def _guess_setup(g: TaskGuess, py: list[str]) -> None:
    outputs: list[str] = []
    inputs: list[str] = []
    if "prepare.py" in py:
        text = (g.root / "prepare.py").read_text(errors="replace")
        g.put("task.setup", "python prepare.py", "prepare.py prepares the data")
        for m in HOME_CACHE_RE.finditer(text):
            outputs.append("~/" + (m.group(3) or f"{m.group(1)}/{m.group(2)}"))
        if NETWORK_RE.search(text):
            g.put("setup.network", True, "prepare.py downloads")
    config = next((p for p in g.get("task.editable") if p.startswith("config/")), None)
    if config:
        dataset = _consts_any(g.root / config).get("dataset")
        folder = f"data/{dataset}" if dataset else None
        if folder and (g.root / folder / "prepare.py").is_file():
            g.put("task.setup", f"python {folder}/prepare.py", f"{config} trains on {folder}")
            outputs.append(folder)
            inputs += [p.relative_to(g.root).as_posix() for p in sorted((g.root / folder).glob("input*.txt"))]
            if NETWORK_RE.search((g.root / folder / "prepare.py").read_text(errors="replace")) and not inputs:
                g.put("setup.network", True, f"{folder}/prepare.py downloads its input")
    if outputs:
        g.put("setup.outputs", list(dict.fromkeys(outputs)), "what the setup writes, kept for every experiment")
    if inputs:
        g.put("setup.inputs", inputs, "git-ignored files of your checkout the setup reads")


def _consts_any(path: Path) -> dict[str, Any]:
    """String and number settings of a config file (`dataset = 'shakespeare_char'`)."""
    try:
        tree = ast.parse(path.read_text(errors="replace"))
    except (SyntaxError, OSError):
        return {}
    return {t.id: s.value.value for s in tree.body if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)
            for t in s.targets if isinstance(t, ast.Name)}


# -- the search space --------------------------------------------------------------------------

def _guess_search(g: TaskGuess) -> None:
    files = [g.root / p for p in g.get("task.editable") if p.endswith(".py") and (g.root / p).is_file()]
    divisible = set().union(*(_divisibility_names(f.read_text(errors="replace")) for f in files)) if files else set()
    for file in files:
        text = file.read_text(errors="replace")
        choices = assert_choices(text)
        for name, c in _consts(file).items():  # `assert config.n_embd % config.n_head == 0` in another file
            v = c.value
            if name in divisible and c.kind == "int" and v >= 2 and (v & (v - 1)) == 0:
                choices.setdefault(name, [v // 2, v, v * 2])
        for name, c in _consts(file).items():
            if NOT_HYPERPARAMETER_RE.search(name.upper()):
                g.left_out[name] = "not a hyperparameter by its name (a printout's constant, a seed, the run length)"
                continue
            if isinstance(c.value, bool) or c.value <= 0:
                g.left_out[name] = "not a positive number"
                continue
            if name in choices:
                g.search[name] = {"choices": choices[name]}
            elif c.kind == "int":
                g.search[name] = {"low": max(1, int(c.value) // 2), "high": int(c.value) * 2}
            else:
                high = c.value * 10 if c.value >= 1 else min(1.0, c.value * 10)
                g.search[name] = {"low": float(f"{c.value / 10:.4g}"), "high": float(f"{high:.4g}"), "log": True}
    reasons: dict[str, list[str]] = {}
    for name, why in g.left_out.items():
        reasons.setdefault(why, []).append(name)
    for why, names in reasons.items():
        g.warnings.append(f"left out of [search]: {', '.join(names)}: {why}")


def _divisibility_names(source: str) -> set[str]:
    """The names (bare, or the attribute of `config.n_head`) on both sides of `assert a % b == 0`."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and \
                isinstance(node.test.left, ast.BinOp) and isinstance(node.test.left.op, ast.Mod):
            for side in (node.test.left.left, node.test.left.right):
                if isinstance(side, ast.Name):
                    out.add(side.id)
                elif isinstance(side, ast.Attribute):
                    out.add(side.attr)
    return out


def assert_choices(source: str) -> dict[str, list[int]]:
    """Constants an assert restricts: `assert NAME in (64, 128, 256)` gives those values; a power of two
    that feeds an `assert ... % ... == 0` (directly or through one variable) gives its half, itself and
    its double (DEVICE_BATCH_SIZE = 128 where the batch must divide the total: 64, 128, 256)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    consts = find_constants(source)
    derived: dict[str, set[str]] = {}  # variable -> the constants its value uses
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            derived[stmt.targets[0].id] = {n.id for n in ast.walk(stmt.value) if isinstance(n, ast.Name)}
    out: dict[str, list[int]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assert) or not isinstance(node.test, ast.Compare):
            continue
        test = node.test
        if isinstance(test.left, ast.Name) and isinstance(test.ops[0], ast.In) and \
                isinstance(test.comparators[0], (ast.Tuple, ast.List, ast.Set)):
            values = [e.value for e in test.comparators[0].elts if isinstance(e, ast.Constant)]
            if test.left.id in consts and values:
                out[test.left.id] = values
        elif isinstance(test.left, ast.BinOp) and isinstance(test.left.op, ast.Mod):
            used = {n.id for n in ast.walk(test.left) if isinstance(n, ast.Name)}
            used |= {c for n in list(used) for c in derived.get(n, ())}
            for name in used & set(consts):
                v = consts[name].value
                if consts[name].kind == "int" and v >= 2 and (v & (v - 1)) == 0:
                    out.setdefault(name, [v // 2, v, v * 2])
    return out


# -- writing -----------------------------------------------------------------------------------

def render(g: TaskGuess) -> str:
    """The guesses as a commented autoresearch.toml (each line says why)."""
    lines = ["# autoresearch task config, guessed by `autoresearch init`. Docs: docs/config.md, docs/tasks.md.",
             *(f"# warning: {w}" for w in g.warnings), "[task]", f'name = "{g.root.name}"',
             'program = "program.md"' if (g.root / "program.md").is_file() else
             '# program = "program.md"  # instructions for LLM agents (write one!)']
    for section in ("task", "budget", "metric", "environment", "setup"):
        if section != "task":
            keys = [k for k in g.guesses if k.startswith(section + ".")]
            if not keys or (section == "environment" and g.get("environment.kind") == "autoresearch"):
                continue
            lines += ["", f"[{section}]"]
        for key, item in g.guesses.items():
            if key.startswith(section + "."):
                lines.append(f"{key.split('.', 1)[1]} = {_toml(item.value)}  # {item.why}")
    if g.search:
        lines += ["", "[search]  # ranges of the constants the `search` and `random` agents change"]
        lines += [f"{name} = {{ {', '.join(f'{k} = {_toml(v)}' for k, v in spec.items())} }}"
                  for name, spec in g.search.items()]
    return "\n".join(lines) + "\n"


def summary(g: TaskGuess) -> list[str]:
    """One line per guess: the value, why, and the key to change it."""
    out = [f"{g.key}: {_toml(g.value)}  ({g.why})" for g in g.guesses.values()]
    if g.search:
        out.append(f"search: {', '.join(g.search)}  (change the ranges under [search])")
    return out + [f"warning: {w}" for w in g.warnings]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(_toml(v) for v in value) + "]"
