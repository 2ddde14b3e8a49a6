"""OpenTelemetry traces of each message, from the client's request to the worker's processing,
on only when the standard variables ask for them (`tracing_requested`).

What each part emits, after OpenTelemetry's messaging conventions (`messaging.system` aws_sqs):

- the writer: a SERVER span per request, continuing the client's `traceparent`, whose context
  travels through SQS with the one message it creates; a PRODUCER `create {queue}` span per
  message of a request that creates several, each one's context travelling with it; and a
  CLIENT `send {queue}` span per SendMessageBatch, linked to every message it carries.
- the worker: a CLIENT `receive {queue}` span per ReceiveMessage, linked to what it brought; a
  CONSUMER `process {queue}` span per attempt, parented on the message's creation context, so
  that it is in the message's trace and the step's own spans join it; `settle {queue}` spans
  for the batched deletes and visibility changes, linked to what they settle; and the
  dead-letter copy's `send`, in the message's trace, its copy keeping the context.

The context travels in the `AWSTraceHeader` system attribute (X-Ray's format), which counts in
neither SQS's size nor its ten attributes; or, where the SQS endpoint drops that attribute (moto
and fauxqs do), in a `traceparent` message attribute (TRACE_CONTEXT_IN).

Off, nothing of OpenTelemetry is imported, and each hook is a call that does nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any, ContextManager, Iterator, Optional, Sequence

from .logs import set_trace_ids
from .rules import payload_bytes
from .settings import Settings
from .sqs import OutgoingMessage, ReceivedMessage
from .trace_header import fields

log = logging.getLogger(__name__)

MESSAGING_SYSTEM = "aws_sqs"
#: What the conventions have no attribute for, in a namespace of our own: SQS's
#: ApproximateReceiveCount of this delivery, and the time from SentTimestamp to this attempt.
RECEIVE_COUNT = "sqs_message_service.receive_count"
TIME_IN_QUEUE = "sqs_message_service.time_in_queue_ms"
#: The message attribute that carries the context where AWSTraceHeader does not travel.
TRACEPARENT = "traceparent"
#: TRACE_CONTEXT_IN's values.
IN_TRACE_HEADER, IN_ATTRIBUTE = "AWSTraceHeader", "attribute"


def tracing_requested(settings: Settings) -> bool:
    """Tracing is on when OTEL_TRACES_EXPORTER names an exporter (otlp, console) or an OTLP
    endpoint is given, and OTEL_SDK_DISABLED is not true."""
    if settings.otel_sdk_disabled.strip().lower() == "true":
        return False
    exporters = {name.strip() for name in settings.otel_traces_exporter.split(",") if name.strip()}
    if exporters == {"none"}:
        return False
    return bool(exporters & {"otlp", "console"}) or bool(
        settings.otel_exporter_otlp_endpoint or settings.otel_exporter_otlp_traces_endpoint
    )


def context_carrier(settings: Settings) -> str:
    """Where a message's trace context travels: TRACE_CONTEXT_IN, or by default AWSTraceHeader on
    real SQS and a `traceparent` attribute on an endpoint of one's own."""
    if settings.trace_context_in != "auto":
        return settings.trace_context_in
    return IN_ATTRIBUTE if settings.sqs_endpoint_url else IN_TRACE_HEADER


class _Quiet:
    """What a hook yields when there is no span: it notes nothing."""

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def record_exception(self, exception: BaseException) -> None:
        pass


QUIET = _Quiet()
#: What a hook gives when tracing is off: a context with no span, used again and again.
QUIETLY = contextlib.nullcontext(QUIET)


#: What a `traceparent` attribute adds to a message's size, as SQS counts it.
TRACEPARENT_BYTES = payload_bytes("", {TRACEPARENT: "00-" + "0" * 32 + "-" + "0" * 16 + "-01"})


class _AsgiHeaders:
    """A propagator's getter on ASGI's raw headers (lower-case names, bytes), reading only the
    few it asks for rather than decoding every header of every request."""

    def get(self, carrier: Sequence[tuple[bytes, bytes]], key: str) -> Optional[list[str]]:
        name = key.encode("latin1")
        values = [value.decode("latin1") for header, value in carrier if header == name]
        return values or None

    def keys(self, carrier: Sequence[tuple[bytes, bytes]]) -> list[str]:
        return [header.decode("latin1") for header, _ in carrier]


ASGI_HEADERS = _AsgiHeaders()


