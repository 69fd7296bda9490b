"""The step loop: validate, attempt, classify, back off, budget, checkpoint, emit.

This is the only place that decides anything. Everything it decides is published as a
lifecycle event (:mod:`stroma.events`); the trace, run files, hooks and telemetry only listen.

Hot-path rules (people run thousands of nodes): nothing here grows with the run's length
(running totals, cached signatures and policies), an input that already is an instance of the
node's schema is not validated again, and a run with no hooks builds no coroutine per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from stroma import _schemas
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
    RunManifest,
    RunProgress,
    manifest_json,
)
from stroma.checkpoint._codec import progress_json
from stroma.contracts import (
    ContractRegistry,
    ContractViolation,
    NodeContract,
    UntypedState,
    validate_boundary,
)
from stroma.cost import BudgetExceeded, CostTracker, estimate_cost_usd, resolve_model_hint
from stroma.errors import NodeReturnTypeError, StoreUnavailableError
from stroma.failures import (
    FailureClass,
    FailurePolicy,
    NodeContext,
    RetryBudget,
    backoff_delay,
    classify_with_reason,
)
from stroma.hooks import Dispatcher, NodeHooks, global_hooks
from stroma.runfile import RunFileWriter
from stroma.trace import (
    ExecutionResult,
    ExecutionTrace,
    RunStatus,
    decode_state,
    materialize_event,
)

__all__ = ["ReliabilityContext", "execute_step"]

logger = logging.getLogger("stroma")

IDEMPOTENCY_KEY = "_stroma_idempotency_key"
MODEL_KEY = "_stroma_model"

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


async def _probe() -> None:
    return None


_probe_coro = _probe()
_coroutine = type(_probe_coro)
_probe_coro.close()


def error_type(exc: BaseException) -> str:
    """The exception's qualified class name (``builtins`` omitted)."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def split_output(raw: Any, node_id: str) -> tuple[Any, int, int, str | None, int]:
    """(output, input_tokens, output_tokens, model, total_tokens) from a node's return value."""
    if isinstance(raw, dict | BaseModel):
        return raw, 0, 0, None, 0
    if isinstance(raw, tuple) and 2 <= len(raw) <= 4:
        out = raw[0]
        try:
            if len(raw) == 2:
                tokens = int(raw[1])
                return out, tokens, 0, None, tokens
            in_tokens, out_tokens = int(raw[1]), int(raw[2])
            model = raw[3] if len(raw) == 4 else None
            if model is not None and not isinstance(model, str):
                raise TypeError
        except (TypeError, ValueError):
            pass
        else:
            return out, in_tokens, out_tokens, model, in_tokens + out_tokens
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


class FirstFailure(NamedTuple):
    """A first attempt that :meth:`ReliabilityContext.run_chain` ran and that failed."""

    error: Exception
    node_t0: float
    t0: float
    input_tokens: int = 0
    output_tokens: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    model: str | None = None


Step = tuple[str, Callable[..., Any], NodeContract | None]


