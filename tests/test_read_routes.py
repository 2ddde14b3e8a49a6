"""The read routes through the real app on moto: keys, receive, acknowledge, give back (to the
dead-letter queue on the last receive, with the reason), extend, lapsed and foreign tokens."""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any, Iterator

import pytest
import requests

from helpers import metric, metric_samples, wait_until
from server import create_app
from sqs_message_service import dlq
from sqs_message_service.settings import Settings
from sqs_message_service.sqs import QueueUnavailable
from sqs_message_service.writer.reader import PollThreads
from sqs_message_service.writer.service import WRITER_EXTENSION
from sqsinterface import SqsQueue
from test_server import assert_problem

READER = {"X-API-Key": "reader-1"}
WRITER = {"X-API-Key": "writer-1"}


@pytest.fixture
def settings() -> Settings:
    return Settings(api_keys="writer-1", read_keys="reader-1,reader-2", max_receive_count=2)


def send(client: Any, *bodies: str, **fields: Any) -> list[str]:
    response = client.post("/api/messages", json={"messages": [{"body": b, **fields} for b in bodies]}, headers=WRITER)
    assert response.status_code == 200, response.text
    return [result["message_id"] for result in response.json()["results"]]


def received_soon(client: Any, what: str, **request: Any) -> list[dict]:
    """What a receive brings once it brings something (polled for up to 5 s)."""
    got: list[dict] = []

    def some() -> bool:
        got.extend(receive(client, **request))
        return bool(got)

    wait_until(some, timeout_s=5, what=what)
    return got


def receive(client: Any, **request: Any) -> list[dict]:
    response = client.post("/api/messages/receive", json=request, headers=READER)
    assert response.status_code == 200, response.text
    return response.json()["messages"]


READ_ROUTES = [
    ("/api/messages/receive", {}),
    ("/api/messages/acknowledge", {"tokens": ["t"]}),
    ("/api/messages/give-back", {"tokens": ["t"]}),
    ("/api/messages/extend", {"tokens": ["t"], "lease_seconds": 5}),
]


@pytest.mark.parametrize(("path", "body"), READ_ROUTES, ids=[path for path, _ in READ_ROUTES])
@pytest.mark.parametrize(
    ("headers", "status", "detail"),
    [
        ({}, 401, "no X-API-Key header"),
        ({"X-API-Key": "guess"}, 401, "X-API-Key header holds no key"),
        (WRITER, 403, "reading needs one of READ_KEYS"),
    ],
    ids=["no key", "a wrong key", "a writer key"],
)
def test_reading_takes_a_read_key_only(
    client: Any, queue: SqsQueue, path: str, body: dict, headers: dict, status: int, detail: str
) -> None:
    send(client, "kept")

    assert_problem(client.post(path, json=body, headers=headers), status, detail)
    assert queue.depth()["visible"] == 1  # nothing received


def test_a_read_key_does_not_write(client: Any) -> None:
    assert_problem(client.post("/api/message", json={"body": "b"}, headers=READER), 401, "X-API-Key")


@pytest.mark.parametrize("path", [path for path, _ in READ_ROUTES])
def test_without_read_keys_every_read_is_refused_saying_how_to_turn_it_on(queue: SqsQueue, path: str) -> None:
    app = create_app(Settings(api_keys="writer-1"), queue=queue)
    body = dict(READ_ROUTES)[path]
    try:
        for headers in ({}, WRITER, READER):
            assert_problem(app.test_client().post(path, json=body, headers=headers), 403, "set READ_KEYS")
    finally:
        app.app.extensions[WRITER_EXTENSION].close()


