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

One line to a local Jaeger or Tempo (sets up the SDK from the ``OTEL_*`` variables, and
instruments every runner)::

    telemetry = stroma_otel.configure(service_name="my-pipeline")
    ...
    telemetry.shutdown()   # flush and stop (also runs at interpreter exit)

Any combination of the four (``configure()``, ``StromaInstrumentor``, ``opentelemetry-instrument``,
``with_hooks(otel_hooks())``) traces each run once, with one warning naming the duplicate.

Configuration
-------------
- :func:`configure` uses the SDK's own configurator (the one ``opentelemetry-instrument`` uses),
  so every standard ``OTEL_*`` variable means what the specification says; Stroma's defaults are
  in :mod:`stroma_otel._configure` (traces over OTLP, metrics and logs off unless asked for,
  ``service.name`` ``stroma``, a shutdown bounded to 2 s). An SDK provider that is already
  installed is used as it is.
- Content is off by default: no state, context values, prompts or exception messages in any span,
  span event or metric attribute. ``capture_content=True`` or ``STROMA_OTEL_CAPTURE_CONTENT=true``
  adds input/output state, exception messages and validation messages, truncated to
  ``attributes.CONTENT_MAX_CHARS`` characters. (The GenAI variable
  ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is for your LLM client's instrumentation;
  it does not turn on Stroma's state capture.)
- ``python -m stroma_otel export run.json`` replays a persisted run file as spans with its
  original timestamps to the configured OTLP endpoint.

API
---
- :func:`otel_hooks` — a :class:`stroma.NodeHooks` that records spans and metrics.
- :class:`StromaInstrumentor` — ``instrument()`` / ``uninstrument()`` process-wide (needs
  ``opentelemetry-instrumentation``, part of the ``stroma[otel]`` extra).
- :func:`configure` — SDK providers from the environment (or the installed ones) plus
  instrumentation; returns a :class:`Telemetry`.
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
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace

from stroma import __version__ as _stroma_version
from stroma.hooks import NodeHooks, register_hooks, unregister_hooks
from stroma_otel._configure import OtelConfigurationError, Telemetry
from stroma_otel._metrics import StromaMetrics
from stroma_otel._spans import SpanRecorder, warn_duplicate

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "OtelConfigurationError",
    "StromaInstrumentor",
    "Telemetry",
    "__version__",
    "configure",
    "otel_hooks",
]

__version__ = _stroma_version

logger = logging.getLogger("stroma_otel")

CAPTURE_CONTENT_ENV = "STROMA_OTEL_CAPTURE_CONTENT"
"""``true`` turns on Stroma's content capture (state, exception and validation messages)."""


def _capture(capture_content: bool | None) -> bool:
    if capture_content is not None:
        return capture_content
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in {"true", "1", "yes"}


def _hooks(
    tracer_provider: trace.TracerProvider | None,
    meter_provider: metrics.MeterProvider | None,
    capture_content: bool | None,
    origin: str,
) -> NodeHooks:
    recorder = SpanRecorder(
        tracer_provider,
        StromaMetrics(meter_provider, __version__),
        capture_content=_capture(capture_content),
        version=__version__,
        origin=origin,
    )
    return NodeHooks(on_event=recorder.on_event)


def otel_hooks(
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    capture_content: bool | None = None,
) -> NodeHooks:
    """Hooks that turn a run's lifecycle events into spans, span events and metrics.

    ``tracer_provider`` / ``meter_provider`` default to the global ones (looked up lazily, so a
    provider set later is used). Content capture follows ``capture_content``, or
    ``STROMA_OTEL_CAPTURE_CONTENT=true`` when it is None. If Stroma is also instrumented
    process-wide, each run is still traced once (by whichever sees it first) and one warning says so.

    Example::

        runner = StromaRunner.quick().with_hooks(otel_hooks())
    """
    return _hooks(tracer_provider, meter_provider, capture_content, "with_hooks(otel_hooks())")


# -- process-wide installation (shared by StromaInstrumentor and configure) --------------------

_install_lock = threading.Lock()
_installed: tuple[NodeHooks, str] | None = None


def _install(hooks: NodeHooks, origin: str) -> Callable[[], None] | None:
    """Register ``hooks`` process-wide unless Stroma is already instrumented (then warn once,
    naming both); returns what uninstalls them, or None."""
    global _installed  # noqa: PLW0603 - one process-wide instrumentation by design
    with _install_lock:
        if _installed is None:
            _installed = (hooks, origin)
            register_hooks(hooks)
            return lambda: _uninstall(hooks)
        owner = _installed[1]
    warn_duplicate(owner, origin)
    return None


def _uninstall(hooks: NodeHooks) -> None:
    """Unregister the process-wide hooks if they are ``hooks``."""
    global _installed  # noqa: PLW0603
    with _install_lock:
        if _installed is not None and _installed[0] is hooks:
            unregister_hooks(_installed[0])
            _installed = None


_INSTRUMENTOR = "StromaInstrumentor / opentelemetry-instrument"


