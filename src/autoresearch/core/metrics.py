"""Read an experiment's metrics from its output (or a JSON file it wrote).

A run reports numbers as `name: value` summary lines, e.g. `val_bpb: 0.9979`. All of them are
collected (guards use the secondary ones); the primary metric is read per the task's
MetricSpec and must be a valid value, a finite number within ±MAX_ABS_METRIC, otherwise
MetricError says what was looked for where (and the run counts as a crash with that reason).
Secondary values that are not valid are dropped: only valid values reach the ledger.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from autoresearch.core.config import MetricSpec
from autoresearch.core.errors import AutoresearchError
from autoresearch.core.untrusted import read_file

MAX_JSON_BYTES = 16 << 20
# No real metric comes near this (losses, accuracies, bits, seconds, megabytes: all far below); a
# value beyond it is a diverged or hostile run. The bound also keeps every sum of squares the judge
# takes over run values finite (1e300 squared overflows a float).
MAX_ABS_METRIC = 1e12

NUMBER = r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf(?:inity)?)"
_SUMMARY = re.compile(rf"^[ \t]*([A-Za-z_][A-Za-z0-9_./-]*)[ \t]*:[ \t]*({NUMBER})[ \t]*$",
                      re.MULTILINE | re.IGNORECASE)


class MetricError(AutoresearchError, ValueError):
    """The primary metric is missing or not a valid value."""


def valid_metric(value: float) -> bool:
    """A finite number within ±MAX_ABS_METRIC: the only values that are recorded or judged."""
    return math.isfinite(value) and abs(value) <= MAX_ABS_METRIC


def parse_summary(text: str) -> dict[str, float]:
    """Every `name: number` line; the last occurrence of a name wins. Other lines are ignored."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # progress bars redraw with \r
    return {m.group(1): float(m.group(2)) for m in _SUMMARY.finditer(text)}


def read_metrics(output: str, spec: MetricSpec, workdir: Path) -> dict[str, float]:
    """The valid summary values of `output`, plus the primary metric `spec.name` read per `spec.source`."""
    values = parse_summary(output)
    if spec.source == "line":
        if spec.name not in values:
            raise MetricError(f"no line `{spec.name}: <number>` in the run output")
        primary = values[spec.name]
        where = f"the last `{spec.name}:` line of the output"
    elif spec.source == "regex":
        primary, where = _from_regex(output, spec)
    elif spec.source == "json":
        primary, where, found = _from_json(spec, Path(workdir))
        values.update(found)
    else:
        raise MetricError(f"unknown metric source {spec.source!r} (use line, regex or json)")
    if not math.isfinite(primary):
        raise MetricError(f"metric {spec.name} is {primary} (from {where}); the run diverged or failed")
    if not valid_metric(primary):
        raise MetricError(f"metric {spec.name} is {primary:g} (from {where}), beyond ±{MAX_ABS_METRIC:g}: "
                          "not a plausible result; the run diverged or printed garbage")
    values = {name: v for name, v in values.items() if valid_metric(v)}
    values[spec.name] = primary
    return values


def _from_regex(output: str, spec: MetricSpec) -> tuple[float, str]:
    if not spec.pattern:
        raise MetricError(f"metric {spec.name}: source is regex but no pattern is given")
    try:
        regex = re.compile(spec.pattern, re.MULTILINE)
    except re.error as e:
        raise MetricError(f"metric {spec.name}: invalid regex {spec.pattern!r}: {e}") from e
    if regex.groups < 1:
        raise MetricError(f"metric {spec.name}: regex {spec.pattern!r} has no capturing group")
    last = None
    for last in regex.finditer(output):
        pass
    if last is None or last.group(1) is None:
        raise MetricError(f"metric {spec.name}: regex {spec.pattern!r} matches nothing in the run output")
    text = last.group(1).strip()
    try:
        return float(text), f"the last match of {spec.pattern!r}"
    except ValueError:
        raise MetricError(f"metric {spec.name}: regex {spec.pattern!r} captured {text!r}, "
                          "which is not a number") from None


def _from_json(spec: MetricSpec, workdir: Path) -> tuple[float, str, dict[str, float]]:
    if not spec.file:
        raise MetricError(f"metric {spec.name}: source is json but no file is given")
    where = f"{spec.file} in the run's directory"
    try:  # the run wrote it: a FIFO, a symlink out of the folder or a huge file is refused, not followed
        data = json.loads(read_file(workdir, spec.file, MAX_JSON_BYTES).decode("utf-8", errors="replace"))
    except FileNotFoundError:
        raise MetricError(f"metric {spec.name}: the run did not write {where}") from None
    except (OSError, ValueError, RecursionError) as e:
        raise MetricError(f"metric {spec.name}: cannot read {where}: {e}") from None
    if not isinstance(data, dict):
        raise MetricError(f"metric {spec.name}: {where} holds a {type(data).__name__}, not a JSON object")
    found: dict[str, float] = {}
    _flatten(data, "", found)
    value: Any = data[spec.name] if spec.name in data else _lookup(data, spec.name.split("."))
    if value is _MISSING:
        raise MetricError(f"metric {spec.name}: no key {spec.name!r} in {where} "
                          f"(keys: {', '.join(map(str, list(data)[:20])) or 'none'})")
    number = _number(value)
    if number is None:
        raise MetricError(f"metric {spec.name}: {value!r} in {where} is not a number")
    return number, where, found


_MISSING = object()


def _lookup(data: Any, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return _MISSING
        data = data[key]
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _flatten(data: dict, prefix: str, out: dict[str, float]) -> None:
    """Numeric values, nested ones under dotted names (`a.b`)."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _flatten(value, f"{name}.", out)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