class ReliabilityContext:
    """Per-run bundle of every reliability primitive the execution loop needs.

    Created once per run with :meth:`for_run`, then threaded through whichever execution
    strategy drives the steps (the linear runner, ``parallel()``, an agent loop, ``StromaStep``).
    """

    __slots__ = (
        "_budget",
        "_budget_folded",
        "_budget_on",
        "_carried",
        "_classifiers",
        "_clock",
        "_committed",
        "_default_policy",
        "_dispatch",
        "_eager",
        "_fallbacks",
        "_last_decoded",
        "_last_error_type",
        "_last_node",
        "_last_out",
        "_log_append",
        "_mono",
        "_mono0",
        "_node_policies",
        "_policies",
        "_quiet",
        "_retry_budget",
        "_t0",
        "_timeouts",
        "_wall0",
        "_writer",
        "carrier",
        "checkpoint_manager",
        "config",
        "failures",
        "last_failure",
        "last_output",
        "registry",
        "run_file",
        "run_id",
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
        self.tracker = CostTracker()
        self.trace = ExecutionTrace()
        self._retry_budget = RetryBudget()
        self._budget_folded = 0
        self.failures = 0
        self.last_failure: tuple[str, FailureClass, BaseException] | None = None
        self._last_error_type: str | None = None
        self._carried: tuple[int, float] = (0, 0.0)
        self.carrier: dict[str, str] = {}
        self.run_file: str | None = None
        every_hook = [*config.hook_list(), *hooks, *global_hooks()]
        self._dispatch = Dispatcher(every_hook) if every_hook else Dispatcher.EMPTY
        self._clock = clock = current_clock()
        self._mono = clock.monotonic
        self._mono0 = clock.monotonic()
        self._wall0 = clock.time()
        self._writer = RunFileWriter(config.trace_dir) if config.trace_dir is not None else None
        self._eager = self._writer is not None
        self._quiet = not self._eager and not self._dispatch
        self._log_append = self.trace._log.append
        self._budget = config.budget
        self._budget_on = not config.budget.is_unlimited
        self._fallbacks = config.model_fallbacks
        self._classifiers = config.classifiers
        self._timeouts = config.node_timeouts
        self._node_policies = config.node_policies
        default = config.policy_map
        most = 0
        for policy in default.values():
            most = max(most, policy.max_retries)
        self._default_policy = (default, most + 1)
        self._policies: dict[str, tuple[dict[FailureClass, FailurePolicy], int]] = {}
        self._committed = 0
        self._last_node: str | None = None
        self._t0 = self._mono0
        self._last_out: tuple[Any, str | dict[str, Any]] | None = None
        self._last_decoded: tuple[str, dict[str, Any]] | None = None
        self.last_output: Any = None  # run_chain: the last state a step produced (or its input)

    @property
    def retry_budget(self) -> RetryBudget:
        """Attempts per (run, node) so far (counted from the trace when read)."""
        budget = self._retry_budget
        attempts = self.trace._attempts
        for item in attempts[self._budget_folded :]:
            if type(item) is tuple:
                budget._counts[(item[1], item[0])] = item[2]
            else:
                budget._counts[(item.run_id, item.node_id)] = item.attempt
        self._budget_folded = len(attempts)
        return budget

    @retry_budget.setter
    def retry_budget(self, budget: RetryBudget) -> None:
        self._retry_budget = budget
        self._budget_folded = len(self.trace._attempts)

    @classmethod
    def for_run(
        cls,
        config: RunConfig,
        registry: ContractRegistry,
        checkpoint_manager: CheckpointManager | None,
    ) -> ReliabilityContext:
        """A fresh context for one run."""
        return cls(config, registry, checkpoint_manager)

    # -- events -----------------------------------------------------------------------------

    def _now(self) -> float:
        # Wall time derived from the monotonic clock: one clock read per event, and timestamps
        # that never go backwards within a run.
        return self._wall0 + (self._mono() - self._mono0)

    def _emit(self, event: ev.LifecycleEvent) -> Awaitable[None] | None:
        self._log_append(event)
        if self._writer is not None:
            self._writer.write(event)
        return self._dispatch.emit(event)

    def _ev(self, fields: dict[str, Any]) -> Awaitable[None] | None:
        """Record an event (its fields, with ``type``); build the object only when a listener
        needs it now."""
        if self._quiet:
            self._log_append(fields)
            return None
        cls = ev.EVENT_TYPES[fields["type"]]
        if not self._eager and not self._dispatch.wants(cls):
            self._log_append(fields)
            return None
        for key in ("input_state", "output_state"):
            text = fields.get(key)
            if type(text) is str:
                fields[key] = self._decoded(text)
        return self._emit(ev.build_event(cls, fields))

    def _decoded(self, text: str) -> dict[str, Any]:
        # A node's output is the next node's input: decode its JSON once for both events.
        last = self._last_decoded
        if last is not None and last[0] is text:
            return last[1]
        state = decode_state(text)
        self._last_decoded = (text, state)
        return state

    async def emit(self, event: ev.LifecycleEvent) -> None:
        """Publish ``event`` to the trace, the run file and every hook."""
        pending = self._emit(event)
        if pending is not None:
            await pending

    async def _aev(self, fields: dict[str, Any]) -> None:
        pending = self._ev(fields)
        if pending is not None:
            await pending

    @property
    def hook_errors(self) -> int:
        """How many hook calls raised or timed out in this run."""
        return self._dispatch.errors

    # -- run boundaries ---------------------------------------------------------------------

    def seed_progress(self, progress: RunProgress) -> None:
        """Continue from a stored progress record: spend (budgets hold across resumes) and the
        last committed node."""
        self.tracker.total_tokens = progress.tokens
        self.tracker.total_cost_usd = progress.cost_usd
        self._carried = (progress.tokens, progress.cost_usd)
        self.tracker.total_latency_ms = progress.latency_ms
        self._committed = progress.committed
        self._last_node = progress.last_node

    async def start_run(
        self,
        pipeline: Sequence[str],
        *,
        resumed_from: str | None = None,
        parent_carrier: dict[str, str] | None = None,
    ) -> None:
        """Publish RunStarted, open the run file and record the run's manifest."""
        self._t0 = t0 = self._mono()
        ts = self._wall0 + (t0 - self._mono0)
        ids = tuple(pipeline)
        name = self.config.pipeline_name
        fields = {
            "type": "RunStarted",
            "run_id": self.run_id,
            "ts": ts,
            "pipeline": ids,
            "resumed_from": resumed_from,
            "pipeline_name": name,
        }
        if parent_carrier:
            fields["parent_carrier"] = dict(parent_carrier)
        if self._quiet:  # nobody can fill the carrier: the event gets an empty one when built
            self._log_append(fields)
        else:
            fields["carrier"] = self.carrier
            started = materialize_event(fields)
            assert isinstance(started, ev.RunStarted)
            self.trace._record(started)
            if self._dispatch:
                pending = self._dispatch.emit(started)
                if pending is not None:
                    await pending
            if self._writer is not None:  # after listeners: the header carries their trace context
                self.run_file = str(self._writer.start(started))
        manager = self.checkpoint_manager
        if manager is not None and manager.save_inline is not None:
            args = (self.run_id, ids, name, dict(self.carrier) if self.carrier else None, ts)
            manager.save_inline(self.run_id, RUN_NODE, manifest_json, args, MANIFEST_REF)
        elif manager is not None:
            try:
                await manager.save_manifest(
                    RunManifest(
                        run_id=self.run_id,
                        pipeline=list(ids),
                        pipeline_name=name,
                        carrier=dict(self.carrier),
                        started_at=ts,
                    )
                )
            except StoreUnavailableError as exc:
                # The first commit will surface the outage as a classified, retried failure.
                logger.warning("run %s: could not record its manifest (%s)", self.run_id, exc)

    async def finish_run(self, status: RunStatus, final_state: BaseModel | None) -> ExecutionResult:
        """Publish RunFinished, record the final status with the run, close the run file."""
        failed = self.last_failure if status in (RunStatus.FAILED, RunStatus.PARTIAL) else None
        now = self._mono()
        value = status.value
        pending = self._ev(
            {
                "type": "RunFinished",
                "run_id": self.run_id,
                "ts": self._wall0 + (now - self._mono0),
                "status": value,
                "duration_ms": (now - self._t0) * 1000.0,
                "total_tokens": self.tracker.total_tokens,
                "total_cost_usd": self.tracker.total_cost_usd,
                "failures": self.failures,
                "error_type": self._last_error_type if failed else None,
                "failed_node": failed[0] if failed else None,
                "carried_tokens": self._carried[0],
                "carried_cost_usd": self._carried[1],
            }
        )
        if pending is not None:
            await pending
        manager = self.checkpoint_manager
        if manager is not None and manager.save_inline is not None:
            fields = self._progress_fields(value)
            manager.save_inline(self.run_id, PROGRESS_NODE, progress_json, fields, PROGRESS_REF)
        elif manager is not None:
            try:
                await manager.save_progress_json(self.run_id, self._progress_json(value))
            except StoreUnavailableError as exc:
                logger.warning("run %s: could not record its final status (%s)", self.run_id, exc)
        if self._writer is not None:
            self._writer.close()
        return self.build_result(status, final_state)

    def abort(self) -> None:
        """End a run that was cancelled or interrupted mid-way: publish RunFinished with status
        "CANCELLED" (so listeners close what they opened) and close the run file.

        Synchronous on purpose: it runs while a cancellation unwinds, in the run's own task, where
        async hooks cannot be awaited (their coroutines are closed unrun).
        """
        pending = self._emit(
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

    def _progress_fields(self, status: str) -> tuple[Any, ...]:
        # The progress record written with every committed node, as the arguments of
        # progress_json (the in-process store keeps them as they are).
        tracker = self.tracker
        return (
            self.run_id,
            self._last_node,
            self._committed,
            status,
            tracker.total_tokens,
            tracker.total_cost_usd,
            tracker.total_latency_ms,
            self._now(),
        )

    def _progress_json(self, status: str) -> str:
        return progress_json(*self._progress_fields(status))

    # -- budgets ----------------------------------------------------------------------------

    async def _check_budget(self, node_id: str, *, only_denials: bool = False) -> None:
        """Publish one BudgetChecked per limited dimension; raise BudgetExceeded on the first
        dimension over its limit. ``only_denials`` (the check before a node starts, for spend
        carried over from earlier runs) publishes nothing while every dimension is within limits."""
        exceeded: BudgetExceeded | None = None
        for dimension, limit, used in self.tracker.budget_status(self._budget):
            over = used > limit
            if only_denials and not over:
                continue
            await self._aev(
                {
                    "type": "BudgetChecked",
                    "run_id": self.run_id,
                    "ts": self._now(),
                    "node_id": node_id,
                    "dimension": dimension,
                    "limit": float(limit),
                    "used": float(used),
                    "decision": "deny" if over else "allow",
                },
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
            most = max((p.max_retries for p in policies.values()), default=0)
            cached = (policies, most + 1)
            self._policies[node_id] = cached
        return cached

    # -- the step ---------------------------------------------------------------------------

    def _input_state(self, input_state: Any) -> str | dict[str, Any]:
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

    async def execute_step(
        self,
        step_id: str,
        func: Callable[..., Any],
        input_state: Any,
        ctx: Any = None,
        *,
        contract: NodeContract | None = None,
        first_failure: FirstFailure | None = None,
    ) -> BaseModel:
        """Run one step with validation, retries, cost, budget, fallback, checkpoint and trace.

        Returns the validated output (an instance of ``contract.output_schema``, or an
        :class:`~stroma.contracts.UntypedState` without a contract). On final failure re-raises
        the step's last exception; ``last_failure`` holds (step, class, exception).

        ``first_failure`` (from :meth:`run_chain`'s fast path) is the outcome of a first attempt
        that already ran and failed: it is published and handled as attempt 1.
        """
        first = first_failure
        run_id = self.run_id
        mono = self._mono
        wall0 = self._wall0 - self._mono0
        policies, max_attempts = self._policy(step_id)
        if ctx is None:
            ctx = self.config.context
        ctx_is_dict = isinstance(ctx, dict)
        node_t0 = mono() if first is None else first.node_t0
        pending = self._ev(
            {
                "type": "NodeStarted",
                "run_id": run_id,
                "ts": wall0 + node_t0,
                "node_id": step_id,
                "max_attempts": max_attempts,
            },
        )
        if pending is not None:
            await pending

        if self._budget_on:
            try:
                await self._check_budget(step_id, only_denials=True)  # spend from earlier runs
            except BudgetExceeded as exc:
                await self._node_failed(step_id, 0, node_t0, FailureClass.RECOVERABLE, exc)
                raise

        in_state = self._input_state(input_state)
        is_group = getattr(func, "_stroma_children", None) is not None
        with_ctx = getattr(func, "_stroma_takes_ctx", None)
        if with_ctx is None:
            with_ctx = takes_context(func)
        timeout_ms = self._timeouts.get(step_id) if self._timeouts else None
        declared_model = ctx.get("model") if ctx_is_dict else None
        if not isinstance(declared_model, str):
            declared_model = None
        manager = self.checkpoint_manager
        attempt = 0
        while True:
            attempt += 1
            model = declared_model
            fallback_from: str | None = None
            if declared_model is not None and self._fallbacks:
                hint = resolve_model_hint(declared_model, self.tracker, self._budget, self._fallbacks)
                model, fallback_from = hint.model, hint.fallback_from
                if fallback_from is not None and model is not None:
                    now = self._now()
                    await self._aev(
                        {
                            "type": "BudgetChecked",
                            "run_id": run_id,
                            "ts": now,
                            "node_id": step_id,
                            "dimension": "cost",
                            "limit": float(self._budget.max_cost_usd or 0.0),
                            "used": float(self.tracker.total_cost_usd),
                            "decision": "fallback",
                        },
                    )
                    await self._aev(
                        {
                            "type": "ModelFallback",
                            "run_id": run_id,
                            "ts": now,
                            "node_id": step_id,
                            "from_model": fallback_from,
                            "to_model": model,
                            "spend_fraction": hint.spend_fraction,
                        },
                    )
            key = f"{run_id}:{step_id}:{attempt}"
            if ctx_is_dict:
                ctx[IDEMPOTENCY_KEY] = key
                if model is not None:
                    ctx[MODEL_KEY] = model
            t0 = mono() if first is None else first.t0
            started_ts = wall0 + t0
            pending = self._ev(
                {
                    "type": "AttemptStarted",
                    "run_id": run_id,
                    "ts": started_ts,
                    "node_id": step_id,
                    "attempt": attempt,
                    "max_attempts": max_attempts,
                    "input_state": in_state,
                    "model": model,
                    "idempotency_key": key,
                },
            )
            if pending is not None:
                await pending

            in_tokens = out_tokens = tokens = 0
            cost = 0.0
            used_model: str | None = model
            recorded = False
            timed_out = False
            failure: Exception | None = None
            output: BaseModel | None = None
            payload = ""
            duration_ms = 0.0
            if first is not None:
                failure = first.error
                in_tokens, out_tokens, tokens = first.input_tokens, first.output_tokens, first.tokens
                cost, used_model = first.cost_usd, first.model
                first = None
            else:
                try:
                    state_in = (
                        validate_boundary(contract, "input", input_state)
                        if contract is not None
                        else input_state
                    )
                    raw: Any
                    if is_group:
                        raw = await self._run_group(func, state_in, ctx, step_id, attempt)
                    elif timeout_ms is None:
                        raw = func(state_in, ctx) if with_ctx else func(state_in)
                        if type(raw) is _coroutine or inspect.isawaitable(raw):
                            raw = await raw
                    else:
                        try:
                            async with asyncio.timeout(timeout_ms / 1000.0):
                                raw = await _call(func, state_in, ctx, with_ctx)
                        except TimeoutError:
                            timed_out = True
                            raise
                    if type(raw) is dict:
                        out_raw: Any = raw
                    else:
                        out_raw, in_tokens, out_tokens, returned_model, tokens = split_output(raw, step_id)
                        if fallback_from is None and returned_model is not None:
                            used_model = returned_model
                        if used_model is not None:
                            cost = estimate_cost_usd(used_model, in_tokens, out_tokens)
                    if contract is not None:
                        output = validate_boundary(contract, "output", out_raw)
                    elif isinstance(out_raw, BaseModel):
                        output = out_raw
                    else:
                        output = UntypedState.model_validate(out_raw)
                    payload = output.model_dump_json()
                    done = mono()
                    duration_ms = (done - t0) * 1000.0
                    self.tracker.add(step_id, tokens, cost, duration_ms, used_model, out_tokens)
                    recorded = True
                    if self._budget_on:
                        await self._check_budget(step_id)
                    if manager is not None:
                        previous_last = self._last_node
                        self._committed += 1
                        self._last_node = step_id
                        try:
                            if manager.commit_inline is not None:
                                manager.commit_inline(
                                    run_id,
                                    step_id,
                                    payload,
                                    schema_ref(type(output)),
                                    self._progress_fields("running"),
                                )
                            else:
                                await manager.commit_json(
                                    run_id,
                                    step_id,
                                    output,
                                    payload,
                                    schema_ref(type(output)),
                                    self._progress_json("running"),
                                )
                        except BaseException:
                            self._committed -= 1
                            self._last_node = previous_last
                            raise
                        saved = mono()
                        pending = self._ev(
                            {
                                "type": "CheckpointSaved",
                                "run_id": run_id,
                                "ts": wall0 + saved,
                                "node_id": step_id,
                                "store": manager.kind,
                                "size_bytes": len(payload),
                                "duration_ms": (saved - done) * 1000.0,
                            },
                        )
                        if pending is not None:
                            await pending
                except Exception as exc:
                    failure = exc

            if failure is None and output is not None:
                out_state = payload
                self._last_out = (output, payload)
                end = mono()
                pending = self._ev(
                    {
                        "type": "AttemptSucceeded",
                        "run_id": run_id,
                        "ts": wall0 + end,
                        "node_id": step_id,
                        "attempt": attempt,
                        "duration_ms": duration_ms,
                        "output_state": out_state,
                        "tokens": tokens,
                        "input_tokens": in_tokens,
                        "output_tokens": out_tokens,
                        "cost_usd": cost,
                        "model": used_model,
                    },
                )
                if pending is not None:
                    await pending
                self.trace._record_attempt(
                    (step_id, run_id, attempt, started_ts, in_state, out_state, duration_ms, None, None)
                )
                pending = self._ev(
                    {
                        "type": "NodeFinished",
                        "run_id": run_id,
                        "ts": wall0 + end,
                        "node_id": step_id,
                        "outcome": "succeeded",
                        "attempts": attempt,
                        "duration_ms": (end - node_t0) * 1000.0,
                    },
                )
                if pending is not None:
                    await pending
                return output

            assert failure is not None
            err = failure
            duration_ms = (mono() - t0) * 1000.0
            if not recorded:
                self.tracker.add(step_id, tokens, cost, duration_ms, used_model, out_tokens)
            self.failures += 1
            failure_class, decided_by = classify_with_reason(
                err, NodeContext(step_id, attempt, run_id), self._classifiers
            )
            etype = "timeout" if timed_out else error_type(err)
            message = str(err) or etype
            now = self._now()
            if isinstance(err, ContractViolation):
                await self._aev(
                    {
                        "type": "ContractViolated",
                        "run_id": run_id,
                        "ts": now,
                        "node_id": err.node_id,
                        "attempt": attempt,
                        "direction": err.direction,
                        "field_paths": err.field_paths,
                        "error_count": len(err.errors),
                        "errors": tuple(
                            (path, str(e.get("msg", "")))
                            for path, e in zip(err.field_paths, err.errors, strict=True)
                        ),
                    },
                )
            await self._aev(
                {
                    "type": "FailureClassified",
                    "run_id": run_id,
                    "ts": now,
                    "node_id": step_id,
                    "attempt": attempt,
                    "failure_class": failure_class.value,
                    "decided_by": decided_by,
                    "error_type": etype,
                },
            )
            await self._aev(
                {
                    "type": "AttemptFailed",
                    "run_id": run_id,
                    "ts": now,
                    "node_id": step_id,
                    "attempt": attempt,
                    "duration_ms": duration_ms,
                    "error_type": etype,
                    "message": message,
                    "failure_class": failure_class.value,
                    "tokens": tokens,
                    "input_tokens": in_tokens,
                    "output_tokens": out_tokens,
                    "cost_usd": cost,
                    "model": used_model,
                    "exception": err,
                },
            )
            self.trace._record_attempt(
                (
                    step_id,
                    run_id,
                    attempt,
                    started_ts,
                    in_state,
                    None,
                    duration_ms,
                    failure_class.value,
                    message,
                )
            )
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "run %s: node %s attempt %d failed: %s (%s, decided by %s)",
                    run_id,
                    step_id,
                    attempt,
                    etype,
                    failure_class.value,
                    decided_by,
                )
            policy = policies.get(failure_class)
            budget_stop = isinstance(err, BudgetExceeded)
            if not budget_stop and policy is not None and attempt <= policy.max_retries:
                delay = backoff_delay(attempt, policy, jitter_rng())
                await self._aev(
                    {
                        "type": "RetryScheduled",
                        "run_id": run_id,
                        "ts": self._now(),
                        "node_id": step_id,
                        "attempt": attempt,
                        "delay_s": delay,
                        "error_type": etype,
                        "failure_class": failure_class.value,
                    },
                )
                if delay > 0:
                    await self._clock.sleep(delay)
                continue
            if not budget_stop:
                await self._aev(
                    {
                        "type": "RetriesExhausted",
                        "run_id": run_id,
                        "ts": self._now(),
                        "node_id": step_id,
                        "attempts": attempt,
                        "failure_class": failure_class.value,
                        "max_retries": policy.max_retries if policy else 0,
                        "backoff_seconds": policy.backoff_seconds if policy else 0.0,
                    },
                )
            await self._node_failed(step_id, attempt, node_t0, failure_class, err, etype)
            raise err

    async def run_chain(self, steps: Sequence[Step], state: Any, ctx: Any = None) -> Any:
        """Run ``steps`` (node id, function, contract) in order from ``state``; return the last
        output. Raises the exception of a step that failed for good (``last_failure`` says which).

        A run nobody watches live (no hooks, no run file, no budget, an in-process store or none)
        takes a fast path: a node that succeeds on its first attempt is recorded as one compact
        record, and its events are built when the trace is read. A node that fails, or needs a
        timeout, a declared model or a group, goes through :meth:`execute_step`.
        """
        if ctx is None:
            ctx = self.config.context
        manager = self.checkpoint_manager
        commit = manager.commit_inline if manager is not None else None
        self.last_output = state
        if not self._quiet or self._budget_on or (manager is not None and commit is None):
            for step_id, func, contract in steps:
                state = await self.execute_step(step_id, func, state, ctx, contract=contract)
                self.last_output = state
            return state
        run_id = self.run_id
        mono = self._mono
        wall0 = self._wall0 - self._mono0
        ctx_is_dict = isinstance(ctx, dict)
        timeouts = self._timeouts
        record = self._log_append
        record_attempt = self.trace._attempts.append
        tracker = self.tracker
        later_ids = tracker._later_ids.append
        later_ms = tracker._later_ms.append
        kind = manager.kind if manager is not None else None
        default_attempts = self._default_policy[1]
        node_policies = self._node_policies
        refs = _schemas._ref_of
        in_state = self._input_state(state)
        for step_id, func, contract in steps:
            if (
                (timeouts and step_id in timeouts)
                or getattr(func, "_stroma_children", None) is not None
                or (ctx_is_dict and "model" in ctx and isinstance(ctx["model"], str))
            ):
                self._last_out = (state, in_state)
                self.last_output = state
                state = await self.execute_step(step_id, func, state, ctx, contract=contract)
                in_state = self._last_out[1]
                continue
            with_ctx = getattr(func, "_stroma_takes_ctx", None)
            if with_ctx is None:
                with_ctx = takes_context(func)
            max_attempts = default_attempts if step_id not in node_policies else self._policy(step_id)[1]
            key = f"{run_id}:{step_id}:1"
            if ctx_is_dict:
                ctx[IDEMPOTENCY_KEY] = key
            in_tokens = out_tokens = tokens = 0
            cost = 0.0
            model: str | None = None
            t0 = mono()
            try:
                if contract is None or type(state) is contract.input_schema:
                    state_in = state
                else:
                    state_in = validate_boundary(contract, "input", state)
                raw = func(state_in, ctx) if with_ctx else func(state_in)
                if type(raw) is _coroutine or inspect.isawaitable(raw):
                    raw = await raw
                if type(raw) is not dict:
                    raw, in_tokens, out_tokens, model, tokens = split_output(raw, step_id)
                    if model is not None:
                        cost = estimate_cost_usd(model, in_tokens, out_tokens)
                if contract is None:
                    output = raw if isinstance(raw, BaseModel) else UntypedState.model_validate(raw)
                elif type(raw) is dict:
                    try:  # model_validate without its wrapper
                        output = contract.output_schema.__pydantic_validator__.validate_python(raw)
                    except ValidationError:
                        output = validate_boundary(contract, "output", raw)  # raises ContractViolation
                else:
                    output = validate_boundary(contract, "output", raw)
                payload = type(output).__pydantic_serializer__.to_json(output).decode()
            except Exception as exc:
                self._last_out = (state, in_state)
                self.last_output = state
                state = await self.execute_step(
                    step_id,
                    func,
                    state,
                    ctx,
                    contract=contract,
                    first_failure=FirstFailure(exc, t0, t0, in_tokens, out_tokens, tokens, cost, model),
                )
                in_state = self._last_out[1]
                continue
            except BaseException:  # cancelled mid-attempt: the node did start
                self._started(step_id, t0, max_attempts, in_state, key)
                raise
            done = mono()
            duration_ms = (done - t0) * 1000.0
            if tokens or cost or model is not None:
                tracker.add(step_id, tokens, cost, duration_ms, model, out_tokens)
            else:  # a node that used nothing but time: its node total is added when read
                tracker.total_latency_ms += duration_ms
                later_ids(step_id)
                later_ms(duration_ms)
            if commit is not None:
                self._committed += 1
                self._last_node = step_id
                commit(
                    run_id,
                    step_id,
                    payload,
                    refs.get(type(output)) or schema_ref(type(output)),
                    (
                        run_id,
                        step_id,
                        self._committed,
                        "running",
                        tracker.total_tokens,
                        tracker.total_cost_usd,
                        tracker.total_latency_ms,
                        wall0 + done,
                    ),
                )
            end = mono()
            item = (
                step_id,
                run_id,
                1,
                wall0 + t0,
                in_state,
                payload,
                duration_ms,
                None,
                None,
                (end - t0) * 1000.0,
                max_attempts,
                key,
                kind,
                wall0 + end,
                (end - done) * 1000.0,
                wall0 + end,
                tokens,
                in_tokens,
                out_tokens,
                cost,
                model,
            )
            record(item)
            record_attempt(item)
            state = output
            in_state = payload
        self._last_out = (state, in_state)
        self.last_output = state
        return state

    def _started(self, step_id: str, t0: float, max_attempts: int, in_state: Any, key: str) -> None:
        # The fast path's node start, published when its attempt is cut short by a cancellation.
        ts = self._wall0 - self._mono0 + t0
        common = {"run_id": self.run_id, "ts": ts, "node_id": step_id, "max_attempts": max_attempts}
        self._log_append({"type": "NodeStarted", **common})
        self._log_append(
            {
                "type": "AttemptStarted",
                **common,
                "attempt": 1,
                "input_state": in_state,
                "model": None,
                "idempotency_key": key,
            }
        )

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
        await self._aev(
            {
                "type": "NodeFinished",
                "run_id": self.run_id,
                "ts": self._now(),
                "node_id": step_id,
                "outcome": "failed",
                "attempts": attempts,
                "duration_ms": (self._mono() - node_t0) * 1000.0,
                "failure_class": failure_class.value,
                "error_type": etype,
            },
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

    # -- parallel groups --------------------------------------------------------------------

    async def _run_group(
        self, group: Callable[..., Any], state: Any, ctx: Any, group_id: str, attempt: int
    ) -> tuple[dict[str, Any], int, int, str | None]:
        children: tuple[Callable[..., Any], ...] = group._stroma_children  # type: ignore[attr-defined]
        run_id = self.run_id

        async def child_started(child_id: str) -> float:
            t0 = self._mono()
            await self._aev(
                {
                    "type": "NodeStarted",
                    "run_id": run_id,
                    "ts": self._now(),
                    "node_id": child_id,
                    "parent": group_id,
                },
            )
            return t0

        async def child_finished(child_id: str, t0: float, outcome: str, etype: str | None = None) -> None:
            await self._aev(
                {
                    "type": "NodeFinished",
                    "run_id": run_id,
                    "ts": self._now(),
                    "node_id": child_id,
                    "outcome": outcome,
                    "attempts": 1,
                    "duration_ms": (self._mono() - t0) * 1000.0,
                    "parent": group_id,
                    "error_type": etype,
                },
            )

        return await fan_out(children, state, ctx, child_started, child_finished)


async def fan_out(
    children: Sequence[Callable[..., Any]],
    state: Any,
    ctx: Any,
    started: Callable[[str], Awaitable[float]] | None = None,
    finished: Callable[[str, float, str, str | None], Awaitable[None]] | None = None,
) -> tuple[dict[str, Any], int, int, str | None]:
    """Run ``children`` concurrently on ``state``; validate each against its contract; merge.

    The first failure cancels the siblings (nothing of theirs is kept) and propagates.
    Returns (merged output, input tokens, output tokens, last reported model).
    """

    async def run_child(child: Callable[..., Any]) -> tuple[dict[str, Any], int, int, str | None]:
        child_id: str = getattr(child, "_stroma_node_id", getattr(child, "__name__", "child"))
        contract: NodeContract | None = getattr(child, "_stroma_contract", None)
        t0 = await started(child_id) if started is not None else 0.0
        try:
            child_in = validate_boundary(contract, "input", state) if contract else state
            raw = await _call(child, child_in, ctx, takes_context(child))
            out, in_tokens, out_tokens, model, _ = split_output(raw, child_id)
            if contract is not None:
                out = validate_boundary(contract, "output", out)
            out_dict = out.model_dump() if isinstance(out, BaseModel) else dict(out)
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
        return out_dict, in_tokens, out_tokens, model

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
    in_total = out_total = 0
    last_model: str | None = None
    for task in tasks:
        out_dict, in_tokens, out_tokens, model = task.result()
        merged.update(out_dict)
        in_total += in_tokens
        out_total += out_tokens
        last_model = model or last_model
    return merged, in_total, out_total, last_model


_tasks: set[asyncio.Future[None]] = set()


async def execute_step(
    step_id: str,
    func: Callable[..., Any],
    input_state: Any,
    ctx: ReliabilityContext,
    *,
    contract: NodeContract | None = None,
) -> BaseModel:
    """Run one step through ``ctx`` (a :class:`ReliabilityContext`): the freestanding
    reliability loop, usable from any orchestration framework."""
    return await ctx.execute_step(step_id, func, input_state, None, contract=contract)
