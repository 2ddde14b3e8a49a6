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

Both are hooks (hooks.py): the writer's and the worker's parts call them at fixed points, and
never ask whether tracing is on. Off, nothing of OpenTelemetry is imported, and each hook is
Hooks' own, which does nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any, ContextManager, Iterator, Optional, Sequence

from .hooks import Hooks
from .logs import set_trace_ids
from .rules import payload_bytes
from .settings import Settings
from .sqs import OutgoingMessage, ReceivedMessage
from .trace_header import TRACEPARENT, Context, carried_context, traceparent, xray_header

log = logging.getLogger(__name__)

MESSAGING_SYSTEM = "aws_sqs"
#: What the conventions have no attribute for, in a namespace of our own: SQS's
#: ApproximateReceiveCount of this delivery, and the time from SentTimestamp to this attempt.
RECEIVE_COUNT = "sqs_message_service.receive_count"
TIME_IN_QUEUE = "sqs_message_service.time_in_queue_ms"
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


#: What a `traceparent` attribute adds to a message's size, as SQS counts it.
TRACEPARENT_BYTES = payload_bytes("", {TRACEPARENT: traceparent((0, 0, True))})


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


class NoTracing(Hooks):
    """Tracing off: every hook is Hooks' own, which does nothing, and nothing of OpenTelemetry is
    imported."""

    carrier = IN_TRACE_HEADER

    def traceparent(self, message: ReceivedMessage) -> Optional[str]:
        """The W3C `traceparent` an HTTP step is sent: here, the context the message carries
        from its creation (None when it carries none), passed on untouched."""
        carried = carried_context(message)
        return None if carried is None else traceparent(carried)


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
    log.info(
        "tracing on: %s, service %s, context in %s",
        ", ".join(sorted(exporters)),
        resource.attributes.get(SERVICE_NAME),
        tracing.carrier,
    )
    return tracing


class Tracing(NoTracing):
    """Tracing on, with `provider` (an SDK TracerProvider; tests give one with an in-memory
    exporter), the context of each message carried in `carrier`."""

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
    def request(self, method: str, headers: Sequence[tuple[bytes, bytes]]) -> Iterator[Any]:
        """A SERVER span for one request (its ASGI `headers`), continuing the client's context
        (traceparent, tracestate, baggage, as OTEL_PROPAGATORS says); current while the request
        is served."""
        parent = self._propagate.extract(headers, getter=ASGI_HEADERS)  # type: ignore[arg-type]  # its protocol
        with self.tracer.start_as_current_span(
            method,
            context=parent,
            kind=self._SpanKind.SERVER,
            attributes={"http.request.method": method},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    def answered(self, watch: Any, method: str, route: str, status: int, duration_s: float) -> None:
        """The SERVER span named for the spec's route, with the status; a 5xx is an error."""
        answered: dict[str, Any] = {"http.response.status_code": status}
        if route != "other":
            watch.update_name(f"{method} {route}")
            answered["http.route"] = route
        if status >= 400:  # HTTP's conventions: a server's 5xx is an error; its 4xx, the client's
            answered["error.type"] = str(status)
        watch.set_attributes(answered)
        if status >= 500:
            watch.set_status(self._Status(self._ERROR, str(status)))

    def created(self, message: OutgoingMessage, queue: str, *, by_request: bool = False) -> OutgoingMessage:
        """The message carrying its creation context. Created `by_request` (the one message a
        request sends): the current span's, the request's own SERVER span (the conventions'
        custom creation context), so that a message costs no span of its own; outside any span
        it carries nothing. Otherwise a PRODUCER span for the message's creation, in the current
        trace (the request's), for each message of a request that creates several."""
        if by_request:
            current = self._trace.get_current_span().get_span_context()
            return self._carrying(message, current) if current.is_valid else message
        span = self.tracer.start_span(
            f"create {queue}",
            kind=self._SpanKind.PRODUCER,
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.name": "create",
                "messaging.operation.type": "create",
                "messaging.destination.name": queue,
            },
        )
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
        parent = (
            self._trace.set_span_in_context(self._trace.NonRecordingSpan(context))
            if (context := self._context_of(message)) is not None
            else None
        )
        attributes: dict[str, Any] = {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
            "messaging.message.id": message.id,
            RECEIVE_COUNT: message.receive_count,
        }
        if message.sent_at_s is not None:
            attributes[TIME_IN_QUEUE] = max(0, round(1000 * (time.time() - message.sent_at_s)))
        with self.tracer.start_as_current_span(
            f"process {queue}",
            context=parent,
            kind=self._SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
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
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.name": operation,
            "messaging.operation.type": operation_type,
            "messaging.destination.name": queue,
        }
        links = []
        if messages is not None:
            attributes["messaging.batch.message_count"] = len(messages)
            links = [self._Link(context) for message in messages if (context := self._context_of(message)) is not None]
        return self.tracer.start_as_current_span(
            f"{operation_type} {queue}",
            kind=self._SpanKind.CLIENT,
            links=links,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )

    @contextlib.contextmanager
    def dead_lettering(self, message: ReceivedMessage) -> Iterator[None]:
        """The message's creation context made current: what runs here (the log line, the
        dead-letter copy's send) joins its trace."""
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
        return traceparent(_ids(context)) if context.is_valid else super().traceparent(message)

    # Both

    def failed(self, span: Any, error: BaseException, error_type: Optional[str] = None) -> None:
        """The span's operation failed with `error`: recorded, status and `error.type` set."""
        span.record_exception(error)
        span.set_attribute("error.type", error_type or type(error).__qualname__)
        span.set_status(self._Status(self._ERROR, str(error)[:256]))

    def shutdown(self) -> None:
        """Export what is left (at the process's end)."""
        self.provider.shutdown()

    # The carrier

    def _carrying(self, message: OutgoingMessage, context: Any) -> OutgoingMessage:
        if self.carrier == IN_ATTRIBUTE:
            carried = {**message.attributes, TRACEPARENT: traceparent(_ids(context))}
            return dataclasses.replace(message, attributes=carried)
        return dataclasses.replace(message, trace_header=xray_header(_ids(context), message.trace_header))

    def _context_of(self, message: Any) -> Any:
        """The creation context a message carries, as OpenTelemetry's SpanContext."""
        carried = carried_context(message)
        if carried is None:
            return None
        trace_id, span_id, sampled = carried
        return self._trace.SpanContext(
            trace_id, span_id, is_remote=True, trace_flags=self._trace.TraceFlags(1 if sampled else 0)
        )

    def _current_ids(self) -> Optional[tuple[str, str]]:
        context = self._trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _ids(context: Any) -> Context:
    """An OpenTelemetry SpanContext as trace_header's (trace id, span id, sampled)."""
    return context.trace_id, context.span_id, bool(int(context.trace_flags) & 1)
