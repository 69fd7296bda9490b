"""Stroma inside the agent frameworks you already use: LangGraph, DeepAgents and CrewAI.

Each adapter gives the nodes you decorate the whole reliability step of a Stroma node
(contracts, classified retries, budgets, lifecycle events for hooks, OpenTelemetry, run files
and ``stroma-view``) while the framework keeps its graph, state and checkpointer. Install the
framework with its extra: ``pip install 'stroma[langgraph]'``, ``'stroma[deepagents]'`` or
``'stroma[crewai]'``.

This package re-exports the adapters whose framework is installed; importing it (or an adapter
module) imports no framework.
"""

from importlib.util import find_spec

from stroma.adapters.base import (
    FrameworkAdapter,
    LoopAdapter,
    StepInterceptor,
    TurnAdapter,
    extract_state_dict,
)

__all__ = [
    "FrameworkAdapter",
    "LoopAdapter",
    "StepInterceptor",
    "TurnAdapter",
    "extract_state_dict",
]

if find_spec("langgraph") is not None:
    from stroma.adapters.langgraph import LangGraphAdapter, stroma_langgraph_node

    __all__ += ["LangGraphAdapter", "stroma_langgraph_node"]

if find_spec("deepagents") is not None:
    from stroma.adapters.deepagents import DeepAgentsAdapter, stroma_deepagents_node

    __all__ += ["DeepAgentsAdapter", "stroma_deepagents_node"]

if find_spec("crewai") is not None:
    from stroma.adapters.crewai import CrewAIAdapter, stroma_crewai_step

    __all__ += ["CrewAIAdapter", "stroma_crewai_step"]
