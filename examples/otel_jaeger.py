"""A Stroma pipeline traced to a local Jaeger (or Tempo) with one line: ``stroma_otel.configure()``.

Start Jaeger with its OTLP ports open (UI on http://localhost:16686)::

    docker run --rm --name jaeger -p 16686:16686 -p 4317:4317 -p 4318:4318 \\
        jaegertracing/all-in-one:latest

(``jaegertracing/jaeger:latest``, Jaeger v2, takes the same ports; for Grafana Tempo expose
4317/4318 the same way and look at the traces in Grafana.)

Then run this file; the standard OpenTelemetry variables choose where spans go::

    OTEL_SERVICE_NAME=stroma-example \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 \\
    OTEL_EXPORTER_OTLP_PROTOCOL=grpc \\
    python examples/otel_jaeger.py

(``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`` with ``OTEL_EXPORTER_OTLP_ENDPOINT=
http://localhost:4318`` uses OTLP/HTTP; ``OTEL_EXPORTER_OTLP_HEADERS`` adds auth headers for a
hosted backend.) Open Jaeger, pick the service, and you see the run span ``invoke_workflow
summarize-docs`` with one span per node and per attempt, the flaky node's retry (its backoff as a
``stroma.retry.scheduled`` event), the model each attempt used and its token usage. Nothing of
the documents or the context is in the spans: content capture is off unless
``STROMA_OTEL_CAPTURE_CONTENT=true``. Metrics are sent too with ``OTEL_METRICS_EXPORTER=otlp``
(off by default: Jaeger takes traces only). With no collector listening the program still exits
within a few seconds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

import stroma_otel
from stroma import FailureClass, FailurePolicy, NodeContext, StromaRunner, parallel


class Document(BaseModel):
    """The input: a document to summarize."""

    text: str


class Summary(BaseModel):
    """What the summarizer produces."""

    text: str
    summary: str


class Review(BaseModel):
    """Two reviewers' verdicts, produced in parallel."""

    style_ok: bool = False
    facts_ok: bool = False


def flaky_upstream(exc: Exception, ctx: NodeContext) -> FailureClass | None:
    """A provider hiccup is worth retrying."""
    return FailureClass.RECOVERABLE if isinstance(exc, ConnectionError) else None


runner = (
    StromaRunner.quick(pipeline_name="summarize-docs")
    .with_classifiers([flaky_upstream])
    .with_policy_map({FailureClass.RECOVERABLE: FailurePolicy(max_retries=2, backoff_seconds=0.05)})
    .with_context({"model": "gpt-4o-mini"})
)
_calls = {"summarize": 0}


@runner.node("summarize", input=Document, output=Summary)
async def summarize(state: Document, ctx: dict[str, Any]) -> tuple[dict[str, Any], int, int, str]:
    """Pretend to call an LLM; the first call fails like a dropped connection."""
    _calls["summarize"] += 1
    if _calls["summarize"] == 1:
        raise ConnectionError("connection reset by peer")
    words = state.text.split()
    return {"text": state.text, "summary": " ".join(words[:5])}, len(words), 5, ctx["model"]


@runner.node("check_style", input=Summary, output=Review)
async def check_style(state: Summary) -> dict[str, Any]:
    """One reviewer."""
    return {"style_ok": len(state.summary) < 200}


@runner.node("check_facts", input=Summary, output=Review)
async def check_facts(state: Summary) -> dict[str, Any]:
    """Another reviewer, running at the same time."""
    return {"facts_ok": True}


async def main() -> None:
    """Configure OpenTelemetry, run the pipeline, flush the spans."""
    with stroma_otel.configure():  # shutdown() on exit flushes the last spans and metrics
        result = await runner.run(
            [summarize, parallel(check_style, check_facts)],
            Document(text="Stroma makes agent pipelines reliable and observable end to end."),
        )
    print(f"run {result.run_id}: {result.status} ({result.total_tokens} tokens)")


if __name__ == "__main__":
    asyncio.run(main())
