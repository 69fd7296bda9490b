"""``configure()``: the OpenTelemetry SDK's own environment-driven configuration, Stroma's defaults.

The SDK configurator that ``opentelemetry-distro`` and ``opentelemetry-instrument`` use
(``opentelemetry.sdk._configuration._OTelSDKConfigurator``) reads every ``OTEL_*`` variable as the
specification defines it. Stroma adds three defaults, each only where the user said nothing:

- traces go to OTLP (``OTEL_TRACES_EXPORTER`` unset means ``otlp``, not the SDK's ``none``: the
  point of calling ``configure()`` is to send spans somewhere);
- ``service.name`` is ``stroma`` instead of ``unknown_service`` when neither the argument,
  ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` names one;
- shutdown is bounded: span and log processors wait at most ``SHUTDOWN_TIMEOUT_S`` for their last
  export, metric exporters time out after as long (metrics are cumulative: the next export resends
  what one lost), so a program exits promptly when no collector listens.
  ``OTEL_EXPORTER_OTLP_TIMEOUT`` (or the per-signal variable; seconds, as the Python exporters
  read it) sets that bound instead.

Metrics and logs are exported only when ``OTEL_METRICS_EXPORTER`` / ``OTEL_LOGS_EXPORTER`` ask
for it (the SDK's own default); ``OTEL_SDK_DISABLED=true`` builds nothing at all.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import TracebackType
from typing import Any

from opentelemetry import metrics, trace

from stroma.errors import ConfigurationError

__all__ = [
    "SDK_MISSING",
    "SHUTDOWN_TIMEOUT_S",
    "OtelConfigurationError",
    "Telemetry",
    "build_providers",
    "export_timeout_s",
    "otlp_span_exporter",
]

logger = logging.getLogger("stroma_otel")

SHUTDOWN_TIMEOUT_S = 2.0
"""How long shutdown waits for the last export when ``OTEL_EXPORTER_OTLP_TIMEOUT`` is unset."""

SDK_MISSING = (
    "stroma_otel needs the OpenTelemetry SDK and OTLP exporters ({name} is missing); install the "
    "otel extra: pip install 'stroma[otel]'"
)


class OtelConfigurationError(ConfigurationError, ValueError):
    """The ``OTEL_*`` configuration cannot be applied (an unknown exporter or protocol)."""


def _sdk_configuration() -> Any:
    # The SDK's configurator module is private and untyped: reached through Any on purpose.
    return importlib.import_module("opentelemetry.sdk._configuration")


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def sdk_disabled() -> bool:
    """``OTEL_SDK_DISABLED=true``: the SDK is off for every signal."""
    return _env("OTEL_SDK_DISABLED").lower() == "true"


def export_timeout_s(signal: str) -> float | None:
    """``OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT`` or ``OTEL_EXPORTER_OTLP_TIMEOUT`` (seconds), else None."""
    raw = _env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT") or _env("OTEL_EXPORTER_OTLP_TIMEOUT")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise OtelConfigurationError(
            f"OTEL_EXPORTER_OTLP_TIMEOUT={raw!r} is not a number of seconds; set it to e.g. '5'"
        ) from None


def _refused(exc: Exception) -> OtelConfigurationError:
    return OtelConfigurationError(
        f"the OpenTelemetry SDK refused the OTEL_* configuration: {exc}. Exporters are 'otlp', "
        "'console' or 'none' (OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER, OTEL_LOGS_EXPORTER); "
        "OTLP protocols are 'grpc' (port 4317) or 'http/protobuf' (port 4318) "
        "(OTEL_EXPORTER_OTLP_PROTOCOL)"
    )


def otlp_exporter_name(signal: str) -> str:
    """The exporter entry point ``otlp`` means for ``signal`` under ``OTEL_EXPORTER_OTLP_*PROTOCOL``."""
    try:
        return str(_sdk_configuration()._get_exporter_entry_point("otlp", signal))
    except RuntimeError as exc:
        raise _refused(exc) from exc


def otlp_span_exporter(timeout_s: float | None = None) -> Any:
    """An OTLP span exporter for the configured protocol, found the way the SDK finds it."""
    config = _sdk_configuration()
    name = otlp_exporter_name("traces")
    try:
        ((_, exporter_class),) = config._import_config_components([name], "opentelemetry_traces_exporter")
    except RuntimeError as exc:
        raise _refused(exc) from exc
    return exporter_class() if timeout_s is None else exporter_class(timeout=timeout_s)


def _bounded(processor: type, timeout_s: float) -> type:
    """``processor`` (a batch span / log record processor) whose shutdown waits ``timeout_s`` at most."""

    class Bounded(processor):  # type: ignore[misc]
        def shutdown(self) -> None:
            # After the wait the exporter is shut down too, which aborts its retry backoff.
            self._batch_processor.shutdown(timeout_millis=timeout_s * 1000)

    Bounded.__name__ = Bounded.__qualname__ = f"Bounded{processor.__name__}"
    return Bounded


def _metric_exporter_args(timeout_s: float) -> dict[type, dict[str, Any]]:
    args: dict[type, dict[str, Any]] = {}
    for module in (
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    ):
        try:
            args[importlib.import_module(module).OTLPMetricExporter] = {"timeout": timeout_s}
        except ImportError:  # pragma: no cover - depends on the installed exporters
            continue
    return args


def build_providers(service_name: str | None) -> bool:
    """Install SDK providers from the environment through the SDK's configurator.

    Returns whether a metrics pipeline was asked for (``OTEL_METRICS_EXPORTER`` names one).
    Raises :class:`OtelConfigurationError` when the SDK refuses the configuration.
    """
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor  # noqa: PLC0415
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    config = _sdk_configuration()
    kwargs: dict[str, Any] = {}
    if not _env("OTEL_TRACES_EXPORTER"):
        kwargs["trace_exporter_names"] = [otlp_exporter_name("traces")]
    if service_name is not None:
        kwargs["resource_attributes"] = {SERVICE_NAME: service_name}
    elif str(Resource.create().attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        kwargs["resource_attributes"] = {SERVICE_NAME: "stroma"}
    traces_s = export_timeout_s("traces") or SHUTDOWN_TIMEOUT_S
    logs_s = export_timeout_s("logs") or SHUTDOWN_TIMEOUT_S
    kwargs["export_span_processor"] = _bounded(BatchSpanProcessor, traces_s)
    kwargs["export_log_record_processor"] = _bounded(BatchLogRecordProcessor, logs_s)
    if export_timeout_s("metrics") is None:
        kwargs["exporter_args_map"] = _metric_exporter_args(SHUTDOWN_TIMEOUT_S)
    try:
        config._OTelSDKConfigurator().configure(**kwargs)
    except RuntimeError as exc:
        raise _refused(exc) from exc
    return _env("OTEL_METRICS_EXPORTER").lower() not in {"", "none"}


class Telemetry:
    """What :func:`stroma_otel.configure` set up, with ``force_flush`` and ``shutdown``.

    ``tracer_provider`` / ``meter_provider`` are the providers Stroma records on. ``owned`` is
    False when they were already installed (by the application, ``opentelemetry-instrument`` or a
    vendor's setup): then :meth:`shutdown` only stops instrumenting and leaves flushing and
    shutting them down to their owner. Use it as a context manager, or call :meth:`shutdown`
    before the process exits (the SDK also shuts its providers down at interpreter exit).
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
        *,
        owned: bool,
        uninstall: Any = None,
        logger_provider: Any = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.owned = owned
        self._logger_provider = logger_provider
        self._uninstall = uninstall

    def _providers(self) -> list[Any]:
        providers = (self.tracer_provider, self.meter_provider, self._logger_provider)
        return [p for p in providers if p is not None]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything buffered now; True when every provider flushed in time."""
        results = [p.force_flush(timeout_millis) for p in self._providers() if hasattr(p, "force_flush")]
        return all(results)

    def shutdown(self) -> None:
        """Stop instrumenting runners (if :func:`configure` did); flush and shut down the providers
        :func:`configure` built (bounded, see ``SHUTDOWN_TIMEOUT_S``)."""
        uninstall, self._uninstall = self._uninstall, None
        if uninstall is not None:
            uninstall()
        if not self.owned:  # their owner flushes and shuts them down
            return
        for provider in self._providers():
            if hasattr(provider, "shutdown"):
                provider.shutdown()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
