"""Secret canary: nothing of state, context or exception text leaves the process unless captured."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from stroma import FailureClass, NodeContext, StromaRunner, parallel
from stroma.testing import FakeClock
from stroma_otel import attributes as a
from tests.stroma_otel.conftest import Doc, Otel, Out

CANARY = "CANARY-7f3a9c"
REDIS_URL = f"redis://:{CANARY}@127.0.0.1:6379/0"


def retry_connection_errors(exc: Exception, ctx: NodeContext) -> FailureClass | None:
    """ConnectionError is RECOVERABLE, ValueError TERMINAL."""
    if isinstance(exc, ConnectionError):
        return FailureClass.RECOVERABLE
    return None


async def run_leaky_pipeline(otel: Otel, *, capture_content: bool | None) -> bytes:
    """Run a pipeline that puts the canary everywhere; return every exported byte (OTLP encoded)."""
    runner = (
        StromaRunner.quick(run_id="run-canary", pipeline_name="docs")
        .with_classifiers([retry_connection_errors])
        .with_context({"redis": REDIS_URL, "api_key": CANARY, "model": "gpt-4o-mini"})
        .with_hooks(otel.hooks(capture_content=capture_content))
    )
    calls = 0

    @runner.node("fetch", input=Doc, output=Out)
    async def fetch(state: Doc, ctx: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError(f"cannot reach {ctx['redis']} with key {ctx['api_key']}")
        return {"text": state.text, "n": 1}, 10, 3

    @runner.node("left", input=Out, output=Out)
    async def left(state: Out) -> dict[str, Any]:
        return {"text": state.text}

    @runner.node("right", input=Out, output=Out)
    async def right(state: Out) -> dict[str, Any]:
        return {"text": state.text, "n": 2}

    @runner.node("validate", input=Out, output=Out)
    async def validate(state: Out) -> dict[str, Any]:
        return {"text": state.text, "n": f"{CANARY} is not a number"}  # a contract violation

    result = await runner.run([fetch, parallel(left, right), validate], Doc(text=f"secret document {CANARY}"))
    assert str(result.status) == "FAILED"
    assert CANARY in str(result.trace.log)  # the canary really went through the run
    data = otel.reader.get_metrics_data()
    assert data is not None
    return encode_spans(otel.spans()).SerializeToString() + encode_metrics(data).SerializeToString()


async def test_canary_appears_nowhere_with_content_capture_off(otel: Otel, clock: FakeClock) -> None:
    """State, context values, exception messages and a Redis password never reach spans or metrics."""
    exported = await run_leaky_pipeline(otel, capture_content=False)
    assert len(otel.spans()) >= 10
    assert CANARY.encode() not in exported
    assert b"redis://" not in exported
    for span in otel.spans():
        assert span.status.description is None
        for event in span.events:  # the exception event names the type, never the message
            assert event.name != a.EVENT_EXCEPTION or a.EXCEPTION_MESSAGE not in (event.attributes or {})
    assert any(e.name == a.EVENT_EXCEPTION for span in otel.spans() for e in span.events)


async def test_canary_is_exported_with_content_capture_on(otel: Otel, clock: FakeClock) -> None:
    """With capture on, state and exception messages are exported: the canary test can fail."""
    exported = await run_leaky_pipeline(otel, capture_content=True)
    assert CANARY.encode() in exported
    run = otel.one()
    fetch = run.child("node fetch")
    first = fetch.children[0]
    assert CANARY in first.attrs[a.STATE_INPUT]
    ((_, event),) = [e for e in first.events if e[0] == a.EVENT_EXCEPTION]
    assert event[a.EXCEPTION_TYPE] == "ConnectionError"
    assert CANARY in event[a.EXCEPTION_MESSAGE]
    validate = run.child("node validate").children[0]
    (violation,) = [attrs for n, attrs in validate.events if n == a.EVENT_CONTRACT_VIOLATION]
    assert violation[a.CONTRACT_FIELD_PATHS] == ("n",)
    assert len(violation[a.CONTRACT_ERRORS]) == 1


async def test_capture_env_variable_turns_content_on(
    otel: Otel, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STROMA_OTEL_CAPTURE_CONTENT=true opts in without code."""
    monkeypatch.setenv("STROMA_OTEL_CAPTURE_CONTENT", "true")
    exported = await run_leaky_pipeline(otel, capture_content=None)
    assert CANARY.encode() in exported


async def test_genai_message_variable_does_not_capture_pipeline_state(
    otel: Otel, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GenAI message-capture variable is for LLM clients: Stroma's state stays out of spans."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    assert CANARY.encode() not in await run_leaky_pipeline(otel, capture_content=None)


async def test_capture_argument_wins_over_the_variable(
    otel: Otel, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """capture_content=False keeps content out even with STROMA_OTEL_CAPTURE_CONTENT=true."""
    monkeypatch.setenv("STROMA_OTEL_CAPTURE_CONTENT", "true")
    assert CANARY.encode() not in await run_leaky_pipeline(otel, capture_content=False)


async def test_captured_content_is_truncated(otel: Otel, clock: FakeClock) -> None:
    """Captured state longer than CONTENT_MAX_CHARS is cut to that length."""
    runner = StromaRunner.quick(run_id="run-long").with_hooks(otel.hooks(capture_content=True))

    @runner.node("echo", input=Doc, output=Out)
    async def echo(state: Doc) -> dict[str, Any]:
        return {"text": state.text}

    await runner.run([echo], Doc(text="x" * (a.CONTENT_MAX_CHARS * 2)))
    attempt = otel.one().child("node echo").children[0]
    assert len(attempt.attrs[a.STATE_INPUT]) == a.CONTENT_MAX_CHARS
    assert len(attempt.attrs[a.STATE_OUTPUT]) == a.CONTENT_MAX_CHARS