class NoTracing:
    """Tracing off: every hook does nothing, and nothing of OpenTelemetry is imported."""

    enabled = False
    carrier = IN_TRACE_HEADER
    #: The message attribute the context takes from the user's ten, and its bytes: with
    #: TRACE_CONTEXT_IN=attribute only.
    context_attribute: Optional[str] = None
    context_bytes = 0

    def server(self, method: str, headers: Sequence[tuple[bytes, bytes]]) -> ContextManager[Any]:
        return QUIETLY

    def created(self, message: OutgoingMessage, queue: str) -> OutgoingMessage:
        return message

    def carrying_current(self, message: OutgoingMessage) -> OutgoingMessage:
        return message

    def sending(self, queue: str, messages: Sequence[OutgoingMessage]) -> ContextManager[Any]:
        return QUIETLY

    def receiving(self, queue: str) -> ContextManager[Any]:
        return QUIETLY

    def received(self, span: Any, messages: Sequence[ReceivedMessage]) -> None:
        pass

    def processing(self, message: ReceivedMessage, queue: str) -> ContextManager[Any]:
        return QUIETLY

    def settling(self, operation: str, queue: str, messages: Sequence[ReceivedMessage]) -> ContextManager[Any]:
        return QUIETLY

    def in_trace_of(self, message: ReceivedMessage) -> ContextManager[None]:
        return contextlib.nullcontext()

    def traceparent(self, message: ReceivedMessage) -> Optional[str]:
        """The W3C `traceparent` an HTTP step is sent: here, the context the message carries
        from its creation (None when it carries none), passed on untouched."""
        carried = carried_context(message)
        if carried is None:
            return None
        trace_id, span_id, sampled = carried
        return f"00-{trace_id:032x}-{span_id:016x}-{int(sampled):02x}"

    def failed(self, span: Any, error: BaseException, error_type: Optional[str] = None) -> None:
        pass

    def failed_status(self, span: Any, description: str) -> None:
        pass

    def shutdown(self) -> None:
        pass


NO_TRACING = NoTracing()


def configure(settings: Settings, part: str) -> NoTracing:
    """The tracing of `part` ("writer" or "worker") as the environment asks: the SDK set up
    from the OTEL_* variables (and made the global tracer provider, so that the processing
    step's own spans join), or NO_TRACING."""
    if not tracing_requested(settings):
        return NO_TRACING
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"queue-{part}"}))
    provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
    exporters = {name.strip() for name in settings.otel_traces_exporter.split(",") if name.strip()} or {"otlp"}
    if "otlp" in exporters:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_EXPORTER_OTLP_*, OTEL_BSP_*
    if "console" in exporters:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    tracing = Tracing(provider, carrier=context_carrier(settings))
    log.info("tracing on: %s, service %s, context in %s", ", ".join(sorted(exporters)),
             resource.attributes.get(SERVICE_NAME), tracing.carrier)
    return tracing


