"""The span tree of OBSERVABILITY.md, asserted exactly with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind

from stroma import (
    BudgetExceeded,
    ContractViolation,
    FailureClass,
    FailurePolicy,
    NodeContext,
    StromaRunner,
    estimate_cost_usd,
    load_run,
    parallel,
)
from stroma.testing import FakeClock
from stroma_otel import attributes as a
from tests.stroma_otel.conftest import Doc, Otel, Out

UNSET, ERROR = "UNSET", "ERROR"
START = FakeClock().time()


def qualname(cls: type) -> str:
    """The error.type Stroma reports for an exception class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def recoverable_connection_errors(exc: Exception, ctx: NodeContext) -> FailureClass | None:
    """Classify ConnectionError as RECOVERABLE."""
    return FailureClass.RECOVERABLE if isinstance(exc, ConnectionError) else None


def terminal_value_errors(exc: Exception, ctx: NodeContext) -> FailureClass | None:
    """Classify ValueError as TERMINAL."""
    return FailureClass.TERMINAL if isinstance(exc, ValueError) else None


def assert_context_clean() -> None:
    """Nothing of ours is left attached to the caller's context after a run."""
    assert not trace.get_current_span().get_span_context().is_valid


def run_attrs(run_id: str, status: str, *, workflow: str = "docs", **extra: Any) -> dict[str, Any]:
    """The attributes every run span carries."""
    attrs: dict[str, Any] = {
        a.GEN_AI_OPERATION_NAME: "invoke_workflow",
        a.GEN_AI_WORKFLOW_NAME: workflow,
        a.RUN_ID: run_id,
        a.SCHEMA_VERSION_KEY: a.SCHEMA_VERSION,
        a.RUN_STATUS: status,
        a.USAGE_TOKENS: 0,
        a.USAGE_COST_USD: 0.0,
    }
    attrs.update(extra)
    return attrs


def attempt_attrs(number: int, max_attempts: int, **extra: Any) -> dict[str, Any]:
    """The attributes of an attempt span without usage."""
    attrs: dict[str, Any] = {a.ATTEMPT_NUMBER: number, a.ATTEMPT_MAX: max_attempts}
    attrs.update(extra)
    return attrs


def node_attrs(node_id: str, attempts: int, outcome: str = "succeeded", **extra: Any) -> dict[str, Any]:
    """The attributes of a node span."""
    attrs: dict[str, Any] = {a.NODE_ID: node_id, a.NODE_ATTEMPTS: attempts, a.NODE_OUTCOME: outcome}
    attrs.update(extra)
    return attrs


async def test_success_tree_names_attributes_and_usage(otel: Otel, clock: FakeClock) -> None:
    """A two-node run is one run span, one node span per node and one attempt span each, all UNSET."""
    runner = StromaRunner.quick(run_id="run-ok", pipeline_name="docs").with_hooks(otel.hooks())

    @runner.node("fetch", input=Doc, output=Out)
    async def fetch(state: Doc) -> dict[str, Any]:
        clock.advance(0.5)
        return {"text": state.text}

    @runner.node("summarize", input=Out, output=Out)
    async def summarize(state: Out) -> tuple[dict[str, Any], int, int, str]:
        clock.advance(0.25)
        return {"text": state.text[:3], "n": 1}, 100, 20, "gpt-4o-mini"

    result = await runner.run([fetch, summarize], Doc(text="hello"))
    assert str(result.status) == "COMPLETED"
    assert_context_clean()

    run = otel.one()
    assert run.shape() == (
        "invoke_workflow docs", UNSET, (
            ("node fetch", UNSET, (("attempt fetch #1", UNSET, ()),)),
            ("node summarize", UNSET, (("attempt summarize #1", UNSET, ()),)),
        ),
    )  # fmt: skip
    cost = estimate_cost_usd("gpt-4o-mini", 100, 20)
    assert run.attrs == run_attrs("run-ok", "COMPLETED", **{a.USAGE_TOKENS: 120, a.USAGE_COST_USD: cost})
    assert [name for name, _ in run.events] == [a.EVENT_CHECKPOINT_SAVED] * 2
    assert run.events[0][1] == {
        a.CHECKPOINT_NODE: "fetch",
        a.CHECKPOINT_STORE: "memory",
        a.CHECKPOINT_SIZE_BYTES: run.events[0][1][a.CHECKPOINT_SIZE_BYTES],
        a.CHECKPOINT_DURATION_S: 0.0,
    }
    assert run.events[0][1][a.CHECKPOINT_SIZE_BYTES] > 0
    fetch_node, summarize_node = run.children
    assert fetch_node.attrs == node_attrs("fetch", 1)
    assert fetch_node.events == []
    assert fetch_node.children[0].attrs == attempt_attrs(1, 3)
    assert summarize_node.children[0].attrs == attempt_attrs(
        1,
        3,
        **{
            a.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            a.USAGE_INPUT_TOKENS: 100,
            a.USAGE_OUTPUT_TOKENS: 20,
            a.COST_USD: cost,
        },
    )
    # Timestamps are the run clock's: the attempt of fetch took exactly the 0.5 s it advanced.
    attempt = fetch_node.children[0].span
    assert attempt.start_time == int(START * 1e9)
    assert attempt.end_time is not None
    assert attempt.end_time - attempt.start_time == pytest.approx(0.5e9, abs=1e3)
    for span in otel.spans():
        assert span.kind is SpanKind.INTERNAL
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "stroma"
        assert span.instrumentation_scope.schema_url == a.SCHEMA_URL


