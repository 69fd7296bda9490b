"""What every framework adapter shares: the 0.3.x protocols, ``extract_state_dict``, and
:class:`AdapterRuns`, the one place where an adapted node runs as a Stroma step.

A *run* is one top-level invocation of the framework (a LangGraph ``ainvoke``/``astream``, a
CrewAI ``kickoff_async``): the adapter opens a Stroma run around it (``RunStarted`` ...
``RunFinished``) and keeps it in a context variable, which the framework's tasks inherit, so
every adapted node called during the invocation is a step of that run. A node called outside
any adapted invocation runs as a one-step run of its own.

No framework is imported here, nor by ``import stroma.adapters``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from importlib.util import find_spec
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from stroma._config import RunConfig, check_node_id
from stroma._engine import status_for
from stroma.checkpoint import AsyncInMemoryStore, CheckpointManager
from stroma.contracts import ContractRegistry, NodeContract
from stroma.cost import CostTracker
from stroma.errors import ConfigurationError
from stroma.failures import Classifier
from stroma.middleware import ReliabilityContext
from stroma.runner import StromaRunner, stroma_node
from stroma.trace import ExecutionResult, RunStatus

__all__ = [
    "AdapterRuns",
    "FrameworkAdapter",
    "LoopAdapter",
    "StepInterceptor",
    "TurnAdapter",
    "extract_state_dict",
]


@runtime_checkable
class FrameworkAdapter(Protocol):
    """An adapter for a graph-based framework: wraps a whole graph (or flow) and makes node
    decorators."""

    def wrap(self, graph: Any) -> Any:
        """Give the graph's Stroma nodes the reliability step; return the graph."""
        ...

    def node_decorator(self, node_id: str, contract: NodeContract) -> Callable[..., Any]:
        """A decorator that marks a framework node function as the Stroma node ``node_id``."""
        ...


@runtime_checkable
class StepInterceptor(Protocol):
    """An adapter that wraps one step function at a time (no graph object to wrap)."""

    def wrap_step(
        self, step_id: str, func: Callable[..., Any], contract: NodeContract | None = None
    ) -> Callable[..., Any]:
        """``func`` run as the Stroma step ``step_id``."""
        ...


@runtime_checkable
class LoopAdapter(Protocol):
    """An adapter for agentic loops, where the model picks tools: intercepts tool calls."""

    def on_tool_call(self, tool_name: str, args: dict[str, Any], ctx: ReliabilityContext) -> dict[str, Any]:
        """Intercept an outbound tool call before it runs; return the arguments to use."""
        ...

    def on_tool_result(self, tool_name: str, result: Any, ctx: ReliabilityContext) -> Any:
        """Intercept a tool's result; return the result to hand back."""
        ...


@runtime_checkable
class TurnAdapter(Protocol):
    """An adapter for conversation-driven frameworks: intercepts turn boundaries."""

    def on_turn_start(self, turn_id: str, message: Any, ctx: ReliabilityContext) -> Any:
        """Intercept the start of a turn."""
        ...

    def on_turn_end(self, turn_id: str, result: Any, ctx: ReliabilityContext) -> Any:
        """Intercept the end of a turn."""
        ...


def extract_state_dict(state: Any) -> dict[str, Any]:
    """A framework state as a plain dict.

    Takes a dict (copied), a pydantic model, an object with a ``.dict()`` method returning a
    dict, or a plain object (its public attributes); raises ``TypeError`` for anything else.
    """
    if isinstance(state, dict):
        return dict(state)
    if isinstance(state, BaseModel):
        return state.model_dump()
    as_dict = getattr(state, "dict", None)
    if callable(as_dict):
        result = as_dict()
        if isinstance(result, dict):
            return result
    if hasattr(state, "__dict__"):
        return {k: v for k, v in vars(state).items() if not k.startswith("_")}
    raise TypeError(
        f"cannot read a state dict from {type(state).__name__} ({state!r:.80}); pass a dict, "
        "a pydantic model, or an object with attributes"
    )


def require_framework(module: str, extra: str, adapter: str) -> None:
    """Raise ConfigurationError naming the extra when ``module`` is not installed."""
    if find_spec(module) is None:
        raise ConfigurationError(
            f"{adapter} needs the {module} package, which is not installed; install it with "
            f"pip install 'stroma[{extra}]'"
        )


def node_mark(func: Any) -> tuple[str, NodeContract] | None:
    """(node id, contract) of a function marked by a Stroma node decorator, else None."""
    node_id = getattr(func, "_stroma_node_id", None)
    contract = getattr(func, "_stroma_contract", None)
    if isinstance(node_id, str) and isinstance(contract, NodeContract):
        return node_id, contract
    return None


