"""The step loop: the only place that decides anything.

Where a run goes, in order:

1. ``StromaRunner.run`` / ``resume`` (stroma/runner.py) checks the pipeline, takes the run's
   lease and builds one :class:`ReliabilityContext` for the run (its own context mapping, cost
   tracker, trace and recorder).
2. :meth:`ReliabilityContext.start_run` publishes RunStarted (listeners may fill its trace-context
   carrier), opens the run file and records the run's manifest in the store.
3. Nodes restored from checkpoints publish NodeRestored (:meth:`~ReliabilityContext.restore`).
4. :meth:`~ReliabilityContext.run_step` runs each node: per attempt :meth:`_attempt` (model
   fallback, AttemptStarted, the call, the usage tuple, the output contract, the budget, the commit
   and CheckpointSaved, AttemptSucceeded, NodeFinished); a failure goes to :meth:`_decide`
   (ContractViolated, FailureClassified, AttemptFailed, the budget, then RetryScheduled and the
   backoff, or RetriesExhausted and NodeFinished).
5. :meth:`~ReliabilityContext.finish_run` records the final progress in the store, publishes
   RunFinished, closes the run file and builds the :class:`~stroma.trace.ExecutionResult`.

Every decision is published as a lifecycle event (:mod:`stroma.events`) through the run's
recorder. The only difference between a run somebody watches (hooks, a run file) and a quiet one
is the recorder: :class:`LiveRecorder` builds each event when it happens and hands it to the
listeners; :class:`QuietRecorder` keeps an attempt as its :class:`~stroma.trace.AttemptRecord`
and the trace builds the very same events, with the very same functions, when it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import math
import operator
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from stroma import events as ev
from stroma._clock import current_clock, jitter_rng
from stroma._config import RunConfig
from stroma._schemas import schema_ref
from stroma.checkpoint import (
    MANIFEST_REF,
    PROGRESS_NODE,
    PROGRESS_REF,
    RUN_NODE,
    CheckpointManager,
    Lease,
    RunManifest,
    RunProgress,
    manifest_json,
)
from stroma.checkpoint._codec import encode_checkpoint, progress_json
from stroma.contracts import (
    ContractRegistry,
    ContractViolation,
    NodeContract,
    UntypedState,
    validate_boundary,
)
from stroma.cost import (
    BudgetExceeded,
    CostTracker,
    ExecutionBudget,
    FallbackPolicy,
    active_fallback,
    estimate_cost_usd,
    spend_fraction,
)
from stroma.errors import LeaseLostError, NodeReturnTypeError, NodeTimeoutError, StoreUnavailableError
from stroma.failures import (
    FailureClass,
    FailurePolicy,
    NodeContext,
    RetryBudget,
    backoff_delay,
    classify_with_reason,
    may_retry,
)
from stroma.hooks import Dispatcher, NodeHooks, global_hooks
from stroma.runfile import RunFileWriter
from stroma.trace import (
    AttemptRecord,
    Closed,
    ExecutionResult,
    ExecutionTrace,
    Opened,
    RunStatus,
    State,
    StateDecoder,
    attempt_closed,
    attempt_opened,
)

__all__ = ["ReliabilityContext", "execute_step"]

logger = logging.getLogger("stroma")

IDEMPOTENCY_KEY = "_stroma_idempotency_key"
"""Context key of the node's idempotency key: ``run_id:node_id`` (``run_id:group/child`` for a
child of a parallel group), the same across retries and resumes."""
ATTEMPT_KEY = "_stroma_attempt"
"""Context key of the attempt number (1-based)."""
MODEL_KEY = "_stroma_model"
"""Context key of the model a node should use (set while a model fallback applies)."""

_arity: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def takes_context(func: Callable[..., Any]) -> bool:
    """Whether ``func`` accepts a second positional argument (the shared context). Cached."""
    key = getattr(func, "__func__", func)
    try:
        return _arity[key]
    except (KeyError, TypeError):
        pass
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        result = False
    else:
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        result = len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)
    with contextlib.suppress(TypeError):  # not weak-referenceable: recomputed next time
        _arity[key] = result
    return result


def error_type(exc: BaseException) -> str:
    """The exception's qualified class name (``builtins`` omitted)."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def split_output(raw: Any, node_id: str) -> tuple[Any, int, int, str | None]:
    """(output, input_tokens, output_tokens, model) from a node's return value."""
    if isinstance(raw, dict | BaseModel):
        return raw, 0, 0, None
    if isinstance(raw, tuple) and 2 <= len(raw) <= 4:
        try:
            if len(raw) == 2:
                in_tokens, out_tokens, model = int(raw[1]), 0, None
            else:
                in_tokens, out_tokens = int(raw[1]), int(raw[2])
                model = raw[3] if len(raw) == 4 else None
            if model is not None and not isinstance(model, str):
                raise TypeError
        except (TypeError, ValueError):
            pass
        else:  # the tracker refuses negative counts (InvalidUsageError), inside the attempt
            return raw[0], in_tokens, out_tokens, model
    raise NodeReturnTypeError(
        f"node '{node_id}' returned {type(raw).__name__} ({_short(raw)}); a node returns a dict "
        "of its output fields (or a pydantic model), or a usage tuple: (output, tokens), "
        "(output, input_tokens, output_tokens) or (output, input_tokens, output_tokens, model)"
    )


async def _call(func: Callable[..., Any], state: Any, ctx: Any, with_ctx: bool) -> Any:
    result = func(state, ctx) if with_ctx else func(state)
    if inspect.isawaitable(result):
        return await result
    return result


async def _call_within(
    func: Callable[..., Any], state: Any, ctx: Any, with_ctx: bool, node_id: str, timeout_ms: float
) -> Any:
    """Call a node under its timeout. A result that comes back late (a plain ``def`` node, or one
    that blocked the loop) is discarded like one that was cut off: it is never committed."""
    clock = current_clock()
    t0 = clock.monotonic()
    try:
        async with asyncio.timeout(timeout_ms / 1000.0):
            result = await _call(func, state, ctx, with_ctx)
    except TimeoutError as exc:
        raise _timed_out(node_id, timeout_ms) from exc
    if (clock.monotonic() - t0) * 1000.0 > timeout_ms:
        raise _timed_out(node_id, timeout_ms)
    return result


def _timed_out(node_id: str, timeout_ms: float) -> NodeTimeoutError:
    return NodeTimeoutError(
        f"node '{node_id}' took longer than its {timeout_ms:g} ms timeout (node_timeouts); its result "
        "is discarded. A timeout cancels an async node at its next await; it cannot stop a thread "
        "(asyncio.to_thread) or a plain def node, which run to the end before it is noticed"
    )


