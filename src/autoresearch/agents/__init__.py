"""Agents by name. LLM agents register themselves with `register_agent` when their module loads."""
from __future__ import annotations

import importlib
from typing import Any, Callable

from autoresearch.agents.base import Agent, Context, NoProposal, Proposal
from autoresearch.agents.options import Option, schema
from autoresearch.agents.options import check as check_options
from autoresearch.agents.random_agent import RandomAgent
from autoresearch.agents.search import CmaEsAgent, SearchAgent, TpeAgent
from autoresearch.core.config import ConfigError, TaskConfig

AgentFactory = Callable[..., Agent]  # factory(config, **options) -> Agent

AGENTS: dict[str, AgentFactory] = {"random": RandomAgent, "search": SearchAgent, "tpe": TpeAgent, "cmaes": CmaEsAgent}
for _agent in (RandomAgent, SearchAgent, TpeAgent, CmaEsAgent):
    _agent.option_schema = schema(_agent.__init__)  # type: ignore[attr-defined]


def register_agent(name: str, factory: AgentFactory, *, replace: bool = False) -> None:
    """Make `make_agent(name, config, **options)` call `factory(config, **options)`."""
    if not name or not name.strip():
        raise ValueError("an agent needs a name")
    if name in AGENTS and not replace and AGENTS[name] is not factory:
        raise ValueError(f"an agent named {name!r} is already registered (pass replace=True)")
    AGENTS[name] = factory


def _lazy(module: str, attr: str) -> AgentFactory:
    """A factory that imports its module on first use (LLM SDKs stay unimported until needed)."""

    def factory(config: TaskConfig, **options: Any) -> Agent:
        return getattr(importlib.import_module(module), attr)(config, **options)

    factory.option_schema = lambda: getattr(importlib.import_module(module), attr).option_schema  # type: ignore
    factory.__name__ = attr
    factory.__qualname__ = attr
    return factory


for _name, _module, _attr in (("openai", "autoresearch.agents.llm", "openai_agent"),
                              ("anthropic", "autoresearch.agents.llm", "anthropic_agent"),
                              ("cli", "autoresearch.agents.coding_cli", "cli_agent"),
                              ("claude-code", "autoresearch.agents.coding_cli", "claude_code_agent"),
                              ("codex", "autoresearch.agents.coding_cli", "codex_agent"),
                              ("aider", "autoresearch.agents.coding_cli", "aider_agent")):
    register_agent(_name, _lazy(_module, _attr))


def option_schema(name: str) -> dict[str, Option] | None:
    """The typed [agent] options of a registered agent (None: it declares none and takes any)."""
    found = getattr(AGENTS[name], "option_schema", None)
    return found() if callable(found) else found


def make_agent(name: str, config: TaskConfig, **options: Any) -> Agent:
    """The agent `name` with its [agent] options, checked against its schema first: an unknown or
    wrongly typed option is a ConfigError naming the key and the fix."""
    if name not in AGENTS:
        raise ConfigError(config.path, "agent.name", f"{name!r} is not an agent",
                          f"use one of: {', '.join(sorted(AGENTS))}")
    known = option_schema(name)
    if known is not None:
        check_options(options, known, agent=name, path=config.path)
    return AGENTS[name](config, **options)


__all__ = ["AGENTS", "Agent", "AgentFactory", "CmaEsAgent", "Context", "NoProposal", "Proposal", "RandomAgent",
           "SearchAgent", "TpeAgent", "make_agent", "option_schema", "register_agent"]
