"""Library hygiene: API-only import, nothing configured at import, the instrumentor and entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

import stroma_otel
from stroma import StromaRunner
from stroma.hooks import global_hooks
from stroma.testing import FakeClock
from stroma_otel import attributes as a
from tests.stroma_otel.conftest import Doc, Otel, Out

ROOT = Path(__file__).parents[2]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter from the repository root."""
    import os

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )


def api_modules() -> set[str]:
    """Top-level module names shipped by the opentelemetry-api distribution."""
    files = metadata.files("opentelemetry-api") or []
    names = set()
    for f in files:
        if f.suffix == ".py":
            parts = list(f.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            for end in range(1, len(parts) + 1):  # namespace packages have no __init__.py
                names.add(".".join(parts[:end]))
    return names


def test_import_loads_only_opentelemetry_api() -> None:
    """``import stroma_otel`` (and building hooks) imports no SDK, exporter or other OTel package."""
    proc = run_python(
        """
        import sys, json
        import stroma_otel
        stroma_otel.otel_hooks()
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("opentelemetry"))))
        """
    )
    assert proc.returncode == 0, proc.stderr
    import json

    loaded = set(json.loads(proc.stdout))
    assert loaded, "expected opentelemetry-api to be imported"
    assert not [m for m in loaded if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))]
    assert loaded <= api_modules(), sorted(loaded - api_modules())


def test_nothing_is_configured_at_import() -> None:
    """Importing stroma_otel sets no global provider and registers no process-wide hooks."""
    proc = run_python(
        """
        from opentelemetry import trace, metrics
        import stroma_otel
        from stroma.hooks import global_hooks
        print(type(trace.get_tracer_provider()).__name__, type(metrics.get_meter_provider()).__name__,
              len(global_hooks()))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ProxyTracerProvider", "_ProxyMeterProvider", "0"]


def test_public_names() -> None:
    """``__all__`` is exactly the public surface, sorted."""
    assert stroma_otel.__all__ == sorted(stroma_otel.__all__)
    assert set(stroma_otel.__all__) == {
        "CAPTURE_CONTENT_ENV",
        "OtelConfigurationError",
        "StromaInstrumentor",
        "Telemetry",
        "__version__",
        "configure",
        "otel_hooks",
    }
    for name in a.__all__:
        assert isinstance(getattr(a, name), str | int)


def test_entry_point_names_the_instrumentor() -> None:
    """The opentelemetry_instrumentor entry point ``stroma`` loads StromaInstrumentor."""
    (ep,) = [e for e in metadata.entry_points(group="opentelemetry_instrumentor") if e.name == "stroma"]
    assert ep.value == "stroma_otel:StromaInstrumentor"
    assert ep.load() is stroma_otel.StromaInstrumentor


def test_instrumentor_follows_contrib_conventions() -> None:
    """StromaInstrumentor is a contrib BaseInstrumentor (a singleton) that depends on stroma."""
    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

    instrumentor = stroma_otel.StromaInstrumentor()
    assert isinstance(instrumentor, BaseInstrumentor)
    assert instrumentor is stroma_otel.StromaInstrumentor()
    assert list(instrumentor.instrumentation_dependencies()) == ["stroma"]


async def test_instrument_traces_every_runner_and_uninstrument_stops(otel: Otel, clock: FakeClock) -> None:
    """instrument() reaches runners without with_hooks; uninstrument() removes the hooks again."""
    instrumentor = stroma_otel.StromaInstrumentor()
    before = len(global_hooks())
    instrumentor.instrument(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    try:
        assert instrumentor.is_instrumented_by_opentelemetry
        assert len(global_hooks()) == before + 1
        runner = StromaRunner.quick(run_id="run-global", pipeline_name="docs")

        @runner.node("step", input=Doc, output=Out)
        async def step(state: Doc) -> dict[str, Any]:
            return {"text": state.text}

        await runner.run([step], Doc(text="x"))
        assert otel.one().shape() == (
            "invoke_workflow docs", "UNSET", (("node step", "UNSET", (("attempt step #1", "UNSET", ()),)),)
        )  # fmt: skip
    finally:
        instrumentor.uninstrument()
    assert not instrumentor.is_instrumented_by_opentelemetry
    assert len(global_hooks()) == before
    otel.exporter.clear()
    await runner.run([step], Doc(text="x"))
    assert otel.spans() == []


def test_configure_sets_up_sdk_exporters_and_instruments() -> None:
    """configure() registers SDK providers with batch/periodic OTLP export and the hooks, and shuts down."""
    proc = run_python(
        """
        from opentelemetry import trace, metrics
        import stroma_otel
        from stroma.hooks import global_hooks
        t = stroma_otel.configure(service_name="svc")
        tp = trace.get_tracer_provider()
        print(tp is t.tracer_provider, metrics.get_meter_provider() is t.meter_provider)
        print(tp.resource.attributes["service.name"], len(global_hooks()))
        proc = tp._active_span_processor._span_processors[0]
        print(type(proc).__name__, type(proc._batch_processor._exporter).__module__)
        t.shutdown()
        print(len(global_hooks()))
        """,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_METRIC_EXPORT_INTERVAL="600000",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "True True",
        "svc 1",
        "BoundedBatchSpanProcessor opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "0",
    ]


def test_configure_reads_the_service_name_from_the_environment() -> None:
    """Without an argument the service name comes from OTEL_SERVICE_NAME, else "stroma"."""
    code = """
        import stroma_otel
        t = stroma_otel.configure()
        print(t.tracer_provider.resource.attributes["service.name"])
        t.shutdown()
        """
    assert run_python(code, OTEL_SERVICE_NAME="from-env").stdout.strip() == "from-env"
    proc = run_python("import os; os.environ.pop('OTEL_SERVICE_NAME', None)\n" + textwrap.dedent(code))
    assert proc.stdout.strip() == "stroma", proc.stderr


def test_configure_refuses_an_unknown_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unsupported OTEL_EXPORTER_OTLP_PROTOCOL is a clear ValueError, and nothing is set up."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match=r"'grpc'.*'http/protobuf'"):
        stroma_otel.configure()
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
