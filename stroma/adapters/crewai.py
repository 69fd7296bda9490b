"""Stroma at the steps of a CrewAI Flow: contracts, retries, budgets and lifecycle events.

Example::

    class Research(Flow[Topic]):
        @start()
        @stroma_crewai_step("outline", NodeContract(node_id="outline", input_schema=Topic,
                                                    output_schema=Outline))
        async def outline(self) -> dict:
            return {"sections": ["intro", "body"]}

    flow = CrewAIAdapter(ContractRegistry()).wrap(Research())
    await flow.kickoff_async()

A decorated step is called with its usual arguments. The flow's state is validated against the
contract's input schema before it runs; what it returns (a dict, a pydantic model or a usage
tuple; ``None`` means "the state") is validated against the output schema and merged into the
state; its listeners receive what it returned. CrewAI keeps its flow, routing and persistence.
One ``kickoff_async`` (or ``kickoff``) of the wrapped flow is one Stroma run.
"""

from __future__ import annotations

from typing import Any

from stroma.adapters.base import AdapterRuns, call_as_framework, extract_state_dict, node_mark
from stroma.contracts import NodeContract
from stroma.errors import ConfigurationError
from stroma.runner import stroma_node

__all__ = ["CrewAIAdapter", "stroma_crewai_step"]


def stroma_crewai_step(node_id: str, contract: NodeContract) -> Any:
    """Mark a CrewAI Flow method as the Stroma node ``node_id`` with ``contract`` (above or
    below ``@start()`` / ``@listen()``); the method is returned unchanged."""
    return stroma_node(node_id, contract)


def _merge(state: Any, fields: dict[str, Any]) -> None:
    """Write validated output fields into a flow's state (a dict, or a model's known fields)."""
    if isinstance(state, dict):
        state.update(fields)
        return
    for key, value in fields.items():
        if hasattr(state, key):
            setattr(state, key, value)


class CrewAIAdapter(AdapterRuns):
    """Gives every Stroma-decorated step of a CrewAI Flow the whole reliability step.

    ``runner``: a StromaRunner or RunConfig with the policies, budget, hooks and trace
    directory (default ``StromaRunner.quick()``). Undecorated steps are left as they are.
    """

    framework = ("crewai", "crewai")

    def wrap(self, flow: Any) -> Any:
        """Adapt the decorated steps of ``flow`` (a CrewAI ``Flow`` instance) in place; return
        ``flow``."""
        from crewai.flow.flow import Flow  # noqa: PLC0415 - the framework is optional

        if not isinstance(flow, Flow):
            hint = " (an instance, not the class)" if isinstance(flow, type) else ""
            raise ConfigurationError(
                f"{type(self).__name__}.wrap() takes a CrewAI Flow{hint}, got {flow!r:.80}"
            )
        methods: dict[str, Any] = flow._methods
        pipeline: list[str] = []
        for name, method in methods.items():
            done = getattr(method, "_stroma_adapted", None)
            if done:
                pipeline.append(done)
                continue
            mark = node_mark(method) or node_mark(getattr(method, "__wrapped__", None))
            if mark is not None:
                node_id, contract = mark
                self.register(node_id, contract)
                methods[name] = self.adapted_step(flow, node_id, method, contract)
                pipeline.append(node_id)
        self.open_runs(flow, pipeline)
        return flow

    def adapted_step(self, flow: Any, node_id: str, method: Any, contract: NodeContract) -> Any:
        """A flow method that runs ``method`` as the Stroma step ``node_id``."""

        async def step(*args: Any, **kwargs: Any) -> Any:
            returned: list[Any] = []

            async def call(_validated_state: Any) -> Any:
                result = await call_as_framework(method, *args, **kwargs)
                returned[:] = [result]
                return extract_state_dict(flow.state) if result is None else result

            output = await self.run_step(node_id, call, extract_state_dict(flow.state), contract)
            _merge(flow.state, output.model_dump())
            result = returned[0]
            return result[0] if isinstance(result, tuple) else result  # without its usage

        step.__name__ = step.__qualname__ = getattr(method, "__name__", node_id)
        step._stroma_adapted = node_id  # type: ignore[attr-defined]
        return step

    def open_runs(self, flow: Any, pipeline: list[str]) -> None:
        """Make each ``kickoff_async`` of ``flow`` one Stroma run (``kickoff`` calls it)."""
        kickoff = flow.kickoff_async
        if getattr(kickoff, "_stroma_adapted", None):
            return

        async def kickoff_async(*args: Any, **kwargs: Any) -> Any:
            async with self.run(pipeline, flow.name or type(flow).__name__):
                return await kickoff(*args, **kwargs)

        kickoff_async._stroma_adapted = True  # type: ignore[attr-defined]
        object.__setattr__(flow, "kickoff_async", kickoff_async)  # a pydantic model: no fields
