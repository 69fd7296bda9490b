"""Fixtures for stroma_otel: in-memory SDK providers, a span-tree view, a fake clock, a receiver.

- ``otel``: an SDK TracerProvider (SimpleSpanProcessor + InMemorySpanExporter) and MeterProvider
  (InMemoryMetricReader), with ``hooks()`` building ``otel_hooks`` on them and ``tree()`` /
  ``one()`` / ``metrics()`` to read back what was recorded.
- ``clock``: a FakeClock installed for the test (backoff never sleeps), jitter seeded.
- ``receiver``: a real OTLP receiver (gRPC + HTTP) on loopback ports.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from stroma.hooks import NodeHooks
from stroma.testing import FakeClock, seed_jitter, use_clock
from stroma_otel import otel_hooks
from tests.stroma_otel.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).parents[2]

ONE_NODE_APP = """
import asyncio
from pydantic import BaseModel
from stroma import StromaRunner

class Doc(BaseModel):
    text: str

runner = StromaRunner.quick(pipeline_name="zero-code")

@runner.node("only", input=Doc, output=Doc)
async def only(state: Doc) -> dict:
    return {"text": state.text.upper()}

result = asyncio.run(runner.run([only], Doc(text="no code change")))
print(result.status)
"""
"""A program with one Stroma run of one node, for subprocess tests."""


def otel_env(**extra: str) -> dict[str, str]:
    """This process's environment without OTEL_* / STROMA_OTEL_* settings, the source tree on
    PYTHONPATH, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "STROMA_OTEL_")) or k == "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


EXAMPLE = ROOT / "examples" / "otel_jaeger.py"
_GROUP = "parallel(check_style,check_facts)"
EXAMPLE_TREE: dict[str, str | None] = {
    "invoke_workflow summarize-docs": None,
    "node summarize": "invoke_workflow summarize-docs",
    "attempt summarize #1": "node summarize",
    "attempt summarize #2": "node summarize",
    f"node {_GROUP}": "invoke_workflow summarize-docs",
    f"attempt {_GROUP} #1": f"node {_GROUP}",
    "node check_style": f"attempt {_GROUP} #1",
    "node check_facts": f"attempt {_GROUP} #1",
}
"""Span name -> parent span name of the run examples/otel_jaeger.py makes."""


def run_program(
    args: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a program that prints its run's status; assert it exits 0 with a COMPLETED run."""
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "COMPLETED" in proc.stdout
    return proc


class Doc(BaseModel):
    """Input of a pipeline."""

    text: str


class Out(BaseModel):
    """Output of a node."""

    text: str
    n: int = 0


@dataclass
class SpanNode:
    """A span with its children, for asserting the tree."""

    span: ReadableSpan
    children: list[SpanNode] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The span name."""
        return self.span.name

    @property
    def attrs(self) -> dict[str, Any]:
        """The span attributes as a plain dict."""
        return dict(self.span.attributes or {})

    @property
    def status(self) -> str:
        """UNSET / OK / ERROR."""
        return self.span.status.status_code.name

    @property
    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, attributes) of each span event."""
        return [(e.name, dict(e.attributes or {})) for e in self.span.events]

    def shape(self) -> tuple[Any, ...]:
        """(name, status, (children shapes...)): the tree without attributes."""
        return (self.name, self.status, tuple(c.shape() for c in self.children))

    def child(self, name: str) -> SpanNode:
        """The one child called ``name``."""
        found = [c for c in self.children if c.name == name]
        assert len(found) == 1, (name, [c.name for c in self.children])
        return found[0]


class Otel:
    """In-memory SDK providers and readers for one test."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def hooks(self, *, capture_content: bool | None = None) -> NodeHooks:
        """``otel_hooks`` on these providers."""
        return otel_hooks(self.tracer_provider, self.meter_provider, capture_content)

    def spans(self) -> list[ReadableSpan]:
        """Finished spans in the order they ended."""
        return list(self.exporter.get_finished_spans())

    def tree(self) -> list[SpanNode]:
        """The root spans with their children, siblings in start order (then end order)."""
        spans = self.spans()
        order = {id(s): i for i, s in enumerate(spans)}
        nodes = {s.context.span_id: SpanNode(s) for s in spans}
        roots: list[SpanNode] = []
        for s in spans:
            parent = s.parent.span_id if s.parent is not None else None
            if parent is not None and parent in nodes:
                nodes[parent].children.append(nodes[s.context.span_id])
            else:
                roots.append(nodes[s.context.span_id])

        def key(n: SpanNode) -> tuple[int, int]:
            return (n.span.start_time or 0, order[id(n.span)])

        for n in nodes.values():
            n.children.sort(key=key)
        roots.sort(key=key)
        return roots

    def one(self) -> SpanNode:
        """The single root (the run span)."""
        roots = self.tree()
        assert len(roots) == 1, [r.name for r in roots]
        return roots[0]

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name -> [(point attributes, point)]."""
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        out.setdefault(m.name, []).append((dict(p.attributes or {}), p))
        return out

    def scope_names(self) -> set[str]:
        """Instrumentation scope names of the recorded spans."""
        return {s.instrumentation_scope.name for s in self.spans() if s.instrumentation_scope}


@pytest.fixture
def otel() -> Otel:
    """In-memory tracer and meter providers."""
    return Otel()


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    """A FakeClock for every run in the test; jitter seeded for reproducibility."""
    fake = FakeClock()
    seed_jitter(7)
    with use_clock(fake):
        yield fake


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP receiver (gRPC and HTTP) on loopback."""
    server = OtlpReceiver().start()
    try:
        yield server
    finally:
        server.stop()
