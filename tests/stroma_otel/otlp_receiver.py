"""A real OTLP receiver for tests: gRPC and HTTP (protobuf) on loopback ports.

Built on ``opentelemetry-proto``: the gRPC TraceService / MetricsService servicers run on a grpcio
server, and an ``http.server`` in a thread accepts ``POST /v1/traces`` and ``/v1/metrics``. What
arrives is decoded into plain dicts (:class:`ReceivedSpan`) so tests assert on the wire format.
"""

from __future__ import annotations

import gzip
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

ExportTrace = trace_service_pb2.ExportTraceServiceRequest
ExportMetrics = metrics_service_pb2.ExportMetricsServiceRequest


def any_value(value: AnyValue) -> Any:
    """A python value from an OTLP AnyValue."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind is None:
        return None
    return getattr(value, kind)


def attrs(kvs: Any) -> dict[str, Any]:
    """A dict from repeated KeyValue."""
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        out[kv.key] = any_value(kv.value)
    return out


@dataclass
class ReceivedSpan:
    """One span as it arrived over the wire."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int
    links: list[tuple[str, str, dict[str, Any]]]
    resource: dict[str, Any]
    scope: str
    scope_version: str
    schema_url: str
    start_ns: int
    end_ns: int
    kind: int
    transport: str = ""
    raw: bytes = field(default=b"", repr=False)


class OtlpReceiver:
    """Collects OTLP export requests over gRPC and HTTP; start() picks free loopback ports."""

    def __init__(self) -> None:
        self.trace_requests: list[tuple[str, ExportTrace]] = []
        self.metric_requests: list[tuple[str, ExportMetrics]] = []
        self._cond = threading.Condition()
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Start both servers."""
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: ExportTrace, context: Any) -> Any:
                receiver._add_traces("grpc", request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: ExportMetrics, context: Any) -> Any:
                receiver._add_metrics("grpc", request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        self.grpc_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc = server

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    request = ExportTrace.FromString(body)
                    receiver._add_traces("http", request)
                    reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    metrics_request = ExportMetrics.FromString(body)
                    receiver._add_metrics("http", metrics_request)
                    reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_port = int(http.server_address[1])
        threading.Thread(target=http.serve_forever, daemon=True).start()
        self._http = http
        return self

    def stop(self) -> None:
        """Stop both servers."""
        if self._grpc is not None:
            self._grpc.stop(grace=None)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    @property
    def grpc_endpoint(self) -> str:
        """OTEL_EXPORTER_OTLP_ENDPOINT for protocol grpc."""
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """OTEL_EXPORTER_OTLP_ENDPOINT for protocol http/protobuf."""
        return f"http://127.0.0.1:{self.http_port}"

    # -- collected data ---------------------------------------------------------------------

    def _add_traces(self, transport: str, request: ExportTrace) -> None:
        with self._cond:
            self.trace_requests.append((transport, request))
            self._cond.notify_all()

    def _add_metrics(self, transport: str, request: ExportMetrics) -> None:
        with self._cond:
            self.metric_requests.append((transport, request))
            self._cond.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, decoded."""
        out: list[ReceivedSpan] = []
        with self._cond:
            requests = list(self.trace_requests)
        for transport, request in requests:
            for rs in request.resource_spans:
                resource = attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(
                            ReceivedSpan(
                                name=s.name,
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent_span_id=s.parent_span_id.hex(),
                                attributes=attrs(s.attributes),
                                events=[(e.name, attrs(e.attributes)) for e in s.events],
                                status_code=s.status.code,
                                links=[
                                    (ln.trace_id.hex(), ln.span_id.hex(), attrs(ln.attributes))
                                    for ln in s.links
                                ],
                                resource=resource,
                                scope=ss.scope.name,
                                scope_version=ss.scope.version,
                                schema_url=ss.schema_url,
                                start_ns=s.start_time_unix_nano,
                                end_ns=s.end_time_unix_nano,
                                kind=s.kind,
                                transport=transport,
                                raw=s.SerializeToString(),
                            )
                        )
        return out

    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        """Metric name -> the attribute sets of its data points, over every request received."""
        out: dict[str, list[dict[str, Any]]] = {}
        with self._cond:
            requests = list(self.metric_requests)
        for _, request in requests:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        points = getattr(m, kind).data_points if kind else []
                        out.setdefault(m.name, []).extend(attrs(p.attributes) for p in points)
        return out

    def raw_bytes(self) -> bytes:
        """Every request received, serialized (for searching a marker anywhere in it)."""
        with self._cond:
            parts = [r.SerializeToString() for _, r in self.trace_requests]
            parts += [r.SerializeToString() for _, r in self.metric_requests]
        return b"".join(parts)

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> bool:
        """Block until ``predicate(self)`` is true (re-checked on every request), or time out."""
        deadline = time.monotonic() + timeout
        with self._cond:  # an RLock: the predicate may read spans() while we hold it
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True
