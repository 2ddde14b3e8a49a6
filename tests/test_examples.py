"""examples/: the processing steps docs/worker.md shows (a plain one, an async one, and one over
HTTP behind its real server on loopback), each run by a real worker on moto."""

from __future__ import annotations

import io
import json
import threading
from typing import Any, Iterator

import pytest

import sqs_setup
from examples import async_orders, http_step, orders
from sqs_message_service.dlq import SOURCE_ID
from sqs_message_service.output import OutputWriter, parse_lines
from sqs_message_service.settings import Settings
from sqs_message_service.tracing import NO_TRACING
from sqs_message_service.worker.engine import Worker
from sqsinterface import OutgoingMessage, SqsQueue
from worker import processing_step


@pytest.fixture(autouse=True)
def nothing_shipped() -> Iterator[None]:
    for shipped in (orders.SHIPMENTS, async_orders.CONFIRMED, http_step.SHIPPED):
        shipped.clear()
    yield
    for shipped in (orders.SHIPMENTS, async_orders.CONFIRMED, http_step.SHIPPED):
        shipped.clear()


@pytest.fixture
def step_server() -> Iterator[str]:
    """examples/http_step.py's server on a free loopback port: its URL."""
    server = http_step.serve("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/orders"
    server.shutdown()
    server.server_close()


def run_worker(
    sqs: Any, bodies: list[str], processor: str = "examples.orders:handle"
) -> tuple[list[str], list[dict[str, Any]]]:
    """Send `bodies`, drain them with PROCESSOR=`processor` as `worker.py` loads it: (the bodies
    processed, the dead letters with their attributes)."""
    settings = Settings(processor=processor, receive_wait_s=1, retry_backoff_base_s=0, max_receive_count=2)
    sqs_setup.set_up(settings, sqs)
    queue, dead_letter_queue = SqsQueue(settings.queue_name, sqs), SqsQueue(settings.dlq_name, sqs)
    assert all(result.ok for result in queue.send([OutgoingMessage(body=body) for body in bodies]))
    output = io.StringIO()
    worker = Worker(
        queue=queue,
        dead_letter_queue=dead_letter_queue,
        processor=processing_step(settings, NO_TRACING),
        settings=settings,
        output=OutputWriter(output),
    )

    assert worker.run(burst=True) == 0

    dead = sqs.receive_message(
        QueueUrl=dead_letter_queue.url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", [])
    return [line.body for line in parse_lines(output.getvalue().splitlines())], dead


def test_orders_are_shipped_once_even_when_delivered_twice(sqs: Any) -> None:
    first = json.dumps({"order_id": "1001", "quantity": 2})
    again = json.dumps({"quantity": 2, "order_id": "1001"})  # the same order, sent twice
    other = json.dumps({"order_id": "1002"})

    processed, dead = run_worker(sqs, [first, again, other])

    assert sorted(processed) == sorted([first, again, other])  # each message deleted
    assert sorted(orders.SHIPMENTS) == [("1001", 2), ("1002", 1)]
    assert dead == []


NOT_ORDERS = [
    ("{not json", "not JSON"),
    ('["1001"]', "an order is a JSON object"),
    ('{"order_id": "7", "quantity": 0}', "quantity must be a positive integer"),
]


@pytest.mark.parametrize(("body", "reason"), NOT_ORDERS)
def test_what_is_not_an_order_is_dead_lettered_at_once_with_the_reason(sqs: Any, body: str, reason: str) -> None:
    processed, dead = run_worker(sqs, [body])

    assert processed == [] and orders.SHIPMENTS == []
    (letter,) = dead
    assert letter["Body"] == body
    attributes = {name: value["StringValue"] for name, value in letter["MessageAttributes"].items()}
    assert attributes["dead_letter.error_type"] == "NotAnOrder"
    assert reason in attributes["dead_letter.error"]
    assert attributes["dead_letter.attempts"] == "1" and SOURCE_ID in attributes  # a Reject: no retry


def test_the_async_example_confirms_each_order_once_and_rejects_what_is_not_one(
    sqs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(async_orders, "CALL_S", 0.01)
    good = [json.dumps({"order_id": str(n)}) for n in range(30)]

    processed, dead = run_worker(sqs, [*good, good[0], "{not json"], processor="examples.async_orders:handle")

    assert sorted(processed) == sorted([*good, good[0]])
    assert sorted(async_orders.CONFIRMED) == sorted(str(n) for n in range(30))
    (letter,) = dead
    assert letter["MessageAttributes"]["dead_letter.error_type"]["StringValue"] == "NotAnOrder"  # a Reject


def test_the_http_example_ships_orders_behind_its_real_server(sqs: Any, step_server: str) -> None:
    first, other = json.dumps({"order_id": "1001", "quantity": 2}), json.dumps({"order_id": "1002"})

    processed, dead = run_worker(sqs, [first, first, other, "{not json"], processor=step_server)

    assert sorted(processed) == sorted([first, first, other])
    assert http_step.SHIPPED == {"1001": 2, "1002": 1}
    (letter,) = dead  # its 422, on the first attempt
    attributes = {name: value["StringValue"] for name, value in letter["MessageAttributes"].items()}
    assert (attributes["dead_letter.error_type"], attributes["dead_letter.attempts"]) == ("Reject", "1")
    assert attributes["dead_letter.error"].startswith("422 Unprocessable Entity: not JSON")