def test_a_message_is_read_with_what_it_was_sent_with_and_acknowledged(client: Any, queue: SqsQueue) -> None:
    # GIVEN a message sent with attributes, and one more
    (sent_id,) = send(client, "tab\there, \u00e9\U0001f600", attributes={"kind": "order"})
    send(client, "second")

    # WHEN both are read and acknowledged in one request
    read = receive(client, max_messages=10, lease_seconds=30)
    response = client.post("/api/messages/acknowledge", json={"tokens": [m["token"] for m in read]}, headers=READER)

    # THEN each came with its id, body, attributes, receive count and token, and is gone
    first = next(m for m in read if m["message_id"] == sent_id)
    assert first["body"] == "tab\there, \u00e9\U0001f600"
    assert first["attributes"] == {"kind": "order"}
    assert first["receive_count"] == 1 and first["token"].startswith("r1.")
    assert response.status_code == 200
    assert response.json() == {
        "done": 2,
        "failed": 0,
        "results": [{"index": 0, "status": 200}, {"index": 1, "status": 200}],
    }
    assert queue.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_receive_acknowledges_the_tokens_it_is_given_before_it_receives(client: Any, queue: SqsQueue) -> None:
    # GIVEN two messages read, and a third sent afterwards
    send(client, "one", "two")
    read = receive(client, max_messages=10, lease_seconds=30)
    send(client, "three")

    # WHEN the next receive carries the first two's tokens, and one that is not a token
    response = client.post(
        "/api/messages/receive",
        headers=READER,
        json={"max_messages": 10, "lease_seconds": 30, "acknowledge": [m["token"] for m in read] + ["not-a-token"]},
    )

    # THEN those two are gone, the third came, and each token's outcome is in the answer
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [m["body"] for m in answer["messages"]] == ["three"]
    assert answer["acknowledged"]["done"] == 2 and answer["acknowledged"]["failed"] == 1
    assert [r["status"] for r in answer["acknowledged"]["results"]] == [200, 200, 400]
    assert queue.depth() == {"visible": 0, "in_flight": 1, "delayed": 0}


def test_a_receive_without_acknowledge_answers_only_the_messages(client: Any) -> None:
    response = client.post("/api/messages/receive", json={}, headers=READER)

    assert response.status_code == 200 and response.json() == {"messages": []}


def test_a_receive_with_more_than_100_tokens_to_acknowledge_is_400(client: Any, queue: SqsQueue) -> None:
    send(client, "kept")

    response = client.post("/api/messages/receive", json={"acknowledge": ["t"] * 101}, headers=READER)

    assert_problem(response, 400, "acknowledge")
    assert queue.depth()["visible"] == 1  # nothing received


def test_an_empty_queue_answers_an_empty_list(client: Any) -> None:
    assert receive(client) == []


def test_a_lease_that_lapses_makes_the_message_visible_again(client: Any) -> None:
    send(client, "leased")
    (first,) = receive(client, lease_seconds=1)
    assert receive(client) == []  # hidden while leased

    again = received_soon(client, "the message back after its lease", lease_seconds=30)

    assert again[0]["message_id"] == first["message_id"] and again[0]["receive_count"] == 2


def test_an_expired_token_is_410_never_500(client: Any) -> None:
    # GIVEN a token whose lease lapsed, whose message was received again and acknowledged
    send(client, "leased")
    (first,) = receive(client, lease_seconds=1)
    again = received_soon(client, "redelivery", lease_seconds=30)
    assert (
        client.post("/api/messages/acknowledge", json={"tokens": [again[0]["token"]]}, headers=READER).status_code
        == 200
    )

    # WHEN the old token extends the lease, or gives the message back
    extended = client.post(
        "/api/messages/extend", json={"tokens": [first["token"]], "lease_seconds": 60}, headers=READER
    )
    given_back = client.post("/api/messages/give-back", json={"tokens": [first["token"]]}, headers=READER)

    # THEN each is 410 Gone, with SQS's words
    assert_problem(extended, 410, "ReceiptHandleIsInvalid")
    assert_problem(given_back, 410, "ReceiptHandleIsInvalid")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "r1",
        "r1.x.1.aGFuZGxl",
        "nonsense.token.of.mine",
        "r1.00000000.1.aGFuZGxl",
        "r1.{tag}.one.aGFuZGxl",
        "r1.{tag}.1.!!!",
        "r1.{tag}.1.aGFuZGxl.e30",
    ],
)
def test_what_is_not_a_token_is_400_before_any_sqs_call(
    client: Any, app: Any, sqs_calls: dict[str, int], token: str
) -> None:
    tag = app.app.extensions["queue_reader"].tokens.tag
    response = client.post("/api/messages/acknowledge", json={"tokens": [token.format(tag=tag)]}, headers=READER)

    assert response.status_code == 400, response.text
    assert "DeleteMessageBatch" not in sqs_calls


