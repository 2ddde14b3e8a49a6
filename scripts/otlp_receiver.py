"""A receiver of OTLP/HTTP traces on loopback, for the tests and `make bench`: it takes what an
OpenTelemetry SDK exports (`POST /v1/traces`, protobuf, gzip or not), decodes it with
opentelemetry-proto and keeps each span, so that a check can follow one trace across the
writer and the worker as a collector would see it."""

from __future__ import annotations

import collections
import gzip
import http.server
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

#: OTLP's span kinds, by their number in the protocol.
KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
#: OTLP's status codes.
STATUSES = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver decoded it; ids in hex, as W3C writes them."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    attributes: dict[str, Any] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace id, span id)
    status: str = "UNSET"
    events: list[str] = field(default_factory=list)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    """Listens on 127.0.0.1 (a free port) until `stop`; `url` is the OTLP endpoint to give an
    exporter (OTEL_EXPORTER_OTLP_ENDPOINT). With `keep_spans` False it only counts, by trace
    and service, for runs of a million spans."""

    def __init__(self, *, keep_spans: bool = True) -> None:
        self.keep_spans = keep_spans
        self._spans: list[ReceivedSpan] = []
        self.services_by_trace: dict[str, set[str]] = collections.defaultdict(set)
        self.exports = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/traces":
                    self._answer(404, b"")
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._take(ExportTraceServiceRequest.FromString(body))
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _take(self, request: ExportTraceServiceRequest) -> None:
        decoded: list[ReceivedSpan] = []
        services: list[tuple[str, str]] = []
        for resource_spans in request.resource_spans:
            resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    services.append((span.trace_id.hex(), service))
                    if self.keep_spans:
                        decoded.append(
                            ReceivedSpan(
                                service=service,
                                name=span.name,
                                kind=KINDS.get(span.kind, str(span.kind)),
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                attributes={item.key: _value(item.value) for item in span.attributes},
                                links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                                status=STATUSES.get(span.status.code, str(span.status.code)),
                                events=[event.name for event in span.events],
                            )
                        )
        with self._lock:
            self.exports += 1
            self._spans.extend(decoded)
            for trace_id, service in services:
                self.services_by_trace[trace_id].add(service)

    def spans(self, trace_id: Optional[str] = None) -> list[ReceivedSpan]:
        """The spans received so far (of one trace, when given)."""
        with self._lock:
            return [span for span in self._spans if trace_id is None or span.trace_id == trace_id]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