async def test_retry_then_success_reports_the_delay_actually_slept(otel: Otel, clock: FakeClock) -> None:
    """Two failed attempts are ERROR spans, the node and run stay UNSET, and delay_s is what was slept."""
    runner = (
        StromaRunner.quick(run_id="run-retry", pipeline_name="docs")
        .with_classifiers([recoverable_connection_errors])
        .with_hooks(otel.hooks())
    )
    calls = 0

    @runner.node("flaky", input=Doc, output=Out)
    async def flaky(state: Doc) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("connection reset")
        return {"text": state.text}

    result = await runner.run([flaky], Doc(text="x"))
    assert str(result.status) == "COMPLETED"
    assert_context_clean()
    assert len(clock.slept) == 2

    run = otel.one()
    assert run.shape() == (
        "invoke_workflow docs", UNSET, (
            ("node flaky", UNSET, (
                ("attempt flaky #1", ERROR, ()),
                ("attempt flaky #2", ERROR, ()),
                ("attempt flaky #3", UNSET, ()),
            )),
        ),
    )  # fmt: skip
    assert run.attrs == run_attrs("run-retry", "COMPLETED")
    node = run.children[0]
    assert node.attrs == node_attrs("flaky", 3)
    assert node.events == [
        (
            a.EVENT_RETRY_SCHEDULED,
            {
                a.RETRY_ATTEMPT: n,
                a.RETRY_DELAY_S: clock.slept[n - 1],
                a.ERROR_TYPE: "ConnectionError",
                a.FAILURE_CLASS: "RECOVERABLE",
            },
        )
        for n in (1, 2)
    ]
    first, second, third = node.children
    failed = {a.ERROR_TYPE: "ConnectionError", a.FAILURE_CLASS: "RECOVERABLE"}
    assert first.attrs == attempt_attrs(1, 3, **failed)
    assert second.attrs == attempt_attrs(2, 3, **failed)
    assert third.attrs == attempt_attrs(3, 3)
    assert first.events == [
        (
            a.EVENT_FAILURE_CLASSIFIED,
            {
                a.FAILURE_CLASS: "RECOVERABLE",
                a.FAILURE_DECIDED_BY: "recoverable_connection_errors",
                a.ERROR_TYPE: "ConnectionError",
            },
        ),
        # The semantic-convention exception event, by default with its type only (no message).
        (a.EVENT_EXCEPTION, {a.EXCEPTION_TYPE: "ConnectionError"}),
    ]
    assert third.events == []
    assert first.span.status.description is None  # no exception text without content capture
    # The gap between attempts on the timeline is the backoff that was slept.
    assert second.span.start_time is not None
    assert first.span.end_time is not None
    gap = second.span.start_time - first.span.end_time
    assert gap == pytest.approx(clock.slept[0] * 1e9, abs=1e3)


