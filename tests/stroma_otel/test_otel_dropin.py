"""stroma_otel as a drop-in: configure() on the SDK's configurator, one tree per run however
tracing is turned on, a pre-installed provider reused, every OTEL_*_EXPORTER value, store I/O
inside the run span, and interrupted replays.

These tests install real global providers, so a fixture resets OpenTelemetry's globals (and
Stroma's process-wide instrumentation) around each of them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry._logs import _internal as logs_internal
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from pydantic import BaseModel

import stroma_otel
from stroma import CheckpointManager, SqliteStore, StromaRunner, load_run
from stroma.testing import FakeClock
from stroma_otel import _spans
from stroma_otel import attributes as a
from stroma_otel._export import export_run
from stroma_otel._spans import SpanRecorder
from tests.stroma_otel.conftest import Doc, Otel, Out

WAYS = ("opentelemetry-instrument", "configure", "instrumentor", "with_hooks")


def _reset_globals() -> None:
    # As OpenTelemetry's own test utilities do: the set-once guards, the providers, and the
    # proxies (which remember the provider that was set).
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()
    logs_internal._LOGGER_PROVIDER_SET_ONCE = Once()
    logs_internal._LOGGER_PROVIDER = None
    logs_internal._PROXY_LOGGER_PROVIDER = logs_internal.ProxyLoggerProvider()


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No global provider, no process-wide instrumentation, no OTEL_* variable, nothing exported."""
    import os

    for name in list(os.environ):
        if name.startswith(("OTEL_", "STROMA_OTEL_")):
            monkeypatch.delenv(name)
    for signal in ("TRACES", "METRICS", "LOGS"):
        monkeypatch.setenv(f"OTEL_{signal}_EXPORTER", "none")
    _reset_globals()
    _spans._warned.clear()
    yield
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
    meter_provider = metrics.get_meter_provider()
    if isinstance(meter_provider, MeterProvider):
        meter_provider.shutdown()
    instrumentor = stroma_otel.StromaInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    installed = stroma_otel._installed
    if installed is not None:
        stroma_otel._uninstall(installed[0])
    _reset_globals()
    _spans._warned.clear()


def capture_spans() -> InMemorySpanExporter:
    """An in-memory exporter on the global SDK provider (installing one if there is none)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def run_once(runner: StromaRunner) -> None:
    """Run a one-node pipeline on ``runner``."""

    @runner.node("only", input=Doc, output=Out)
    async def only(state: Doc) -> dict[str, Any]:
        return {"text": state.text}

    result = await runner.run([only], Doc(text="x"))
    assert str(result.status) == "COMPLETED"


def dup_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The duplicate-instrumentation warnings logged so far."""
    return [r.getMessage() for r in caplog.records if "instrumented twice" in r.getMessage()]


COMBOS = [c for n in range(1, 5) for c in itertools.combinations(WAYS, n)]


@pytest.mark.parametrize("ways", COMBOS, ids=["+".join(c) for c in COMBOS])
async def test_every_combination_traces_each_run_once(
    fresh: None, clock: FakeClock, caplog: pytest.LogCaptureFixture, ways: tuple[str, ...]
) -> None:
    """Any mix of the four ways to turn tracing on gives one tree per run and warns per duplicate."""
    from opentelemetry.instrumentation.auto_instrumentation import _initialize

    caplog.set_level(logging.WARNING)
    if "opentelemetry-instrument" in ways:
        _initialize(swallow_exceptions=False)  # what the command's sitecustomize does at startup
    if "configure" in ways:
        stroma_otel.configure()
    if "instrumentor" in ways:
        stroma_otel.StromaInstrumentor().instrument()
    exporter = capture_spans()
    runner = StromaRunner.quick(pipeline_name="combo")
    if "with_hooks" in ways:
        runner = runner.with_hooks(stroma_otel.otel_hooks())
    for _ in range(2):
        await run_once(runner)
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.parent is None]
    assert [s.name for s in roots] == ["invoke_workflow combo"] * 2
    assert sorted(s.name for s in spans) == sorted(
        ["invoke_workflow combo", "node only", "attempt only #1"] * 2
    )
    warnings = dup_warnings(caplog)
    assert len(warnings) == len(set(warnings))  # each duplicate is named once, not once per run
    assert bool(warnings) == (len(ways) > 1)
    assert "Attempting to instrument while already instrumented" not in caplog.text


