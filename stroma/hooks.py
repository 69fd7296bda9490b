"""Lifecycle hooks: user callbacks, and the process-wide registry instrumentations use.

``NodeHooks`` keeps the published callbacks (fired per attempt) and adds one optional callback per
lifecycle event plus a catch-all ``on_event``. Callbacks may be sync or async. Several hooks
compose (:func:`compose_hooks`): each is called in order. A callback that raises anything (even
``SystemExit``, ``KeyboardInterrupt`` or ``CancelledError``) is logged once, counted, and otherwise
ignored: hooks never break a run. Only a real cancellation of the run goes through. An async
callback that hangs past ``HOOK_TIMEOUT_S`` is abandoned and disabled for the rest of the run, so
it costs that timeout once at most.

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
import operator
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from stroma import events as ev
from stroma._checked import shown
from stroma.errors import ConfigurationError

__all__ = [
    "HOOK_TIMEOUT_S",
    "NodeHooks",
    "StepHooks",
    "compose_hooks",
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


def _chain(callbacks: list[Callable[..., Any]]) -> Callable[..., Any]:
    if len(callbacks) == 1:
        return callbacks[0]
    if any(inspect.iscoroutinefunction(cb) for cb in callbacks):

        async def call_async(*args: Any) -> None:
            for cb in callbacks:
                result = cb(*args)
                if inspect.isawaitable(result):
                    await result

        return call_async

    def call(*args: Any) -> None:
        for cb in callbacks:
            cb(*args)

    return call


class HookChain(NodeHooks):
    """Several NodeHooks acting as one: each callback calls the parts' callbacks in order.

    Calling a callback of the chain yourself calls every part's (awaiting async ones when any
    part's is async). In a run, each part is dispatched on its own, so one part's error or
    timeout never hides another part.
    """

    def __init__(self, parts: Sequence[NodeHooks]) -> None:
        composed: dict[str, Any] = {}
        for f in fields(NodeHooks):
            callbacks = [cb for part in parts if (cb := getattr(part, f.name)) is not None]
            composed[f.name] = _chain(callbacks) if callbacks else None
        super().__init__(**composed)
        self.parts: tuple[NodeHooks, ...] = tuple(parts)


def compose_hooks(hooks: Iterable[NodeHooks]) -> NodeHooks:
    """One NodeHooks that calls each of ``hooks`` in order (the only one, when there is one).

    Raises ConfigurationError naming anything that is not a NodeHooks.
    """
    parts: list[NodeHooks] = []
    for hook in hooks:
        if not isinstance(hook, NodeHooks):
            raise ConfigurationError(
                f"hooks must be NodeHooks objects, got {shown(hook)}; "
                "wrap your callbacks: NodeHooks(on_node_start=..., on_event=...)"
            )
        parts.extend(hook.parts if isinstance(hook, HookChain) else (hook,))
    if len(parts) == 1:
        return parts[0]
    return HookChain(parts)


def hook_parts(hooks: NodeHooks | None) -> list[NodeHooks]:
    """The NodeHooks a run dispatches for ``hooks``: a chain's parts, leaving out hooks without
    any callback."""
    if hooks is None:
        return []
    parts = hooks.parts if isinstance(hooks, HookChain) else (hooks,)
    return [p for p in parts if _has_callback(p)]


_getters: dict[type, tuple[Callable[[Any], tuple[Any, ...]], int]] = {}


def _has_callback(hooks: NodeHooks) -> bool:
    """Whether ``hooks`` has any callback set (one C call per run, not a loop over the fields)."""
    known = _getters.get(type(hooks))
    if known is None:
        names = [f.name for f in fields(hooks)]  # NodeHooks has many: attrgetter returns a tuple
        known = _getters[type(hooks)] = (operator.attrgetter(*names), len(names))
    get, count = known
    return get(hooks).count(None) < count


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


def _run_cancelled() -> bool:
    """Whether the task running now is being cancelled for real (not by a hook's own raise)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop
        return False
    return task is not None and task.cancelling() > 0


class Dispatcher:
    """Routes each event to the callbacks that want it, isolating their errors.

    ``emit`` is synchronous; it returns an awaitable only when an async callback needs awaiting,
    so a run without async hooks pays no coroutine per event. A dispatcher serves one run: a
    callback that timed out is disabled for the rest of it.
    """

    __slots__ = ("_logged", "_table", "errors")

    EMPTY: ClassVar[Dispatcher]
    """A dispatcher with no callbacks (shared: it never calls anything, so never errs)."""

    def __init__(self, hooks: Iterable[NodeHooks]) -> None:
        table: dict[type[ev.LifecycleEvent], list[EventCallback]] = {}
        for hook in (part for h in hooks for part in hook_parts(h)):
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
        if isinstance(exc, asyncio.CancelledError) and _run_cancelled():
            raise exc  # the run itself is being cancelled: that is not the hook's error
        self.errors += 1
        key = id(cb)
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(
                "stroma hook %s raised %s; the run continues (further errors of this hook "
                "are counted, not logged)",
                _cb_name(cb),
                type(exc).__qualname__,
                exc_info=(type(exc), exc, exc.__traceback__),
            )

    def _timed_out(self, cb: EventCallback) -> None:
        """Count the timeout and disable ``cb`` for the rest of the run (logged once)."""
        self.errors += 1
        table: dict[type[ev.LifecycleEvent], list[EventCallback]] = {}
        for cls, callbacks in self._table.items():
            kept = [c for c in callbacks if c is not cb]
            if kept:
                table[cls] = kept
        self._table = table
        logger.warning(
            "stroma hook %s did not finish within %gs; it is disabled for the rest of this run",
            _cb_name(cb),
            HOOK_TIMEOUT_S,
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
            except BaseException as exc:  # isolation is the point, SystemExit included
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
            if not any(cb in callbacks for callbacks in self._table.values()):
                _discard(awaitable)  # disabled while an earlier callback was awaited
                continue
            deadline = asyncio.timeout(HOOK_TIMEOUT_S)
            try:
                async with deadline:
                    await awaitable
            except BaseException as exc:
                if deadline.expired() and not isinstance(exc, asyncio.CancelledError):
                    self._timed_out(cb)
                else:
                    self._failed(cb, exc)


def _cb_name(cb: EventCallback) -> str:
    return getattr(cb, "__qualname__", None) or repr(cb)


def _discard(awaitable: Awaitable[Any]) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()  # a coroutine never awaited: close it so Python does not warn


Dispatcher.EMPTY = Dispatcher(())