def _max_attempts(policies: dict[FailureClass, FailurePolicy]) -> int:
    return max(map(_attempts_of, policies.values()), default=1)


_attempts_of = operator.attrgetter("max_attempts")


Step = tuple[str, Callable[..., Any], NodeContract | None]


async def _probe() -> None:
    return None


_probe_coro = _probe()
_coroutine = type(_probe_coro)  # checked first: cheaper than inspect.isawaitable on the hot path
_probe_coro.close()


# -- recording ---------------------------------------------------------------------------------


def _together(pending: list[Awaitable[None]]) -> Awaitable[None] | None:
    if not pending:
        return None
    if len(pending) == 1:
        return pending[0]

    async def wait() -> None:
        for item in pending:
            await item

    return wait()


class LiveRecorder:
    """Records a watched run: every event is built when it happens, logged, written to the run
    file and handed to the listeners. ``begin``/``succeed`` return an awaitable only when an
    async listener needs awaiting."""

    __slots__ = ("_add", "_add_attempt", "_decode", "_dispatch", "_writer", "node_context")

    def __init__(self, trace: ExecutionTrace, dispatch: Dispatcher, writer: RunFileWriter | None) -> None:
        self._add, self._add_attempt = trace.recorders()
        self._dispatch = dispatch
        self._writer = writer
        self._decode = StateDecoder()
        self.node_context: contextvars.Context | None = None
        """The context right after the current node's NodeStarted reached the listeners (before
        its attempts'): the node's commit runs in it, so what a listener made current for the
        node (an OpenTelemetry node span) is current for the store I/O, and what it made current
        for an attempt is not."""

    def emit(self, event: ev.LifecycleEvent) -> Awaitable[None] | None:
        """Publish one event."""
        self._add(event)
        if self._writer is not None:
            self._writer.write(event)
        return self._dispatch.emit(event)

    def _emit_all(self, events: list[ev.LifecycleEvent]) -> Awaitable[None] | None:
        pending = [p for p in map(self.emit, events) if p is not None]
        return _together(pending)

    def begin(self, rec: AttemptRecord) -> Awaitable[None] | None:
        """An attempt starts (and its node, on the first attempt)."""
        opened = attempt_opened(rec, self._decode)
        if len(opened) == 1:
            return self.emit(opened[0])
        first = self.emit(opened[0])  # NodeStarted
        self.node_context = contextvars.copy_context()
        second = self.emit(opened[1])
        return _together([p for p in (first, second) if p is not None])

    def succeed(self, rec: AttemptRecord) -> Awaitable[None] | None:
        """An attempt succeeded: its checkpoint, its success and its node's end."""
        self._add_attempt(rec)
        return self._emit_all(attempt_closed(rec, self._decode))

    def fail(self, rec: AttemptRecord) -> None:
        """An attempt failed (its failure events are emitted by the loop)."""
        self._add_attempt(rec)

    def flush(self) -> None:
        """Nothing is held back."""


class QuietRecorder:
    """Records a run nobody watches: an attempt is kept as its record and its events are built
    when the trace is read. Anything logged while an attempt is open (a group's children, a budget
    check, a failure) first logs the attempt's opening, so the log keeps the live order."""

    __slots__ = ("_add", "_add_attempt", "_open")

    node_context = None
    """Nobody listens: the commit runs in the run's own context."""

    def __init__(self, trace: ExecutionTrace) -> None:
        self._add, self._add_attempt = trace.recorders()
        self._open: AttemptRecord | None = None

    def flush(self) -> None:
        """Log the opening of the attempt that is open, if not yet logged."""
        rec = self._open
        if rec is not None:
            self._open = None
            self._add(Opened(rec))

    def emit(self, event: ev.LifecycleEvent) -> None:
        """Log one event."""
        if self._open is not None:
            self.flush()
        self._add(event)

    def begin(self, rec: AttemptRecord) -> None:
        """An attempt starts: held until it ends or something else is logged."""
        if self._open is not None:
            self.flush()
        self._open = rec

    def succeed(self, rec: AttemptRecord) -> None:
        """An attempt succeeded: one log entry stands for all its events when nothing came between."""
        if self._open is rec:
            self._open = None
            self._add(rec)
        else:
            self._add(Closed(rec))
        self._add_attempt(rec)

    def fail(self, rec: AttemptRecord) -> None:
        """An attempt failed: its opening is logged before the failure events."""
        if self._open is rec:
            self.flush()
        self._add_attempt(rec)


Recorder = LiveRecorder | QuietRecorder


