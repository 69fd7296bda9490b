"""Turn the lifecycle event stream into the span tree of OBSERVABILITY.md.

One :class:`SpanRecorder` serves any number of runs (keyed by run id). Its ``on_event`` is a plain
sync function, so the engine calls it in the run's own task right before and after the user's
node code: the AttemptStarted handler attaches the attempt span to the current context and the
AttemptSucceeded / AttemptFailed handler detaches it, so spans the user's code creates (OpenAI,
httpx, their own) nest under the right attempt. A parallel() child gets the same treatment from
its NodeStarted / NodeFinished, which the engine emits from the child's task.

Between RunStarted and RunFinished the run span is the current span of the run's task (so store
I/O the engine does for the run, auto-instrumented, nests under it), a node's span between its
NodeStarted and NodeFinished, and the attempt span while an attempt runs. A node's checkpoint
commit runs in the context its NodeStarted left (the engine's ``LiveRecorder.node_context``), so
its store I/O nests under the node span, after the attempt span (which ends when the attempt's
own ``duration_ms`` does).

One tree per run however Stroma was instrumented: the first recorder to see a run's RunStarted
owns the run; any other recorder in the process (``configure()`` plus ``with_hooks(otel_hooks())``,
or the same hooks added twice) records nothing for it and logs one warning naming the duplicate.

Every handler is guarded: instrumentation never raises into a run. Attribute and event work is
skipped when a span is not recording. Timestamps come from the events (the run's clock), so live
spans and spans replayed from a run file (``python -m stroma_otel export``) are the same.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from stroma import events as ev
from stroma_otel import attributes as a
from stroma_otel._metrics import StromaMetrics

__all__ = ["SpanRecorder", "warn_duplicate"]

logger = logging.getLogger("stroma_otel")

_INTERNAL = SpanKind.INTERNAL
_ERROR = StatusCode.ERROR
_FAILED_RUN = frozenset({"FAILED", "PARTIAL"})
_PROPAGATOR = TraceContextTextMapPropagator()  # W3C traceparent only: never baggage
_set_span = trace.set_span_in_context


# run id -> the recorder that traces it (live runs only): one tree per run, see the module docstring.
_owners: dict[str, SpanRecorder] = {}
_warned: set[tuple[str, str]] = set()


def warn_duplicate(owner: str, duplicate: str) -> None:
    """Log, once per pair, that Stroma is instrumented by ``owner`` and again by ``duplicate``."""
    if (owner, duplicate) in _warned:
        return
    _warned.add((owner, duplicate))
    logger.warning(
        "stroma_otel: Stroma is instrumented twice, by %s and by %s; each run is traced once, by "
        "the first. Keep one of configure(), StromaInstrumentor / opentelemetry-instrument, "
        "with_hooks(otel_hooks())",
        owner,
        duplicate,
    )


def _ns(ts: float) -> int:
    return int(ts * 1e9)


def _budget_error_type() -> str:
    from stroma.cost import BudgetExceeded  # noqa: PLC0415 - only needed on a budget stop

    return f"{BudgetExceeded.__module__}.{BudgetExceeded.__qualname__}"


def _interrupt(span: Span, rec: bool) -> None:
    if rec:
        span.set_attribute(a.ERROR_TYPE, a.ERROR_TYPE_INTERRUPTED)
        span.set_status(Status(_ERROR, "interrupted: the run file ends before this span did"))


def _usage(attrs: dict[str, Any], e: ev.AttemptSucceeded | ev.AttemptFailed) -> None:
    # Only where the node reported a model or usage; Stroma's roll-up, never gen_ai.usage.*.
    if e.model is not None or e.input_tokens or e.output_tokens or e.cost_usd:
        attrs[a.USAGE_INPUT_TOKENS] = e.input_tokens
        attrs[a.USAGE_OUTPUT_TOKENS] = e.output_tokens
        attrs[a.COST_USD] = e.cost_usd
        if e.model is not None:
            attrs[a.GEN_AI_REQUEST_MODEL] = e.model


def _truncate(text: str) -> str:
    limit = a.CONTENT_MAX_CHARS
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _content(value: Any) -> str:
    try:
        text = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    return _truncate(text)


class _Node:
    # The open attempt lives here too (``attempt`` is its span, ``attempt_rec`` whether it is
    # recording, ``attempt_token`` what detaches it): one object per node, not one more per attempt.
    __slots__ = (
        "attempt",
        "attempt_rec",
        "attempt_start",
        "attempt_token",
        "children",
        "ctx",
        "denied",
        "error_type",
        "rec",
        "span",
        "token",
    )

    def __init__(self, span: Span, rec: bool) -> None:
        self.span = span
        self.rec = rec
        self.ctx = _set_span(span)
        self.attempt: Span | None = None
        self.attempt_rec = False
        self.attempt_start = 0.0
        self.attempt_token: object | None = None
        self.children: dict[str, _Node] | None = None
        self.error_type: str | None = None
        self.denied = False
        self.token: object | None = None

    def close_attempt(self, end_ns: int, detach: bool) -> None:
        """End an attempt left open (defensive paths only); detach it if ``detach``."""
        span = self.attempt
        if span is None:
            return
        token = self.attempt_token
        self.attempt = None
        self.attempt_token = None
        if detach and token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        span.end(end_ns)


class _Run:
    __slots__ = ("ctx", "failed", "nodes", "rec", "span", "token", "workflow")

    def __init__(self, span: Span, rec: bool, workflow: str) -> None:
        self.span = span
        self.rec = rec
        self.ctx = _set_span(span)
        self.workflow = workflow
        self.token: object | None = None
        self.nodes: dict[str, _Node] = {}
        self.failed: dict[str, str] = {}  # error.type of each node that finally failed


class SpanRecorder:
    """Spans, span events and metrics for every run whose events reach :meth:`on_event`.

    ``live=False`` (replaying a run file) leaves the current context alone: there is no user code
    to nest, and replayed parallel children interleave in one thread. ``origin`` names how this
    recorder was installed, for the duplicate-instrumentation warning.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        metrics: StromaMetrics | None = None,
        *,
        capture_content: bool = False,
        version: str = "",
        live: bool = True,
        origin: str = "with_hooks(otel_hooks())",
    ) -> None:
        self._tracer = trace.get_tracer(
            a.INSTRUMENTATION_NAME,
            version,
            tracer_provider,
            schema_url=a.SCHEMA_URL,
            attributes={a.SCHEMA_VERSION_KEY: a.SCHEMA_VERSION},
        )
        # A meter that records nothing (a NoOpMeterProvider, a disabled SDK) is not called at all.
        self._metrics = metrics if metrics is not None and metrics.enabled else None
        self._capture = capture_content
        self._live = live
        self.origin = origin
        self._last: object = None  # the event handled last: the same hooks added twice see it twice
        self._runs: dict[str, _Run] = {}
        self._failed_logged = False
        self._handlers: dict[type[ev.LifecycleEvent], Callable[[Any], None]] = {
            ev.RunStarted: self._run_started,
            ev.RunFinished: self._run_finished,
            ev.NodeStarted: self._node_started,
            ev.NodeFinished: self._node_finished,
            ev.NodeRestored: self._node_restored,
            ev.AttemptStarted: self._attempt_started,
            ev.AttemptSucceeded: self._attempt_succeeded,
            ev.AttemptFailed: self._attempt_failed,
            ev.FailureClassified: self._failure_classified,
            ev.RetryScheduled: self._retry_scheduled,
            ev.RetriesExhausted: self._retries_exhausted,
            ev.BudgetChecked: self._budget_checked,
            ev.ModelFallback: self._model_fallback,
            ev.CheckpointSaved: self._checkpoint_saved,
            ev.CheckpointLoaded: self._checkpoint_loaded,
            ev.ContractViolated: self._contract_violated,
        }

    # -- entry point ------------------------------------------------------------------------

    def on_event(self, event: ev.LifecycleEvent) -> None:
        """Handle one lifecycle event; never raises."""
        if event is self._last:
            if type(event) is ev.RunStarted:
                warn_duplicate(self.origin, f"{self.origin} (the same hooks added again)")
            return
        self._last = event
        handler = self._handlers.get(type(event))
        if handler is None:
            return
        try:
            handler(event)
        except Exception:  # instrumentation never breaks a run
            if not self._failed_logged:
                self._failed_logged = True
                logger.warning(
                    "stroma_otel could not record %s; telemetry for this run may be incomplete "
                    "(further errors are not logged)",
                    event.kind,
                    exc_info=True,
                )

    def end_all(self, ts: float) -> None:
        """End every span still open at ``ts`` as interrupted (a run file that stops before its
        run ended: the process was killed): ERROR, ``error.type`` ``stroma.interrupted``, and
        ``stroma.run.status`` ``INTERRUPTED`` on the run span."""
        for run_id, run in list(self._runs.items()):
            for node in run.nodes.values():
                self._end_node_tree(node, ts, own_task=False, interrupted=True)
            if run.rec:
                run.span.set_attribute(a.RUN_STATUS, a.RUN_STATUS_INTERRUPTED)
            _interrupt(run.span, run.rec)
            run.span.end(_ns(ts))
            self._release(run_id)

    def _release(self, run_id: str) -> None:
        self._runs.pop(run_id, None)
        if _owners.get(run_id) is self:
            del _owners[run_id]

    # -- runs -------------------------------------------------------------------------------

    def _run_started(self, e: ev.RunStarted) -> None:
        if self._live:
            owner = _owners.setdefault(e.run_id, self)
            if owner is not self:
                if e.run_id in owner._runs:
                    warn_duplicate(owner.origin, self.origin)
                    return
                _owners[e.run_id] = self  # the owner's run ended without a RunFinished
        previous = self._runs.pop(e.run_id, None)
        if previous is not None:  # the same run id started again without finishing
            self._end_run_tree(previous, e.ts)
        links: list[Link] | None = None
        if e.parent_carrier:
            parent = trace.get_current_span(_PROPAGATOR.extract(e.parent_carrier))
            span_context = parent.get_span_context()
            if span_context.is_valid:
                links = [Link(span_context, {a.LINK_TYPE: a.LINK_TYPE_RESUMED_FROM})]
        attrs: dict[str, Any] = {
            a.GEN_AI_OPERATION_NAME: a.OPERATION_INVOKE_WORKFLOW,
            a.GEN_AI_WORKFLOW_NAME: e.pipeline_name,
            a.RUN_ID: e.run_id,
            a.SCHEMA_VERSION_KEY: a.SCHEMA_VERSION,
        }
        if e.resumed_from is not None:
            attrs[a.RUN_RESUMED_FROM] = e.resumed_from
        span = self._tracer.start_span(
            f"{a.RUN_SPAN} {e.pipeline_name}",
            context=otel_context.get_current() if self._live else None,
            kind=_INTERNAL,
            attributes=attrs,
            links=links,
            start_time=_ns(e.ts),
        )
        run = _Run(span, span.is_recording(), e.pipeline_name)
        self._runs[e.run_id] = run
        if span.get_span_context().is_valid:
            _PROPAGATOR.inject(e.carrier, context=run.ctx)
        if self._live:  # the run's own task: its store I/O nests under the run span
            run.token = otel_context.attach(run.ctx)

    def _run_finished(self, e: ev.RunFinished) -> None:
        run = self._runs.get(e.run_id)
        if run is None:
            return
        self._release(e.run_id)
        for node in run.nodes.values():  # defensive: nothing should be open here
            self._end_node_tree(node, e.ts)
        if run.token is not None and otel_context.get_current() is run.ctx:
            otel_context.detach(run.token)  # type: ignore[arg-type]
        run.token = None
        span = run.span
        etype: str | None = None
        if run.rec:
            span.set_attributes(
                {
                    a.RUN_STATUS: e.status,
                    a.USAGE_TOKENS: e.total_tokens,
                    a.USAGE_COST_USD: e.total_cost_usd,
                }
            )
            if e.status in _FAILED_RUN:
                # The failed node's error.type ("timeout" for a per-node timeout) wins.
                etype = run.failed.get(e.failed_node or "") or e.error_type
                etype = etype or a.ERROR_TYPE_OTHER
                span.set_attribute(a.ERROR_TYPE, etype)
                span.set_status(Status(_ERROR))
        span.end(_ns(e.ts))
        if self._metrics is not None:
            failed = e.status in _FAILED_RUN
            self._metrics.run_finished(
                run.workflow,
                e.status,
                (etype or e.error_type or a.ERROR_TYPE_OTHER) if failed else None,
                e.duration_ms / 1000.0,
            )

    def _end_node_tree(
        self, node: _Node, ts: float, *, own_task: bool = True, interrupted: bool = False
    ) -> None:
        # Ends spans a run left open (it was cancelled: the core's abort, or a RunFinished
        # arriving with nodes still open; or a replayed run file that stops mid-run, where
        # ``interrupted`` marks them). Only the run's own task can restore its context; a
        # parallel child's context lives and dies with the child's task.
        if node.children:
            for child in node.children.values():
                self._end_node_tree(child, ts, own_task=False, interrupted=interrupted)
        if interrupted:
            if node.attempt is not None:
                _interrupt(node.attempt, node.attempt_rec)
            _interrupt(node.span, node.rec)
        node.close_attempt(_ns(ts), detach=own_task)
        if own_task and node.token is not None:
            otel_context.detach(node.token)  # type: ignore[arg-type]
        node.token = None
        node.span.end(_ns(ts))

    def _end_run_tree(self, run: _Run, ts: float) -> None:
        for node in run.nodes.values():  # a stale run: its task is not the one calling us
            self._end_node_tree(node, ts, own_task=False)
        run.span.end(_ns(ts))

    # -- nodes ------------------------------------------------------------------------------

    def _node_started(self, e: ev.NodeStarted) -> None:
        run = self._runs.get(e.run_id)
        if run is None:
            return
        if e.parent is None:
            span = self._tracer.start_span(
                f"{a.NODE_SPAN} {e.node_id}",
                context=run.ctx,
                kind=_INTERNAL,
                attributes={a.NODE_ID: e.node_id},
                start_time=_ns(e.ts),
            )
            node = run.nodes[e.node_id] = _Node(span, span.is_recording())
            if self._live:  # current until NodeFinished: the node's commit after its attempt nests here
                node.token = otel_context.attach(node.ctx)
            return
        # A parallel() child: a sibling node span under the group's current attempt.
        group = run.nodes.get(e.parent)
        if group is None:
            parent_ctx = run.ctx
        else:
            parent_ctx = group.ctx if group.attempt is None else _set_span(group.attempt)
        span = self._tracer.start_span(
            f"{a.NODE_SPAN} {e.node_id}",
            context=parent_ctx,
            kind=_INTERNAL,
            attributes={a.NODE_ID: e.node_id, a.NODE_PARENT: e.parent},
            start_time=_ns(e.ts),
        )
        child = _Node(span, span.is_recording())
        if self._live:  # emitted from the child's own task, right before the child's code
            child.token = otel_context.attach(child.ctx)
        if group is not None:
            if group.children is None:
                group.children = {}
            previous = group.children.get(e.node_id)
            if previous is not None:  # an earlier attempt's child that never finished
                previous.span.end(_ns(e.ts))
            group.children[e.node_id] = child

    def _node_finished(self, e: ev.NodeFinished) -> None:
        run = self._runs.get(e.run_id)
        if run is None:
            return
        if e.parent is None:
            node = run.nodes.pop(e.node_id, None)
        else:
            group = run.nodes.get(e.parent)
            children = group.children if group is not None else None
            node = children.pop(e.node_id, None) if children else None
        if node is None:
            return
        if node.attempt is not None:  # defensive
            node.close_attempt(_ns(e.ts), detach=True)
        if node.token is not None:
            # "cancelled" is emitted from a shielded helper task (another context): the child's
            # task ends with its own context, so there is nothing to restore there.
            if e.outcome != "cancelled":
                otel_context.detach(node.token)  # type: ignore[arg-type]
            node.token = None
        span = node.span
        outcome = e.outcome
        if outcome == "failed" and node.denied and e.error_type == _budget_error_type():
            outcome = a.NODE_OUTCOME_DENIED  # a denial, not a failure of the node's code
        if node.rec:
            span.set_attributes({a.NODE_ATTEMPTS: e.attempts, a.NODE_OUTCOME: outcome})
            if outcome == "failed":
                self._node_failed(run, node, e)
        span.end(_ns(e.ts))
        if self._metrics is not None:
            self._metrics.node_finished(run.workflow, e.node_id, outcome, e.duration_ms / 1000.0, e.attempts)

    @staticmethod
    def _node_failed(run: _Run, node: _Node, e: ev.NodeFinished) -> None:
        """Mark a node span failed: its error type (the event's, else its last attempt's), its
        failure class, ERROR status; a top-level node's failure is remembered for the run."""
        if e.error_type is not None:
            etype = e.error_type
        elif node.error_type is not None:
            etype = node.error_type
        elif node.denied:
            etype = _budget_error_type()
        else:
            etype = a.ERROR_TYPE_OTHER
        node.span.set_attribute(a.ERROR_TYPE, etype)
        if e.parent is None:
            run.failed[e.node_id] = etype
        if e.failure_class is not None:
            node.span.set_attribute(a.FAILURE_CLASS, e.failure_class)
        node.span.set_status(Status(_ERROR))

    def _node_restored(self, e: ev.NodeRestored) -> None:
        run = self._runs.get(e.run_id)
        if run is None:
            return
        start = _ns(e.ts)
        span = self._tracer.start_span(
            f"{a.NODE_SPAN} {e.node_id}",
            context=run.ctx,
            kind=_INTERNAL,
            attributes={a.NODE_ID: e.node_id, a.NODE_RESTORED: True},
            start_time=start,
        )
        if self._capture and e.output_state is not None and span.is_recording():
            span.set_attribute(a.STATE_OUTPUT, _content(e.output_state))
        span.end(start)

    def _node(self, run_id: str, node_id: str) -> tuple[_Run | None, _Node | None]:
        run = self._runs.get(run_id)
        if run is None:
            return None, None
        return run, run.nodes.get(node_id)

    # -- attempts ---------------------------------------------------------------------------

    def _attempt_started(self, e: ev.AttemptStarted) -> None:
        run = self._runs.get(e.run_id)
        if run is None:
            return
        node = run.nodes.get(e.node_id)
        if node is None:
            return
        attrs: dict[str, Any] = {a.ATTEMPT_NUMBER: e.attempt, a.ATTEMPT_MAX: e.max_attempts}
        if e.model is not None:
            attrs[a.GEN_AI_REQUEST_MODEL] = e.model
        span = self._tracer.start_span(
            f"{a.ATTEMPT_SPAN} {e.node_id} #{e.attempt}",
            context=node.ctx,
            kind=_INTERNAL,
            attributes=attrs,
            start_time=_ns(e.ts),
        )
        rec = node.attempt_rec = span.is_recording()
        if rec and self._capture:
            span.set_attribute(a.STATE_INPUT, _content(e.input_state))
        node.attempt = span
        node.attempt_start = e.ts
        node.attempt_token = otel_context.attach(_set_span(span)) if self._live else None

    def _attempt_succeeded(self, e: ev.AttemptSucceeded) -> None:
        run = self._runs.get(e.run_id)
        if run is None:
            return
        node = run.nodes.get(e.node_id)
        if node is None or node.attempt is None:
            return
        span = node.attempt
        token = node.attempt_token
        node.attempt = node.attempt_token = None
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        if node.attempt_rec:
            attrs: dict[str, Any] = {}
            _usage(attrs, e)
            if self._capture:
                attrs[a.STATE_OUTPUT] = _content(e.output_state)
            if attrs:
                span.set_attributes(attrs)
        # The attempt is the node's code and its checks: the commit after it is the node's (its
        # store I/O nests under the node span), so the span ends when the attempt's own time does.
        span.end(_ns(min(e.ts, node.attempt_start + e.duration_ms / 1000.0)))
        if self._metrics is not None:
            self._metrics.usage(run.workflow, e.model, e.input_tokens, e.output_tokens, e.cost_usd)

    def _attempt_failed(self, e: ev.AttemptFailed) -> None:
        run, node = self._node(e.run_id, e.node_id)
        if node is None or run is None:
            return
        node.error_type = e.error_type
        # The node's code succeeded and the budget check after it denied the spend.
        denied = node.denied and e.error_type == _budget_error_type()
        span = node.attempt
        if span is not None:
            token = node.attempt_token
            node.attempt = node.attempt_token = None
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
            if node.attempt_rec:
                attrs: dict[str, Any] = {}
                _usage(attrs, e)
                if denied:
                    attrs[a.BUDGET_DECISION] = "deny"
                    span.set_attributes(attrs)
                else:
                    attrs[a.ERROR_TYPE] = e.error_type
                    attrs[a.FAILURE_CLASS] = e.failure_class
                    span.set_attributes(attrs)
                    exc_attrs = {a.EXCEPTION_TYPE: e.error_type}
                    message = _truncate(e.message) if self._capture else None
                    if message is not None:
                        exc_attrs[a.EXCEPTION_MESSAGE] = message
                    span.add_event(a.EVENT_EXCEPTION, exc_attrs, _ns(e.ts))
                    span.set_status(Status(_ERROR, message))
            span.end(_ns(e.ts))
        metrics = self._metrics
        if metrics is not None:
            if not denied:
                metrics.failure(run.workflow, e.node_id, e.failure_class, e.error_type)
            metrics.usage(run.workflow, e.model, e.input_tokens, e.output_tokens, e.cost_usd)

    def _failure_classified(self, e: ev.FailureClassified) -> None:
        _, node = self._node(e.run_id, e.node_id)
        if node is None:
            return
        target = node.attempt
        if target is not None and node.attempt_rec:
            target.add_event(
                a.EVENT_FAILURE_CLASSIFIED,
                {
                    a.FAILURE_CLASS: e.failure_class,
                    a.FAILURE_DECIDED_BY: e.decided_by,
                    a.ERROR_TYPE: e.error_type,
                },
                _ns(e.ts),
            )

    def _contract_violated(self, e: ev.ContractViolated) -> None:
        run, node = self._node(e.run_id, e.node_id)
        if run is None:
            return
        if node is not None and node.attempt is not None:
            span, rec = node.attempt, node.attempt_rec
        elif node is not None:
            span, rec = node.span, node.rec
        else:
            span, rec = run.span, run.rec
        if not rec:
            return
        attrs: dict[str, Any] = {
            a.CONTRACT_DIRECTION: e.direction,
            a.CONTRACT_ERROR_COUNT: e.error_count,
            a.CONTRACT_FIELD_PATHS: list(e.field_paths),
        }
        if self._capture and e.errors:
            attrs[a.CONTRACT_ERRORS] = [_truncate(f"{p}: {m}") for p, m in e.errors]
        span.add_event(a.EVENT_CONTRACT_VIOLATION, attrs, _ns(e.ts))

    # -- node span events -------------------------------------------------------------------

    def _retry_scheduled(self, e: ev.RetryScheduled) -> None:
        run, node = self._node(e.run_id, e.node_id)
        if run is None:
            return
        if node is not None and node.rec:
            node.span.add_event(
                a.EVENT_RETRY_SCHEDULED,
                {
                    a.RETRY_ATTEMPT: e.attempt,
                    a.RETRY_DELAY_S: e.delay_s,
                    a.ERROR_TYPE: e.error_type,
                    a.FAILURE_CLASS: e.failure_class,
                },
                _ns(e.ts),
            )
        if self._metrics is not None:
            self._metrics.retry(run.workflow, e.node_id, e.failure_class, e.delay_s)

    def _retries_exhausted(self, e: ev.RetriesExhausted) -> None:
        _, node = self._node(e.run_id, e.node_id)
        if node is not None and node.rec:
            node.span.add_event(
                a.EVENT_RETRIES_EXHAUSTED,
                {
                    a.NODE_ATTEMPTS: e.attempts,
                    a.FAILURE_CLASS: e.failure_class,
                    a.RETRY_MAX_RETRIES: e.max_retries,
                    a.RETRY_BACKOFF_S: e.backoff_seconds,
                },
                _ns(e.ts),
            )

    def _budget_checked(self, e: ev.BudgetChecked) -> None:
        run, node = self._node(e.run_id, e.node_id)
        if run is None:
            return
        if node is not None:
            if e.decision == "deny":
                node.denied = True
            span, rec = node.span, node.rec
        else:
            span, rec = run.span, run.rec
        if rec:
            span.add_event(
                a.EVENT_BUDGET_CHECKED,
                {
                    a.BUDGET_DIMENSION: e.dimension,
                    a.BUDGET_LIMIT: e.limit,
                    a.BUDGET_USED: e.used,
                    a.BUDGET_DECISION: e.decision,
                },
                _ns(e.ts),
            )
        if self._metrics is not None:
            self._metrics.budget(run.workflow, e.dimension, e.decision)

    def _model_fallback(self, e: ev.ModelFallback) -> None:
        run, node = self._node(e.run_id, e.node_id)
        if run is None:
            return
        span, rec = (node.span, node.rec) if node is not None else (run.span, run.rec)
        if rec:
            span.add_event(
                a.EVENT_MODEL_FALLBACK,
                {
                    a.MODEL_FALLBACK_FROM: e.from_model,
                    a.MODEL_FALLBACK_TO: e.to_model,
                    a.MODEL_FALLBACK_SPEND_FRACTION: e.spend_fraction,
                },
                _ns(e.ts),
            )
        if self._metrics is not None:
            self._metrics.fallback(run.workflow, e.from_model, e.to_model)

    # -- run span events --------------------------------------------------------------------

    def _checkpoint(self, e: ev.CheckpointSaved | ev.CheckpointLoaded, name: str, operation: str) -> None:
        run = self._runs.get(e.run_id)
        if run is None:
            return
        if run.rec:
            run.span.add_event(
                name,
                {
                    a.CHECKPOINT_NODE: e.node_id,
                    a.CHECKPOINT_STORE: e.store,
                    a.CHECKPOINT_SIZE_BYTES: e.size_bytes,
                    a.CHECKPOINT_DURATION_S: e.duration_ms / 1000.0,
                },
                _ns(e.ts),
            )
        if self._metrics is not None:
            self._metrics.checkpoint(e.store, operation, e.duration_ms / 1000.0)

    def _checkpoint_saved(self, e: ev.CheckpointSaved) -> None:
        self._checkpoint(e, a.EVENT_CHECKPOINT_SAVED, "save")

    def _checkpoint_loaded(self, e: ev.CheckpointLoaded) -> None:
        self._checkpoint(e, a.EVENT_CHECKPOINT_LOADED, "load")