async def test_terminal_contract_violation_fails_attempt_node_and_run(otel: Otel, clock: FakeClock) -> None:
    """An output that breaks the contract is one ERROR attempt with the field path, never retried."""
    runner = StromaRunner.quick(run_id="run-contract", pipeline_name="docs").with_hooks(otel.hooks())

    @runner.node("extract", input=Doc, output=Out)
    async def extract(state: Doc) -> dict[str, Any]:
        return {"text": 12345}

    result = await runner.run([extract], Doc(text="x"))
    assert str(result.status) == "FAILED"
    assert_context_clean()
    violation = qualname(ContractViolation)

    run = otel.one()
    assert run.shape() == (
        "invoke_workflow docs", ERROR, (
            ("node extract", ERROR, (("attempt extract #1", ERROR, ()),)),
        ),
    )  # fmt: skip
    assert run.attrs == run_attrs("run-contract", "FAILED", **{a.ERROR_TYPE: violation})
    node = run.children[0]
    assert node.attrs == node_attrs(
        "extract", 1, "failed", **{a.ERROR_TYPE: violation, a.FAILURE_CLASS: "TERMINAL"}
    )
    assert node.events == [
        (
            a.EVENT_RETRIES_EXHAUSTED,
            {
                a.NODE_ATTEMPTS: 1,
                a.FAILURE_CLASS: "TERMINAL",
                a.RETRY_MAX_RETRIES: 0,
                a.RETRY_BACKOFF_S: 0.0,
            },
        )
    ]
    attempt = node.children[0]
    assert attempt.attrs == attempt_attrs(1, 3, **{a.ERROR_TYPE: violation, a.FAILURE_CLASS: "TERMINAL"})
    assert attempt.events == [
        (
            a.EVENT_CONTRACT_VIOLATION,
            {
                a.CONTRACT_DIRECTION: "output",
                a.CONTRACT_ERROR_COUNT: 1,
                a.CONTRACT_FIELD_PATHS: ("text",),
            },
        ),
        (
            a.EVENT_FAILURE_CLASSIFIED,
            {
                a.FAILURE_CLASS: "TERMINAL",
                a.FAILURE_DECIDED_BY: "builtin:ContractViolation",
                a.ERROR_TYPE: violation,
            },
        ),
        (a.EVENT_EXCEPTION, {a.EXCEPTION_TYPE: violation}),
    ]
    assert clock.slept == []


async def test_exhausted_retries_end_the_run_partial(otel: Otel, clock: FakeClock) -> None:
    """A node that keeps failing records each retry, then retries-exhausted with the policy; run PARTIAL."""
    policy = FailurePolicy(max_retries=3, backoff_seconds=0.5)  # three calls in all
    runner = (
        StromaRunner.quick(run_id="run-exhausted", pipeline_name="docs")
        .with_classifiers([recoverable_connection_errors])
        .with_node_policies({"down": {FailureClass.RECOVERABLE: policy}})
        .with_hooks(otel.hooks())
    )

    @runner.node("down", input=Doc, output=Out)
    async def down(state: Doc) -> dict[str, Any]:
        raise ConnectionError("still down")

    @runner.node("never", input=Out, output=Out)
    async def never(state: Out) -> dict[str, Any]:
        raise AssertionError("not reached")

    result = await runner.run([down, never], Doc(text="x"))
    assert str(result.status) == "PARTIAL"
    assert_context_clean()

    run = otel.one()
    assert run.shape() == (
        "invoke_workflow docs", ERROR, (
            ("node down", ERROR, (
                ("attempt down #1", ERROR, ()),
                ("attempt down #2", ERROR, ()),
                ("attempt down #3", ERROR, ()),
            )),
        ),
    )  # fmt: skip
    assert run.attrs == run_attrs("run-exhausted", "PARTIAL", **{a.ERROR_TYPE: "ConnectionError"})
    node = run.children[0]
    assert node.attrs == node_attrs(
        "down", 3, "failed", **{a.ERROR_TYPE: "ConnectionError", a.FAILURE_CLASS: "RECOVERABLE"}
    )
    assert [name for name, _ in node.events] == [
        a.EVENT_RETRY_SCHEDULED,
        a.EVENT_RETRY_SCHEDULED,
        a.EVENT_RETRIES_EXHAUSTED,
    ]
    assert [attrs[a.RETRY_DELAY_S] for _, attrs in node.events[:2]] == clock.slept
    assert node.events[2][1] == {
        a.NODE_ATTEMPTS: 3,
        a.FAILURE_CLASS: "RECOVERABLE",
        a.RETRY_MAX_RETRIES: 3,
        a.RETRY_BACKOFF_S: 0.5,
    }
    for attempt in node.children:
        assert attempt.attrs[a.ATTEMPT_MAX] == 3