class _InstrumentorMethods:
    """The body of :class:`StromaInstrumentor` (kept free of opentelemetry-instrumentation)."""

    _uninstall_hooks: Callable[[], None] | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        """The library this instruments: Stroma itself (any version; they ship together)."""
        return ("stroma",)

    def _instrument(self, **kwargs: Any) -> None:
        capture = kwargs.get("capture_content")
        hooks = _hooks(
            kwargs.get("tracer_provider"),
            kwargs.get("meter_provider"),
            None if capture is None else bool(capture),
            _INSTRUMENTOR,
        )
        self._uninstall_hooks = _install(hooks, _INSTRUMENTOR)

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstall, self._uninstall_hooks = self._uninstall_hooks, None
        if uninstall is not None:
            uninstall()


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

            ``instrument(tracer_provider=None, meter_provider=None, capture_content=None)``
            registers :func:`otel_hooks` process-wide; ``uninstrument()`` removes them. The
            ``opentelemetry-instrument`` command calls ``instrument()`` through the entry point.
            """

            def instrument(self, **kwargs: Any) -> Any:
                """Register the hooks process-wide; a second call warns once and does nothing."""
                if self.is_instrumented_by_opentelemetry:
                    warn_duplicate(_INSTRUMENTOR, "StromaInstrumentor().instrument() again")
                    return None
                return super().instrument(**kwargs)

        StromaInstrumentor.__module__ = __name__
        StromaInstrumentor.__qualname__ = "StromaInstrumentor"
        globals()["StromaInstrumentor"] = StromaInstrumentor
        return StromaInstrumentor


# -- configure ---------------------------------------------------------------------------------


def configure(service_name: str | None = None, *, capture_content: bool | None = None) -> Telemetry:
    """Set up OpenTelemetry from the standard ``OTEL_*`` variables and instrument every runner.

    - No SDK provider installed yet: the SDK's own configurator (the one
      ``opentelemetry-instrument`` uses) builds and installs the providers, so ``OTEL_TRACES_EXPORTER``
      / ``OTEL_METRICS_EXPORTER`` / ``OTEL_LOGS_EXPORTER`` (``otlp``, ``console``, ``none``, lists),
      per-signal endpoints and protocols, sampler, resource and ``OTEL_SDK_DISABLED`` mean what the
      specification says. Stroma's defaults where they are unset: traces over OTLP (gRPC on
      ``localhost:4317``), no metrics or logs, ``service.name`` ``stroma``, and a shutdown that
      waits 2 s at most for the last export (``OTEL_EXPORTER_OTLP_TIMEOUT``, in seconds, sets it).
    - A tracer provider already installed (by the application, ``opentelemetry-instrument`` or a
      vendor's setup): nothing new is built; Stroma records on the installed providers, so its
      spans share the application's trace and service. One warning says so if ``service_name``
      could not apply.
    - Stroma is instrumented process-wide (once: with :class:`StromaInstrumentor` or an earlier
      ``configure()`` already in place it warns once and adds nothing), so no runner needs
      ``with_hooks``. ``capture_content`` as in :func:`otel_hooks`.

    Returns a :class:`Telemetry`: call ``shutdown()`` (or use it as a context manager) to flush
    the last spans before exit. Raises ``ImportError`` naming the extra when the SDK or exporters
    are missing, :class:`OtelConfigurationError` (a ``ValueError``) for an exporter or protocol
    the SDK does not know.

    Example::

        with stroma_otel.configure(service_name="summarizer"):
            result = await runner.run([fetch, summarize], Request(url=url))
    """
    from stroma_otel import _configure  # noqa: PLC0415

    try:
        import opentelemetry.sdk.trace  # noqa: F401, PLC0415
        from opentelemetry._logs import get_logger_provider  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(_configure.SDK_MISSING.format(name=exc.name)) from exc
    if _configure.sdk_disabled():  # OTEL_SDK_DISABLED=true: the SDK is off, so is Stroma's tracing
        return Telemetry(None, None, owned=False)
    installed = trace.get_tracer_provider()
    if not isinstance(installed, trace.ProxyTracerProvider):
        resource = getattr(installed, "resource", None)
        current = resource.attributes.get("service.name") if resource is not None else None
        if service_name is not None and service_name != current:
            logger.warning(
                "stroma_otel.configure(service_name=%r) did not apply: an OpenTelemetry tracer "
                "provider is already installed (service.name=%r, set by the application, "
                "opentelemetry-instrument or a vendor's setup); Stroma's spans go to it",
                service_name,
                current,
            )
        hooks = _hooks(None, None, capture_content, "configure()")
        return Telemetry(
            installed, metrics.get_meter_provider(), owned=False, uninstall=_install(hooks, "configure()")
        )
    try:
        wants_metrics = _configure.build_providers(service_name)
    except ImportError as exc:
        raise ImportError(_configure.SDK_MISSING.format(name=exc.name)) from exc
    tracer_provider = trace.get_tracer_provider()
    meter_provider = metrics.get_meter_provider()
    # Without a metrics exporter the hooks record no metric at all (no work for nothing).
    hooks = _hooks(
        tracer_provider,
        meter_provider if wants_metrics else metrics.NoOpMeterProvider(),
        capture_content,
        "configure()",
    )
    return Telemetry(
        tracer_provider,
        meter_provider,
        owned=True,
        uninstall=_install(hooks, "configure()"),
        logger_provider=get_logger_provider(),
    )
