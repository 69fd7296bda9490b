"""Stroma at the nodes of a LangGraph graph: contracts, retries, budgets and lifecycle events.

Example::

    @stroma_langgraph_node("answer", NodeContract(node_id="answer", input_schema=Question,
                                                  output_schema=Answer))
    async def answer(state: Question) -> dict:
        return {"answer": state.question.upper()}

    builder = StateGraph(State)
    builder.add_node("answer", answer)
    ...
    graph = LangGraphAdapter(ContractRegistry(), StromaRunner.quick()).wrap(builder).compile()
    await graph.ainvoke({"question": "why?"})

A decorated node receives its state validated against the contract's input schema (the model,
or ``(model, ctx)``) and returns a dict of its output fields, or a usage tuple
``(dict, input_tokens, output_tokens, model)``. LangGraph receives the validated output as a
dict and merges it into the graph state as usual; LangGraph keeps its graph, its reducers and
its checkpointer. One ``ainvoke``/``astream`` of the wrapped graph is one Stroma run.
"""

from __future__ import annotations

from typing import Any

from stroma.adapters.base import (
    AdapterRuns,
    call_as_framework,
    extract_state_dict,
    node_mark,
)
from stroma.contracts import NodeContract
from stroma.errors import ConfigurationError
from stroma.failures import FailureClass, NodeContext
from stroma.runner import stroma_node

__all__ = ["LangGraphAdapter", "extract_state_dict", "stroma_langgraph_node"]

_ADAPTED = "_stroma_adapted"


def stroma_langgraph_node(node_id: str, contract: NodeContract) -> Any:
    """Mark a LangGraph node function as the Stroma node ``node_id`` with ``contract``.

    The function is returned unchanged; :meth:`LangGraphAdapter.wrap` finds it in the graph.
    """
    return stroma_node(node_id, contract)


def _control_flow(exc: Exception, ctx: NodeContext) -> FailureClass | None:
    """LangGraph's interrupts and parent commands travel as exceptions: stop, don't retry."""
    from langgraph.errors import GraphBubbleUp  # noqa: PLC0415 - the framework is optional

    return FailureClass.TERMINAL if isinstance(exc, GraphBubbleUp) else None


class LangGraphAdapter(AdapterRuns):
    """Gives every Stroma-decorated node of a LangGraph graph the whole reliability step.

    ``runner``: a StromaRunner or RunConfig with the policies, budget, hooks and trace
    directory (default ``StromaRunner.quick()``). Undecorated nodes are left as they are.
    """

    framework = ("langgraph", "langgraph")
    framework_classifiers = (_control_flow,)

    def wrap(self, graph: Any) -> Any:
        """Adapt the decorated nodes of ``graph`` (a ``StateGraph``, before or after
        ``compile()``, or a compiled graph) in place; return ``graph``."""
        from langgraph.graph import StateGraph  # noqa: PLC0415 - the framework is optional
        from langgraph.pregel import Pregel  # noqa: PLC0415

        if isinstance(graph, StateGraph):
            pipeline = self.adapt_nodes({name: spec.runnable for name, spec in graph.nodes.items()})
            compile_graph = graph.compile

            def compile(*args: Any, **kwargs: Any) -> Any:
                compiled = compile_graph(*args, **kwargs)
                self.open_runs(compiled, pipeline)
                return compiled

            setattr(graph, "compile", compile)  # noqa: B010 - an instance attribute on purpose
        elif isinstance(graph, Pregel):
            pipeline = self.adapt_nodes({name: node.bound for name, node in graph.nodes.items()})
            self.open_runs(graph, pipeline)
        else:
            raise ConfigurationError(
                f"{type(self).__name__}.wrap() takes a langgraph StateGraph or a compiled graph, "
                f"got {type(graph).__name__}"
            )
        return graph

    def adapt_nodes(self, runnables: dict[str, Any]) -> list[str]:
        """Make each node runnable whose function is decorated run that function as a Stroma
        step (in place, so a compiled graph sharing the runnable sees it too); return the
        Stroma node ids, in graph order."""
        pipeline: list[str] = []
        for runnable in runnables.values():
            tools = getattr(runnable, "tools_by_name", None)  # a prebuilt ToolNode
            if isinstance(tools, dict):
                pipeline += self.adapt_tools(tools)
                continue
            afunc = getattr(runnable, "afunc", None)
            if getattr(afunc, _ADAPTED, None):
                pipeline.append(getattr(afunc, _ADAPTED))
                continue
            for func in (getattr(runnable, "func", None), afunc):
                mark = node_mark(func)
                if mark is not None:
                    node_id, contract = mark
                    self.register(node_id, contract)
                    runnable.afunc = self.adapted_node(node_id, func, contract)
                    runnable.func = None  # Stroma steps are async: LangGraph's invoke() says so
                    runnable.func_accepts = {}
                    pipeline.append(node_id)
                    break
        return pipeline

    def adapt_tools(self, tools: dict[str, Any]) -> list[str]:
        """Make each tool whose function is decorated run as a Stroma step (in place); return
        their Stroma node ids. The tool is called with its arguments as the framework passes
        them; those arguments (as a dict) are validated against the input schema, and the tool
        answers with its validated output as a dict."""
        pipeline: list[str] = []
        for tool in tools.values():
            coroutine = getattr(tool, "coroutine", None)
            if getattr(coroutine, _ADAPTED, None):
                pipeline.append(getattr(coroutine, _ADAPTED))
                continue
            for func in (coroutine, getattr(tool, "func", None)):
                mark = node_mark(func)
                if mark is not None:
                    node_id, contract = mark
                    self.register(node_id, contract)
                    tool.coroutine = self.adapted_tool(node_id, func, contract)
                    pipeline.append(node_id)
                    break
        return pipeline

    def adapted_tool(self, node_id: str, func: Any, contract: NodeContract) -> Any:
        """A tool coroutine that runs ``func`` as the Stroma step ``node_id``."""

        async def tool(**kwargs: Any) -> dict[str, Any]:
            async def call(_validated: Any) -> Any:
                return await call_as_framework(func, **kwargs)

            output = await self.run_step(node_id, call, kwargs, contract)
            return output.model_dump()

        setattr(tool, _ADAPTED, node_id)
        return tool

    def adapted_node(self, node_id: str, func: Any, contract: NodeContract) -> Any:
        """A LangGraph node function that runs ``func`` as the Stroma step ``node_id`` and
        returns its validated output as a dict."""

        async def node(state: Any) -> dict[str, Any]:
            output = await self.run_step(node_id, func, extract_state_dict(state), contract)
            return output.model_dump()

        node.__name__ = node.__qualname__ = getattr(func, "__name__", node_id)
        setattr(node, _ADAPTED, node_id)
        return node

    def open_runs(self, compiled: Any, pipeline: list[str]) -> None:
        """Make each ``ainvoke``/``astream`` of ``compiled`` one Stroma run (both go through
        ``astream``)."""
        for node in compiled.nodes.values():
            if getattr(getattr(node.bound, "afunc", None), _ADAPTED, None):
                # LangGraph would build a node's pydantic-annotated input itself (and raise its
                # own ValidationError); the adapted node gets the state keys and Stroma checks them.
                node.mapper = None
        stream = compiled.astream
        if getattr(stream, _ADAPTED, None):
            return

        async def astream(*args: Any, **kwargs: Any) -> Any:
            async with self.run(pipeline, getattr(compiled, "name", None)):
                async for chunk in stream(*args, **kwargs):
                    yield chunk

        setattr(astream, _ADAPTED, True)
        compiled.astream = astream