class Tracing(NoTracing):
    """Tracing on, with `provider` (an SDK TracerProvider; tests give one with an in-memory
    exporter), the context of each message carried in `carrier`."""

    enabled = True

    def __init__(self, provider: Any, *, carrier: str = IN_TRACE_HEADER) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode

        self.provider = provider
        self.carrier = carrier
        if carrier == IN_ATTRIBUTE:
            self.context_attribute, self.context_bytes = TRACEPARENT, TRACEPARENT_BYTES
        self.tracer = provider.get_tracer("sqs_message_service")
        self._trace, self._propagate = trace, propagate
        self._Link, self._SpanKind, self._Status, self._ERROR = Link, SpanKind, Status, StatusCode.ERROR
        set_trace_ids(self._current_ids)

    # The writer

    @contextlib.contextmanager
    def server(self, method: str, headers: Sequence[tuple[bytes, bytes]]) -> Iterator[Any]:
        """A SERVER span for one request (its ASGI `headers`), continuing the client's context
        (traceparent, tracestate, baggage, as OTEL_PROPAGATORS says); current while the request
        is served."""
        parent = self._propagate.extract(headers, getter=ASGI_HEADERS)  # type: ignore[arg-type]  # its protocol
        with self.tracer.start_as_current_span(method, context=parent, kind=self._SpanKind.SERVER,
                                               attributes={"http.request.method": method},
                                               record_exception=False, set_status_on_exception=False) as span:
            yield span

    def carrying_current(self, message: OutgoingMessage) -> OutgoingMessage:
        """The message carrying the current span's context as its creation context: for a
        request that creates one message, the request's own SERVER span (the conventions'
        custom creation context), so that a message costs no span of its own. Outside any
        span, it carries nothing."""
        context = self._trace.get_current_span().get_span_context()
        return self._carrying(message, context) if context.is_valid else message

    def created(self, message: OutgoingMessage, queue: str) -> OutgoingMessage:
        """A PRODUCER span for the message's creation, in the current trace (the request's),
        and the message carrying its context: for each message of a request that creates
        several."""
        span = self.tracer.start_span(f"create {queue}", kind=self._SpanKind.PRODUCER, attributes={
            "messaging.system": MESSAGING_SYSTEM, "messaging.operation.name": "create",
            "messaging.operation.type": "create", "messaging.destination.name": queue,
        })
        context = span.get_span_context()
        span.end()
        return self._carrying(message, context)

    def sending(self, queue: str, messages: Sequence[OutgoingMessage]) -> ContextManager[Any]:
        """A `send` span for one SendMessageBatch, linked to each message's creation: a CLIENT
        span, one call for many traces. Where it runs in a message's trace (the dead-letter
        copy's), it is that trace's child."""
        return self._call_span("send", "send", queue, messages)

    # The worker

    def receiving(self, queue: str) -> ContextManager[Any]:
        """A CLIENT `receive` span for one ReceiveMessage (`received` notes what it brought)."""
        return self._call_span("receive", "receive", queue, None)

    def received(self, span: Any, messages: Sequence[ReceivedMessage]) -> None:
        span.set_attribute("messaging.batch.message_count", len(messages))
        for message in messages:  # links can be added while the span records
            context = self._context_of(message)
            if context is not None:
                span.add_link(context)

    @contextlib.contextmanager
    def processing(self, message: ReceivedMessage, queue: str) -> Iterator[Any]:
        """A CONSUMER `process` span for one attempt, current while the step runs, so that the
        step's own spans join it. Its parent is the message's creation context, which the
        conventions allow for a span that processes a single message outside any other span (as
        here, on a processor thread): the attempt is then in the message's trace, from the
        client's request on, rather than in a trace of its own linked to it."""
        parent = self._trace.set_span_in_context(self._trace.NonRecordingSpan(context)) if (
            context := self._context_of(message)) is not None else None
        attributes: dict[str, Any] = {
            "messaging.system": MESSAGING_SYSTEM, "messaging.operation.name": "process",
            "messaging.operation.type": "process", "messaging.destination.name": queue,
            "messaging.message.id": message.id, RECEIVE_COUNT: message.receive_count,
        }
        if message.sent_at_s is not None:
            attributes[TIME_IN_QUEUE] = max(0, round(1000 * (time.time() - message.sent_at_s)))
        with self.tracer.start_as_current_span(f"process {queue}", context=parent, kind=self._SpanKind.CONSUMER,
                                               attributes=attributes, record_exception=False,
                                               set_status_on_exception=False) as span:
            yield span

    def settling(self, operation: str, queue: str, messages: Sequence[ReceivedMessage]) -> ContextManager[Any]:
        """A CLIENT `settle` span for one batched delete or visibility change, linked to each
        message it settles."""
        return self._call_span(operation, "settle", queue, messages)

    def _call_span(
        self, operation: str, operation_type: str, queue: str, messages: Optional[Sequence[Any]]
    ) -> ContextManager[Any]:
        """A CLIENT span for one SQS call on `queue`, current while it runs; with `messages`,
        linked to each one's creation and counting them."""
        attributes: dict[str, Any] = {
            "messaging.system": MESSAGING_SYSTEM, "messaging.operation.name": operation,
            "messaging.operation.type": operation_type, "messaging.destination.name": queue,
        }
        links = []
        if messages is not None:
            attributes["messaging.batch.message_count"] = len(messages)
            links = [self._Link(context) for message in messages if (context := self._context_of(message)) is not None]
        return self.tracer.start_as_current_span(
            f"{operation_type} {queue}", kind=self._SpanKind.CLIENT, links=links, attributes=attributes,
            record_exception=False, set_status_on_exception=False,
        )

    @contextlib.contextmanager
    def in_trace_of(self, message: ReceivedMessage) -> Iterator[None]:
        """The message's creation context made current: what runs here joins its trace."""
        context = self._context_of(message)
        if context is None:
            yield
            return
        from opentelemetry import context as otel_context

        token = otel_context.attach(self._trace.set_span_in_context(self._trace.NonRecordingSpan(context)))
        try:
            yield
        finally:
            otel_context.detach(token)

    def traceparent(self, message: ReceivedMessage) -> Optional[str]:
        """The current span's context (the attempt's `process` span) as a W3C `traceparent`, so
        that an HTTP step's own spans join the attempt; outside a span, the message's own."""
        context = self._trace.get_current_span().get_span_context()
        return w3c_traceparent(context) if context.is_valid else super().traceparent(message)

    # Both

    def failed(self, span: Any, error: BaseException, error_type: Optional[str] = None) -> None:
        """The span's operation failed with `error`: recorded, status and `error.type` set."""
        span.record_exception(error)
        span.set_attribute("error.type", error_type or type(error).__qualname__)
        span.set_status(self._Status(self._ERROR, str(error)[:256]))

    def failed_status(self, span: Any, description: str) -> None:
        """The span's operation failed, as `description` says (no exception to record)."""
        span.set_status(self._Status(self._ERROR, description))

    def shutdown(self) -> None:
        """Export what is left (at the process's end)."""
        self.provider.shutdown()

    # The carrier

    def _carrying(self, message: OutgoingMessage, context: Any) -> OutgoingMessage:
        if self.carrier == IN_ATTRIBUTE:
            carried = {**message.attributes, TRACEPARENT: w3c_traceparent(context)}
            return dataclasses.replace(message, attributes=carried)
        return dataclasses.replace(message, trace_header=xray_header(context, message.trace_header))

    def _context_of(self, message: Any) -> Any:
        """The creation context a message carries, as OpenTelemetry's SpanContext."""
        carried = carried_context(message)
        if carried is None:
            return None
        trace_id, span_id, sampled = carried
        return self._trace.SpanContext(trace_id, span_id, is_remote=True,
                                       trace_flags=self._trace.TraceFlags(1 if sampled else 0))

    def _current_ids(self) -> Optional[tuple[str, str]]:
        context = self._trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"