class ReliabilityContext:
    """Per-run bundle of every reliability primitive the execution loop needs.

    Created once per run with :meth:`for_run`, then threaded through whichever execution
    strategy drives the steps (the linear runner, ``parallel()``, an agent loop, ``StromaStep``).
    The 0.3.2 fields are readable by name: ``run_id, registry, checkpoint_manager, cost_tracker,
    retry_budget, trace, budget, policy_map, step_policies, classifiers, step_timeouts,
    model_fallbacks, hooks, context, run_logger``.
    """

    __slots__ = (
        "_budget",
        "_carried",
        "_children_done",
        "_classifiers",
        "_clock",
        "_committed",
        "_default_policy",
        "_dispatch",
        "_fallbacks",
        "_last_error_type",
        "_last_node",
        "_last_out",
        "_limited",
        "_mono",
        "_node_policies",
        "_offset",
        "_policies",
        "_rec",
        "_resuming",
        "_t0",
        "_timeouts",
        "_writer",
        "carrier",
        "checkpoint_manager",
        "config",
        "context",
        "failures",
        "last_failure",
        "last_output",
        "lease",
        "registry",
        "run_file",
        "run_id",
        "run_logger",
        "trace",
        "tracker",
    )

    def __init__(
        self,
        config: RunConfig,
        registry: ContractRegistry,
        checkpoint_manager: CheckpointManager | None,
        *,
        hooks: Sequence[NodeHooks] = (),
        run_id: str | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.checkpoint_manager = checkpoint_manager
        self.run_id = run_id or config.run_id
        # The run's own mapping for the keys Stroma writes; the user's values stay the same objects.
        self.context: dict[str, Any] = dict(config.context)
        self.tracker = CostTracker()
        self.trace = ExecutionTrace()
        self.failures = 0
        self.last_failure: tuple[str, FailureClass, BaseException] | None = None
        self._last_error_type: str | None = None
        self._carried: tuple[int, float] = (0, 0.0)
        self.carrier: dict[str, str] = {}
        self.run_file: str | None = None
        self.run_logger = logging.LoggerAdapter(logger, {"run_id": self.run_id})
        every_hook = [*config.hook_list(), *hooks, *global_hooks()]
        self._dispatch = Dispatcher(every_hook) if every_hook else Dispatcher.EMPTY
        self._clock = clock = current_clock()
        self._mono = clock.monotonic
        mono0 = clock.monotonic()
        # wall time of a monotonic reading: one clock read per event, never going backwards
        self._offset = clock.time() - mono0
        self._writer = RunFileWriter(config.trace_dir) if config.trace_dir is not None else None
        self._rec: Recorder = (
            LiveRecorder(self.trace, self._dispatch, self._writer)
            if self._writer is not None or self._dispatch
            else QuietRecorder(self.trace)
        )
        # Read once: a pydantic model's attributes cost more than a slot's on the hot path.
        self._budget = config.budget
        self._limited = not config.budget.is_unlimited
        self._timeouts = config.node_timeouts
        self._fallbacks = config.model_fallbacks
        self._classifiers = config.classifiers
        self._node_policies = config.node_policies
        self._default_policy = (config.policy_map, _max_attempts(config.policy_map))
        self._policies: dict[str, tuple[dict[FailureClass, FailurePolicy], int]] = {}
        self._children_done: dict[str, dict[str, dict[str, Any]]] = {}  # group -> child -> output
        self._resuming = False
        self._committed = 0
        self._last_node: str | None = None
        self._t0 = mono0
        self._last_out: tuple[Any, State] | None = None
        self.last_output: Any = None  # the last state a step produced (or its input)
        self.lease: Lease | None = None  # the run's lease (runner.run / resume); commits carry its token

    @classmethod
    def for_run(
        cls,
        config: RunConfig,
        registry: ContractRegistry,
        checkpoint_manager: CheckpointManager | None,
    ) -> ReliabilityContext:
        """A fresh context for one run."""
        return cls(config, registry, checkpoint_manager)

    # -- the 0.3.2 fields --------------------------------------------------------------------

    @property
    def cost_tracker(self) -> CostTracker:
        """Spend of this run (and carried from the runs it resumes)."""
        return self.tracker

    @property
    def retry_budget(self) -> RetryBudget:
        """Attempts per (run, node) so far, counted from the trace."""
        budget = RetryBudget()
        for event in self.trace.events:
            budget.increment(event.run_id, event.node_id)
        return budget

    @property
    def budget(self) -> ExecutionBudget:
        """The run's token / cost / latency limits."""
        return self.config.budget

    @property
    def policy_map(self) -> dict[FailureClass, FailurePolicy]:
        """Retry policy per failure class (every node)."""
        return self.config.policy_map

    @property
    def step_policies(self) -> dict[str, dict[FailureClass, FailurePolicy]]:
        """Per-node overrides of :attr:`policy_map`."""
        return self.config.node_policies

    @property
    def classifiers(self) -> list[Any]:
        """Custom classifiers, asked first, in order."""
        return self.config.classifiers

    @property
    def step_timeouts(self) -> dict[str, float]:
        """Per-node timeouts in milliseconds."""
        return self.config.node_timeouts

    @property
    def model_fallbacks(self) -> list[Any]:
        """Model fallback policies."""
        return self.config.model_fallbacks

    @property
    def hooks(self) -> Any:
        """The run's hooks as configured (``RunConfig.hooks``)."""
        return self.config.hooks

    def build_result(self, status: RunStatus | str, final_state: BaseModel | None) -> ExecutionResult:
        """An ExecutionResult from the current tracker and trace."""
        return ExecutionResult(
            run_id=self.run_id,
            status=status if type(status) is RunStatus else RunStatus(status),
            final_state=final_state,
            trace=self.trace,
            total_cost_usd=self.tracker.total_cost_usd,
            total_tokens=self.tracker.total_tokens,
            hook_errors=self._dispatch.errors,
            header={"run_file": self.run_file} if self.run_file else {},
        )

    # -- events ------------------------------------------------------------------------------

    def _now(self) -> float:
        # Wall time derived from the monotonic clock: one clock read per event, and timestamps
        # that never go backwards within a run.
        return self._offset + self._mono()

    def _wall(self, mono: float) -> float:
        return self._offset + mono

    async def emit(self, event: ev.LifecycleEvent) -> None:
        """Publish ``event`` to the trace, the run file and every hook."""
        pending = self._rec.emit(event)
        if pending is not None:
            await pending

    @property
    def hook_errors(self) -> int:
        """How many hook calls raised or timed out in this run."""
        return self._dispatch.errors

    # -- run boundaries ----------------------------------------------------------------------

    def seed_progress(self, progress: RunProgress) -> None:
        """Continue from a stored progress record: spend (budgets hold across resumes) and the
        last committed node."""
        self.tracker.total_tokens = progress.tokens
        self.tracker.total_cost_usd = progress.cost_usd
        self._carried = (progress.tokens, progress.cost_usd)
        self.tracker.total_latency_ms = progress.latency_ms
        self._committed = progress.committed
        self._last_node = progress.last_node
        self._resuming = True

    async def start_run(
        self,
        pipeline: Sequence[str],
        *,
        resumed_from: str | None = None,
        parent_carrier: dict[str, str] | None = None,
        initial_state: Any = None,
    ) -> None:
        """Publish RunStarted, open the run file and record the run's manifest (with the initial
        state, so a worker that never saw the run start can resume it)."""
        self._t0 = t0 = self._mono()
        ts = self._wall(t0)
        ids = tuple(pipeline)
        name = self.config.pipeline_name
        started = ev.RunStarted(
            run_id=self.run_id,
            ts=ts,
            pipeline=ids,
            resumed_from=resumed_from,
            pipeline_name=name,
            carrier=self.carrier,
            parent_carrier=dict(parent_carrier) if parent_carrier else {},
        )
        self.trace.record(started)
        pending = self._dispatch.emit(started)
        if pending is not None:
            await pending
        if self._writer is not None:  # after listeners: the header carries their trace context
            self.run_file = str(self._writer.start(started))
        manager = self.checkpoint_manager
        if manager is None:
            return
        carrier = dict(self.carrier) if self.carrier else None
        initial, initial_ref = _initial_input(initial_state)
        if manager.save_inline is not None:
            args = (self.run_id, ids, name, carrier, ts, initial, initial_ref)
            manager.save_inline(self.run_id, RUN_NODE, manifest_json, args, MANIFEST_REF)
            return
        try:
            await manager.save_manifest(
                RunManifest(
                    run_id=self.run_id,
                    pipeline=list(ids),
                    pipeline_name=name,
                    carrier=carrier or {},
                    started_at=ts,
                    initial_input=initial,
                    initial_input_ref=initial_ref,
                )
            )
        except StoreUnavailableError as exc:
            # The first commit will surface the outage as a classified, retried failure.
            logger.warning("run %s: could not record its manifest (%s)", self.run_id, exc)

    async def _save_progress(self, status: str) -> None:
        manager = self.checkpoint_manager
        if manager is None:
            return
        fields = self._progress_fields(status)
        if manager.save_inline is not None:
            manager.save_inline(self.run_id, PROGRESS_NODE, progress_json, fields, PROGRESS_REF)
            return
        try:
            await manager.save_progress_json(self.run_id, progress_json(*fields), token=self._token())
        except StoreUnavailableError as exc:
            logger.warning("run %s: could not record its progress (%s)", self.run_id, exc)
        except LeaseLostError:  # the run is another worker's now: its progress is theirs to write
            logger.warning(
                "run %s: not recording its progress: another worker took the run over", self.run_id
            )

    def _token(self) -> int | None:
        return self.lease.token if self.lease is not None else None

    async def finish_run(self, status: RunStatus, final_state: BaseModel | None) -> ExecutionResult:
        """Record the final status with the run, publish RunFinished, close the run file."""
        failed = self.last_failure if status in (RunStatus.FAILED, RunStatus.PARTIAL) else None
        await self._save_progress(status.value)  # inside the run: before RunFinished closes it
        if self.lease is not None:
            await self.lease.release()  # the run is recorded as ended: its lease goes back here too
        now = self._mono()
        await self.emit(
            ev.RunFinished(
                run_id=self.run_id,
                ts=self._wall(now),
                status=status.value,
                duration_ms=(now - self._t0) * 1000.0,
                total_tokens=self.tracker.total_tokens,
                total_cost_usd=self.tracker.total_cost_usd,
                failures=self.failures,
                error_type=self._last_error_type if failed else None,
                failed_node=failed[0] if failed else None,
                carried_tokens=self._carried[0],
                carried_cost_usd=self._carried[1],
            )
        )
        if self._writer is not None:
            self._writer.close()
        return self.build_result(status, final_state)

    def abort(self) -> None:
        """End a run that was cancelled or interrupted mid-way: publish RunFinished with status
        "CANCELLED" (so listeners close what they opened) and close the run file.

        Synchronous on purpose: it runs while a cancellation unwinds, in the run's own task, where
        async hooks cannot be awaited (their coroutines are closed unrun).
        """
        self._rec.flush()
        pending = self._rec.emit(
            ev.RunFinished(
                run_id=self.run_id,
                ts=self._now(),
                status="CANCELLED",
                duration_ms=(self._mono() - self._t0) * 1000.0,
                total_tokens=self.tracker.total_tokens,
                total_cost_usd=self.tracker.total_cost_usd,
                failures=self.failures,
            )
        )
        close = getattr(pending, "close", None)
        if close is not None:
            close()
        if self._writer is not None:
            self._writer.close()

    async def record_ended(self, status: str) -> None:
        """After :meth:`abort`: record ``status`` ("CANCELLED", or "INTERRUPTED" for Ctrl-C and
        SystemExit) as the run's final status in its store, so it is not left "running" for
        ``recover()`` to pick up. Bounded, and it never hides what is unwinding."""
        try:
            async with asyncio.timeout(5.0):
                await self._save_progress(status)
        except Exception as exc:  # the store is down or slow: the run stays "running"
            logger.warning("run %s: could not record that it was cancelled (%s)", self.run_id, exc)

    def _progress_fields(
        self, status: str, mono: float | None = None, *, committing: str | None = None
    ) -> tuple[Any, ...]:
        # The progress record, as the arguments of progress_json (the in-process store keeps
        # them as they are and renders the JSON when read). ``mono``: when it is written;
        # ``committing``: the node whose commit writes it.
        tracker = self.tracker
        return (
            self.run_id,
            self._last_node if committing is None else committing,
            self._committed if committing is None else self._committed + 1,
            status,
            tracker.total_tokens,
            tracker.total_cost_usd,
            tracker.total_latency_ms,
            self._now() if mono is None else self._offset + mono,
        )

    # -- budgets and policies ------------------------------------------------------------------

    async def _check_budget(self, node_id: str, *, only_denials: bool = False) -> None:
        """Publish one BudgetChecked per limited dimension; raise BudgetExceeded on the first
        dimension over its limit. ``only_denials`` publishes nothing while every dimension is
        within its limit (the check before a node starts, for spend carried over)."""
        exceeded: BudgetExceeded | None = None
        for dimension, limit, used in self.tracker.budget_status(self._budget):
            over = used > limit
            if only_denials and not over:
                continue
            await self.emit(
                ev.BudgetChecked(
                    run_id=self.run_id,
                    ts=self._now(),
                    node_id=node_id,
                    dimension=dimension,
                    limit=float(limit),
                    used=float(used),
                    decision="deny" if over else "allow",
                )
            )
            if over and exceeded is None:
                exceeded = BudgetExceeded(dimension, limit, used, node_id)
        if exceeded is not None:
            raise exceeded

    def _policy(self, node_id: str) -> tuple[dict[FailureClass, FailurePolicy], int]:
        if node_id not in self._node_policies:
            return self._default_policy
        cached = self._policies.get(node_id)
        if cached is None:
            policies = self.config.policy_for(node_id)
            cached = self._policies[node_id] = (policies, _max_attempts(policies))
        return cached

    def _fallback(self, ctx: Any) -> FallbackPolicy | None:
        """The model fallback in force for an attempt starting now (sets or clears
        ``ctx["_stroma_model"]``)."""
        policy = active_fallback(self.tracker, self._budget, self._fallbacks)
        if isinstance(ctx, dict):
            if policy is None:
                ctx.pop(MODEL_KEY, None)
            else:
                ctx[MODEL_KEY] = policy.fallback_model
        return policy

    async def _announce_fallback(self, step_id: str, declared: str | None, policy: FallbackPolicy) -> None:
        """Publish a fallback in force: BudgetChecked "fallback" and ModelFallback, on the node."""
        now = self._now()
        await self.emit(
            ev.BudgetChecked(
                run_id=self.run_id,
                ts=now,
                node_id=step_id,
                dimension="cost",
                limit=float(self._budget.max_cost_usd or 0.0),
                used=float(self.tracker.total_cost_usd),
                decision="fallback",
            )
        )
        await self.emit(
            ev.ModelFallback(
                run_id=self.run_id,
                ts=now,
                node_id=step_id,
                from_model=declared or policy.preferred_model,
                to_model=policy.fallback_model,
                spend_fraction=spend_fraction(self.tracker, self._budget) or 0.0,
            )
        )

    # -- the step ----------------------------------------------------------------------------

    def _input_state(self, input_state: Any) -> State:
        # A state is recorded as the JSON text already written for the previous checkpoint.
        last = self._last_out
        if last is not None and last[0] is input_state:
            return last[1]
        if isinstance(input_state, BaseModel):
            try:
                return type(input_state).__pydantic_serializer__.to_json(input_state).decode()
            except Exception:  # a field without a JSON form: keep its python dump
                return input_state.model_dump()
        if isinstance(input_state, dict):
            return dict(input_state)
        return {"value": input_state}

    async def run_step(
        self,
        step_id: str,
        func: Callable[..., Any],
        input_state: Any,
        ctx: Any = None,
        *,
        contract: NodeContract | None = None,
    ) -> BaseModel:
        """Run one node with validation, retries, cost, budget, fallback, checkpoint and trace.

        Returns the validated output (an instance of ``contract.output_schema``, or an
        :class:`~stroma.contracts.UntypedState` without a contract). On final failure re-raises
        the node's last exception; ``last_failure`` holds (node, class, exception).
        """
        if ctx is None:
            ctx = self.context
        policies, max_attempts = self._policy(step_id) if self._node_policies else self._default_policy
        node_t0 = self._mono()
        if self.lease is not None and self.lease.lost:
            await self._stop_lost_lease(step_id, node_t0, max_attempts)
        if self._limited:
            await self._deny_carried_spend(step_id, node_t0, max_attempts)
        in_state = self._input_state(input_state)
        attempt = 1
        while True:
            try:
                output = await self._attempt(
                    step_id, func, input_state, in_state, ctx, contract, attempt, max_attempts, node_t0
                )
            except _AttemptFailed as failed:
                delay = await self._decide(failed, policies, node_t0)
                if delay > 0:
                    await self._clock.sleep(delay)
                attempt += 1
                continue
            self.last_output = output
            return output

    async def _stop_lost_lease(self, step_id: str, node_t0: float, max_attempts: int) -> None:
        """Before a node starts: a worker whose lease was lost stops (the run is another's now)."""
        lease = self.lease
        assert lease is not None
        exc = LeaseLostError(
            f"run '{self.run_id}' stopped before node '{step_id}': this worker lost the run's lease "
            f"({lease.reason or 'taken over'}); another worker owns the run now, so nothing more is "
            "run or committed here",
            run_id=self.run_id,
            token=lease.token,
        )
        await self._fail_before_start(step_id, node_t0, max_attempts, FailureClass.TERMINAL, exc)
        raise exc

    async def _deny_carried_spend(self, step_id: str, node_t0: float, max_attempts: int) -> None:
        """Before a node starts: a budget already spent (by earlier runs) stops the run here."""
        try:
            await self._check_budget(step_id, only_denials=True)
        except BudgetExceeded as exc:
            await self._fail_before_start(step_id, node_t0, max_attempts, FailureClass.RECOVERABLE, exc)
            raise

    async def _fail_before_start(
        self, step_id: str, node_t0: float, max_attempts: int, failure_class: FailureClass, exc: Exception
    ) -> None:
        """A node stopped before its first attempt: its start and its failed end, with no attempt."""
        await self.emit(
            ev.NodeStarted(
                run_id=self.run_id, ts=self._wall(node_t0), node_id=step_id, max_attempts=max_attempts
            )
        )
        await self._node_failed(step_id, 0, node_t0, failure_class, exc)

    def _open_attempt(
        self, step_id: str, in_state: State, ctx: Any, attempt: int, max_attempts: int, node_t0: float
    ) -> tuple[AttemptRecord, FallbackPolicy | None, str | None]:
        """An attempt's record, its context keys and model: (record, fallback in force, the model
        the node declared in ``ctx["model"]``)."""
        declared = ctx.get("model") if type(ctx) is dict else None
        if not isinstance(declared, str):
            declared = None
        fallback = self._fallback(ctx) if self._fallbacks else None
        if type(ctx) is dict:
            ctx[IDEMPOTENCY_KEY] = f"{self.run_id}:{step_id}"
            ctx[ATTEMPT_KEY] = attempt
        offset = self._offset
        # positional on the hot path (keywords cost more than the rest of the record): the
        # order is AttemptRecord's, and test_one_loop checks every field of the events built from it
        rec = AttemptRecord(
            step_id,
            self.run_id,
            attempt,
            max_attempts,
            offset + self._mono(),
            in_state,
            fallback.fallback_model if fallback is not None else declared,
            offset + node_t0,
        )
        return rec, fallback, declared

    async def _attempt(
        self,
        step_id: str,
        func: Callable[..., Any],
        input_state: Any,
        in_state: State,
        ctx: Any,
        contract: NodeContract | None,
        attempt: int,
        max_attempts: int,
        node_t0: float,
    ) -> BaseModel:
        """One attempt: call, usage, output contract, budget, commit. Raises _AttemptFailed."""
        rec, fallback, declared = self._open_attempt(step_id, in_state, ctx, attempt, max_attempts, node_t0)
        mono = self._mono
        t0 = mono()
        pending = self._rec.begin(rec)
        if pending is not None:
            await pending
        if fallback is not None:  # on the node, after its start
            await self._announce_fallback(step_id, declared, fallback)
        if pending is not None or fallback is not None:
            t0 = mono()  # hook time is never charged to the node
        recorded = False
        try:
            if contract is not None and type(input_state) is not contract.input_schema:
                input_state = validate_boundary(contract, "input", input_state)
            raw = self._invoke(step_id, func, input_state, ctx, rec)
            if type(raw) is _coroutine or inspect.isawaitable(raw):
                raw = await raw
            if type(raw) is not dict:
                raw = _take_usage(rec, raw, fallback is not None)
            output = _validated_output(contract, raw)
            payload = type(output).__pydantic_serializer__.to_json(output).decode()
            done = mono()
            rec.duration_ms = (done - t0) * 1000.0
            self.tracker.add(
                step_id, rec.tokens, rec.cost_usd, rec.duration_ms, rec.used_model, rec.output_tokens
            )
            recorded = True
            if self._limited:
                await self._check_budget(step_id)
            pending = self._commit(rec, output, payload, done)
            if pending is not None:
                await pending
            rec.output_state = payload
        except Exception as exc:
            if not recorded:
                rec.duration_ms = (mono() - t0) * 1000.0
            etype = "timeout" if isinstance(exc, NodeTimeoutError) else error_type(exc)
            raise _AttemptFailed(rec, exc, etype, recorded) from exc
        except BaseException:  # cancelled mid-attempt: the attempt did start
            self._rec.flush()
            raise
        rec.ended = self._offset + mono()
        self._last_out = (output, payload)
        pending = self._rec.succeed(rec)
        if pending is not None:
            await pending
        return output

    def _invoke(
        self, step_id: str, func: Callable[..., Any], state: Any, ctx: Any, rec: AttemptRecord
    ) -> Any:
        """Call the node: its result, or an awaitable of it (an async node, a parallel group, a
        node under a timeout)."""
        with_ctx = getattr(func, "_stroma_takes_ctx", None)
        if with_ctx is None:
            with_ctx = takes_context(func)
        if getattr(func, "_stroma_children", None) is not None:
            return self._run_group(func, state, ctx, step_id, rec)
        if self._timeouts and step_id in self._timeouts:
            return _call_within(func, state, ctx, with_ctx, step_id, self._timeouts[step_id])
        return func(state, ctx) if with_ctx else func(state)

    def _commit(
        self, rec: AttemptRecord, output: BaseModel, payload: str, done: float
    ) -> Awaitable[None] | None:
        """Commit the node's output and the run's progress together (one store transaction).
        The in-process store commits at once; a returned awaitable finishes the commit."""
        manager = self.checkpoint_manager
        if manager is None:
            return None
        ref = schema_ref(type(output))
        progress = self._progress_fields("running", done, committing=rec.node_id)
        if manager.commit_inline is None:
            commit = self._commit_to_store(manager, rec, output, payload, ref, progress, done)
            where = self._rec.node_context
            # in the node's context, after the attempt's (see LiveRecorder.node_context)
            return commit if where is None else asyncio.create_task(commit, context=where)
        stored = encode_checkpoint(rec.node_id, output, payload)  # refused here if it could not load
        manager.commit_inline(self.run_id, rec.node_id, stored, ref, progress, token=self._token())
        self._saved(rec, manager, done)
        return None

    async def _commit_to_store(
        self,
        manager: CheckpointManager,
        rec: AttemptRecord,
        output: BaseModel,
        payload: str,
        ref: str,
        progress: tuple[Any, ...],
        done: float,
    ) -> None:
        await manager.commit_json(
            self.run_id, rec.node_id, output, payload, ref, progress_json(*progress), token=self._token()
        )
        self._saved(rec, manager, done)

    def _saved(self, rec: AttemptRecord, manager: CheckpointManager, done: float) -> None:
        self._committed += 1
        self._last_node = rec.node_id
        saved = self._mono()
        rec.store = manager.kind
        rec.saved = self._offset + saved
        rec.checkpoint_ms = (saved - done) * 1000.0

    async def _decide(
        self, failed: _AttemptFailed, policies: dict[FailureClass, FailurePolicy], node_t0: float
    ) -> float:
        """Classify a failed attempt, publish it, and return the backoff before the next attempt;
        raise the node's error when it may not be retried."""
        rec, err, etype = failed.record, failed.error, failed.error_type
        step_id, attempt = rec.node_id, rec.attempt
        if not failed.recorded:
            self.tracker.add(
                step_id, rec.tokens, rec.cost_usd, rec.duration_ms, rec.used_model, rec.output_tokens
            )
        self.failures += 1
        failure_class, decided_by = classify_with_reason(
            err, NodeContext(step_id, attempt, self.run_id), self._classifiers
        )
        message = str(err) or etype
        rec.failure, rec.message = failure_class.value, message
        rec.ended = now = self._now()
        self._rec.fail(rec)
        if isinstance(err, ContractViolation):
            await self.emit(
                ev.ContractViolated(
                    run_id=self.run_id,
                    ts=now,
                    node_id=err.node_id,
                    attempt=attempt,
                    direction=err.direction,
                    field_paths=tuple(err.field_paths),
                    error_count=len(err.errors),
                    errors=tuple(
                        (path, _value_free(e)) for path, e in zip(err.field_paths, err.errors, strict=True)
                    ),
                )
            )
        await self.emit(
            ev.FailureClassified(
                run_id=self.run_id,
                ts=now,
                node_id=step_id,
                attempt=attempt,
                failure_class=failure_class.value,
                decided_by=decided_by,
                error_type=etype,
            )
        )
        await self.emit(
            ev.AttemptFailed(
                run_id=self.run_id,
                ts=now,
                node_id=step_id,
                attempt=attempt,
                duration_ms=rec.duration_ms,
                error_type=etype,
                message=message,
                failure_class=failure_class.value,
                tokens=rec.tokens,
                input_tokens=rec.input_tokens,
                output_tokens=rec.output_tokens,
                cost_usd=rec.cost_usd,
                model=rec.used_model,
                output_state=_rejected_output(err),
                exception=err,
            )
        )
        self.run_logger.info(
            "run %s: node %s attempt %d failed: %s (%s, decided by %s)",
            self.run_id,
            step_id,
            attempt,
            etype,
            failure_class.value,
            decided_by,
        )
        policy = policies.get(failure_class)
        budget_stop = isinstance(err, BudgetExceeded)
        if not budget_stop and (rec.tokens or rec.cost_usd):
            await self._save_progress("running")  # spend of failed attempts holds across resumes
        if not budget_stop and self._limited and may_retry(attempt, policy):
            try:
                await self._check_budget(step_id)  # a retry would spend more
            except BudgetExceeded as exc:
                err, etype, budget_stop = exc, error_type(exc), True
                failure_class = FailureClass.RECOVERABLE
        if not budget_stop and may_retry(attempt, policy):
            assert policy is not None
            delay = backoff_delay(attempt, policy, jitter_rng())
            if not math.isfinite(delay) or delay < 0:
                delay = 0.0
            await self.emit(
                ev.RetryScheduled(
                    run_id=self.run_id,
                    ts=self._now(),
                    node_id=step_id,
                    attempt=attempt,
                    delay_s=delay,
                    error_type=etype,
                    failure_class=failure_class.value,
                )
            )
            return delay
        if not budget_stop:
            await self.emit(
                ev.RetriesExhausted(
                    run_id=self.run_id,
                    ts=self._now(),
                    node_id=step_id,
                    attempts=attempt,
                    failure_class=failure_class.value,
                    max_retries=policy.max_retries if policy else 0,
                    backoff_seconds=policy.backoff_seconds if policy else 0.0,
                )
            )
        await self._node_failed(step_id, attempt, node_t0, failure_class, err, etype)
        raise err

    async def run_chain(self, steps: Sequence[Step], state: Any, ctx: Any = None) -> Any:
        """Run ``steps`` (node id, function, contract) in order from ``state``; return the last
        output. Raises the exception of a step that failed for good (``last_failure`` says which)."""
        self.last_output = state
        for step_id, func, contract in steps:
            state = await self.run_step(step_id, func, state, ctx, contract=contract)
        return state

    async def _node_failed(
        self,
        step_id: str,
        attempts: int,
        node_t0: float,
        failure_class: FailureClass,
        exc: BaseException,
        etype: str | None = None,
    ) -> None:
        etype = etype or error_type(exc)
        self.last_failure = (step_id, failure_class, exc)
        self._last_error_type = etype
        await self.emit(
            ev.NodeFinished(
                run_id=self.run_id,
                ts=self._now(),
                node_id=step_id,
                outcome="failed",
                attempts=attempts,
                duration_ms=(self._mono() - node_t0) * 1000.0,
                failure_class=failure_class.value,
                error_type=etype,
            )
        )

    async def restore(self, node_id: str, output: BaseModel | None, size: int, duration_ms: float) -> None:
        """Publish that ``node_id`` was skipped on resume (its checkpoint loaded if ``output``)."""
        now = self._now()
        out_dict = output.model_dump(mode="json") if output is not None else None
        if output is not None and self.checkpoint_manager is not None:
            await self.emit(
                ev.CheckpointLoaded(
                    run_id=self.run_id,
                    ts=now,
                    node_id=node_id,
                    store=self.checkpoint_manager.kind,
                    size_bytes=size,
                    duration_ms=duration_ms,
                )
            )
            self._last_out = (output, out_dict or {})
        await self.emit(ev.NodeRestored(run_id=self.run_id, ts=now, node_id=node_id, output_state=out_dict))

    # -- parallel groups ---------------------------------------------------------------------

    async def _restore_children(self, children: Sequence[Callable[..., Any]], done: dict[str, Any]) -> None:
        """On resume: the children of a group that were committed before it failed or was cut off."""
        manager = self.checkpoint_manager
        if manager is None:
            return
        for child in children:
            child_id: str = child._stroma_node_id  # type: ignore[attr-defined]
            contract: NodeContract | None = getattr(child, "_stroma_contract", None)
            schema = contract.output_schema if contract is not None else UntypedState
            loaded = await manager.resume(self.run_id, child_id, schema)
            if loaded is not None:
                done[child_id] = loaded.model_dump()
                await self.emit(
                    ev.NodeRestored(
                        run_id=self.run_id,
                        ts=self._now(),
                        node_id=child_id,
                        output_state=loaded.model_dump(mode="json"),
                    )
                )

    async def _run_group(
        self, group: Callable[..., Any], state: Any, ctx: Any, group_id: str, rec: AttemptRecord
    ) -> tuple[dict[str, Any], int, int, str | None]:
        children: tuple[Callable[..., Any], ...] = group._stroma_children  # type: ignore[attr-defined]
        run_id = self.run_id

        async def child_started(child_id: str) -> float:
            t0 = self._mono()
            await self.emit(
                ev.NodeStarted(run_id=run_id, ts=self._wall(t0), node_id=child_id, parent=group_id)
            )
            return t0

        async def child_finished(child_id: str, t0: float, outcome: str, etype: str | None = None) -> None:
            await self.emit(
                ev.NodeFinished(
                    run_id=run_id,
                    ts=self._now(),
                    node_id=child_id,
                    outcome=outcome,
                    attempts=1,
                    duration_ms=(self._mono() - t0) * 1000.0,
                    parent=group_id,
                    error_type=etype,
                )
            )

        def child_ctx(child_id: str) -> Any:
            if not isinstance(ctx, dict):
                return ctx
            own = dict(ctx)
            own[IDEMPOTENCY_KEY] = f"{run_id}:{group_id}/{child_id}"
            return own

        done = self._children_done.setdefault(group_id, {})
        if rec.attempt == 1 and self._resuming:
            await self._restore_children(children, done)
        manager = self.checkpoint_manager

        async def child_succeeded(child_id: str, output: BaseModel) -> None:
            # kept, then committed on its own: neither a retry of the group (from memory) nor a
            # resume (from the store) runs it again
            done[child_id] = output.model_dump()
            if manager is not None:
                await manager.checkpoint(run_id, child_id, output)

        spent = _Usage()
        try:
            return await fan_out(
                children, state, child_ctx, child_started, child_finished, spent, done, child_succeeded
            )
        finally:  # what the children spent counts, whether or not a sibling failed
            rec.input_tokens, rec.output_tokens, rec.used_model = (
                spent.input_tokens,
                spent.output_tokens,
                spent.model,
            )
            rec.tokens = spent.input_tokens + spent.output_tokens
            if rec.used_model is not None:
                rec.cost_usd = estimate_cost_usd(rec.used_model, rec.input_tokens, rec.output_tokens)


_OWN_MESSAGES = frozenset({"value_error", "assertion_error"})


def _value_free(error: dict[str, Any]) -> str:
    """A contract error's message without the input's values: pydantic's own messages name what
    was expected, never the input; a custom validator's message may quote it, so its error
    type stands in for it (the full text stays on AttemptFailed.message)."""
    kind = str(error.get("type", ""))
    if kind in _OWN_MESSAGES or kind.startswith("custom"):
        return kind
    return str(error.get("msg", ""))


def _rejected_output(err: Exception) -> dict[str, Any] | None:
    """The output a node returned that failed its contract, as JSON data (None otherwise)."""
    if not isinstance(err, ContractViolation) or err.direction != "output":
        return None
    raw = err.raw
    try:
        if isinstance(raw, BaseModel):
            return raw.model_dump(mode="json")
        if isinstance(raw, dict):
            return UntypedState.model_validate(raw).model_dump(mode="json")
    except Exception:  # not JSON-able: the message still says what was wrong
        return None
    return {"value": repr(raw)}


def _take_usage(rec: AttemptRecord, raw: Any, fell_back: bool) -> Any:
    """Record the usage a node returned in its tuple on ``rec`` (priced at the fallback model
    while one is in force); return the output part."""
    out, rec.input_tokens, rec.output_tokens, returned = split_output(raw, rec.node_id)
    rec.tokens = rec.input_tokens + rec.output_tokens
    rec.used_model = rec.model if fell_back or returned is None else returned
    if rec.used_model is not None:
        rec.cost_usd = estimate_cost_usd(rec.used_model, rec.input_tokens, rec.output_tokens)
    return out


def _initial_input(state: Any) -> tuple[str | None, str | None]:
    """The JSON (as a checkpoint keeps it) and schema reference of a run's initial state."""
    if isinstance(state, dict):
        state = UntypedState.model_validate(state)
    if not isinstance(state, BaseModel):  # (any other value is wrapped as {"value": ...} by nodes)
        return None, None
    try:
        return encode_checkpoint(RUN_NODE, state), schema_ref(type(state))
    except Exception:  # not storable as JSON: the run still runs; only a stranger cannot resume it
        logger.debug("initial state of type %s is not storable; not kept in the manifest", type(state))
        return None, None


def _validated_output(contract: NodeContract | None, raw: Any) -> BaseModel:
    """A node's output as its contract's model (or an UntypedState without a contract)."""
    if contract is None:
        return raw if isinstance(raw, BaseModel) else UntypedState.model_validate(raw)
    if type(raw) is dict:
        try:  # model_validate without its wrapper (the hot path)
            return contract.output_schema.__pydantic_validator__.validate_python(raw)  # type: ignore[no-any-return]
        except ValidationError:
            pass  # validate_boundary raises the ContractViolation that names the fields
    return validate_boundary(contract, "output", raw)


class _AttemptFailed(Exception):
    """An attempt's failure on its way to :meth:`ReliabilityContext._decide` (never escapes)."""

    def __init__(self, record: AttemptRecord, error: Exception, etype: str, recorded: bool) -> None:
        super().__init__(error)
        self.record = record
        self.error = error
        self.error_type = etype
        self.recorded = recorded


class _Usage:
    """Tokens the children of a group reported, summed as they finish."""

    __slots__ = ("input_tokens", "model", "output_tokens")

    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.model: str | None = None


async def fan_out(
    children: Sequence[Callable[..., Any]],
    state: Any,
    ctx: Any,
    started: Callable[[str], Awaitable[float]] | None = None,
    finished: Callable[[str, float, str, str | None], Awaitable[None]] | None = None,
    spent: _Usage | None = None,
    restored: dict[str, dict[str, Any]] | None = None,
    succeeded: Callable[[str, BaseModel], Awaitable[None]] | None = None,
) -> tuple[dict[str, Any], int, int, str | None]:
    """Run ``children`` concurrently on ``state``; validate each against its contract; merge.

    ``ctx`` is the context every child gets, or a function of the child's id that returns it.
    Children in ``restored`` (id -> output) are not run again; ``succeeded`` is told of each child
    that succeeds, before it counts as finished. The first failure cancels the siblings (a
    cancelled child keeps nothing) and propagates; what the children that finished reported is
    added to ``spent`` either way. Returns (merged output, input tokens, output tokens, last
    reported model).
    """
    usage = spent if spent is not None else _Usage()
    finished_outputs = restored if restored is not None else {}

    async def run_child(child: Callable[..., Any]) -> dict[str, Any]:
        child_id: str = getattr(child, "_stroma_node_id", getattr(child, "__name__", "child"))
        if child_id in finished_outputs:
            return finished_outputs[child_id]
        contract: NodeContract | None = getattr(child, "_stroma_contract", None)
        t0 = await started(child_id) if started is not None else 0.0
        try:
            child_in = validate_boundary(contract, "input", state) if contract else state
            own_ctx = ctx(child_id) if callable(ctx) else ctx
            raw = await _call(child, child_in, own_ctx, takes_context(child))
            out, in_tokens, out_tokens, model = split_output(raw, child_id)
            usage.input_tokens += in_tokens
            usage.output_tokens += out_tokens
            usage.model = model or usage.model
            model_out = _validated_output(contract, out)
            if succeeded is not None:
                await succeeded(child_id, model_out)
            out_dict = model_out.model_dump()
        except asyncio.CancelledError:
            if finished is not None:
                await asyncio.shield(finished(child_id, t0, "cancelled", None))
            raise
        except Exception as exc:
            if finished is not None:
                await finished(child_id, t0, "failed", error_type(exc))
            raise
        if finished is not None:
            await finished(child_id, t0, "succeeded", None)
        return out_dict

    tasks = [asyncio.ensure_future(run_child(child)) for child in children]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    if pending:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    first_error: BaseException | None = None
    for task in done:  # the earliest failure by completion order is what the caller sees
        if not task.cancelled() and task.exception() is not None and first_error is None:
            first_error = task.exception()
    if first_error is not None:
        raise first_error
    merged: dict[str, Any] = {}
    for task in tasks:
        merged.update(task.result())
    return merged, usage.input_tokens, usage.output_tokens, usage.model


async def execute_step(
    step_id: str,
    func: Callable[..., Any],
    input_state: Any,
    ctx: ReliabilityContext,
    *,
    contract: NodeContract | None = None,
) -> ExecutionResult:
    """Run one step through ``ctx`` with full reliability instrumentation (validation, retries,
    cost, budget, fallback, checkpoint, trace, classification): the freestanding loop, usable from
    any orchestration framework. A node failure does not raise: it is the result's status
    (FAILED for a terminal or ambiguous failure, PARTIAL for recoverable ones and budget stops);
    a success is COMPLETED with the validated output as ``final_state``."""
    try:
        output = await ctx.run_step(step_id, func, input_state, None, contract=contract)
    except Exception as exc:
        failure = ctx.last_failure
        return ctx.build_result(status_for(exc, failure[1] if failure else None), None)
    return ctx.build_result(RunStatus.COMPLETED, output)


def status_for(exc: BaseException, failure_class: FailureClass | None) -> RunStatus:
    """The run status a node's final failure gives: PARTIAL for a budget stop or a recoverable
    failure that ran out of retries (resumable), FAILED otherwise."""
    if isinstance(exc, BudgetExceeded) or failure_class is FailureClass.RECOVERABLE:
        return RunStatus.PARTIAL
    return RunStatus.FAILED