async def test_budget_stop_records_checks_and_fails_the_node(otel: Otel, clock: FakeClock) -> None:
    """Spending past the token budget is a denial (not a node failure) and a PARTIAL, ERROR run."""
    runner = (
        StromaRunner.quick(run_id="run-budget", pipeline_name="docs")
        .with_budget(tokens=100)
        .with_hooks(otel.hooks())
    )

    @runner.node("greedy", input=Doc, output=Out)
    async def greedy(state: Doc) -> tuple[dict[str, Any], int, int]:
        return {"text": state.text}, 80, 40

    result = await runner.run([greedy], Doc(text="x"))
    assert str(result.status) == "PARTIAL"
    assert_context_clean()
    budget = qualname(BudgetExceeded)

    run = otel.one()
    assert run.shape() == (
        "invoke_workflow docs", ERROR, (
            ("node greedy", UNSET, (("attempt greedy #1", UNSET, ()),)),
        ),
    )  # fmt: skip
    assert run.attrs == run_attrs("run-budget", "PARTIAL", **{a.ERROR_TYPE: budget, a.USAGE_TOKENS: 120})
    node = run.children[0]
    assert node.attrs == node_attrs("greedy", 1, a.NODE_OUTCOME_DENIED)

    def check(used: float, decision: str) -> tuple[str, dict[str, Any]]:
        return (
            a.EVENT_BUDGET_CHECKED,
            {
                a.BUDGET_DIMENSION: "tokens",
                a.BUDGET_LIMIT: 100.0,
                a.BUDGET_USED: used,
                a.BUDGET_DECISION: decision,
            },
        )

    # The check after the attempt denies; a check at node start (if the core emits one) allows.
    assert node.events[-1] == check(120.0, "deny")
    assert node.events[:-1] in ([], [check(0.0, "allow")])
    assert node.children[0].attrs == attempt_attrs(
        1,
        3,
        **{
            a.USAGE_INPUT_TOKENS: 80,
            a.USAGE_OUTPUT_TOKENS: 40,
            a.COST_USD: 0.0,
            a.BUDGET_DECISION: "deny",
        },
    )
    assert [name for name, _ in node.children[0].events] == [a.EVENT_FAILURE_CLASSIFIED]  # no exception
    failures = otel.metrics().get(a.METRIC_FAILURES, [])
    assert failures == []  # a denial is not counted as a failure


async def test_model_fallback_is_a_node_event_and_the_attempt_model(otel: Otel, clock: FakeClock) -> None:
    """Crossing the spend threshold shows as fallback check + model.fallback, and the attempt's model."""
    runner = (
        StromaRunner.quick(run_id="run-fallback", pipeline_name="docs")
        .with_budget(cost_usd=0.01)
        .with_model_fallback("gpt-4o", to="gpt-4o-mini", at_budget_pct=0.5)
        .with_context({"model": "gpt-4o"})
        .with_hooks(otel.hooks())
    )

    @runner.node("draft", input=Doc, output=Out)
    async def draft(state: Doc) -> tuple[dict[str, Any], int, int, str]:
        return {"text": state.text}, 1000, 300, "gpt-4o"

    @runner.node("polish", input=Out, output=Out)
    async def polish(state: Out) -> tuple[dict[str, Any], int, int, str]:
        return {"text": state.text}, 1000, 300, "gpt-4o"

    result = await runner.run([draft, polish], Doc(text="x"))
    assert str(result.status) == "COMPLETED"
    spent = estimate_cost_usd("gpt-4o", 1000, 300)
    cheap = estimate_cost_usd("gpt-4o-mini", 1000, 300)

    run = otel.one()
    draft_node, polish_node = run.children
    assert draft_node.children[0].attrs[a.GEN_AI_REQUEST_MODEL] == "gpt-4o"
    assert polish_node.children[0].attrs == attempt_attrs(
        1,
        3,
        **{
            a.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            a.USAGE_INPUT_TOKENS: 1000,
            a.USAGE_OUTPUT_TOKENS: 300,
            a.COST_USD: cheap,
        },
    )
    decisions = [attrs.get(a.BUDGET_DECISION, name) for name, attrs in polish_node.events]
    # (an allow check at node start, if the core emits one), fallback, the switch, the post-check
    assert decisions[-3:] == ["fallback", a.EVENT_MODEL_FALLBACK, "allow"]
    assert decisions[:-3] in ([], ["allow"])
    assert polish_node.events[-3][1] == {
        a.BUDGET_DIMENSION: "cost",
        a.BUDGET_LIMIT: 0.01,
        a.BUDGET_USED: spent,
        a.BUDGET_DECISION: "fallback",
    }
    assert polish_node.events[-2][1] == {
        a.MODEL_FALLBACK_FROM: "gpt-4o",
        a.MODEL_FALLBACK_TO: "gpt-4o-mini",
        a.MODEL_FALLBACK_SPEND_FRACTION: pytest.approx(spent / 0.01),
    }
    assert run.attrs[a.USAGE_COST_USD] == pytest.approx(spent + cheap)