# The formats: W3C traceparent and X-Ray's AWSTraceHeader, for a (trace id, span id, sampled).


def carried_context(message: Any) -> Optional[tuple[int, int, bool]]:
    """The creation context a message carries (AWSTraceHeader first, then its `traceparent`
    attribute), as (trace id, span id, sampled); None when it carries none."""
    carried = from_xray_header(message.trace_header)
    if carried is None and TRACEPARENT in message.attributes:
        carried = from_traceparent(message.attributes[TRACEPARENT])
    return carried


def w3c_traceparent(context: Any) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags) & 1:02x}"


def from_traceparent(value: str) -> Optional[tuple[int, int, bool]]:
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or parts[0] == "ff":
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    return (trace_id, span_id, bool(flags & 1)) if trace_id and span_id else None


def xray_header(context: Any, existing: Optional[str] = None) -> str:
    """An AWSTraceHeader for `context`: X-Ray's Root is the W3C trace id as 1-<8 hex>-<24 hex>,
    Parent the span id. The fields of `existing` other than those three (the writer's
    IdempotencyKey, say) are kept."""
    trace_id = f"{context.trace_id:032x}"
    kept = {name: value for name, value in fields(existing).items() if name not in ("Root", "Parent", "Sampled")}
    header = {"Root": f"1-{trace_id[:8]}-{trace_id[8:]}", "Parent": f"{context.span_id:016x}",
              "Sampled": str(int(context.trace_flags) & 1), **kept}
    return ";".join(f"{name}={value}" for name, value in header.items())


def from_xray_header(header: Optional[str]) -> Optional[tuple[int, int, bool]]:
    """The context an AWSTraceHeader carries; None without a Root and a Parent (the writer's
    header with only an IdempotencyKey beside a root of its own carries no span)."""
    found = fields(header)
    root, parent = found.get("Root", ""), found.get("Parent", "")
    parts = root.split("-")
    if len(parts) != 3 or parts[0] != "1" or len(parts[1]) != 8 or len(parts[2]) != 24 or len(parent) != 16:
        return None
    try:
        trace_id, span_id = int(parts[1] + parts[2], 16), int(parent, 16)
    except ValueError:
        return None
    return (trace_id, span_id, found.get("Sampled") == "1") if trace_id and span_id else None
