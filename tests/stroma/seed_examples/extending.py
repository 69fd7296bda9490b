"""Seed 002 (Extending Stroma): classifiers, the OTel hooks recipe and the composed runner."""

import asyncio

import httpx
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from pydantic import BaseModel

from stroma import Classifier, FailureClass, NodeContext, StromaRunner
from stroma.runner import NodeHooks


def openai_classifier(exc: Exception, ctx: NodeContext) -> FailureClass | None:
    msg = str(exc).lower()
    if "rate_limit_exceeded" in msg or "429" in msg:
        return FailureClass.RECOVERABLE
    if "invalid_api_key" in msg or "401" in msg:
        return FailureClass.TERMINAL
    if "500" in msg or "service_unavailable" in msg:
        return FailureClass.RECOVERABLE
    return None


def anthropic_classifier(exc: Exception, ctx: NodeContext) -> FailureClass | None:
    msg = str(exc).lower()
    if "overloaded" in msg:
        return FailureClass.RECOVERABLE
    if "permission_error" in msg:
        return FailureClass.TERMINAL
    return None


def escalate_on_repeat(exc: Exception, ctx: NodeContext) -> FailureClass | None:
    # After 3 timeouts on the same node, give up
    if isinstance(exc, TimeoutError) and ctx.attempt >= 3:
        return FailureClass.TERMINAL
    return None


classifiers: list[Classifier] = [escalate_on_repeat, openai_classifier, anthropic_classifier]

tracer = trace.get_tracer("stroma")
_active_spans: dict[tuple[str, str], trace.Span] = {}


async def otel_start(run_id: str, node_id: str, input_state: dict) -> None:
    key = (run_id, node_id)
    previous = _active_spans.pop(key, None)
    if previous is not None:
        previous.set_status(StatusCode.ERROR, description="superseded by retry")
        previous.end()
    span = tracer.start_span(
        f"stroma.node.{node_id}",
        attributes={"stroma.run_id": run_id, "stroma.node_id": node_id},
    )
    _active_spans[key] = span


async def otel_success(run_id: str, node_id: str, output_state: dict, tokens: int) -> None:
    span = _active_spans.pop((run_id, node_id), None)
    if span is None:
        return
    span.set_attribute("stroma.tokens_used", tokens)
    span.set_status(StatusCode.OK)
    span.end()


async def otel_failure(run_id: str, node_id: str, exc: Exception, failure_class: FailureClass) -> None:
    span = _active_spans.pop((run_id, node_id), None)
    if span is None:
        return
    span.record_exception(exc)
    span.set_attribute("stroma.failure_class", str(failure_class))
    span.set_status(StatusCode.ERROR, description=str(exc))
    span.end()


otel_hooks = NodeHooks(
    on_node_start=otel_start,
    on_node_success=otel_success,
    on_node_failure=otel_failure,
)

runner = (
    StromaRunner.quick()
    .with_redis("redis://localhost:6379", ttl_seconds=7200)
    .with_budget(tokens=100_000, cost_usd=2.00, latency_ms=120_000)
    .with_classifiers([escalate_on_repeat, openai_classifier, anthropic_classifier])
    .with_hooks(otel_hooks)
    .with_context({"http": httpx.AsyncClient(timeout=30.0), "model": "gpt-4o", "cache": {}})
)


class Query(BaseModel):
    q: str


class Answer(BaseModel):
    a: str


calls = {"n": 0}
local = StromaRunner.quick(classifiers=classifiers).with_hooks(otel_hooks)


@local.node("call_llm", input=Query, output=Answer)
async def call_llm(state: Query) -> dict:
    calls["n"] += 1
    if calls["n"] == 1:
        raise RuntimeError("Error code: 429 - rate_limit_exceeded")
    if state.q == "bad key":
        raise RuntimeError("Error code: 401 - invalid_api_key")
    return {"a": state.q.upper()}


async def main() -> None:
    ok = await local.run([call_llm], Query(q="hi"))
    print(ok.status, [e.failure.value for e in ok.trace.failures()], ok.final_state)
    bad = await local.run([call_llm], Query(q="bad key"))
    print(bad.status, [e.failure.value for e in bad.trace.failures()])
    print(type(runner.checkpoint_manager.store).__name__, runner.config.budget.max_tokens_total)
    await runner.config.context["http"].aclose()


asyncio.run(main())