async def test_timeout_is_error_type_timeout_and_user_spans_still_nest(otel: Otel, clock: FakeClock) -> None:
    """A per-node timeout fails the attempt with error.type=timeout; the user's span nests under it."""
    user_tracer = otel.tracer_provider.get_tracer("user")
    policy = FailurePolicy(max_retries=2, backoff_seconds=0.0)
    runner = (
        StromaRunner.quick(run_id="run-timeout", pipeline_name="docs")
        .with_node_timeouts({"stuck": 20})
        .with_node_policies({"stuck": {FailureClass.RECOVERABLE: policy}})
        .with_hooks(otel.hooks())
    )
    never = asyncio.Event()

    @runner.node("stuck", input=Doc, output=Out)
    async def stuck(state: Doc) -> dict[str, Any]:
        with user_tracer.start_as_current_span("llm call"):
            await never.wait()
        return {"text": state.text}

    result = await runner.run([stuck], Doc(text="x"))
    assert str(result.status) == "PARTIAL"
    assert_context_clean()

    run = otel.one()
    assert run.shape() == (
        "invoke_workflow docs", ERROR, (
            ("node stuck", ERROR, (
                ("attempt stuck #1", ERROR, (("llm call", UNSET, ()),)),
                ("attempt stuck #2", ERROR, (("llm call", UNSET, ()),)),
            )),
        ),
    )  # fmt: skip
    node = run.children[0]
    assert node.attrs == node_attrs(
        "stuck", 2, "failed", **{a.ERROR_TYPE: "timeout", a.FAILURE_CLASS: "RECOVERABLE"}
    )
    assert node.children[0].attrs == attempt_attrs(
        1, 2, **{a.ERROR_TYPE: "timeout", a.FAILURE_CLASS: "RECOVERABLE"}
    )
    assert run.attrs[a.ERROR_TYPE] == "timeout"


async def test_parallel_children_are_sibling_node_spans_under_the_group_attempt(
    otel: Otel, clock: FakeClock
) -> None:
    """parallel() is a node with attempts; its children are sibling node spans holding the user's spans."""
    user_tracer = otel.tracer_provider.get_tracer("user")
    runner = StromaRunner.quick(run_id="run-par", pipeline_name="docs").with_hooks(otel.hooks())

    @runner.node("left", input=Doc, output=Out)
    async def left(state: Doc) -> dict[str, Any]:
        with user_tracer.start_as_current_span("left call"):
            await asyncio.sleep(0)
        return {"text": state.text}

    @runner.node("right", input=Doc, output=Out)
    async def right(state: Doc) -> tuple[dict[str, Any], int, int]:
        with user_tracer.start_as_current_span("right call"):
            await asyncio.sleep(0)
        return {"text": state.text, "n": 2}, 5, 7

    result = await runner.run([parallel(left, right)], Doc(text="x"))
    assert str(result.status) == "COMPLETED"
    assert_context_clean()

    run = otel.one()
    group = run.child("node parallel(left,right)")
    assert group.attrs == node_attrs("parallel(left,right)", 1)
    (attempt,) = group.children
    assert attempt.name == "attempt parallel(left,right) #1"
    assert attempt.attrs == attempt_attrs(
        1, 3, **{a.USAGE_INPUT_TOKENS: 5, a.USAGE_OUTPUT_TOKENS: 7, a.COST_USD: 0.0}
    )
    assert sorted(c.shape() for c in attempt.children) == [
        ("node left", UNSET, (("left call", UNSET, ()),)),
        ("node right", UNSET, (("right call", UNSET, ()),)),
    ]
    assert attempt.child("node left").attrs == node_attrs(
        "left", 1, **{a.NODE_PARENT: "parallel(left,right)"}
    )