def test_each_token_has_its_own_outcome_when_some_succeed(client: Any) -> None:
    send(client, "one")
    (message,) = receive(client)

    response = client.post("/api/messages/acknowledge", json={"tokens": ["bogus", message["token"]]}, headers=READER)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [400, 200]
    assert "tokens.0: not a token" in results[0]["detail"]


def test_given_back_with_a_delay_it_comes_back_after_it(client: Any, queue: SqsQueue) -> None:
    send(client, "later")
    (message,) = receive(client, lease_seconds=60)

    response = client.post(
        "/api/messages/give-back", json={"tokens": [message["token"]], "delay_seconds": 1}, headers=READER
    )

    assert response.status_code == 200 and response.json()["results"] == [{"index": 0, "status": 200}]
    assert receive(client) == []
    back = received_soon(client, "the message given back")
    assert back[0]["message_id"] == message["message_id"]


def test_given_back_on_its_last_receive_it_is_dead_lettered_with_the_readers_reason(
    client: Any, queues: tuple[SqsQueue, SqsQueue]
) -> None:
    # GIVEN a message on its last allowed receive (MAX_RECEIVE_COUNT=2)
    queue, dead_letter_queue = queues
    (sent_id,) = send(client, "poison", attributes={"kind": "order"})
    (first,) = receive(client)
    client.post("/api/messages/give-back", json={"tokens": [first["token"]], "reason": "first try"}, headers=READER)
    (last,) = receive(client)
    assert last["receive_count"] == 2

    # WHEN the reader gives it back once more, with its reason
    response = client.post(
        "/api/messages/give-back", json={"tokens": [last["token"]], "reason": "schema v3 unknown"}, headers=READER
    )

    # THEN it is in the dead-letter queue with that reason, as queue-dlq and the console read it
    assert response.json()["results"] == [{"index": 0, "status": 200, "dead_lettered": True}]
    (dead,) = dlq.sample(dead_letter_queue, max_messages=10, next_wait_s=0)
    assert dead.body == "poison" and dead.attributes["kind"] == "order"
    reasons = dlq.reasons(dead)
    assert reasons["source_id"] == sent_id and reasons["attempts"] == 2
    assert reasons["failures"][-1]["error_type"] == "GivenBack"
    assert reasons["failures"][-1]["error"] == "schema v3 unknown"
    assert queue.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_lease_extended_keeps_the_message_hidden(client: Any) -> None:
    send(client, "long job")
    (message,) = receive(client, lease_seconds=1)

    response = client.post(
        "/api/messages/extend", json={"tokens": [message["token"]], "lease_seconds": 30}, headers=READER
    )
    time.sleep(1.5)  # past the first lease: the message would be visible had it not been extended

    assert response.status_code == 200
    assert receive(client) == []


def test_a_lease_longer_than_read_max_lease_is_400(client: Any) -> None:
    assert_problem(
        client.post("/api/messages/receive", json={"lease_seconds": 301}, headers=READER),
        400,
        "greater than the maximum",
    )


def test_on_a_fifo_queue_a_message_carries_its_group_and_order_holds(sqs: Any) -> None:
    import sqs_setup

    fifo = Settings(queue_name="lines.fifo", read_keys="reader-1", api_keys="writer-1")
    sqs_setup.set_up(fifo, sqs)
    app = create_app(fifo, queue=SqsQueue(fifo.queue_name, sqs))
    client = app.test_client()
    try:
        bodies = [f"line {n}" for n in range(25)]
        response = client.post(
            "/api/messages",
            headers=WRITER,
            json={
                "messages": [
                    {"body": body, "group_id": "g", "deduplication_id": str(n)} for n, body in enumerate(bodies)
                ]
            },
        )
        assert response.status_code == 200
        read: list[dict] = []
        while batch := receive(client, max_messages=10):
            read += batch
            client.post("/api/messages/acknowledge", json={"tokens": [m["token"] for m in batch]}, headers=READER)
        assert [m["body"] for m in read] == bodies
        assert {m["group_id"] for m in read} == {"g"}
    finally:
        app.app.extensions[WRITER_EXTENSION].close()


