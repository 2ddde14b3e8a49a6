"""Traces as a user gets them: the writer and the worker as processes on moto's server, exporting
over OTLP/HTTP to a receiver the test starts (scripts/otlp_receiver.py decodes the protobuf with
opentelemetry-proto); a client's `traceparent` followed to the worker's process span, and a
failing message's attempts and its dead letter in one trace."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

import sqs_setup
from harness import ROOT
from helpers import wait_until
from otlp_receiver import OtlpReceiver, ReceivedSpan
from sqs_message_service.settings import Settings
from sqsinterface import create_client


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver()
    yield running
    running.stop()


def traced_env(endpoint: str, receiver: OtlpReceiver, tmp_path: Path) -> dict[str, str]:
    return {
        "SQS_ENDPOINT_URL": endpoint,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "PROCESSOR": "steps:record",
        "STEP_LOG": str(tmp_path / "steps.jsonl"),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
        "RECEIVE_WAIT_SECONDS": "1",
        "RETRY_BACKOFF_BASE": "0",
        "MAX_RECEIVE_COUNT": "2",
        "STATS_INTERVAL": "60",
    }


def one(spans: list[ReceivedSpan], name: str, **where: Any) -> ReceivedSpan:
    found = [span for span in spans if span.name == name and all(getattr(span, k) == v for k, v in where.items())]
    assert len(found) == 1, (name, [(span.name, span.service) for span in spans])
    return found[0]


def test_a_clients_traceparent_is_followed_to_the_workers_process_span_and_a_dead_letter_stays_in_its_trace(
    moto_server: str,
    start: Callable[..., Any],
    start_writer: Callable[..., Any],
    receiver: OtlpReceiver,
    tmp_path: Path,
) -> None:
    # GIVEN a writer and a worker exporting their traces to the receiver
    env = traced_env(moto_server, receiver, tmp_path)
    settings = Settings(sqs_endpoint_url=moto_server, max_receive_count=2)
    sqs_setup.set_up(settings, create_client(settings))
    writer, url = start_writer(env)
    worker = start("worker.py", "--concurrency", "2", env=env)

    # WHEN a client sends an order in its own trace, and a message that fails every time
    order_trace, client_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    sent = requests.post(
        f"{url}/api/message",
        json={"body": "order 1001", "attributes": {"tenant": "a"}},
        headers={"traceparent": f"00-{order_trace}-{client_span}-01"},
        timeout=10,
    )
    poison_trace = uuid.uuid4().hex
    poisoned = requests.post(
        f"{url}/api/message",
        json={"body": "fail: poison"},
        headers={"traceparent": f"00-{poison_trace}-{uuid.uuid4().hex[:16]}-01"},
        timeout=10,
    )
    assert (sent.status_code, poisoned.status_code) == (201, 201)

    def exported(trace_id: str, name: str, count: int) -> bool:
        return sum(span.name == name for span in receiver.spans(trace_id)) >= count

    wait_until(lambda: exported(order_trace, "process messages", 1), timeout_s=60, what="the order's process span")
    wait_until(
        lambda: exported(poison_trace, "send messages-dlq", 1) and exported(poison_trace, "process messages", 2),
        timeout_s=60,
        what="the poison's attempts and its dead letter",
    )
    assert worker.stop(signal.SIGTERM, timeout_s=20) == 0, worker.output[-3000:]
    assert writer.stop(signal.SIGTERM, timeout_s=20) in (0, -signal.SIGTERM), writer.output[-3000:]

    # THEN the order's trace runs from the client's span to the worker's, each part by its name
    order = receiver.spans(order_trace)
    server = one(order, "POST /api/message", service="queue-writer", kind="SERVER")
    process = one(order, "process messages", service="queue-worker", kind="CONSUMER")
    assert server.parent_span_id == client_span
    assert process.parent_span_id == server.span_id  # the request is the message's creation
    assert process.attributes["messaging.system"] == "aws_sqs" and process.attributes["messaging.message.id"]
    assert process.attributes["sqs_message_service.receive_count"] == 1 and process.status == "UNSET"
    sends = [
        span
        for span in receiver.spans()
        if span.name == "send messages" and (order_trace, server.span_id) in span.links
    ]
    assert len(sends) == 1 and sends[0].kind == "CLIENT"  # the batch call, a trace of its own, linked
    # AND the log lines lead to the trace
    assert f"trace={order_trace}" in writer.output  # the access line, written inside the request's span
    # AND the poison's two failed attempts and its move to the dead-letter queue are in its trace
    poison = receiver.spans(poison_trace)
    attempts = [span for span in poison if span.name == "process messages"]
    assert [span.attributes["sqs_message_service.receive_count"] for span in attempts] == [1, 2]
    assert all(
        span.status == "ERROR" and span.attributes["error.type"] == "ValueError" and span.events == ["exception"]
        for span in attempts
    )
    dead_letter = one(poison, "send messages-dlq", service="queue-worker")
    assert dead_letter.parent_span_id == one(poison, "POST /api/message").span_id
    assert f"to the dead-letter queue trace={poison_trace}" in worker.output