async def test_the_same_hooks_added_twice_trace_once(
    fresh: None, otel: Otel, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """with_hooks(h).with_hooks(h) and two otel_hooks() objects still give one tree, one warning."""
    hooks = otel.hooks()
    runner = (
        StromaRunner.quick(pipeline_name="twice").with_hooks(hooks).with_hooks(hooks).with_hooks(otel.hooks())
    )
    await run_once(runner)
    await run_once(runner)
    assert [s.name for s in otel.spans() if s.parent is None] == ["invoke_workflow twice"] * 2
    assert len(otel.spans()) == 6
    assert len(dup_warnings(caplog)) == 2  # the same object again; another otel_hooks()


async def test_a_pre_installed_provider_is_reused(
    fresh: None, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """configure() under an installed provider builds nothing: app and Stroma share trace and service."""
    provider = TracerProvider(resource=Resource.create({"service.name": "the-app"}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    telemetry = stroma_otel.configure(service_name="ignored")
    assert telemetry.tracer_provider is provider
    assert not telemetry.owned
    (warning,) = [r.getMessage() for r in caplog.records if "did not apply" in r.getMessage()]
    assert "'ignored'" in warning
    assert "'the-app'" in warning
    with provider.get_tracer("app").start_as_current_span("handle request") as request:
        await run_once(StromaRunner.quick(pipeline_name="inside"))
    telemetry.shutdown()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"handle request", "invoke_workflow inside", "node only", "attempt only #1"}
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in spans.values()} == {trace_id}
    assert spans["invoke_workflow inside"].parent.span_id == request.get_span_context().span_id
    assert {s.resource.attributes["service.name"] for s in spans.values()} == {"the-app"}
    assert not exporter._stopped  # the app's provider is the app's to shut down


def processors(provider: Any) -> list[str]:
    """'<processor> <exporter>' of each span processor on an SDK provider."""
    out = []
    for p in provider._active_span_processor._span_processors:
        exporter = p._batch_processor._exporter if hasattr(p, "_batch_processor") else p.span_exporter
        out.append(f"{type(p).__name__} {type(exporter).__module__}.{type(exporter).__name__}")
    return out


GRPC_SPANS = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter.OTLPSpanExporter"
HTTP_SPANS = "opentelemetry.exporter.otlp.proto.http.trace_exporter.OTLPSpanExporter"
CONSOLE_SPANS = "opentelemetry.sdk.trace.export.ConsoleSpanExporter"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OTEL_TRACES_EXPORTER": ""}, [f"BoundedBatchSpanProcessor {GRPC_SPANS}"]),  # Stroma's default
        (
            {"OTEL_TRACES_EXPORTER": "", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            [f"BoundedBatchSpanProcessor {HTTP_SPANS}"],
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
            [f"BoundedBatchSpanProcessor {HTTP_SPANS}"],
        ),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, [f"BoundedBatchSpanProcessor {CONSOLE_SPANS}"]),
        (
            {"OTEL_TRACES_EXPORTER": "console,otlp"},
            [f"BoundedBatchSpanProcessor {CONSOLE_SPANS}", f"BoundedBatchSpanProcessor {GRPC_SPANS}"],
        ),
    ],
    ids=["unset", "unset-http", "otlp-traces-http", "none", "console", "list"],
)
def test_traces_exporter_values(
    fresh: None, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: list[str]
) -> None:
    """OTEL_TRACES_EXPORTER and the OTLP protocol variables choose the span exporters, as specified."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    telemetry = stroma_otel.configure()
    assert processors(telemetry.tracer_provider) == expected
    telemetry.shutdown()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("none", []),
        ("console", ["PeriodicExportingMetricReader ConsoleMetricExporter"]),
        ("otlp", ["PeriodicExportingMetricReader OTLPMetricExporter"]),
        (
            "console,otlp",
            [
                "PeriodicExportingMetricReader ConsoleMetricExporter",
                "PeriodicExportingMetricReader OTLPMetricExporter",
            ],
        ),
    ],
)
async def test_metrics_exporter_values(
    fresh: None, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    """Metrics are exported only when OTEL_METRICS_EXPORTER names an exporter; OTLP ones time out fast."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", value)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")
    telemetry = stroma_otel.configure()
    readers = telemetry.meter_provider._metric_readers  # type: ignore[union-attr]
    assert [f"{type(r).__name__} {type(r._exporter).__name__}" for r in readers] == expected
    for reader in readers:
        if type(reader._exporter).__name__ == "OTLPMetricExporter":
            assert reader._exporter._timeout == stroma_otel._configure.SHUTDOWN_TIMEOUT_S
    installed = stroma_otel._installed
    assert installed is not None
    recorder = installed[0].on_event.__self__  # type: ignore[union-attr]
    assert (recorder._metrics is not None) == bool(expected)  # no metric work when none is exported
    telemetry.shutdown()