async def test_failed_parallel_child_is_error_and_cancelled_sibling_is_not(
    otel: Otel, clock: FakeClock
) -> None:
    """A failing child is ERROR, the sibling it cancels is UNSET with outcome cancelled; no context leaks."""
    runner = (
        StromaRunner.quick(run_id="run-par-fail", pipeline_name="docs")
        .with_classifiers([terminal_value_errors])
        .with_hooks(otel.hooks())
    )
    never = asyncio.Event()

    @runner.node("waits", input=Doc, output=Out)
    async def waits(state: Doc) -> dict[str, Any]:
        await never.wait()
        return {"text": state.text}

    @runner.node("breaks", input=Doc, output=Out)
    async def breaks(state: Doc) -> dict[str, Any]:
        await asyncio.sleep(0)
        raise ValueError("bad input")

    result = await runner.run([parallel(waits, breaks)], Doc(text="x"))
    assert str(result.status) == "FAILED"
    assert_context_clean()

    run = otel.one()
    group = run.child("node parallel(waits,breaks)")
    assert group.status == ERROR
    assert group.attrs[a.ERROR_TYPE] == "ValueError"
    (attempt,) = group.children
    assert attempt.status == ERROR
    assert attempt.attrs[a.ERROR_TYPE] == "ValueError"
    assert attempt.child("node breaks").status == ERROR
    assert attempt.child("node breaks").attrs == node_attrs(
        "breaks",
        1,
        "failed",
        **{a.NODE_PARENT: "parallel(waits,breaks)", a.ERROR_TYPE: "ValueError"},
    )
    assert attempt.child("node waits").status == UNSET
    assert attempt.child("node waits").attrs[a.NODE_OUTCOME] == "cancelled"


@pytest.mark.parametrize("how", ["resume", "resume_from"])
async def test_resumed_run_links_to_the_failed_run_and_marks_restored_nodes(
    otel: Otel, clock: FakeClock, tmp_path: Path, how: str
) -> None:
    """The resumed run is a new trace whose run span links to the failed run's span (resumed_from)."""
    runner = (
        StromaRunner.quick(run_id="run-resume", pipeline_name="docs")
        .with_classifiers([terminal_value_errors])
        .with_trace_dir(tmp_path)
        .with_hooks(otel.hooks())
    )
    broken = True

    @runner.node("first", input=Doc, output=Out)
    async def first(state: Doc) -> dict[str, Any]:
        return {"text": state.text}

    @runner.node("second", input=Out, output=Out)
    async def second(state: Out) -> dict[str, Any]:
        if broken:
            raise ValueError("upstream bug")
        return {"text": state.text, "n": 2}

    @runner.node("third", input=Out, output=Out)
    async def third(state: Out) -> dict[str, Any]:
        return {"text": state.text, "n": 3}

    pipeline = [first, second, third]
    failed = await runner.run(pipeline, Doc(text="x"))
    assert str(failed.status) == "FAILED"
    (failed_run,) = otel.tree()
    otel.exporter.clear()
    clock.advance(60.0)  # the second run starts later (and gets its own run file name)

    broken = False
    if how == "resume":
        resumed = await runner.resume(pipeline, Doc(text="x"))
    else:
        runner.config.resume_from = "second"
        resumed = await runner.run(pipeline, Doc(text="x"))
    assert str(resumed.status) == "RESUMED"
    assert_context_clean()

    run = otel.one()
    assert run.shape() == (
        "invoke_workflow docs", UNSET, (
            ("node first", UNSET, ()),
            ("node second", UNSET, (("attempt second #1", UNSET, ()),)),
            ("node third", UNSET, (("attempt third #1", UNSET, ()),)),
        ),
    )  # fmt: skip
    assert run.attrs == run_attrs("run-resume", "RESUMED", **{a.RUN_RESUMED_FROM: "second"})
    assert run.children[0].attrs == {a.NODE_ID: "first", a.NODE_RESTORED: True}
    assert run.events[0][0] == a.EVENT_CHECKPOINT_LOADED
    assert run.events[0][1][a.CHECKPOINT_NODE] == "first"
    assert run.events[0][1][a.CHECKPOINT_STORE] == "memory"

    old = failed_run.span.context
    new = run.span
    assert new.context.trace_id != old.trace_id
    assert len(new.links) == 1
    link = new.links[0]
    assert (link.context.trace_id, link.context.span_id) == (old.trace_id, old.span_id)
    assert dict(link.attributes or {}) == {a.LINK_TYPE: a.LINK_TYPE_RESUMED_FROM}

    # The run file keeps the traceparent of each run span (never baggage).
    headers = {r.header.status: r.header for r in (load_run(p) for p in sorted(tmp_path.glob("*.jsonl")))}
    traceparent = f"00-{old.trace_id:032x}-{old.span_id:016x}-{int(old.trace_flags):02x}"
    assert headers["FAILED"].carrier == {"traceparent": traceparent}
    assert headers["RESUMED"].parent_carrier == {"traceparent": traceparent}
    assert headers["RESUMED"].carrier["traceparent"].split("-")[2] == f"{new.context.span_id:016x}"


