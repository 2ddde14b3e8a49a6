"""tracing.py: each span of one message's way, with its attributes, from the writer's request to
the worker's attempts and settlements, on moto with the SDK's in-memory exporter; the context in
AWSTraceHeader or a `traceparent` attribute; logs joined to traces; and tracing off adding no
span and no attribute."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from typing import Any, Callable, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import sqs_setup
from harness import ROOT
from server import create_app
from sqs_message_service.logs import TraceFormatter, set_trace_ids
from sqs_message_service.output import OutputWriter
from sqs_message_service.settings import Settings
from sqs_message_service.trace_header import TRACEPARENT, from_traceparent
from sqs_message_service.tracing import IN_ATTRIBUTE, IN_TRACE_HEADER, Tracing, context_carrier, tracing_requested
from sqs_message_service.worker.engine import Worker
from sqs_message_service.writer.service import WRITER_EXTENSION
from sqsinterface import OutgoingMessage, ReceivedMessage, SqsQueue

CLIENT_TRACE, CLIENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACEPARENT_HEADER = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"

#: One in-memory exporter behind the process's global tracer provider, set once: the processing
#: step's own spans go through the global provider, as a user's would.
EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(PROVIDER)


@pytest.fixture
def spans() -> Iterator[Callable[[], list[ReadableSpan]]]:
    EXPORTER.clear()
    yield EXPORTER.get_finished_spans  # type: ignore[misc]
    EXPORTER.clear()
    set_trace_ids(None)  # Tracing hooks the log formatter; the next test starts without


def tracing_in(carrier: str) -> Tracing:
    return Tracing(PROVIDER, carrier=carrier)


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def messaging(span: ReadableSpan) -> dict[str, Any]:
    return {key: value for key, value in (span.attributes or {}).items() if key.startswith("messaging.")}


@pytest.fixture
def traced_app(settings: Settings, queue: SqsQueue) -> Iterator[Any]:
    application = create_app(settings, queue=queue, tracing=tracing_in(IN_ATTRIBUTE))
    yield application
    application.app.extensions[WRITER_EXTENSION].close()


# The writer


def test_a_request_continues_the_clients_trace_and_its_message_carries_the_requests_context(
    traced_app: Any, spans: Callable[[], list[ReadableSpan]], drain: Any, queue: SqsQueue
) -> None:
    response = traced_app.test_client().post(
        "/api/message",
        json={"body": "order 1001", "attributes": {"tenant": "a"}},
        headers={"traceparent": TRACEPARENT_HEADER},
    )

    assert response.status_code == 201
    finished = spans()
    (server,) = named(finished, "POST /api/message")
    (send,) = named(finished, "send messages")
    # the SERVER span continues the client's; a request of one message is that message's creation
    assert server.kind is SpanKind.SERVER and server.parent is not None
    assert (f"{server.context.trace_id:032x}", f"{server.parent.span_id:016x}") == (CLIENT_TRACE, CLIENT_SPAN)
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 201
    assert server.attributes["http.route"] == "/api/message"
    assert named(finished, "create messages") == []
    # one SendMessageBatch, a CLIENT span of its own, linked to the message's creation
    assert send.kind is SpanKind.CLIENT and send.parent is None
    assert [link.context.span_id for link in send.links] == [server.context.span_id]
    assert messaging(send) == {
        "messaging.system": "aws_sqs",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": "messages",
        "messaging.batch.message_count": 1,
    }
    # the message carries that context; the user's attribute is untouched beside it
    (received,) = drain(queue)
    attributes = {name: value["StringValue"] for name, value in received["MessageAttributes"].items()}
    assert attributes == {"tenant": "a", TRACEPARENT: f"00-{CLIENT_TRACE}-{server.context.span_id:016x}-01"}


def test_each_message_of_a_batch_request_has_its_creation_span_and_one_send_links_them(
    traced_app: Any, spans: Callable[[], list[ReadableSpan]]
) -> None:
    response = traced_app.test_client().post("/api/messages", json={"messages": [{"body": "a"}, {"body": "b"}]})

    assert response.status_code == 200
    finished = spans()
    (server,) = named(finished, "POST /api/messages")
    creates = named(finished, "create messages")
    (send,) = named(finished, "send messages")
    assert len(creates) == 2
    for create in creates:  # PRODUCER spans, children of the request's
        assert create.kind is SpanKind.PRODUCER and create.parent is not None
        assert create.parent.span_id == server.context.span_id
        assert messaging(create) == {
            "messaging.system": "aws_sqs",
            "messaging.operation.name": "create",
            "messaging.operation.type": "create",
            "messaging.destination.name": "messages",
        }
    assert {link.context.span_id for link in send.links} == {span.context.span_id for span in creates}
    assert messaging(send)["messaging.batch.message_count"] == 2


def test_in_aws_trace_header_the_context_takes_none_of_the_ten_attributes(
    settings: Settings, queue: SqsQueue, sqs: Any, spans: Callable[[], list[ReadableSpan]]
) -> None:
    sent: list[dict[str, Any]] = []
    sqs.meta.events.register(
        "before-parameter-build.sqs.SendMessageBatch", lambda params, **_: sent.extend(params["Entries"])
    )
    app = create_app(settings, queue=queue, tracing=tracing_in(IN_TRACE_HEADER))
    ten = {f"a{n}": "v" for n in range(10)}
    try:
        response = app.test_client().post(
            "/api/message",
            json={"body": "x", "attributes": ten},
            headers={"traceparent": TRACEPARENT_HEADER, "Idempotency-Key": "k-1"},
        )
    finally:
        app.app.extensions[WRITER_EXTENSION].close()

    assert response.status_code == 201
    (entry,) = sent
    assert {name: value["StringValue"] for name, value in entry["MessageAttributes"].items()} == ten
    header = entry["MessageSystemAttributes"]["AWSTraceHeader"]["StringValue"]
    (server,) = named(spans(), "POST /api/message")
    root = f"Root=1-{CLIENT_TRACE[:8]}-{CLIENT_TRACE[8:]}"
    assert header.startswith(f"{root};Parent={server.context.span_id:016x};Sampled=1")
    assert "IdempotencyKey=" in header  # the ledger's key travels beside the context


def test_with_the_context_in_an_attribute_the_served_spec_allows_nine_and_reserves_its_name(traced_app: Any) -> None:
    client = traced_app.test_client()
    ten = {f"a{n}": "v" for n in range(10)}

    spec = client.get("/api/openapi.json").json()
    too_many = client.post("/api/message", json={"body": "x", "attributes": ten})
    reserved = client.post("/api/message", json={"body": "x", "attributes": {TRACEPARENT: "mine"}})
    in_a_batch = client.post("/api/messages", json={"messages": [{"body": "x", "attributes": {TRACEPARENT: "mine"}}]})

    assert spec["components"]["schemas"]["MessageFields"]["properties"]["attributes"]["maxProperties"] == 9
    assert too_many.status_code == 400 and "at most 9 attributes" in too_many.json()["detail"]
    assert reserved.status_code == 400 and "carries the trace context" in reserved.json()["detail"]
    assert in_a_batch.json()["results"][0]["status"] == 400


def test_a_refusal_and_an_sqs_outage_set_the_server_spans_error_type(
    settings: Settings, closed_endpoint: str, queue: SqsQueue, spans: Callable[[], list[ReadableSpan]]
) -> None:
    from sqsinterface import create_client

    unreachable = SqsQueue(queue.name, create_client(Settings(sqs_endpoint_url=closed_endpoint, sqs_max_attempts=1)))
    unreachable._url = queue.url  # found already: the send is what fails
    app = create_app(Settings(send_timeout_s=5), queue=unreachable, tracing=tracing_in(IN_ATTRIBUTE))
    client = app.test_client()
    try:
        refused = client.post("/api/message", json={"body": ""})
        failed = client.post("/api/message", json={"body": "x"})
    finally:
        app.app.extensions[WRITER_EXTENSION].close()

    assert (refused.status_code, failed.status_code) == (400, 503)
    servers = named(spans(), "POST /api/message")
    by_status = {attributes(span)["http.response.status_code"]: span for span in servers}
    assert attributes(by_status[400])["error.type"] == "400" and by_status[400].status.status_code is StatusCode.UNSET
    assert attributes(by_status[503])["error.type"] == "503" and by_status[503].status.status_code is StatusCode.ERROR
    (send,) = named(spans(), "send messages")
    assert send.status.status_code is StatusCode.ERROR and attributes(send)["error.type"] == "QueueUnavailable"


# The worker


def run_worker(sqs: Any, processor: Callable[[ReceivedMessage], Any], bodies: list[str], **overrides: Any) -> Worker:
    """Send `bodies` through the writer's tracing (as the writer would), then drain the queue
    with a traced worker."""
    settings = Settings(receive_wait_s=1, stats_interval_s=60, retry_backoff_base_s=0, **overrides)
    sqs_setup.set_up(settings, sqs)
    tracing = tracing_in(IN_ATTRIBUTE)
    queue = SqsQueue(settings.queue_name, sqs)
    with tracing.tracer.start_as_current_span("client's request"):
        assert all(
            result.ok
            for result in queue.send([tracing.created(OutgoingMessage(body=body), queue.name) for body in bodies])
        )
    worker = Worker(
        queue=queue,
        dead_letter_queue=SqsQueue(settings.dlq_name, sqs, queue.metrics),
        processor=processor,
        settings=settings,
        output=OutputWriter(io.StringIO()),
        tracing=tracing,
    )
    assert worker.run(burst=True) == 0
    return worker


def test_each_attempt_is_a_process_span_in_the_messages_trace_and_the_steps_own_spans_join_it(
    sqs: Any, spans: Callable[[], list[ReadableSpan]]
) -> None:
    def step(message: ReceivedMessage) -> None:
        with trace.get_tracer("the user's step").start_as_current_span("the user's database call"):
            logging.getLogger("the user's step").info("processing %s", message.id)

    run_worker(sqs, step, ["order 1001"])

    finished = spans()
    (create,) = named(finished, "create messages")
    (process,) = named(finished, "process messages")
    (own,) = named(finished, "the user's database call")
    receives = [span for span in named(finished, "receive messages") if span.links]
    (delete,) = [
        span
        for span in named(finished, "settle messages")
        if (span.attributes or {}).get("messaging.operation.name") == "delete"
    ]
    # parented on the message's creation: the message's trace, from the client's request on
    assert process.kind is SpanKind.CONSUMER and process.parent is not None
    assert (process.context.trace_id, process.parent.span_id) == (create.context.trace_id, create.context.span_id)
    noted = attributes(process)
    assert noted["messaging.message.id"] and noted["sqs_message_service.receive_count"] == 1
    assert noted["sqs_message_service.time_in_queue_ms"] >= 0
    assert messaging(process)["messaging.operation.type"] == "process"
    assert own.parent is not None and own.parent.span_id == process.context.span_id
    # the receive that brought it, and the delete that settled it, link to its creation
    assert receives and receives[0].kind is SpanKind.CLIENT
    assert [link.context.span_id for link in receives[0].links] == [create.context.span_id]
    assert delete.kind is SpanKind.CLIENT and messaging(delete)["messaging.operation.type"] == "settle"
    assert [link.context.span_id for link in delete.links] == [create.context.span_id]


def test_an_async_steps_attempt_is_a_process_span_and_its_own_spans_join_it(
    sqs: Any, spans: Callable[[], list[ReadableSpan]]
) -> None:
    async def step(message: ReceivedMessage) -> None:
        await asyncio.sleep(0)
        with trace.get_tracer("the user's step").start_as_current_span("the user's async call"):
            await asyncio.sleep(0.01)

    worker = run_worker(sqs, step, ["order 1002", "order 1003"])

    assert worker.coroutines is not None
    finished = spans()
    processes = named(finished, "process messages")
    own = named(finished, "the user's async call")
    assert len(processes) == len(own) == 2
    creates = {span.context.span_id for span in named(finished, "create messages")}
    assert {process.parent.span_id for process in processes if process.parent} == creates
    assert {span.parent.span_id for span in own if span.parent} == {process.context.span_id for process in processes}


def test_a_failing_attempt_and_the_dead_letter_are_in_the_messages_trace(
    sqs: Any, spans: Callable[[], list[ReadableSpan]]
) -> None:
    def fail(message: ReceivedMessage) -> None:
        raise ValueError("not an order")

    run_worker(sqs, fail, ["poison"], max_receive_count=2)

    finished = spans()
    (create,) = named(finished, "create messages")
    attempts = named(finished, "process messages")
    (dead_letter,) = named(finished, "send messages-dlq")
    assert len(attempts) == 2 and {span.context.trace_id for span in attempts} == {create.context.trace_id}
    for attempt in attempts:
        assert attempt.status.status_code is StatusCode.ERROR
        assert (attempt.attributes or {})["error.type"] == "ValueError"
        assert [event.name for event in attempt.events] == ["exception"]
    assert dead_letter.context.trace_id == create.context.trace_id  # the move to the dead-letter queue too
    assert dead_letter.parent is not None and dead_letter.parent.span_id == create.context.span_id
    retry = [
        span
        for span in named(finished, "settle messages")
        if (span.attributes or {}).get("messaging.operation.name") == "change_visibility"
    ]
    assert retry and [link.context.span_id for link in retry[0].links] == [create.context.span_id]


def test_the_dead_letter_copy_keeps_the_messages_context(sqs: Any, spans: Callable[[], list[ReadableSpan]]) -> None:
    def fail(message: ReceivedMessage) -> None:
        raise ValueError("not an order")

    run_worker(sqs, fail, ["poison"], max_receive_count=1)

    (create,) = named(spans(), "create messages")
    dlq = SqsQueue(Settings().dlq_name, sqs)
    (copy,) = dlq.receive(max_messages=1, wait_s=0)
    assert from_traceparent(copy.attributes[TRACEPARENT]) == (create.context.trace_id, create.context.span_id, True)


# Logs, formats, switches


def test_a_log_line_written_inside_a_span_carries_its_trace_and_span_ids(
    spans: Callable[[], list[ReadableSpan]],
) -> None:
    tracing = tracing_in(IN_ATTRIBUTE)
    formatter = TraceFormatter("%(message)s%(trace)s")

    def line() -> str:
        return formatter.format(logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None))

    with tracing.tracer.start_as_current_span("work") as span:
        inside = line()
    context = span.get_span_context()
    assert inside == f"hello trace={context.trace_id:032x} span={context.span_id:016x}"
    assert line() == "hello"  # outside any span
    set_trace_ids(None)
    with tracing.tracer.start_as_current_span("work"):
        assert line() == "hello"  # tracing off: nothing looked up


@pytest.mark.parametrize(
    ("environment", "on"),
    [
        ({}, False),
        ({"otel_traces_exporter": "otlp"}, True),
        ({"otel_traces_exporter": "console"}, True),
        ({"otel_exporter_otlp_endpoint": "http://127.0.0.1:4318"}, True),
        ({"otel_exporter_otlp_traces_endpoint": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"otel_traces_exporter": "none", "otel_exporter_otlp_endpoint": "http://127.0.0.1:4318"}, False),
        ({"otel_traces_exporter": "otlp", "otel_sdk_disabled": "TRUE"}, False),
    ],
)
def test_tracing_is_on_only_when_the_standard_variables_ask(environment: dict[str, Any], on: bool) -> None:
    assert tracing_requested(Settings(**environment)) is on


def test_the_context_travels_in_aws_trace_header_on_real_sqs_and_in_an_attribute_elsewhere() -> None:
    assert context_carrier(Settings()) == IN_TRACE_HEADER
    assert context_carrier(Settings(sqs_endpoint_url="http://127.0.0.1:4566")) == IN_ATTRIBUTE
    chosen = Settings(sqs_endpoint_url="http://127.0.0.1:4566", trace_context_in="AWSTraceHeader")
    assert context_carrier(chosen) == IN_TRACE_HEADER


def test_tracing_off_adds_no_span_no_attribute_and_imports_nothing_of_opentelemetry() -> None:
    program = (
        """
import json, sys
from moto import mock_aws
with mock_aws():
    import sqs_setup
    from server import create_app
    from sqs_message_service.settings import Settings
    from sqsinterface import SqsQueue, create_client
    settings = Settings()
    client = create_client(settings)
    sqs_setup.set_up(settings, client)
    sent = []
    client.meta.events.register("before-parameter-build.sqs.SendMessageBatch",
                                lambda params, **_: sent.extend(params["Entries"]))
    app = create_app(settings, queue=SqsQueue(settings.queue_name, client))
    status = app.test_client().post("/api/message", json={"body": "x"}, headers={"traceparent": "%s"}).status_code
    app.app.extensions["queue_writer"].close()
    print(json.dumps({"status": status, "entry": sent[0],
                      "opentelemetry": sorted(m for m in sys.modules if m.startswith("opentelemetry"))}))
"""
        % TRACEPARENT_HEADER
    )
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1", "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.splitlines()[-1])
    assert seen["status"] == 201
    assert seen["entry"].keys() == {"Id", "MessageBody"}  # no AWSTraceHeader, no traceparent attribute
    assert seen["opentelemetry"] == []
