"""Replay a persisted run file as spans, with its original timestamps, to an OTLP endpoint.

``python -m stroma_otel export run.json`` loads the file with :func:`stroma.load_run`, feeds its
lifecycle events through the same recorder the live hooks use (so the span tree is the one a live
run produces) and exports through an OTLP exporter configured by the standard ``OTEL_*``
variables. The run span keeps the trace and span id stored in the run file's trace context (so
links from resumed runs resolve) unless ``--new-ids`` is given; use that for a run that was
already exported live.

Each run's spans go out in one batch; the command stops at the first run that fails to arrive
within ``--timeout`` and prints what the receiver answered (connection refused, an HTTP status,
a gRPC status such as UNIMPLEMENTED).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from stroma import RunFileError, load_run
from stroma.runfile import RunRecord
from stroma_otel._spans import SpanRecorder

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["export_run", "main"]

PROG = "python -m stroma_otel"


DEFAULT_TIMEOUT_S = 5.0


class _ExportFailed(Exception):
    pass


class _Answers(logging.Handler):
    """Collects what the OTLP exporter logs about the receiver's answers during one export."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _answer(messages: list[str]) -> str:
    """What the receiver answered, in a few words, from the exporter's log lines."""
    text = " | ".join(messages)
    grpc = re.search(r"StatusCode\.([A-Z_]+)", text)
    http = re.search(r"code: (\d{3}), reason: ([^|]*)", text)
    if http:
        return f"HTTP {http.group(1)} {http.group(2).strip()}"
    if "refused" in text.lower():
        return "connection refused (nothing listens there)"
    if grpc and grpc.group(1) == "UNIMPLEMENTED":
        return "gRPC UNIMPLEMENTED (the receiver has no OTLP trace service)"
    if grpc:
        return f"gRPC {grpc.group(1)}"
    return messages[0] if messages else "no answer within the timeout"


def _ids(record: RunRecord) -> tuple[int, int] | None:
    carrier = record.header.carrier
    if not carrier:
        return None
    span = trace.get_current_span(TraceContextTextMapPropagator().extract(carrier))
    ctx = span.get_span_context()
    return (ctx.trace_id, ctx.span_id) if ctx.is_valid else None


def export_run(
    record: RunRecord,
    exporter: SpanExporter,
    *,
    keep_ids: bool = True,
    service_name: str | None = None,
) -> int:
    """Export ``record``'s spans through ``exporter`` in one batch; returns how many spans.

    Raises ``_ExportFailed`` when the exporter reports a failure.
    """
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.id_generator import IdGenerator  # noqa: PLC0415

    class Collect(SpanExporter):
        def __init__(self) -> None:
            self.spans: list[ReadableSpan] = []

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.spans.extend(spans)
            return SpanExportResult.SUCCESS

    class Replayed(IdGenerator):
        """The first trace / span ids are the ones the live run span had."""

        def __init__(self, first: tuple[int, int] | None) -> None:
            self._trace = first[0] if first else None
            self._span = first[1] if first else None
            self._rng = random.Random()

        def generate_trace_id(self) -> int:
            if self._trace is not None:
                value, self._trace = self._trace, None
                return value
            return self._rng.getrandbits(128) or 1

        def generate_span_id(self) -> int:
            if self._span is not None:
                value, self._span = self._span, None
                return value
            return self._rng.getrandbits(64) or 1

    resource_attrs: dict[str, Any] = {}
    if service_name is not None:
        resource_attrs[SERVICE_NAME] = service_name
    resource = Resource.create(resource_attrs)
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "stroma"}))
    collect = Collect()
    provider = TracerProvider(
        resource=resource,
        id_generator=Replayed(_ids(record) if keep_ids else None),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(collect))
    from stroma_otel import __version__  # noqa: PLC0415 - avoid an import cycle

    recorder = SpanRecorder(provider, None, version=__version__, live=False)
    for event in record.events:
        recorder.on_event(event)
    if record.events:
        recorder.end_all(record.events[-1].ts)
    provider.shutdown()
    if exporter.export(collect.spans) is not SpanExportResult.SUCCESS:
        raise _ExportFailed
    return len(collect.spans)


def _endpoint(protocol: str) -> str:
    default = "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318"
    return (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or default
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m stroma_otel`` command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="OpenTelemetry tools for Stroma runs.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    export = commands.add_parser(
        "export",
        help="replay a run file (run.json / run.jsonl) as spans to the OTLP endpoint",
        description=(
            "Replay a persisted Stroma run as spans, with its original timestamps, to the OTLP "
            "endpoint set by OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_PROTOCOL "
            "(grpc | http/protobuf)."
        ),
    )
    export.add_argument("run_file", nargs="+", help="run.json or run.jsonl files")
    export.add_argument("--service-name", help="service.name (default: OTEL_SERVICE_NAME)")
    export.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to deliver each run's spans, retries included (default {DEFAULT_TIMEOUT_S:g})",
    )
    export.add_argument(
        "--new-ids",
        action="store_true",
        help="give the run span a new trace id instead of the one stored in the run file "
        "(use for a run that was already exported live)",
    )
    args = parser.parse_args(argv)

    records: list[RunRecord] = []
    for path in args.run_file:
        try:
            records.append(load_run(path))
        except RunFileError as exc:
            print(f"{PROG} export: error: {exc}", file=sys.stderr)
            return 2
    from stroma_otel._configure import SDK_MISSING, OtelConfigurationError, otlp_span_exporter  # noqa: PLC0415

    try:
        exporter = otlp_span_exporter(args.timeout)
    except OtelConfigurationError as exc:
        print(f"{PROG} export: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"{PROG} export: error: {SDK_MISSING.format(name=exc.name)}", file=sys.stderr)
        return 2
    protocol = "grpc" if ".grpc." in type(exporter).__module__ else "http/protobuf"
    endpoint = _endpoint(protocol)
    # The exporter logs every retry; on the command line one closing line says what happened.
    answers = _Answers()
    exporter_log = logging.getLogger("opentelemetry.exporter")
    exporter_log.addHandler(answers)
    exporter_log.propagate = False
    for record in records:
        answers.messages.clear()
        try:
            count = export_run(record, exporter, keep_ids=not args.new_ids, service_name=args.service_name)
        except _ExportFailed:
            print(
                f"{PROG} export: error: could not deliver the spans of {record.path} to "
                f"{endpoint} ({protocol}) within {args.timeout:g} s: {_answer(answers.messages)}",
                file=sys.stderr,
            )
            return 1
        note = "" if record.finished else " (the run file ends before the run did)"
        print(f"exported {count} spans of run {record.run_id} to {endpoint} ({protocol}){note}")
    return 0