@pytest.mark.parametrize("value", ["none", "console", "otlp"])
def test_logs_exporter_values(fresh: None, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """OTEL_LOGS_EXPORTER builds a log pipeline only when it names an exporter."""
    from opentelemetry._logs import get_logger_provider

    monkeypatch.setenv("OTEL_LOGS_EXPORTER", value)
    telemetry = stroma_otel.configure()
    processor = get_logger_provider()._multi_log_record_processor  # type: ignore[attr-defined]
    names = [type(p).__name__ for p in processor._log_record_processors]
    assert names == ([] if value == "none" else ["BoundedBatchLogRecordProcessor"])
    telemetry.shutdown()


def test_sdk_disabled_builds_nothing(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SDK_DISABLED=true: no provider is installed and Stroma is not instrumented."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    telemetry = stroma_otel.configure()
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert telemetry.tracer_provider is None
    assert stroma_otel._installed is None
    telemetry.shutdown()


async def test_sampler_and_resource_variables_apply(
    fresh: None, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_TRACES_SAMPLER and OTEL_RESOURCE_ATTRIBUTES reach the provider configure() builds."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,deployment.environment=test")
    telemetry = stroma_otel.configure()
    provider = telemetry.tracer_provider
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "from-attrs"
    assert provider.resource.attributes["deployment.environment"] == "test"
    exporter = capture_spans()
    await run_once(StromaRunner.quick(pipeline_name="sampled-out"))
    assert exporter.get_finished_spans() == ()
    telemetry.shutdown()


@pytest.mark.parametrize(
    ("name", "value"),
    [("OTEL_TRACES_EXPORTER", "jaeger-thrift"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
)
def test_an_unknown_exporter_or_protocol_is_a_typed_error(
    fresh: None, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """The SDK's refusal becomes an OtelConfigurationError naming the value and the valid ones."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv(name, value)
    with pytest.raises(stroma_otel.OtelConfigurationError, match=value) as info:
        stroma_otel.configure()
    assert "'otlp', 'console' or 'none'" in str(info.value)
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


class SpyStore:
    """An async store that records, at every save, the node id, the current span's name, its
    trace id and the fake clock's time; each save takes ``save_s`` seconds of that clock."""

    def __init__(self, clock: FakeClock, save_s: float = 0.0) -> None:
        self.clock = clock
        self.save_s = save_s
        self.saves: list[tuple[str, str, int, float]] = []
        self._data: dict[tuple[str, str], BaseModel] = {}

    async def save(self, run_id: str, node_id: str, state: BaseModel) -> None:
        """Record the current span and the time, keep the state."""
        span = trace.get_current_span()
        name = getattr(span, "name", "")
        self.saves.append((node_id, name, span.get_span_context().trace_id, self.clock.time()))
        self.clock.advance(self.save_s)
        self._data[run_id, node_id] = state

    async def load(self, run_id: str, node_id: str) -> BaseModel | None:
        """The saved state, if any."""
        return self._data.get((run_id, node_id))

    async def delete(self, run_id: str) -> None:
        """Forget a run."""
        for key in [k for k in self._data if k[0] == run_id]:
            del self._data[key]


async def test_store_io_of_a_run_happens_inside_its_run_span(otel: Otel, clock: FakeClock) -> None:
    """The manifest is written under the run span; a node's commit under the node span, after
    its attempt span has ended (the attempt's own time), never under the attempt."""
    store = SpyStore(clock, save_s=2.0)
    runner = StromaRunner.quick(store=store, pipeline_name="stored").with_hooks(otel.hooks())

    @runner.node("only", input=Doc, output=Out)
    async def only(state: Doc) -> dict[str, Any]:
        clock.advance(1.0)  # the node's own work: one second
        return {"text": state.text}

    result = await runner.run([only], Doc(text="x"))
    assert str(result.status) == "COMPLETED"
    run = otel.one()
    trace_id = run.span.context.trace_id
    manifest = [s for s in store.saves if s[0] == "__stroma_run__"]
    assert manifest
    assert manifest[0][1] == "invoke_workflow stored"  # written right after RunStarted
    (node,) = [c for c in run.children if c.span.name == f"{a.NODE_SPAN} only"]
    (attempt,) = node.children
    assert attempt.span.name.startswith(a.ATTEMPT_SPAN)
    (commit,) = [s for s in store.saves if s[0] == "only"]
    assert commit[1] == f"{a.NODE_SPAN} only"  # the node's span, not the attempt's
    assert commit[2] == trace_id
    assert attempt.span.end_time is not None
    assert attempt.span.start_time is not None
    assert attempt.span.end_time - attempt.span.start_time == 1_000_000_000  # the node's second
    assert attempt.span.end_time <= int(commit[3] * 1e9)  # the commit comes after the attempt
    assert node.span.end_time is not None
    assert node.span.end_time >= int((commit[3] + 2.0) * 1e9)  # and inside the node
    assert not trace.get_current_span().get_span_context().is_valid  # detached after the run


class SpanSpySqlite(SqliteStore):
    """A real SQLite store that notes the current span at every lease call."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lease_calls: list[tuple[str, str]] = []

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> int:
        """Note the span, take the lease."""
        self.lease_calls.append(("acquire", getattr(trace.get_current_span(), "name", "")))
        return await super().acquire_lease(run_id, owner, ttl_s)

    async def release_lease(self, run_id: str, owner: str) -> None:
        """Note the span, give the lease back."""
        self.lease_calls.append(("release", getattr(trace.get_current_span(), "name", "")))
        await super().release_lease(run_id, owner)


async def test_a_run_gives_its_lease_back_inside_its_run_span(
    otel: Otel, clock: FakeClock, tmp_path: Path
) -> None:
    """With a real leasing store the lease goes back before RunFinished, under the run span (no
    root trace of its own); the lease is free afterwards."""
    store = SpanSpySqlite(tmp_path / "runs.db")
    runner = StromaRunner.quick(store=store, pipeline_name="leased").with_hooks(otel.hooks())
    await run_once(runner)
    assert store.lease_calls == [("acquire", ""), ("release", "invoke_workflow leased")]
    (run_id,) = {r.run_id for r in await CheckpointManager(store).list_runs()}
    assert await store.acquire_lease(run_id, "someone-else", 30.0)  # it was given back


def write_killed_run(tmp_path: Path) -> Path:
    """A run.jsonl whose process died mid-attempt (the run file stops after AttemptStarted)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import asyncio, os
        from pydantic import BaseModel
        from stroma import StromaRunner

        class Doc(BaseModel):
            text: str

        runner = StromaRunner.quick(run_id="killed", pipeline_name="docs").with_trace_dir({str(tmp_path)!r})

        @runner.node("first", input=Doc, output=Doc)
        async def first(state: Doc) -> dict:
            return {{"text": state.text}}

        @runner.node("dies", input=Doc, output=Doc)
        async def dies(state: Doc) -> dict:
            os._exit(9)

        asyncio.run(runner.run([first, dies], Doc(text="x")))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 9, proc.stderr
    (path,) = tmp_path.glob("*.jsonl")
    return path


def test_a_killed_run_replays_with_its_open_spans_interrupted(tmp_path: Path) -> None:
    """Exporting a killed run's .jsonl ends the run, node and attempt left open as interrupted ERRORs."""
    record = load_run(write_killed_run(tmp_path))
    assert not record.finished
    exporter = InMemorySpanExporter()
    assert export_run(record, exporter) == 5
    spans = {s.name: s for s in exporter.get_finished_spans()}
    for name in ("invoke_workflow docs", "node dies", "attempt dies #1"):
        assert spans[name].status.status_code.name == "ERROR", name
        assert spans[name].attributes[a.ERROR_TYPE] == a.ERROR_TYPE_INTERRUPTED, name
    assert spans["invoke_workflow docs"].attributes[a.RUN_STATUS] == a.RUN_STATUS_INTERRUPTED
    for name in ("node first", "attempt first #1"):
        assert spans[name].status.status_code.name == "UNSET", name


def test_a_replay_does_not_take_a_live_run_over(otel: Otel) -> None:
    """A replaying recorder never claims a run id: a live recorder tracing it keeps its tree."""
    from stroma import events as ev

    live = SpanRecorder(otel.tracer_provider)
    replay = SpanRecorder(otel.tracer_provider, live=False)
    started = ev.RunStarted(run_id="same", ts=1.0, pipeline=("a",), pipeline_name="docs")
    live.on_event(started)
    replay.on_event(ev.RunStarted(run_id="same", ts=1.0, pipeline=("a",), pipeline_name="docs"))
    finished: dict[str, Any] = {"status": "COMPLETED", "duration_ms": 0.0, "total_tokens": 0}
    for recorder in (live, replay):
        recorder.on_event(ev.RunFinished(run_id="same", ts=2.0, total_cost_usd=0.0, failures=0, **finished))
    assert [s.name for s in otel.spans()] == ["invoke_workflow docs"] * 2
    assert "same" not in _spans._owners