async def test_user_spans_nest_under_the_attempt_span(otel: Otel, clock: FakeClock) -> None:
    """Spans the node's own code opens are children of that attempt's span, retries included."""
    user_tracer = otel.tracer_provider.get_tracer("user")
    runner = (
        StromaRunner.quick(run_id="run-nest", pipeline_name="docs")
        .with_classifiers([recoverable_connection_errors])
        .with_hooks(otel.hooks())
    )
    calls = 0

    @runner.node("call_llm", input=Doc, output=Out)
    async def call_llm(state: Doc) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        with (
            user_tracer.start_as_current_span("chat gpt-4o"),
            user_tracer.start_as_current_span("POST /v1/chat/completions"),
        ):
            await asyncio.sleep(0)
        if calls == 1:
            raise ConnectionError("reset")
        return {"text": state.text}

    outer = user_tracer.start_span("request handler")
    with trace.use_span(outer, end_on_exit=True):
        await runner.run([call_llm], Doc(text="x"))
    assert_context_clean()

    (root,) = otel.tree()
    assert root.name == "request handler"
    (run,) = root.children
    llm = ("chat gpt-4o", UNSET, (("POST /v1/chat/completions", UNSET, ()),))
    assert run.shape() == (
        "invoke_workflow docs", UNSET, (
            ("node call_llm", UNSET, (
                ("attempt call_llm #1", ERROR, (llm,)),
                ("attempt call_llm #2", UNSET, (llm,)),
            )),
        ),
    )  # fmt: skip


async def test_concurrent_runs_keep_their_own_trees(otel: Otel, clock: FakeClock) -> None:
    """One hooks object serves concurrent runs: each gets its own trace with its own nodes."""
    hooks = otel.hooks()
    runners = [
        StromaRunner.quick(run_id=f"run-{i}", pipeline_name="docs").with_hooks(hooks) for i in range(3)
    ]
    nodes = []
    for runner in runners:

        @runner.node("step", input=Doc, output=Out)
        async def step(state: Doc) -> dict[str, Any]:
            await asyncio.sleep(0)
            return {"text": state.text}

        nodes.append(step)
    await asyncio.gather(*(r.run([n], Doc(text="x")) for r, n in zip(runners, nodes, strict=True)))
    roots = otel.tree()
    assert sorted(r.attrs[a.RUN_ID] for r in roots) == ["run-0", "run-1", "run-2"]
    for root in roots:
        assert root.shape() == (
            "invoke_workflow docs", UNSET, (("node step", UNSET, (("attempt step #1", UNSET, ()),)),)
        )  # fmt: skip
    assert len({r.span.context.trace_id for r in roots}) == 3


