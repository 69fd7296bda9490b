"""Lifecycle hooks: user callbacks, and the process-wide registry instrumentations use.

``NodeHooks`` keeps the published callbacks (fired per attempt) and adds one optional callback per
lifecycle event plus a catch-all ``on_event``. Callbacks may be sync or async. Several hooks
compose: each is called in order. A callback that raises (or an async one that hangs past
``HOOK_TIMEOUT_S``) is logged once, counted, and otherwise ignored: hooks never break a run.

Example::

    async def started(run_id: str, node_id: str, input_state: dict) -> None:
        print("start", node_id)

    runner = StromaRunner.quick().with_hooks(NodeHooks(on_node_start=started))

The process-wide registry (:func:`register_hooks`) is how an instrumentation such as
``stroma_otel.StromaInstrumentor`` reaches every runner without code changes. It knows nothing of
any particular instrumentation.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from stroma import events as ev

__all__ = [
    "HOOK_TIMEOUT_S",
    "NodeHooks",
    "StepHooks",
    "global_hooks",
    "register_hooks",
    "unregister_hooks",
]

logger = logging.getLogger("stroma.hooks")

HOOK_TIMEOUT_S = 10.0
"""How long an async hook may run before it is abandoned (logged and counted)."""

EventCallback = Callable[[Any], Any]


@dataclass
class NodeHooks:
    """Optional callbacks at node boundaries (sync or async).

    The first three are the published API and fire once per attempt:
    ``on_node_start(run_id, node_id, input_state_dict)``,
    ``on_node_success(run_id, node_id, output_state_dict, tokens_used)``,
    ``on_node_failure(run_id, node_id, exc, failure_class)``.
    The others receive the lifecycle event object (see :mod:`stroma.events`).
    """

    on_node_start: Callable[[str, str, dict[str, Any]], Any] | None = None
    on_node_success: Callable[[str, str, dict[str, Any], int], Any] | None = None
    on_node_failure: Callable[[str, str, Exception, Any], Any] | None = None
    on_run_start: EventCallback | None = None
    on_run_end: EventCallback | None = None
    on_node_begin: EventCallback | None = None
    on_node_end: EventCallback | None = None
    on_node_restored: EventCallback | None = None
    on_failure_classified: EventCallback | None = None
    on_retry_scheduled: EventCallback | None = None
    on_retries_exhausted: EventCallback | None = None
    on_budget_checked: EventCallback | None = None
    on_model_fallback: EventCallback | None = None
    on_checkpoint_saved: EventCallback | None = None
    on_checkpoint_loaded: EventCallback | None = None
    on_contract_violated: EventCallback | None = None
    on_event: EventCallback | None = None


StepHooks = NodeHooks

_EVENT_CALLBACKS: dict[str, type[ev.LifecycleEvent]] = {
    "on_run_start": ev.RunStarted,
    "on_run_end": ev.RunFinished,
    "on_node_begin": ev.NodeStarted,
    "on_node_end": ev.NodeFinished,
    "on_node_restored": ev.NodeRestored,
    "on_failure_classified": ev.FailureClassified,
    "on_retry_scheduled": ev.RetryScheduled,
    "on_retries_exhausted": ev.RetriesExhausted,
    "on_budget_checked": ev.BudgetChecked,
    "on_model_fallback": ev.ModelFallback,
    "on_checkpoint_saved": ev.CheckpointSaved,
    "on_checkpoint_loaded": ev.CheckpointLoaded,
    "on_contract_violated": ev.ContractViolated,
}

_registry_lock = threading.Lock()
_registry: tuple[NodeHooks, ...] = ()


def register_hooks(hooks: NodeHooks) -> None:
    """Add ``hooks`` to every run in this process (runs started from now on)."""
    global _registry  # noqa: PLW0603 - the registry is process-wide by design
    with _registry_lock:
        if not any(h is hooks for h in _registry):
            _registry = (*_registry, hooks)


def unregister_hooks(hooks: NodeHooks) -> None:
    """Remove hooks added by :func:`register_hooks`; unknown hooks are ignored."""
    global _registry  # noqa: PLW0603
    with _registry_lock:
        _registry = tuple(h for h in _registry if h is not hooks)


def global_hooks() -> tuple[NodeHooks, ...]:
    """The hooks registered process-wide, in registration order."""
    return _registry


def _adapt_start(cb: Callable[[str, str, dict[str, Any]], Any]) -> EventCallback:
    def call(e: ev.AttemptStarted) -> Any:
        return cb(e.run_id, e.node_id, e.input_state)

    call.__qualname__ = getattr(cb, "__qualname__", "on_node_start")
    return call


def _adapt_success(cb: Callable[[str, str, dict[str, Any], int], Any]) -> EventCallback:
    def call(e: ev.AttemptSucceeded) -> Any:
        return cb(e.run_id, e.node_id, e.output_state, e.tokens)

    call.__qualname__ = getattr(cb, "__qualname__", "on_node_success")
    return call


def _adapt_failure(cb: Callable[[str, str, Exception, Any], Any]) -> EventCallback:
    from stroma.failures import FailureClass  # noqa: PLC0415 - avoid an import cycle

    def call(e: ev.AttemptFailed) -> Any:
        exc = e.exception if isinstance(e.exception, Exception) else RuntimeError(e.message)
        return cb(e.run_id, e.node_id, exc, FailureClass(e.failure_class))

    call.__qualname__ = getattr(cb, "__qualname__", "on_node_failure")
    return call


class Dispatcher:
    """Routes each event to the callbacks that want it, isolating their errors.

    ``emit`` is synchronous; it returns an awaitable only when an async callback needs awaiting,
    so a run without async hooks pays no coroutine per event.
    """

    __slots__ = ("_logged", "_table", "errors")

    EMPTY: ClassVar[Dispatcher]
    """A dispatcher with no callbacks (shared: it never calls anything, so never errs)."""

    def __init__(self, hooks: Iterable[NodeHooks]) -> None:
        table: dict[type[ev.LifecycleEvent], list[EventCallback]] = {}
        for hook in hooks:
            per: list[tuple[type[ev.LifecycleEvent], EventCallback]] = []
            if hook.on_node_start is not None:
                per.append((ev.AttemptStarted, _adapt_start(hook.on_node_start)))
            if hook.on_node_success is not None:
                per.append((ev.AttemptSucceeded, _adapt_success(hook.on_node_success)))
            if hook.on_node_failure is not None:
                per.append((ev.AttemptFailed, _adapt_failure(hook.on_node_failure)))
            for f in fields(hook):
                cls = _EVENT_CALLBACKS.get(f.name)
                cb = getattr(hook, f.name)
                if cls is not None and cb is not None:
                    per.append((cls, cb))
            for cls, cb in per:
                table.setdefault(cls, []).append(cb)
            if hook.on_event is not None:
                for cls in ev.EVENT_TYPES.values():
                    table.setdefault(cls, []).append(hook.on_event)
        self._table = table
        self._logged: set[int] = set()
        self.errors = 0

    def __bool__(self) -> bool:
        return bool(self._table)

    def wants(self, cls: type[ev.LifecycleEvent]) -> bool:
        """Whether any callback listens to events of type ``cls``."""
        return cls in self._table

    def _failed(self, cb: EventCallback, exc: BaseException) -> None:
        self.errors += 1
        key = id(cb)
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(
                "stroma hook %s raised %s; the run continues (further errors of this hook "
                "are counted, not logged)",
                getattr(cb, "__qualname__", repr(cb)),
                type(exc).__qualname__,
                exc_info=(type(exc), exc, exc.__traceback__),
            )

    def emit(self, event: ev.LifecycleEvent) -> Awaitable[None] | None:
        """Call every callback for ``event``; return an awaitable if some were async."""
        callbacks = self._table.get(type(event))
        if not callbacks:
            return None
        pending: list[tuple[EventCallback, Awaitable[Any]]] | None = None
        for cb in callbacks:
            try:
                result = cb(event)
            except Exception as exc:  # isolation is the point
                self._failed(cb, exc)
                continue
            if result is not None and inspect.isawaitable(result):
                if pending is None:
                    pending = []
                pending.append((cb, result))
        if pending is None:
            return None
        return self._await_all(pending)

    async def _await_all(self, pending: list[tuple[EventCallback, Awaitable[Any]]]) -> None:
        for cb, awaitable in pending:
            try:
                async with asyncio.timeout(HOOK_TIMEOUT_S):
                    await awaitable
            except TimeoutError as exc:
                self._failed(cb, exc)
            except Exception as exc:
                self._failed(cb, exc)


Dispatcher.EMPTY = Dispatcher(())