def test_reads_acknowledgements_and_give_backs_are_counted(client: Any) -> None:
    send(client, "a", "b")
    read = receive(client)
    client.post("/api/messages/acknowledge", json={"tokens": [read[0]["token"]]}, headers=READER)
    client.post("/api/messages/give-back", json={"tokens": [read[1]["token"]]}, headers=READER)

    samples = metric_samples(client.get("/metrics").text)

    assert metric(samples, "writer_read_messages_total", outcome="received") == 2
    assert metric(samples, "writer_read_messages_total", outcome="acknowledged") == 1
    assert metric(samples, "writer_read_messages_total", outcome="given_back") == 1


@pytest.fixture
def one_poll(queue: SqsQueue) -> Iterator[Any]:
    app = create_app(Settings(read_keys="reader-1", read_max_polls=1), queue=queue)
    yield app
    app.app.extensions[WRITER_EXTENSION].close()


def test_long_polls_past_read_max_polls_are_503_with_retry_after(one_poll: Any, live_server: str) -> None:
    # live_server serves `app`; this test needs its own with READ_MAX_POLLS=1, served the same way
    import uvicorn

    from harness import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(one_poll, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout_s=10, what="uvicorn started")
    url = f"http://127.0.0.1:{port}/api/messages/receive"
    try:
        # GIVEN one long poll waiting on an empty queue
        first = threading.Thread(
            target=requests.post, args=(url,), kwargs={"json": {"wait_seconds": 3}, "headers": READER, "timeout": 10}
        )
        first.start()
        wait_until(lambda: long_polls_waiting(f"http://127.0.0.1:{port}") == 1, timeout_s=5, what="the first poll")

        # WHEN another asks to wait too
        second = requests.post(url, json={"wait_seconds": 3}, headers=READER, timeout=10)
        quick = requests.post(url, json={"wait_seconds": 0}, headers=READER, timeout=10)

        # THEN it is 503 at once with Retry-After; one that does not wait is answered
        assert_problem(second, 503, "READ_MAX_POLLS")
        assert second.headers["Retry-After"] == "1"
        assert quick.status_code == 200
        first.join(10)
    finally:
        server.should_exit = True
        thread.join(10)


def test_long_polls_one_after_another_run_on_one_kept_thread() -> None:
    polls = PollThreads()
    threads = []

    for number in range(5):
        future = polls.submit(contextvars.copy_context(), lambda n: (n, threading.current_thread()), n=number)
        answer, thread = future.result(timeout=5)
        assert answer == number
        threads.append(thread)

    assert len(set(threads)) == 1 and threads[0].daemon


def test_a_poll_that_raises_hands_its_error_to_the_request() -> None:
    def fails() -> None:
        raise QueueUnavailable("ReceiveMessage: SQS did not answer")

    future = PollThreads().submit(contextvars.copy_context(), fails)

    with pytest.raises(QueueUnavailable, match="did not answer"):
        future.result(timeout=5)


def long_polls_waiting(base_url: str) -> float:
    """The writer_long_polls gauge of the writer at `base_url`."""
    return metric(metric_samples(requests.get(f"{base_url}/metrics", timeout=5).text), "writer_long_polls")


def test_a_long_poll_is_counted_while_it_waits(live_server: str) -> None:
    # GIVEN a long poll of 2 s on an empty queue, under way
    url = f"{live_server}/api/messages/receive"
    answered: list[Any] = []
    poll = threading.Thread(
        target=lambda: answered.append(requests.post(url, json={"wait_seconds": 2}, headers=READER, timeout=10))
    )
    poll.start()

    # THEN /metrics counts it while it waits, and not once it has answered
    wait_until(lambda: long_polls_waiting(live_server) == 1, timeout_s=2, what="the long poll counted")
    poll.join(10)
    assert answered[0].status_code == 200 and long_polls_waiting(live_server) == 0


def test_poll_threads_end_once_closed() -> None:
    polls = PollThreads()
    _, thread = polls.submit(contextvars.copy_context(), lambda: (None, threading.current_thread())).result(timeout=5)

    polls.close()

    thread.join(5)
    assert not thread.is_alive()
