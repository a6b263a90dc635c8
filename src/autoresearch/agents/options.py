"""The `[agent]` options of an agent: a typed schema, read off the signatures that take them.

An agent's options are its constructor's keyword parameters (and, for LLM agents, the chat
client's): `schema(...)` turns those signatures and their type hints into one `Option` per name,
so the schema has one owner, the code that uses the values. `check(schema, options)` then refuses
an unknown key or a value of the wrong type with a `ConfigError` saying where (`[agent.KEY]`), what,
and the fix, like every other config error.
"""
from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from autoresearch.core.config import ConfigError

# Constructor parameters that are wiring, not options a user sets in [agent].
NOT_OPTIONS = frozenset({"self", "config", "backend", "name", "sleep", "retry", "structured", "preset", "key"})


@dataclass(frozen=True)
class Option:
    name: str
    type: Any  # a type hint: int, float | None, list[str] | None, ...
    default: Any = inspect.Parameter.empty

    def describe(self) -> str:
        return _hint_text(self.type)


def schema(*callables: Callable[..., Any], extra: dict[str, Any] | None = None) -> dict[str, Option]:
    """The options the keyword parameters of `callables` take (the first one to name a key wins),
    plus `extra` (name -> type hint, winning over the signatures) for options a factory handles itself."""
    out: dict[str, Option] = {}
    for fn in callables:
        hints = typing.get_type_hints(fn)
        for p in inspect.signature(fn).parameters.values():
            if p.name in NOT_OPTIONS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name in out:
                continue
            out[p.name] = Option(p.name, hints.get(p.name, Any), p.default)
    for name, hint in (extra or {}).items():
        out[name] = Option(name, hint, out[name].default if name in out else inspect.Parameter.empty)
    return out


def check(options: dict[str, Any], options_schema: dict[str, Option], *, agent: str, path: Path | str) -> None:
    """Raise ConfigError for the first unknown option or wrongly typed value."""
    for key, value in options.items():
        option = options_schema.get(key)
        if option is None:
            raise ConfigError(path, f"agent.{key}", f"is not an option of the {agent} agent",
                              f"use one of: {', '.join(sorted(options_schema))}")
        if not _matches(value, option.type):
            raise ConfigError(path, f"agent.{key}", f"{value!r} is not {option.describe()}",
                              f"give {option.describe()}, e.g. {key} = {_example(option)}")


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint) or (Any, Any)
        return isinstance(value, dict) and all(_matches(k, key) and _matches(v, item) for k, v in value.items())
    return isinstance(value, hint) if isinstance(hint, type) else True


def _hint_text(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_hint_text(h) for h in typing.get_args(hint) if h is not type(None)]
        return " or ".join(parts)
    if origin is list:
        item = _hint_text((typing.get_args(hint) or (Any,))[0])
        return "a list of " + (item.split(" ", 1)[1] if item.startswith(("a ", "an ")) else item) + "s"
    if origin is dict:
        return "a table"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _example(option: Option) -> str:
    default = option.default
    if default not in (inspect.Parameter.empty, None):
        return repr(default).replace("True", "true").replace("False", "false").replace("'", '"')
    return {"a whole number": "1", "a number": "1.0", "true or false": "true", "a string": '"..."'}.get(
        option.describe().split(" or ")[0], "...")
