"""console/feed.py: one reading of SQS per refresh however many pages are open, and the window."""

from __future__ import annotations

from typing import Any, Callable

from helpers import metric, metric_samples
from sqs_message_service.aws import create_client
from sqs_message_service.console.feed import Feed
from sqs_message_service.console.readings import Scrape
from sqs_message_service.settings import Settings
from sqsinterface import OutgoingMessage, SqsQueue


def test_a_reading_takes_the_queues_figures_from_sqs(queues: tuple[SqsQueue, SqsQueue]) -> None:
    queue, dead_letter_queue = queues
    queue.send([OutgoingMessage(body=f"m{n}") for n in range(3)])
    dead_letter_queue.send([OutgoingMessage(body="d1"), OutgoingMessage(body="d2")])
    queue.receive(max_messages=1, wait_s=0)  # one in flight
    feed = Feed(queue=queue, dead_letter_queue=dead_letter_queue, source=Scrape(()), refresh_s=1)

    point = feed.read_once()

    assert (point["visible"], point["in_flight"], point["delayed"], point["dead_letters"]) == (2, 1, 0, 2)
    assert point["accepted"] is None and point["p99_ms"] is None  # no page to read rates from
    assert feed.sqs_error is None


def test_a_page_gets_only_the_readings_it_has_not_seen_and_the_window_is_kept_bounded(
    queues: tuple[SqsQueue, SqsQueue],
) -> None:
    queue, dead_letter_queue = queues
    clock = iter(range(1000, 3000, 300))
    feed = Feed(
        queue=queue,
        dead_letter_queue=dead_letter_queue,
        source=Scrape(()),
        refresh_s=300,
        clock=lambda: float(next(clock)),
    )

    for _ in range(3):
        feed.read_once()

    assert [point["seq"] for point in feed.since(0)] == [1, 2, 3]
    assert [point["seq"] for point in feed.since(2)] == [3]
    feed.read_once()
    feed.read_once()
    assert [point["seq"] for point in feed.since(0)] == [2, 3, 4, 5]  # 15 minutes at 300 s: 4 readings


def test_an_unreachable_sqs_is_said_and_the_figures_are_missing_not_zero(closed_endpoint: str) -> None:
    client = create_client(Settings(sqs_endpoint_url=closed_endpoint, sqs_max_attempts=1))
    feed = Feed(
        queue=SqsQueue("q", client), dead_letter_queue=SqsQueue("q-dlq", client), source=Scrape(()), refresh_s=1
    )

    point = feed.read_once()

    assert point["visible"] is None and point["dead_letters"] is None
    assert feed.sqs_error is not None and "q-dlq" in feed.sqs_error


def test_ten_open_pages_cost_sqs_one_get_queue_attributes_per_queue_per_reading(
    console_app: Callable[..., Any],
) -> None:
    app = console_app()
    feed = app.app.extensions["console"].feed
    pages = [app.test_client() for _ in range(10)]

    for _ in range(3):
        feed.read_once()
        for page in pages:
            for _ in range(5):
                assert page.get("/api/overview", params={"since": 0}).status_code == 200

    samples = metric_samples(pages[0].get("/metrics").text)
    for queue in ("messages", "messages-dlq"):
        assert metric(samples, "sqs_requests_total", queue=queue, operation="GetQueueAttributes") == 3
    assert metric(samples, "sqs_requests_total", queue="messages", operation="ReceiveMessage") == 0


class BrokenSource:
    """A rates source that answers something unexpected, as an odd Prometheus or page might."""

    def read(self, now_s: float) -> Any:
        raise KeyError("le")


def test_rates_that_cannot_be_read_leave_the_queues_figures_and_say_why(queues: tuple[SqsQueue, SqsQueue]) -> None:
    queue, dead_letter_queue = queues
    queue.send([OutgoingMessage(body="m")])
    feed = Feed(queue=queue, dead_letter_queue=dead_letter_queue, source=BrokenSource(), refresh_s=1)

    point = feed.read_once()

    assert point["visible"] == 1 and point["accepted"] is None
    assert feed.sources[0]["ok"] is False and "le" in feed.sources[0]["error"]
