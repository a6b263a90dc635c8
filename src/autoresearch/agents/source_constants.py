"""The search space lives in the source: module-level UPPER_CASE numeric constants.

`find_constants` reads them with `ast`, `set_constants` rewrites just their literal text (every
other byte of the file is kept), and `search_space` turns the constants of a task's editable files
into ranges for the non-LLM agents: the ones named in `[search]` when that table is given,
otherwise the ones `search_defaults` gives a default range by their name and baseline value.
`reapply_constants` re-expresses a change of constant values on top of other files (a proposal
made ahead, onto a best that moved meanwhile).

Command-line options count too: `add_argument("--lr", type=float, default=1e-3)` is the setting `lr`
(its default's literal is rewritten, so no wrapper script is needed).

Which assignments count: a top-level statement `NAME = <literal>` or `NAME: T = <literal>` where
NAME matches `^[A-Z][A-Z0-9_]*$` (in a *config file*, a module of nothing but assignments like
nanoGPT's `config/train_shakespeare_char.py`, any public name: `learning_rate = 1e-3`) and the literal is an int or float, optionally with a sign
(`-3`, `+1e-4`). Bools, strings, complex numbers and expressions (`2 ** 10`) are ignored. A name
that is bound more than once at module level (assigned twice, augmented, assigned inside a
top-level `if`/`for`/`with`/`try`, or declared `global` in a function) is *skipped*: rewriting
one of its assignments would not reliably change the value the program uses.
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from autoresearch.agents.search_defaults import default_param
from autoresearch.core.config import SearchParam, TaskConfig, is_editable

NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
CONFIG_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # the names of a config file's settings
SKIP_BY_DEFAULT = ("SEED",)  # constants whose name contains one of these are only searched if configured
FLOAT_LOG_DIGITS = 4  # significant digits kept for values sampled in a log range
LINEAR_RESOLUTION = 1e-4  # values sampled in a linear range are rounded to this fraction of its width

Number = int | float


@dataclass(frozen=True)
class Constant:
    """One numeric constant. `lineno` is 1-based; `col`/`end_col` are 0-based character offsets
    of the literal (sign included) on that line."""

    name: str
    value: Number
    lineno: int
    col: int
    end_col: int
    kind: Literal["int", "float"]


# -- reading -------------------------------------------------------------------------------------

def find_constants(source: str) -> dict[str, Constant]:
    """The module-level numeric UPPER_CASE constants of a Python source, by name, in file order.

    Raises SyntaxError if the source does not parse.
    """
    return _scan(source)[0]


def _scan(source: str) -> tuple[dict[str, Constant], dict[str, str]]:
    """(constants, {name: why it is not a constant}) for the names that look like constants."""
    tree = ast.parse(source)
    lines = _lines(source)
    found: dict[str, Constant] = {}
    skipped: dict[str, str] = {}
    bindings = _module_bindings(tree)
    names = CONFIG_NAME_RE if is_config_file(tree) else NAME_RE
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            if len(stmt.targets) != 1 or not isinstance(stmt.targets[0], ast.Name):
                continue
            name, value = stmt.targets[0].id, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None and isinstance(stmt.target, ast.Name):
            name, value = stmt.target.id, stmt.value
        else:
            continue
        if not names.match(name):
            continue
        if bindings.get(name, 0) > 1:
            skipped[name] = "it is assigned more than once at module level"
            continue
        _add(found, skipped, name, value, lines)
    for name, value in _argparse_defaults(tree, skipped).items():
        if name in found or name in skipped:
            skipped[name] = "it names both a constant and a command-line option"
            found.pop(name, None)
            continue
        _add(found, skipped, name, value, lines)
    return found, skipped


def _add(found: dict[str, Constant], skipped: dict[str, str], name: str, value: ast.expr, lines: list[str]) -> None:
    """Record `name` with the literal `value` (its exact span, to rewrite it), or why it cannot be."""
    number = _literal(value)
    if number is None:
        skipped[name] = "its value is not a plain int or float literal"
        return
    if value.lineno != value.end_lineno or value.end_col_offset is None:
        skipped[name] = "its literal spans several lines"
        return
    line = lines[value.lineno - 1].encode()
    col = len(line[:value.col_offset].decode(errors="replace"))
    end_col = len(line[:value.end_col_offset].decode(errors="replace"))
    kind: Literal["int", "float"] = "int" if isinstance(number, int) else "float"
    found[name] = Constant(name, number, value.lineno, col, end_col, kind)


def _argparse_defaults(tree: ast.Module, skipped: dict[str, str]) -> dict[str, ast.expr]:
    """`parser.add_argument("--learning-rate", type=float, default=1e-3)` anywhere in the file: the
    option's dest (`learning_rate`) -> its default's literal. An option defined twice is skipped."""
    out: dict[str, ast.expr] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and
                node.func.attr == "add_argument"):
            continue
        default = next((k.value for k in node.keywords if k.arg == "default"), None)
        dest = next((k.value.value for k in node.keywords if k.arg == "dest" and isinstance(k.value, ast.Constant)),
                    None)
        longs = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                 and a.value.startswith("--")]
        name = dest or (longs[0][2:].replace("-", "_") if longs else None)
        if default is None or not isinstance(name, str) or not CONFIG_NAME_RE.match(name) or _literal(default) is None:
            continue
        if name in out:
            skipped[name] = "it is a command-line option defined twice"
            continue
        out[name] = default
    return {n: v for n, v in out.items() if n not in skipped}


def is_config_file(tree: ast.Module) -> bool:
    """Whether a module is nothing but settings: assignments (and a docstring), no code."""
    body = [stmt for stmt in tree.body if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))]
    return bool(body) and all(isinstance(stmt, (ast.Assign, ast.AnnAssign)) for stmt in body)


def _literal(node: ast.expr) -> Number | None:
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -1 if isinstance(node.op, ast.USub) else 1
        node = node.operand
    if not isinstance(node, ast.Constant):
        return None
    v = node.value
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return sign * v


def _module_bindings(tree: ast.Module) -> dict[str, int]:
    """How many times each name is bound in module scope (+ a big count for `global` names)."""
    counts: dict[str, int] = {}

    def bump(name: str, n: int = 1) -> None:
        counts[name] = counts.get(name, 0) + n

    def visit(node: ast.AST, in_module: bool) -> None:
        if isinstance(node, ast.Global):
            for name in node.names:
                bump(name, 2)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
                             ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            if in_module and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bump(node.name)
            for child in ast.iter_child_nodes(node):
                visit(child, False)
            return
        if in_module:
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                bump(node.id)
            elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                bump(node.target.id, 2)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    bump((alias.asname or alias.name).split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child, in_module)

    visit(tree, True)
    return counts


def _lines(source: str) -> list[str]:
    """Lines as `ast` numbers them (split on \\n only, line ends kept)."""
    return source.split("\n")


# -- writing -------------------------------------------------------------------------------------

def literal_text(value: Number, kind: Literal["int", "float"]) -> str:
    """The Python literal written for a value: ints as ints (rounded), floats as the shortest text
    that reads back to the same float, with a compact exponent (`1e-5`, not `1e-05`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    if not math.isfinite(value):
        raise ValueError(f"{value!r} cannot be written as a Python literal")
    if kind == "int":
        return str(int(round(value)))
    text = repr(float(value))
    if "e" in text:
        mantissa, exp = text.split("e")
        exp = exp.lstrip("+")
        sign = "-" if exp.startswith("-") else ""
        text = f"{mantissa}e{sign}{exp.lstrip('-').lstrip('0') or '0'}"
    return text


def set_constants(source: str, values: dict[str, Number]) -> str:
    """Rewrite the literals of the named constants, keeping every other character as it was.

    Int constants stay ints (values are rounded); float constants are written with `literal_text`.
    Raises KeyError for a name that is not a constant of the source, ValueError for a value that is
    not a finite number.
    """
    if not values:
        return source
    found, skipped = _scan(source)
    for name in values:
        if name not in found:
            why = f" ({skipped[name]})" if name in skipped else ""
            known = ", ".join(found) or "none"
            raise KeyError(f"{name} is not a numeric module-level constant of this file{why}; "
                           f"constants: {known}")
    lines = _lines(source)
    # right to left, so earlier edits on the same line do not move later spans
    for c in sorted((found[n] for n in values), key=lambda c: (c.lineno, c.col), reverse=True):
        line = lines[c.lineno - 1]
        span = line[c.col:c.end_col]
        try:
            ok = _literal(ast.parse(span.strip(), mode="eval").body) == c.value
        except SyntaxError:
            ok = False
        if not ok:  # positions disagree with the text (unusual line endings): refuse, never corrupt
            raise ValueError(f"cannot locate the literal of {c.name} on line {c.lineno}")
        lines[c.lineno - 1] = line[:c.col] + literal_text(values[c.name], c.kind) + line[c.end_col:]
    return "\n".join(lines)


# -- the search space ----------------------------------------------------------------------------

Space = dict[str, tuple[str, SearchParam]]


def file_constants(config: TaskConfig, files: dict[str, str]) -> dict[str, tuple[str, Constant]]:
    """Numeric constants of the editable Python files: name -> (path, constant).

    Files that do not parse are skipped; a name defined in two files is left out (ambiguous).
    """
    out: dict[str, tuple[str, Constant]] = {}
    seen_twice: set[str] = set()
    for path in sorted(files):
        if not path.endswith(".py") or not is_editable(config, path):
            continue
        try:
            consts = find_constants(files[path])
        except (SyntaxError, ValueError):
            continue
        for name, c in consts.items():
            if name in out:
                seen_twice.add(name)
            out[name] = (path, c)
    for name in seen_twice:
        del out[name]
    return out


def search_space(config: TaskConfig, files: dict[str, str],
                 anchor: dict[str, Any] | None = None) -> Space:
    """The constants the non-LLM agents search: name -> (file, SearchParam with the effective range).

    With a `[search]` table, exactly its names (ValueError if one is not a constant of the editable
    files). Without one, every constant that `search_defaults.default_param` gives a range from its
    name and its `anchor` value (the baseline's params, so that the ranges do not drift as the best
    moves; the current value when not given), e.g. a BETA2 in (0, 1), a learning rate log-uniform
    in [v/10, 10v], a power-of-two int among the powers of two in [v/4, 4v] (docs/search.md).
    """
    consts = file_constants(config, files)
    space: Space = {}
    if config.search:
        for name, param in config.search.items():
            if name not in consts:
                raise ValueError(f"[search] names {name}, which is not a module-level numeric constant "
                                 f"(NAME = number, assigned once) of one editable file; constants: "
                                 f"{', '.join(consts) or 'none'}")
            path, c = consts[name]
            space[name] = (path, _effective(param, c))
        return space
    for name, (path, c) in consts.items():
        param = default_param(name, (anchor or {}).get(name, c.value), c.kind)
        if param is not None:
            space[name] = (path, param)
    return space


def _effective(param: SearchParam, c: Constant) -> SearchParam:
    if param.choices is not None:
        bad = [x for x in param.choices if isinstance(x, bool) or not isinstance(x, (int, float))]
        if bad:
            raise ValueError(f"[search] {param.name}: choices {bad} are not numbers, but {param.name} "
                             f"is a numeric constant")
        return param
    if c.kind == "int" or param.integer:
        assert param.low is not None and param.high is not None
        low, high = math.ceil(param.low), math.floor(param.high)
        if low > high:
            raise ValueError(f"[search] {param.name}: no integer in [{param.low}, {param.high}]")
        if param.log and low < 1:
            low = 1
        return replace(param, low=float(low), high=float(high), integer=True)
    return param


def current_params(config: TaskConfig, files: dict[str, str]) -> dict[str, Number]:
    """What the harness records as an experiment's params: the values of the constants in `files`.

    With a `[search]` table, its names (those present); otherwise every numeric constant of the
    editable files (a superset of the default search space, so that a record still covers the
    space when a value later leaves it, e.g. a dropout set to 0).
    """
    consts = file_constants(config, files)
    if config.search:
        return {n: consts[n][1].value for n in config.search if n in consts}
    return {n: c.value for n, (_, c) in consts.items()}


def normalize(value: Any, param: SearchParam) -> Number:
    """A sampled value as it will be written: ints rounded, log-range floats to 4 significant
    digits, linear-range floats to 1e-4 of the range width; clamped into the range."""
    if param.choices is not None:
        return value
    low, high = param.low, param.high
    assert low is not None and high is not None
    if param.integer:
        return int(min(max(int(round(value)), int(low)), int(high)))
    v = float(value)
    if param.log and v > 0:
        v = float(f"{v:.{FLOAT_LOG_DIGITS}g}")
    elif high > low:
        digits = math.ceil(-math.log10((high - low) * LINEAR_RESOLUTION))
        v = round(v, digits)
    return float(min(max(v, low), high))


def written_value(value: Number, c: Constant) -> Number:
    """The value a constant reads back as once `value` is written into it."""
    return int(round(value)) if c.kind == "int" else float(value)


# -- shared by the non-LLM agents ----------------------------------------------------------------

_SETTING_RE = re.compile(r"\s*([A-Z][A-Z0-9_]*)\s*=\s*([-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?)\s*")


def parse_setting_idea(text: str) -> dict[str, Number] | None:
    """`LEARNING_RATE=0.01` or `LR = 1e-3; DEPTH=6` -> {name: value}; None for anything else.

    The whole text must be settings separated by `,`, `;` or newlines. A number with a point or an
    exponent is a float, otherwise an int. A name given twice makes the idea ambiguous (None).
    """
    out: dict[str, Number] = {}
    for part in re.split(r"[,;\n]", text or ""):
        if not part.strip():
            continue
        m = _SETTING_RE.fullmatch(part)
        if not m:
            return None
        name, num = m.group(1), m.group(2).replace("_", "")
        if name in out:
            return None
        try:
            out[name] = float(num) if any(ch in num for ch in ".eE") else int(num)
        except ValueError:
            return None
        if not math.isfinite(out[name]):
            return None
    return out or None


def baseline_params(history: list[Any]) -> dict[str, Any] | None:
    """The params of the run's baseline experiment (the anchor of the default ranges), if any."""
    for exp in history:
        if exp.agent == "baseline" and exp.params:
            return exp.params
    for exp in history:
        if exp.params:
            return exp.params
    return None


def idea_values(text: str, space: Space, consts: dict[str, tuple[str, Constant]]) -> dict[str, Number] | None:
    """The values an idea asks for, if it is a setting of searchable constants that can be written:
    ints must be integral for int constants/ranges, categorical values must be among the choices.
    Values outside a numeric range are allowed (a human may override the range)."""
    values, _ = _idea_setting(text, space, consts)
    return values


def idea_problem(text: str, space: Space, consts: dict[str, tuple[str, Constant]]) -> str | None:
    """Why an idea that sets only searchable constants can never be tried as asked (a value outside the
    choices, a fraction for an integer), or None (it can be, or it is no such setting)."""
    return _idea_setting(text, space, consts)[1]


def _idea_setting(text: str, space: Space, consts: dict[str, tuple[str, Constant]]
                  ) -> tuple[dict[str, Number] | None, str | None]:
    setting = parse_setting_idea(text)
    if not setting or any(name not in space for name in setting):
        return None, None
    out: dict[str, Number] = {}
    for name, value in setting.items():
        param, c = space[name][1], consts[name][1]
        if param.choices is not None:
            match = [x for x in param.choices if x == value]
            if not match:
                return None, (f"{name}={value:g} is not one of the [search] choices "
                              f"{list(param.choices)}; add it there to try it")
            value = match[0]
        if (param.integer or c.kind == "int") and float(value) != int(value):
            return None, f"{name} is an integer, and {value:g} is not"
        out[name] = written_value(int(value) if param.integer else value, c)
    return out, None


def write_values(files: dict[str, str], space: Space, values: dict[str, Number]) -> dict[str, str]:
    """Edits (path -> full new content, changed files only) that set `values` in their files."""
    by_file: dict[str, dict[str, Number]] = {}
    for name, value in values.items():
        by_file.setdefault(space[name][0], {})[name] = value
    edits = {}
    for path, vals in by_file.items():
        new = set_constants(files[path], vals)
        if new != files[path]:
            edits[path] = new
    return edits


def tried_keys(history: list[Any], names: list[str]) -> set[tuple]:
    """The settings (values of `names`, in order) of every finished experiment that records them."""
    keys = set()
    for exp in history:
        if all(isinstance(exp.params.get(n), (int, float)) for n in names):
            keys.add(tuple(exp.params[n] for n in names))
    return keys


def describe_changes(old: dict[str, Number], new: dict[str, Number],
                     consts: dict[str, tuple[str, Constant]], arrow: bool = True) -> str:
    """`LR 0.003 -> 0.0071, DEPTH 4 -> 3` (arrow) or `LR=0.0071, DEPTH=3`, changed names only."""
    parts = []
    for name, value in new.items():
        if old.get(name) == value:
            continue
        kind = consts[name][1].kind
        text = literal_text(value, kind)
        parts.append(f"{name} {literal_text(old[name], kind)} -> {text}" if arrow else f"{name}={text}")
    return ", ".join(parts)


def constant_changes(old: str, new: str) -> dict[str, Number] | None:
    """The constants whose values `new` changes, if that is all it changes (None otherwise: other
    text differs, a constant was added or removed, or a file does not parse)."""
    try:
        before, after = find_constants(old), find_constants(new)
    except (SyntaxError, ValueError):
        return None
    if before.keys() != after.keys():
        return None
    changed = {n: c.value for n, c in after.items() if c.value != before[n].value or c.kind != before[n].kind}
    if any(after[n].kind != before[n].kind for n in changed):
        return None
    try:
        return changed if set_constants(old, changed) == new else None
    except (KeyError, ValueError):
        return None


def reapply_constants(base: dict[str, str], proposed: dict[str, str], onto: dict[str, str]) -> dict[str, str] | None:
    """Edits that set, in the files `onto`, the constant values a proposal changed from `base` to
    `proposed` (path -> content, changed files only); None when the proposal changed more than
    constant values or `onto` lacks one of its constants (a text merge must decide then)."""
    edits: dict[str, str] = {}
    for path, content in proposed.items():
        if base.get(path) == content:
            continue
        if path not in base or path not in onto:
            return None
        changed = constant_changes(base[path], content)
        if changed is None:
            return None
        try:
            rewritten = set_constants(onto[path], changed)
        except (KeyError, ValueError, SyntaxError):
            return None
        if rewritten != onto[path]:
            edits[path] = rewritten
    return edits
