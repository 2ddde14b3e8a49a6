"""examples/: the processing step docs/worker.md shows, run by a real worker on moto."""

from __future__ import annotations

import io
import json
from typing import Any, Iterator

import pytest

import sqs_setup
from examples import orders
from sqs_message_service.dlq import SOURCE_ID
from sqs_message_service.output import OutputWriter, parse_lines
from sqs_message_service.settings import Settings
from sqs_message_service.worker.engine import Worker
from sqs_message_service.worker.processing import load_processor
from sqsinterface import OutgoingMessage, SqsQueue


@pytest.fixture(autouse=True)
def nothing_shipped() -> Iterator[None]:
    orders.SHIPMENTS.clear()
    yield
    orders.SHIPMENTS.clear()


def run_worker(sqs: Any, bodies: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Send `bodies`, drain them with PROCESSOR=examples.orders:handle as `worker.py` loads it:
    (the bodies processed, the dead letters with their attributes)."""
    settings = Settings(processor="examples.orders:handle", receive_wait_s=1, retry_backoff_base_s=0,
                        max_receive_count=2)
    sqs_setup.set_up(settings, sqs)
    queue, dead_letter_queue = SqsQueue(settings.queue_name, sqs), SqsQueue(settings.dlq_name, sqs)
    assert all(result.ok for result in queue.send([OutgoingMessage(body=body) for body in bodies]))
    output = io.StringIO()
    worker = Worker(queue=queue, dead_letter_queue=dead_letter_queue, processor=load_processor(settings.processor),
                    settings=settings, output=OutputWriter(output))

    assert worker.run(burst=True) == 0

    dead = sqs.receive_message(QueueUrl=dead_letter_queue.url, MaxNumberOfMessages=10,
                               MessageAttributeNames=["All"]).get("Messages", [])
    return [line.body for line in parse_lines(output.getvalue().splitlines())], dead


def test_orders_are_shipped_once_even_when_delivered_twice(sqs: Any) -> None:
    first = json.dumps({"order_id": "1001", "quantity": 2})
    again = json.dumps({"quantity": 2, "order_id": "1001"})  # the same order, sent twice
    other = json.dumps({"order_id": "1002"})

    processed, dead = run_worker(sqs, [first, again, other])

    assert sorted(processed) == sorted([first, again, other])  # each message deleted
    assert sorted(orders.SHIPMENTS) == [("1001", 2), ("1002", 1)]
    assert dead == []


@pytest.mark.parametrize(
    ("body", "error_type"),
    [("{not json", "JSONDecodeError"), ('["1001"]', "NotAnOrder"), ('{"order_id": "7", "quantity": 0}', "NotAnOrder")],
)
def test_what_is_not_an_order_is_dead_lettered_with_the_reason(sqs: Any, body: str, error_type: str) -> None:
    processed, dead = run_worker(sqs, [body])

    assert processed == [] and orders.SHIPMENTS == []
    (letter,) = dead
    assert letter["Body"] == body
    attributes = {name: value["StringValue"] for name, value in letter["MessageAttributes"].items()}
    assert attributes["dead_letter.error_type"] == error_type
    assert attributes["dead_letter.attempts"] == "2" and SOURCE_ID in attributes
