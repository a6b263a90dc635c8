"""Agents by name. LLM agents register themselves with `register_agent` when their module loads."""
from __future__ import annotations

from typing import Any, Callable

from autoresearch.agents.base import Agent, Context, NoProposal, Proposal
from autoresearch.agents.random_agent import RandomAgent
from autoresearch.agents.search import SearchAgent
from autoresearch.core.config import TaskConfig

AgentFactory = Callable[..., Agent]  # factory(config, **options) -> Agent

AGENTS: dict[str, AgentFactory] = {"random": RandomAgent, "search": SearchAgent}


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
        import importlib

        return getattr(importlib.import_module(module), attr)(config, **options)

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


def make_agent(name: str, config: TaskConfig, **options: Any) -> Agent:
    try:
        factory = AGENTS[name]
    except KeyError:
        raise ValueError(f"unknown agent {name!r}; known agents: {', '.join(sorted(AGENTS))}") from None
    return factory(config, **options)


__all__ = ["AGENTS", "Agent", "AgentFactory", "Context", "NoProposal", "Proposal", "RandomAgent",
           "SearchAgent", "make_agent", "register_agent"]
