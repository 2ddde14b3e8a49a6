"""Idempotency-Keys across writer processes and replicas, with IDEMPOTENCY_TABLE on moto's server:
one key, one message, whichever writer a request reaches, even when one of them dies mid-send.

SQS is reached through a SlowProxy, so that a test can hold a send at SQS long enough for the
repeats to arrive while it is in progress; DynamoDB directly.
"""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest
import requests

import sqs_setup
from doubles import SlowProxy
from harness import Process
from helpers import start_moto_server, wait_until
from sqs_message_service.settings import Settings
from sqsinterface import create_client

TABLE = "writer-idempotency-keys"
SEND_TIMEOUT_S = 3  # a claim's lease is this plus idempotency.LEASE_MARGIN_S
MESSAGE = {"body": "order 1001 paid"}


class Writers:
    """The queues and the table on moto's server, SQS behind a proxy, and writers started on it."""

    def __init__(self, moto_server: str, start_writer: Callable[..., tuple[Process, str]]) -> None:
        self.moto_server = moto_server
        self._start_writer = start_writer
        settings = Settings(sqs_endpoint_url=moto_server, dynamodb_endpoint_url=moto_server, idempotency_table=TABLE)
        self.sqs = create_client(settings)
        self.dynamodb = create_client(settings, service="dynamodb")
        sqs_setup.set_up(settings, self.sqs, self.dynamodb)
        self.queue_url = self.sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
        self.proxy = SlowProxy(int(moto_server.rsplit(":", 1)[1]), delay_s=0)

    def start(self, *, processes: int = 1, dynamodb: str = "") -> tuple[Process, str]:
        """A writer (of `processes` processes on one port), SQS through the proxy; and its URL."""
        return self._start_writer(
            {
                "SQS_ENDPOINT_URL": self.proxy.url,
                "DYNAMODB_ENDPOINT_URL": dynamodb or self.moto_server,
                "IDEMPOTENCY_TABLE": TABLE,
                "SEND_TIMEOUT": str(SEND_TIMEOUT_S),
            },
            processes=processes,
        )

    def messages(self) -> list[str]:
        """The ids of every message in the queue (hidden for the rest of the test)."""
        ids: list[str] = []
        while batch := self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=600
        ).get("Messages", []):
            ids += [message["MessageId"] for message in batch]
        return ids

    def claim_is_held(self) -> bool:
        return any(item["state"]["S"] == "sending" for item in self.dynamodb.scan(TableName=TABLE)["Items"])


@pytest.fixture
def writers(moto_server: str, start_writer: Callable[..., tuple[Process, str]]) -> Iterator[Writers]:
    system = Writers(moto_server, start_writer)
    yield system
    system.proxy.stop()


def post(url: str, key: str, message: dict[str, Any] = MESSAGE) -> requests.Response:
    """One POST on a connection of its own: a new connection may reach any process on a port."""
    with requests.Session() as session:
        return session.post(f"{url}/api/message", json=message, headers={"Idempotency-Key": key}, timeout=30)