async def call_as_framework(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func`` as the frameworks call their steps and tools: a coroutine function is
    awaited, a plain function runs in a worker thread (it may block)."""
    if inspect.iscoroutinefunction(func):
        return await func(*args, **kwargs)
    result = await asyncio.to_thread(func, *args, **kwargs)
    return await result if inspect.isawaitable(result) else result


Settings = StromaRunner | RunConfig | None


def _runner(settings: Settings, registry: ContractRegistry) -> StromaRunner:
    if settings is None:
        return StromaRunner.quick()
    if isinstance(settings, StromaRunner):
        return settings
    if isinstance(settings, RunConfig):
        return StromaRunner(registry, CheckpointManager(AsyncInMemoryStore()), settings)
    raise ConfigurationError(
        f"an adapter's settings are a StromaRunner or a RunConfig, got {type(settings).__name__}; "
        "pass runner=StromaRunner.quick(...) or runner=RunConfig(...)"
    )


class _Run:
    """The Stroma run of one framework invocation."""

    __slots__ = ("last_output", "rctx")

    def __init__(self, rctx: ReliabilityContext) -> None:
        self.rctx = rctx
        self.last_output: BaseModel | None = None


_current: ContextVar[_Run | None] = ContextVar("stroma_adapter_run", default=None)


class AdapterRuns:
    """Opens a Stroma run around each framework invocation and runs adapted nodes as its steps.

    ``runner`` (a :class:`~stroma.StromaRunner` or a :class:`~stroma.RunConfig`; default
    ``StromaRunner.quick()``) gives the policies, classifiers, budget, timeouts, hooks and
    trace directory, read when each run starts. Checkpoints are the framework's business:
    Stroma writes its own only when a ``checkpoint_store`` is given.

    After each run, ``last_result`` is its :class:`~stroma.ExecutionResult` (trace, totals,
    ``save()``), and ``cost_tracker`` holds the usage of every run so far.
    """

    #: (module, extra) of the framework this adapter needs.
    framework: tuple[str, str] | None = None
    #: Classifiers the framework needs before the user's (its control-flow exceptions).
    framework_classifiers: tuple[Classifier, ...] = ()

    def __init__(
        self,
        registry: ContractRegistry,
        runner: Settings = None,
        *,
        checkpoint_store: Any = None,
    ) -> None:
        if self.framework is not None:
            require_framework(*self.framework, type(self).__name__)
        self.registry = registry
        self.runner = _runner(runner, registry)
        self.checkpoint_manager = (
            None
            if checkpoint_store is None
            else checkpoint_store
            if isinstance(checkpoint_store, CheckpointManager)
            else CheckpointManager(checkpoint_store)
        )
        self.cost_tracker = CostTracker()
        self.last_result: ExecutionResult | None = None

    def register(self, node_id: str, contract: NodeContract) -> None:
        """Check ``node_id`` and add ``contract`` to the registry."""
        check_node_id(node_id)
        self.registry.register(contract)

    def node_decorator(self, node_id: str, contract: NodeContract) -> Callable[[Any], Any]:
        """A decorator marking a framework node function as the Stroma node ``node_id``, with
        ``contract`` registered here; the function is returned unchanged."""
        decorate = stroma_node(node_id, contract)  # checks both first
        self.registry.register(contract)
        return decorate

    def _config(self, name: str | None) -> RunConfig:
        config = self.runner.config
        update: dict[str, Any] = {}
        if self.framework_classifiers:
            update["classifiers"] = [*self.framework_classifiers, *config.classifiers]
        if name and "pipeline_name" not in config.model_fields_set:
            update["pipeline_name"] = name
        return config.model_copy(update=update) if update else config

    @contextlib.asynccontextmanager
    async def run(
        self, pipeline: Sequence[str], name: str | None = None
    ) -> AsyncIterator[ReliabilityContext]:
        """The Stroma run of one framework invocation; joins the enclosing run if there is one.

        ``name`` (the graph's or flow's) is the run's pipeline name unless the settings set one.
        """
        active = _current.get()
        if active is not None:
            yield active.rctx
            return
        rctx = ReliabilityContext(
            self._config(name), self.registry, self.checkpoint_manager, run_id=self.runner.next_run_id()
        )
        run = _Run(rctx)
        token = _current.set(run)
        try:
            await rctx.start_run(pipeline)
            try:
                yield rctx
            except Exception as exc:
                failure = rctx.last_failure
                await self._finish(run, status_for(exc, failure[1] if failure else None))
                raise
            except BaseException:
                rctx.abort()  # cancelled, or the caller stopped reading a stream
                raise
            await self._finish(run, RunStatus.COMPLETED)
        finally:
            with contextlib.suppress(ValueError):  # a stream closed from another context
                _current.reset(token)

    async def _finish(self, run: _Run, status: RunStatus) -> None:
        result = await run.rctx.finish_run(status, run.last_output)
        for usage in run.rctx.tracker.by_node.values():
            self.cost_tracker.record(usage)
        self.last_result = result

    async def run_step(
        self, node_id: str, func: Callable[..., Any], state: Any, contract: NodeContract
    ) -> BaseModel:
        """Run ``func`` on ``state`` as the step ``node_id`` of the current run (a run of its
        own outside one): validation, retries, usage, budget and events. Returns the validated
        output; raises the step's final exception."""
        run = _current.get()
        if run is None:
            async with self.run([node_id]):
                return await self.run_step(node_id, func, state, contract)
        # The one call into the engine's step loop.
        output = await run.rctx.run_step(node_id, func, state, contract=contract)
        run.last_output = output
        return output

    def wrap_step(
        self, step_id: str, func: Callable[..., Any], contract: NodeContract | None = None
    ) -> Callable[..., Awaitable[BaseModel]]:
        """``func`` as the Stroma step ``step_id``: calling it with a state runs the step (in
        the current run) and returns the validated output. Without ``contract``, the one
        registered for ``step_id`` is used."""
        if contract is None:
            contract = self.registry.get(step_id)
        else:
            self.register(step_id, contract)
        checked = contract

        async def step(state: Any) -> BaseModel:
            return await self.run_step(step_id, func, state, checked)

        step._stroma_node_id = step_id  # type: ignore[attr-defined]
        step._stroma_contract = contract  # type: ignore[attr-defined]
        return step
