"""The freestanding reliability loop, for any execution strategy.

Example::

    ctx = ReliabilityContext.for_run(config, registry, manager)
    step = StromaStep(ctx)

    @step("summarize", input=DocInput, output=Summary)
    async def summarize(state: DocInput) -> dict:
        return {"text": "..."}

    result = await summarize(DocInput(text="hello"))
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from stroma._config import check_node_id
from stroma._engine import ReliabilityContext, execute_step
from stroma.contracts import NodeContract
from stroma.trace import ExecutionResult

__all__ = ["ReliabilityContext", "StromaStep", "execute_step"]

StepFunction = Callable[..., Awaitable[Any]]


class StromaStep:
    """Wraps any async callable with Stroma's full reliability suite, without a runner."""

    def __init__(self, ctx: ReliabilityContext) -> None:
        self.ctx = ctx

    def wrap(
        self, step_id: str, func: StepFunction, *, contract: NodeContract | None = None
    ) -> Callable[..., Awaitable[ExecutionResult]]:
        """``func`` such that calling it runs :func:`execute_step` and returns its
        :class:`~stroma.trace.ExecutionResult` (a failure is its status, not an exception)."""
        check_node_id(step_id)
        ctx = self.ctx

        @functools.wraps(func)
        async def wrapped(state: Any) -> ExecutionResult:
            return await execute_step(step_id, func, state, ctx, contract=contract)

        wrapped._stroma_node_id = step_id  # type: ignore[attr-defined]
        wrapped._stroma_contract = contract  # type: ignore[attr-defined]
        return wrapped

    def __call__(
        self, step_id: str, *, input: type[BaseModel], output: type[BaseModel]
    ) -> Callable[[StepFunction], Callable[..., Awaitable[ExecutionResult]]]:
        """Decorator: build and register the contract, then :meth:`wrap` the function."""
        contract = NodeContract(node_id=step_id, input_schema=input, output_schema=output)
        self.ctx.registry.register(contract)

        def decorate(func: StepFunction) -> Callable[..., Awaitable[ExecutionResult]]:
            return self.wrap(step_id, func, contract=contract)

        return decorate

    step = __call__