def post_at_once(urls: Sequence[str], key: str, count: int) -> list[requests.Response]:
    """`count` requests with one key, all at once, spread over `urls` in turn."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda n: post(urls[n % len(urls)], key), range(count)))


def assert_one_message(writers: Writers, responses: list[requests.Response]) -> None:
    """Every request was the one that sent, a replay of it, or a 409 while it was being sent;
    every 201 names the same message, and it is the only one in the queue."""
    assert {response.status_code for response in responses} <= {201, 409}, [r.text for r in responses]
    ids = {response.json()["message_id"] for response in responses if response.status_code == 201}
    assert len(ids) == 1
    sent = [r for r in responses if r.status_code == 201 and r.headers["Idempotent-Replayed"] == "false"]
    assert len(sent) == 1
    assert writers.messages() == list(ids)


def test_one_key_over_two_processes_on_one_port_sends_one_message(writers: Writers) -> None:
    _, url = writers.start(processes=2)
    writers.proxy.delay_s = 0.5  # the first request's send is still at SQS as the others arrive

    during = post_at_once([url], "order-1001", count=24)
    writers.proxy.delay_s = 0
    after = post_at_once([url], "order-1001", count=8)

    assert_one_message(writers, during + after)
    assert any(response.status_code == 409 for response in during)
    assert all(response.headers.get("Idempotent-Replayed") == "true" for response in after)


def test_one_key_over_two_replicas_sends_one_message(writers: Writers) -> None:
    (_, first), (_, second) = writers.start(), writers.start()
    writers.proxy.delay_s = 0.5

    during = post_at_once([first, second], "order-1001", count=24)
    writers.proxy.delay_s = 0
    after = post_at_once([first, second], "order-1001", count=8)

    assert_one_message(writers, during + after)
    # each replica answered 409 or replayed the other's answer
    assert {response.url.split("/api")[0] for response in during if response.status_code == 409} == {first, second}
    assert all(response.headers.get("Idempotent-Replayed") == "true" for response in after)


def test_a_key_reused_on_another_replica_is_422_and_a_repeat_during_the_send_409(writers: Writers) -> None:
    (_, first), (_, second) = writers.start(), writers.start()
    assert post(first, "k-1").status_code == 201

    reused = post(second, "k-1", {"body": "another order"})

    assert reused.status_code == 422 and "different request" in reused.json()["detail"]
    writers.proxy.delay_s = 1.0
    with ThreadPoolExecutor(max_workers=1) as pool:
        sending = pool.submit(post, first, "k-2")
        wait_until(writers.claim_is_held, timeout_s=10, what="the first replica's claim")
        repeat = post(second, "k-2")
        assert sending.result().status_code == 201
    assert repeat.status_code == 409 and "still being sent" in repeat.json()["detail"]
    assert len(writers.messages()) == 2


def test_a_key_held_by_a_writer_killed_mid_send_is_free_once_its_lease_lapses(writers: Writers) -> None:
    (killed, first), (_, second) = writers.start(), writers.start()
    writers.proxy.delay_s = 30  # the send never comes back to the first replica
    with ThreadPoolExecutor(max_workers=1) as pool:
        stranded = pool.submit(post, first, "k-1")
        wait_until(writers.claim_is_held, timeout_s=10, what="the first replica's claim")
        killed.stop(signal.SIGKILL)
        assert isinstance(stranded.exception(10), requests.ConnectionError)  # no answer came
    writers.proxy.delay_s = 0
    during_the_lease = post(second, "k-1")
    wait_until(lambda: post(second, "k-1").status_code == 201, timeout_s=SEND_TIMEOUT_S + 10, what="lease lapsed")
    repeat = post(second, "k-1")

    assert during_the_lease.status_code == 409
    assert repeat.status_code == 201 and repeat.headers["Idempotent-Replayed"] == "true"
    # The killed writer's request may have reached SQS before it died, unanswered: the client,
    # which had no 201, retried, as at-least-once delivery allows.
    assert repeat.json()["message_id"] in writers.messages()


def test_with_dynamodb_stopped_keyed_requests_are_503_and_the_rest_go_through(writers: Writers, tmp_path: Path) -> None:
    dynamodb, dynamodb_url = start_moto_server(tmp_path / "dynamodb.log")
    try:
        sqs_setup.set_up(
            Settings(dynamodb_endpoint_url=dynamodb_url, idempotency_table=TABLE),
            writers.sqs,
            create_client(Settings(dynamodb_endpoint_url=dynamodb_url), service="dynamodb"),
        )
        _, url = writers.start(dynamodb=dynamodb_url)
        assert post(url, "k-1").status_code == 201
    finally:
        dynamodb.stop()

    keyed = post(url, "k-2")
    unkeyed = requests.post(f"{url}/api/message", json=MESSAGE, timeout=30)

    assert keyed.status_code == 503 and keyed.headers["content-type"] == "application/problem+json"
    assert keyed.headers["retry-after"] == "1" and TABLE in keyed.json()["detail"]
    assert unkeyed.status_code == 201
    assert len(writers.messages()) == 2