async def test_not_recording_spans_skip_attribute_work_but_still_propagate(
    clock: FakeClock,
) -> None:
    """With a sampler that drops everything the run works, nothing is exported, context stays clean."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from stroma_otel import otel_hooks

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    runner = StromaRunner.quick(run_id="run-off").with_hooks(otel_hooks(provider))
    seen: list[bool] = []

    @runner.node("step", input=Doc, output=Out)
    async def step(state: Doc) -> dict[str, Any]:
        span = trace.get_current_span()
        seen.append(span.get_span_context().is_valid and not span.is_recording())
        return {"text": state.text}

    result = await runner.run([step], Doc(text="x"))
    assert str(result.status) == "COMPLETED"
    assert result.hook_errors == 0
    assert seen == [True]  # the node ran inside the (unsampled) attempt context
    assert exporter.get_finished_spans() == ()
    assert_context_clean()


async def test_without_an_sdk_the_hooks_are_inert(clock: FakeClock) -> None:
    """With the API's no-op provider a run completes and no traceparent is stored."""
    from stroma_otel import otel_hooks

    runner = StromaRunner.quick(run_id="run-noop").with_hooks(otel_hooks(trace.NoOpTracerProvider()))

    @runner.node("step", input=Doc, output=Out)
    async def step(state: Doc) -> dict[str, Any]:
        return {"text": state.text}

    result = await runner.run([step], Doc(text="x"))
    assert str(result.status) == "COMPLETED"
    assert result.hook_errors == 0
    started = result.trace.log[0]
    assert getattr(started, "carrier", None) == {}


async def test_a_broken_tracer_never_breaks_the_run(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """If the tracer itself raises, the run completes and the failure is logged once."""
    from stroma_otel import otel_hooks

    class Broken(trace.NoOpTracer):
        def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
            raise RuntimeError("exporter on fire")

    class BrokenProvider(trace.NoOpTracerProvider):
        def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
            return Broken()

    runner = StromaRunner.quick(run_id="run-broken").with_hooks(otel_hooks(BrokenProvider()))

    @runner.node("step", input=Doc, output=Out)
    async def step(state: Doc) -> dict[str, Any]:
        return {"text": state.text}

    result = await runner.run([step], Doc(text="x"))
    assert str(result.status) == "COMPLETED"
    warnings = [r for r in caplog.records if r.name == "stroma_otel"]
    assert len(warnings) == 1
    assert "could not record RunStarted" in warnings[0].getMessage()


async def test_a_cancelled_run_ends_its_spans_and_detaches(otel: Otel, clock: FakeClock) -> None:
    """A run cancelled mid-node (asyncio.timeout around run()) leaves no span open or attached."""
    runner = StromaRunner.quick(run_id="run-cancel", pipeline_name="docs").with_hooks(otel.hooks())
    never = asyncio.Event()

    @runner.node("hangs", input=Doc, output=Out)
    async def hangs(state: Doc) -> dict[str, Any]:
        await never.wait()
        return {"text": state.text}

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await runner.run([hangs], Doc(text="x"))
    assert_context_clean()
    assert [s.name for s in otel.spans()] == [
        "attempt hangs #1",
        "node hangs",
        "invoke_workflow docs",
    ]


def test_run_finished_ends_and_detaches_whatever_is_still_open(otel: Otel) -> None:
    """A RunFinished that arrives mid-attempt (a cancelled run) ends every span and restores context."""
    from stroma import events as ev
    from stroma_otel._spans import SpanRecorder

    recorder = SpanRecorder(otel.tracer_provider)
    common: dict[str, Any] = {"run_id": "run-abort", "ts": START}
    recorder.on_event(ev.RunStarted(pipeline=("a",), pipeline_name="docs", **common))
    recorder.on_event(ev.NodeStarted(node_id="a", max_attempts=1, **common))
    recorder.on_event(ev.AttemptStarted(node_id="a", attempt=1, max_attempts=1, input_state={}, **common))
    assert trace.get_current_span().get_span_context().is_valid  # the node's code would run here
    recorder.on_event(
        ev.RunFinished(
            status="CANCELLED", duration_ms=0.0, total_tokens=0, total_cost_usd=0.0, failures=0,
            **common,
        )
    )  # fmt: skip
    assert_context_clean()
    assert otel.one().shape() == (
        "invoke_workflow docs", UNSET, (("node a", UNSET, (("attempt a #1", UNSET, ()),)),)
    )  # fmt: skip
    assert otel.one().attrs[a.RUN_STATUS] == "CANCELLED"
