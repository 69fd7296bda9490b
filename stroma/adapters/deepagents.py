"""Stroma inside a DeepAgents agent: contracts, retries, budgets and events at its tools and nodes.

A DeepAgents agent is a compiled LangGraph graph, so this is :class:`LangGraphAdapter` with
the DeepAgents extra and an optional Stroma checkpoint store. Decorate the tools (or nodes)
you give the agent:

Example::

    @stroma_deepagents_node("lookup", NodeContract(node_id="lookup", input_schema=City,
                                                   output_schema=Weather))
    async def lookup(city: str) -> dict:
        \"\"\"Today's weather in a city.\"\"\"
        return {"temp_c": 21}

    adapter = DeepAgentsAdapter(ContractRegistry())
    agent = adapter.wrap(create_deep_agent(model=model, tools=[lookup]))
    await agent.ainvoke({"messages": [{"role": "user", "content": "Weather in Oslo?"}]})
    adapter.cost_tracker.total_tokens

A decorated tool is called with its arguments as the agent passes them; the arguments are
validated against the input schema and the tool answers with its validated output as a dict.
One ``ainvoke``/``astream`` of the agent is one Stroma run.
"""

from __future__ import annotations

from typing import Any

from stroma.adapters.base import Settings
from stroma.adapters.langgraph import LangGraphAdapter, stroma_langgraph_node
from stroma.contracts import ContractRegistry, NodeContract

__all__ = ["DeepAgentsAdapter", "stroma_deepagents_node"]


def stroma_deepagents_node(node_id: str, contract: NodeContract) -> Any:
    """Mark a DeepAgents tool or node function as the Stroma node ``node_id`` with
    ``contract``; the function is returned unchanged."""
    return stroma_langgraph_node(node_id, contract)


class DeepAgentsAdapter(LangGraphAdapter):
    """Gives the decorated tools and nodes of a DeepAgents agent the whole reliability step.

    DeepAgents keeps its own LangGraph checkpointer; Stroma checkpoints each decorated step's
    output as well only when ``checkpoint_store`` (any Stroma store) is given. ``cost_tracker``
    holds the usage of every run so far; ``runner`` gives the settings (default
    ``StromaRunner.quick()``).
    """

    framework = ("deepagents", "deepagents")

    def __init__(
        self,
        registry: ContractRegistry,
        checkpoint_store: Any | None = None,
        *,
        runner: Settings = None,
    ) -> None:
        super().__init__(registry, runner, checkpoint_store=checkpoint_store)
