"""OpenTelemetry for Stroma: every run, node, attempt, retry, failure classification, budget
decision, model fallback and checkpoint as spans, span events and metrics.

Usage
-----
Per runner (composes with your own hooks)::

    from stroma_otel import otel_hooks

    runner = StromaRunner.quick().with_hooks(otel_hooks())

Every runner in the process, contrib-instrumentor style::

    from stroma_otel import StromaInstrumentor

    StromaInstrumentor().instrument()   # tracer_provider=..., meter_provider=... optional
    ...
    StromaInstrumentor().uninstrument()

With no code change: ``opentelemetry-instrument python app.py`` finds the ``stroma`` entry point
of the ``opentelemetry_instrumentor`` group and instruments every Stroma run.

One line to a local Jaeger or Tempo (sets up the SDK, an OTLP exporter, and instruments every
runner)::

    telemetry = stroma_otel.configure(service_name="my-pipeline")
    ...
    telemetry.shutdown()   # flush and stop (also runs at interpreter exit)

Configuration
-------------
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (default ``http://localhost:4317`` for gRPC,
  ``http://localhost:4318`` for HTTP), ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` | ``http/protobuf``;
  default ``grpc``), ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME`` and the other standard
  ``OTEL_*`` variables are read by :func:`configure` (and by ``opentelemetry-instrument``).
- Content is off by default: no state, context values, prompts or exception messages in any span,
  span event or metric attribute. ``otel_hooks(capture_content=True)`` or
  ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` adds input/output state, exception
  messages and validation messages, truncated to ``attributes.CONTENT_MAX_CHARS`` characters.
- ``python -m stroma_otel export run.json`` replays a persisted run file as spans with its
  original timestamps to the configured OTLP endpoint.

API
---
- :func:`otel_hooks` — a :class:`stroma.NodeHooks` that records spans and metrics.
- :class:`StromaInstrumentor` — ``instrument()`` / ``uninstrument()`` process-wide (needs
  ``opentelemetry-instrumentation``, part of the ``stroma[otel]`` extra).
- :func:`configure` — SDK + OTLP exporters, registered globally; returns a :class:`Telemetry`.
- :mod:`stroma_otel.attributes` — every span, event, attribute and metric name.

Importing this package imports ``opentelemetry-api`` only; the SDK and exporters are imported
inside :func:`configure` (and the export command), and nothing is configured at import.

Span tree (all INTERNAL)::

    invoke_workflow <pipeline>
    ├── node <node_id>
    │   ├── attempt <node_id> #1      (your own LLM/HTTP spans nest here)
    │   └── attempt <node_id> #2
    ├── node <parallel group>
    │   └── attempt <group> #1
    │       ├── node <child a>
    │       └── node <child b>
    └── node <node_id>                (stroma.node.restored=true on a resumed run)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace

from stroma import __version__ as _stroma_version
from stroma.hooks import NodeHooks, register_hooks, unregister_hooks
from stroma_otel._metrics import StromaMetrics
from stroma_otel._spans import SpanRecorder

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

__all__ = ["StromaInstrumentor", "Telemetry", "__version__", "configure", "otel_hooks"]

__version__ = _stroma_version

logger = logging.getLogger("stroma_otel")

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def _capture_from_env() -> bool:
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in {"true", "1", "yes"}


def otel_hooks(
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    capture_content: bool = False,
) -> NodeHooks:
    """Hooks that turn a run's lifecycle events into spans, span events and metrics.

    ``tracer_provider`` / ``meter_provider`` default to the global ones (looked up lazily, so a
    provider set later is used). Content capture is on when ``capture_content=True`` or
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.

    Example::

        runner = StromaRunner.quick().with_hooks(otel_hooks())
    """
    recorder = SpanRecorder(
        tracer_provider,
        StromaMetrics(meter_provider, __version__),
        capture_content=capture_content or _capture_from_env(),
        version=__version__,
    )
    return NodeHooks(on_event=recorder.on_event)


# -- process-wide installation (shared by StromaInstrumentor and configure) --------------------

_install_lock = threading.Lock()
_installed: NodeHooks | None = None


def _install(hooks: NodeHooks) -> bool:
    """Register ``hooks`` process-wide unless Stroma is already instrumented."""
    global _installed  # noqa: PLW0603 - one process-wide instrumentation by design
    with _install_lock:
        if _installed is not None:
            return False
        _installed = hooks
        register_hooks(hooks)
        return True


def _uninstall() -> None:
    global _installed  # noqa: PLW0603
    with _install_lock:
        if _installed is not None:
            unregister_hooks(_installed)
            _installed = None


class _InstrumentorMethods:
    """The body of :class:`StromaInstrumentor` (kept free of opentelemetry-instrumentation)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        """The library this instruments: Stroma itself (any version; they ship together)."""
        return ("stroma",)

    def _instrument(self, **kwargs: Any) -> None:
        _install(
            otel_hooks(
                tracer_provider=kwargs.get("tracer_provider"),
                meter_provider=kwargs.get("meter_provider"),
                capture_content=bool(kwargs.get("capture_content", False)),
            )
        )

    def _uninstrument(self, **kwargs: Any) -> None:
        _uninstall()


if TYPE_CHECKING:
    # opentelemetry-instrumentation's instrumentor module is untyped (``# type: ignore``), so
    # type checkers see the public surface of BaseInstrumentor spelled out here.

    class StromaInstrumentor(_InstrumentorMethods):
        """Instruments every Stroma run in the process (contrib ``BaseInstrumentor``)."""

        @property
        def is_instrumented_by_opentelemetry(self) -> bool:
            """Whether ``instrument()`` is in effect."""

        def instrument(self, **kwargs: Any) -> None:
            """Register the hooks process-wide."""

        def uninstrument(self, **kwargs: Any) -> None:
            """Remove them."""

else:

    def __getattr__(name: str) -> Any:
        # StromaInstrumentor subclasses opentelemetry-instrumentation's BaseInstrumentor; build it
        # on first use so that ``import stroma_otel`` needs opentelemetry-api only.
        if name != "StromaInstrumentor":
            raise AttributeError(f"module 'stroma_otel' has no attribute {name!r}")
        try:
            from opentelemetry.instrumentation.instrumentor import (  # noqa: PLC0415
                BaseInstrumentor,
            )
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "stroma_otel.StromaInstrumentor needs opentelemetry-instrumentation; install the "
                "otel extra: pip install 'stroma[otel]' (otel_hooks() works without it)"
            ) from exc

        class StromaInstrumentor(_InstrumentorMethods, BaseInstrumentor):
            """Instruments every Stroma run in the process (contrib ``BaseInstrumentor``).

            ``instrument(tracer_provider=None, meter_provider=None, capture_content=False)``
            registers :func:`otel_hooks` process-wide; ``uninstrument()`` removes them. The
            ``opentelemetry-instrument`` command calls ``instrument()`` through the entry point.
            """

        StromaInstrumentor.__module__ = __name__
        StromaInstrumentor.__qualname__ = "StromaInstrumentor"
        globals()["StromaInstrumentor"] = StromaInstrumentor
        return StromaInstrumentor


# -- configure ---------------------------------------------------------------------------------


class Telemetry:
    """What :func:`configure` set up: the SDK providers, with ``force_flush`` and ``shutdown``.

    Use it as a context manager, or call :meth:`shutdown` before the process exits to flush the
    last spans and metrics (the SDK also does this at interpreter exit).
    """

    def __init__(
        self,
        tracer_provider: SdkTracerProvider,
        meter_provider: SdkMeterProvider,
        hooks: NodeHooks | None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self._hooks = hooks

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything buffered now; True when both providers flushed in time."""
        traces = self.tracer_provider.force_flush(timeout_millis)
        metrics_ok = self.meter_provider.force_flush(timeout_millis)
        return bool(traces and metrics_ok)

    def shutdown(self) -> None:
        """Stop instrumenting runners (if :func:`configure` did), flush and shut the providers down."""
        if self._hooks is not None and _installed is self._hooks:
            _uninstall()
        self._hooks = None
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


def _protocol(signal: str) -> str:
    protocol = (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    if protocol not in {"grpc", "http/protobuf"}:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported by stroma_otel.configure(); "
            "use 'grpc' (port 4317) or 'http/protobuf' (port 4318)"
        )
    return protocol


def _span_exporter() -> Any:
    if _protocol("TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def _metric_exporter() -> Any:
    if _protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter,
        )

        return OTLPMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter()


def _resource(service_name: str | None) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415

    if service_name is not None:
        return Resource.create({SERVICE_NAME: service_name})
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "stroma"}))
    return resource


def configure(service_name: str | None = None) -> Telemetry:
    """Set up the OpenTelemetry SDK with OTLP exporters and instrument every Stroma runner.

    - a ``TracerProvider`` with a ``BatchSpanProcessor`` and an OTLP span exporter, and a
      ``MeterProvider`` with a periodic OTLP metric reader, both registered as the global
      providers (if a global provider was already set, OpenTelemetry keeps the old one and logs
      a warning; the returned providers are still usable);
    - gRPC or HTTP per ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` default, or ``http/protobuf``),
      endpoint per ``OTEL_EXPORTER_OTLP_ENDPOINT``, headers per ``OTEL_EXPORTER_OTLP_HEADERS``;
    - service name: ``service_name``, else ``OTEL_SERVICE_NAME``, else ``"stroma"``;
    - :func:`otel_hooks` registered process-wide (skipped when Stroma is already instrumented,
      e.g. by :class:`StromaInstrumentor`), so no runner needs ``with_hooks``.

    Returns a :class:`Telemetry`: call ``shutdown()`` (or use it as a context manager) to flush
    the last spans before exit. Raises ``ImportError`` naming the extra when the SDK or exporters
    are missing, ``ValueError`` for an unsupported protocol.

    Example::

        with stroma_otel.configure(service_name="summarizer"):
            result = await runner.run([fetch, summarize], Request(url=url))
    """
    try:
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

        span_exporter = _span_exporter()
        metric_exporter = _metric_exporter()
    except ImportError as exc:
        raise ImportError(
            f"stroma_otel.configure() needs the OpenTelemetry SDK and OTLP exporters ({exc.name} "
            "is missing); install the otel extra: pip install 'stroma[otel]'"
        ) from exc
    resource = _resource(service_name)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(metric_exporter)]
    )
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    hooks = otel_hooks(tracer_provider, meter_provider)
    installed = _install(hooks)
    return Telemetry(tracer_provider, meter_provider, hooks if installed else None)
