"""The writer through its real app: every status code, what reaches SQS, group commit."""

from __future__ import annotations

import copy
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

import server
import sqs_setup
from doubles import PartlyFailingClient
from helpers import Samples, metric, metric_samples, wait_until
from server import create_app
from sqs_message_service.metrics import total
from sqs_message_service.settings import Settings
from sqs_message_service.tables import ensure_table
from sqs_message_service.trace_header import idempotency_key
from sqs_message_service.writer.idempotency import IdempotencyStore, SharedStore, scoped_key
from sqs_message_service.writer.service import WRITER_EXTENSION
from sqs_message_service.writer.spec import load_source
from sqsinterface import SqsQueue, create_client

SEED = {"body": "This is a test message to enqueue"}
PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int, detail_part: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == status and problem["title"]
    assert detail_part.lower() in problem["detail"].lower()
    return problem


def post_raw(client: Any, content: bytes, content_type: str | None = "application/json") -> Any:
    headers = {"content-type": content_type} if content_type else {}
    return client.post("/api/message", content=content, headers=headers)


def test_the_seed_message_is_accepted_and_is_in_the_queue(client: Any, queue: SqsQueue, drain: Any) -> None:
    response = client.post("/api/message", json=SEED)

    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    (received,) = drain(queue)
    assert response.json() == {"message_id": received["MessageId"]}
    assert received["Body"] == SEED["body"]


def test_attributes_and_delay_reach_sqs(client: Any, queue: SqsQueue, sqs: Any) -> None:
    response = client.post("/api/message", json={"body": "b", "attributes": {"kind": "order"}, "delay_seconds": 900})

    assert response.status_code == 201
    assert queue.depth()["delayed"] == 1


@pytest.mark.parametrize(
    ("request_json", "detail"),
    [
        ({}, "'body' is a required property"),
        ({"body": ""}, "should be non-empty"),
        ({"body": 5}, "not of type 'string'"),
        ({"body": "b", "extra": 1}, "Additional properties are not allowed"),
        ({"body": "b", "delay_seconds": 901}, "greater than the maximum"),
        ({"body": "b", "delay_seconds": -1}, "less than the minimum"),
        ({"body": "b", "delay_seconds": 1.5}, "not of type 'integer'"),
        ({"body": "b", "attributes": {f"a{i}": "v" for i in range(11)}}, "too many properties"),
        ({"body": "b", "attributes": {"k": ""}}, "should be non-empty"),
        ({"body": "b", "attributes": {"k": 1}}, "not of type 'string'"),
        ({"body": "b", "attributes": {"AWS.trace": "v"}}, "attribute name"),
        ({"body": "b", "group_id": "has space"}, "does not match"),
        ({"body": "b", "deduplication_id": "d"}, "only for FIFO"),
        ({"body": "nul \u0000 inside"}, "U+0000"),
        ({"body": "not a character \uffff"}, "U+FFFF"),
        ({"body": "b", "attributes": {"k": "bell \u0007"}}, "U+0007"),
        ({"body": "b", "attributes": {"has space": "v"}}, "attribute name"),
        ({"body": "b", "attributes": {"a..b": "v"}}, "attribute name"),
        ({"body": "b", "attributes": {"n" * 257: "v"}}, "attribute name"),
        ({"body": "b", "attributes": ["k", "v"]}, "not of type 'object'"),
        ({"body": "b", "attributes": {f"a{i}": "v" for i in range(100_000)}}, "too many properties"),
        ({"body": "b", "group_id": "g" * 129}, "is too long"),
        ({"body": "b", "delay_seconds": "5"}, "not of type 'integer'"),
        ({"body": ["nested", {"deep": [1]}]}, "not of type 'string'"),
        (["body"], "is not of type 'object'"),
        ("body", "is not of type 'object'"),
        (5, "is not of type 'object'"),
    ],
)
def test_invalid_messages_are_400_with_a_detail(client: Any, queue: SqsQueue, request_json: Any, detail: str) -> None:
    response = client.post("/api/message", json=request_json)

    assert_problem(response, 400, detail)
    assert queue.depth()["visible"] == 0


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b'{"body": ', "not valid JSON"),
        (b"", "required"),
        (b"null", "must not be empty"),
        (b'{"body": "\\ud800"}', "U+D800"),
        (b'{"body": "\xe9"}', "not valid UTF-8"),
        (b'{"body": "x", "delay_seconds": NaN}', "NaN is not a JSON value"),
        (b'{"body": "x", "delay_seconds": 1' + b"0" * 5000 + b"}", "not valid JSON"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        (b'{"body": "x", "attributes": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001, "nested too deeply"),
    ],
)
def test_malformed_bodies_are_400_never_500(client: Any, content: bytes, detail: str) -> None:
    assert_problem(post_raw(client, content), 400, detail)


def test_a_message_over_the_size_limit_is_413_counting_utf8_bytes(client: Any) -> None:
    body = "\u00e9" * (Settings().max_message_bytes // 2 + 1)  # few characters, too many bytes

    assert_problem(client.post("/api/message", json={"body": body}), 413, "the limit is 262144")


def test_a_request_over_max_request_bytes_is_413_before_it_is_parsed(queue: SqsQueue) -> None:
    settings = Settings(max_request_bytes=4096, max_message_bytes=4096)
    client = create_app(settings, queue=queue).test_client()

    response = client.post("/api/message", json={"body": "x" * 5000})

    assert_problem(response, 413, "MAX_REQUEST_BYTES")


def raw_post(base_url: str, headers: str, chunks: Any) -> bytes:
    """Send a POST by hand on a socket, as much of it as the writer takes, and read the answer."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /api/message HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the writer answered and closed before taking it all: what this test wants
        return sock.recv(65536)


def test_a_request_larger_than_any_valid_one_is_refused_before_it_is_read_whole(live_server: str) -> None:
    # GIVEN a request that declares 100 MiB but sends only 64 KiB of it
    declared = raw_post(live_server, "Content-Type: application/json\r\nContent-Length: 104857600\r\n", [b"x" * 65536])
    # AND one without a length that streams 64 KiB chunks, 3 MiB in all (MAX_REQUEST_BYTES is 2)
    chunk = b"x" * 65536
    streamed = raw_post(
        live_server,
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
        [b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(48)] + [b"0\r\n\r\n"],
    )

    # THEN neither is read whole: the first is 413, the second 411 (a length is required)
    assert declared.startswith(b"HTTP/1.1 413"), declared[:200]
    assert b"MAX_REQUEST_BYTES" in declared
    assert streamed.startswith(b"HTTP/1.1 411"), streamed[:200]
    assert b"Content-Length" in streamed


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None, "application/json; charset=latin-1"])
def test_a_non_json_content_type_is_415(client: Any, content_type: str | None) -> None:
    assert_problem(post_raw(client, json.dumps(SEED).encode(), content_type), 415)


def test_json_with_a_utf8_charset_is_accepted(client: Any) -> None:
    response = post_raw(client, json.dumps(SEED).encode(), "application/json; charset=utf-8")

    assert response.status_code == 201


def unreachable_app(settings: Settings, endpoint: str) -> Any:
    client = create_client(Settings(sqs_endpoint_url=endpoint, sqs_max_attempts=1))
    return create_app(settings, queue=SqsQueue(settings.queue_name, client))


def test_unreachable_sqs_is_503_with_retry_after(settings: Settings, closed_endpoint: str) -> None:
    client = unreachable_app(settings, closed_endpoint).test_client()

    response = client.post("/api/message", json=SEED)

    assert_problem(response, 503, "unreachable")
    assert response.headers["retry-after"] == str(settings.retry_after_s)
    assert_problem(client.get("/api/ready"), 503, "unreachable")
    assert client.get("/api/health").status_code == 200  # liveness does not depend on SQS


def test_a_missing_queue_is_503_and_readiness_says_so(settings: Settings, sqs: Any) -> None:
    client = create_app(settings, queue=SqsQueue("not-created", sqs)).test_client()

    assert_problem(client.post("/api/message", json=SEED), 503, "not-created")
    assert_problem(client.get("/api/ready"), 503, "not-created")


def test_sqs_throttling_an_entry_is_503(settings: Settings, queue: SqsQueue) -> None:
    throttled = SqsQueue(queue.name, PartlyFailingClient(queue.client))
    client = create_app(settings, queue=throttled).test_client()

    response = client.post("/api/message", json={"body": "throttle"})

    assert_problem(response, 503, "InternalError")
    assert "retry-after" in response.headers


def test_an_unexpected_error_is_500_problem_without_internals(settings: Settings, queue: SqsQueue) -> None:
    class BrokenQueue(SqsQueue):
        def send(self, messages: Any) -> Any:
            raise RuntimeError("secret internals")

    client = create_app(settings, queue=BrokenQueue(queue.name, queue.client)).test_client()

    problem = assert_problem(client.post("/api/message", json=SEED), 500)
    assert "secret" not in problem["detail"]


def test_health_ready_stats_and_ui(client: Any) -> None:
    client.post("/api/message", json=SEED)
    client.post("/api/message", json={"body": ""})  # refused by the spec: the client's fault too

    assert client.get("/api/health").json() == {"status": "ok"}
    assert client.get("/api/ready").json() == {"status": "ready", "queue": "messages"}
    stats = client.get("/api/stats").json()
    assert stats["messages"] == {"accepted": 1, "invalid": 1, "unavailable": 0, "busy": 0, "backlogged": 0}
    assert stats["queue"] == {"name": "messages", "visible": 1, "in_flight": 0, "delayed": 0}
    assert stats["dead_letter_queue"]["name"] == "messages-dlq"
    assert stats["sqs_calls"]["SendMessageBatch"] == 1
    assert client.get("/api/ui/").status_code == 200
    assert client.get("/api/openapi.json").json()["info"]["title"] == "Queue writer"


def scrape(client: Any) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return metric_samples(response.text)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return metric(after, name, **labels) - metric(before, name, **labels)


def test_a_request_moves_the_writers_metrics(client: Any) -> None:
    before = scrape(client)
    assert client.post("/api/message", json=SEED).status_code == 201
    after = scrape(client)

    post = {"method": "POST", "route": "/api/message"}
    assert moved(before, after, "writer_requests_total", **post, status="201") == 1
    assert moved(before, after, "writer_request_duration_seconds_count", **post) == 1
    assert moved(before, after, "writer_messages_total", outcome="accepted") == 1
    assert moved(before, after, "sqs_requests_total", queue="messages", operation="SendMessageBatch") == 1
    assert moved(before, after, "sqs_billable_requests_total", queue="messages") >= 1
    assert moved(before, after, "writer_send_batch_messages_count") == 1
    assert moved(before, after, "writer_send_batch_messages_sum") == 1
    assert moved(before, after, "writer_group_commit_wait_seconds_count") == 1


def test_refusals_are_counted_by_status_and_unknown_paths_as_other(client: Any) -> None:
    before = scrape(client)
    client.post("/api/message", json={"body": "\u0000"})  # JSON can carry it, SQS would refuse it
    client.get("/no/such/path/42")
    client.get("/api/message")  # a route of the spec, with a method it does not have
    after = scrape(client)

    assert moved(before, after, "writer_requests_total", method="POST", route="/api/message", status="400") == 1
    assert moved(before, after, "writer_messages_total", outcome="invalid") == 1
    assert moved(before, after, "writer_requests_total", method="GET", route="other", status="404") == 1
    assert moved(before, after, "writer_requests_total", method="GET", route="other", status="405") == 1
    assert not any("/no/such" in str(labels) for _, labels in after)  # raw paths never become labels


def test_stats_and_metrics_read_the_same_counters(client: Any) -> None:
    for body in ("one", "two", "\u0000"):
        client.post("/api/message", json={"body": body})

    stats = client.get("/api/stats").json()
    metrics = scrape(client)

    for outcome, count in stats["messages"].items():
        assert metrics[("writer_messages_total", frozenset({("outcome", outcome)}))] == count
    for operation, count in stats["sqs_calls"].items():
        assert metrics[("sqs_requests_total", frozenset({("queue", "messages"), ("operation", operation)}))] == count
    assert stats["group_commit"] == {
        "batches": metrics[("writer_send_batch_messages_count", frozenset())],
        "messages": metrics[("writer_send_batch_messages_sum", frozenset())],
    }
    assert stats["messages"]["accepted"] == 2 and stats["messages"]["invalid"] == 1


def test_stats_answers_while_sqs_is_unreachable(settings: Settings, closed_endpoint: str) -> None:
    client = unreachable_app(settings, closed_endpoint).test_client()

    stats = client.get("/api/stats")

    assert stats.status_code == 200
    assert "unreachable" in stats.json()["queue"]["error"]


def test_the_batch_endpoint_reports_each_entry_and_sends_only_the_valid(
    settings: Settings, queue: SqsQueue, drain: Any
) -> None:
    partly_failing = SqsQueue(queue.name, PartlyFailingClient(queue.client))
    client = create_app(settings, queue=partly_failing).test_client()
    entries = [
        {"body": "first"},
        {"body": "bad \u0001"},
        {"body": "reject"},
        {"body": "x" * (settings.max_message_bytes + 1)},
        {"body": "throttle"},
        *({"body": f"m{i}"} for i in range(20)),
    ]

    response = client.post("/api/messages", json={"messages": entries})

    assert response.status_code == 200
    outcome = response.json()
    statuses = [r["status"] for r in outcome["results"]]
    assert statuses == [201, 400, 400, 413, 503] + [201] * 20
    assert [r["index"] for r in outcome["results"]] == list(range(25))
    assert (outcome["accepted"], outcome["failed"]) == (21, 4)
    accepted_ids = {r["message_id"] for r in outcome["results"] if r["status"] == 201}
    assert {m["MessageId"] for m in drain(queue)} == accepted_ids


def test_the_batch_endpoint_is_503_when_sqs_takes_none(settings: Settings, closed_endpoint: str) -> None:
    client = unreachable_app(settings, closed_endpoint).test_client()

    response = client.post("/api/messages", json={"messages": [SEED, SEED]})

    assert_problem(response, 503)
    assert "retry-after" in response.headers


@pytest.mark.parametrize(
    ("request_json", "detail"),
    [
        ({"messages": []}, "should be non-empty"),
        ({"messages": [SEED] * 101}, "is too long"),
        ({"messages": ["not an object"]}, "is not of type 'object'"),
        ({}, "'messages' is a required property"),
    ],
)
def test_an_invalid_batch_request_is_400(client: Any, request_json: Any, detail: str) -> None:
    assert_problem(client.post("/api/messages", json=request_json), 400, detail)


@pytest.mark.parametrize(
    ("entry", "status", "detail"),
    [
        ({"body": ""}, 400, "should be non-empty - 'body'"),
        ({"body": "b", "x": 1}, 400, "Additional properties are not allowed"),
        ({"body": "b", "deduplication_id": "d"}, 400, "only for FIFO"),
        ({"body": 5}, 400, "not of type 'string'"),
        ({}, 400, "'body' is a required property"),
        ({"body": "b", "delay_seconds": 901}, 400, "greater than the maximum"),
        ({"body": "bell \u0007"}, 400, "U+0007"),
        ({"body": "x" * 262_145}, 413, "the limit is 262144"),
    ],
)
def test_every_entry_level_problem_of_a_batch_is_that_entrys_own_verdict(
    client: Any, queue: SqsQueue, drain: Any, entry: dict, status: int, detail: str
) -> None:
    # GIVEN a batch with one good entry on each side of a bad one
    response = client.post("/api/messages", json={"messages": [{"body": "before"}, entry, {"body": "after"}]})

    # THEN the request is 200, the bad entry has its own verdict, and the others are sent
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [result["status"] for result in results] == [201, status, 201]
    assert detail in results[1]["detail"]
    assert sorted(message["Body"] for message in drain(queue)) == ["after", "before"]


def test_the_batch_route_refuses_an_idempotency_key_rather_than_ignore_it(client: Any, queue: SqsQueue) -> None:
    response = client.post("/api/messages", json={"messages": [SEED]}, headers={"Idempotency-Key": "k-1"})

    assert_problem(response, 400, "takes no Idempotency-Key")
    assert queue.depth()["visible"] == 0


def test_fifo_messages_need_a_group_and_get_a_sequence_number(sqs: Any, drain: Any) -> None:
    import sqs_setup

    settings = Settings(queue_name="orders.fifo")
    sqs_setup.set_up(settings, sqs)
    queue = SqsQueue(settings.queue_name, sqs)
    client = create_app(settings, queue=queue).test_client()

    assert_problem(client.post("/api/message", json=SEED), 400, "group_id is required")
    assert_problem(client.post("/api/message", json={**SEED, "group_id": "g", "delay_seconds": 3}), 400, "FIFO")
    accepted = client.post("/api/message", json={**SEED, "group_id": "g"})
    assert accepted.status_code == 201
    (received,) = drain(queue)
    assert (received["Body"], received["Attributes"]["MessageGroupId"]) == (SEED["body"], "g")
    assert accepted.json()["message_id"] == received["MessageId"]


def test_a_fifo_sequence_number_is_passed_on(sqs: Any) -> None:
    """moto gives none; SQS gives one per FIFO entry, which the client may want for ordering."""
    import sqs_setup

    class SequencingClient(PartlyFailingClient):
        def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:
            response = super().send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
            for number, entry in enumerate(response["Successful"]):
                entry["SequenceNumber"] = f"1000{number}"
            return response

    settings = Settings(queue_name="orders.fifo")
    sqs_setup.set_up(settings, sqs)
    queue = SqsQueue(settings.queue_name, SequencingClient(sqs))
    client = create_app(settings, queue=queue).test_client()

    accepted = client.post("/api/message", json={**SEED, "group_id": "g"})

    assert accepted.status_code == 201
    assert accepted.json()["sequence_number"] == "10000"


#: moto in process answers with no network round trip, so there is hardly a call "in flight" for
#: requests to gather behind; SQS's round trip is tens of milliseconds. Measured here with 50
#: concurrent requests: about 40 calls at 0 ms, 19 at 10 ms, 12 at 20 ms, 9 at 30 ms.
SQS_ROUND_TRIP_S = 0.03


def test_group_commit_coalesces_concurrent_requests(
    app: Any, live_server: str, queue: SqsQueue, sqs: Any, sqs_calls: dict[str, int], drain: Any
) -> None:
    sqs.meta.events.register("before-call.sqs.SendMessageBatch", lambda **_: time.sleep(SQS_ROUND_TRIP_S))

    def post(number: int) -> requests.Response:
        return requests.post(f"{live_server}/api/message", json={"body": f"message {number}"}, timeout=30)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(post, range(50)))

    assert [r.status_code for r in responses] == [201] * 50
    ids = {r.json()["message_id"] for r in responses}
    assert {m["MessageId"] for m in drain(queue)} == ids
    assert sqs_calls["SendMessageBatch"] < 15
    stats = app.app.extensions[WRITER_EXTENSION].stats()["group_commit"]
    assert stats == {"batches": sqs_calls["SendMessageBatch"], "messages": 50}


@pytest.mark.parametrize("settings", [Settings(handler_threads=4, send_timeout_s=5)])
def test_a_writer_with_every_thread_waiting_on_sqs_answers_503_at_once(
    app: Any, live_server: str, queue: SqsQueue, sqs: Any, drain: Any
) -> None:
    # GIVEN an SQS that takes a second per send, and a writer with 4 handler threads (3 for
    # requests that reach SQS, one kept for health checks)
    sending = threading.Event()

    def slow_send(**_: Any) -> None:
        sending.set()
        time.sleep(1.0)

    sqs.meta.events.register("before-call.sqs.SendMessageBatch", slow_send)
    writer = app.app.extensions[WRITER_EXTENSION]

    def post(number: int) -> tuple[requests.Response, float]:
        started = time.monotonic()
        response = requests.post(f"{live_server}/api/message", json={"body": f"m{number}"}, timeout=30)
        return response, time.monotonic() - started

    # WHEN 10 requests arrive at once, and a health check while they wait
    with ThreadPoolExecutor(max_workers=10) as pool:
        pending = [pool.submit(post, n) for n in range(10)]

        def busy() -> float:
            return total(writer.metrics.messages, "writer_messages_total", outcome="busy")

        wait_until(lambda: sending.is_set() and busy() == 7, timeout_s=10, what="requests at SQS and the rest refused")
        health_started = time.monotonic()
        health = requests.get(f"{live_server}/api/health", timeout=30)
        health_s = time.monotonic() - health_started
        answers = [future.result() for future in pending]

    # THEN 3 wait for SQS and are accepted; the other 7 get 503 at once, without waiting
    # (anything that waited took the second SQS takes), and so does the health check
    accepted = [(r, s) for r, s in answers if r.status_code == 201]
    refused = [(r, s) for r, s in answers if r.status_code != 201]
    assert len(accepted) == 3, [r.status_code for r, _ in answers]
    for response, seconds in refused:
        assert_problem(response, 503, "requests already in progress")
        assert response.headers["Retry-After"] == "1"
        assert seconds < 0.9
    assert health.status_code == 200 and health_s < 0.9
    assert {m["MessageId"] for m in drain(queue)} == {r.json()["message_id"] for r, _ in accepted}
    assert app.app.extensions[WRITER_EXTENSION].stats()["messages"]["busy"] == 7


@pytest.mark.parametrize("settings", [Settings(max_queue_depth=3, depth_poll_interval_s=0.1)])
def test_backpressure_refuses_above_max_queue_depth_and_recovers_below(
    client: Any, queue: SqsQueue, drain: Any
) -> None:
    # GIVEN a writer with MAX_QUEUE_DEPTH=3, and 4 messages in its queue
    for number in range(4):
        assert client.post("/api/message", json={"body": f"m{number}"}).status_code == 201

    # WHEN the next depth poll has seen them
    wait_until(lambda: client.post("/api/message", json=SEED).status_code == 503, timeout_s=10, what="503")

    # THEN single and batch requests are refused with 503 + Retry-After, saying why
    single = client.post("/api/message", json=SEED)
    batch = client.post("/api/messages", json={"messages": [SEED, SEED]})
    for response in (single, batch):
        assert_problem(response, 503, "more than MAX_QUEUE_DEPTH=3")
        assert response.headers["Retry-After"] == "1"
    assert client.get("/api/stats").json()["messages"]["backlogged"] >= 3

    # WHEN the workers catch up (here: everything received, none left visible)
    drain(queue)

    # THEN the writer accepts again
    wait_until(lambda: client.post("/api/message", json=SEED).status_code == 201, timeout_s=10, what="201")


def test_a_repeated_idempotency_key_enqueues_once_and_returns_the_same_id(
    client: Any, queue: SqsQueue, drain: Any
) -> None:
    headers = {"Idempotency-Key": "order-1001"}

    first = client.post("/api/message", json=SEED, headers=headers)
    repeat = client.post("/api/message", json=SEED, headers={"Idempotency-Key": '"order-1001"'})

    assert (first.status_code, repeat.status_code) == (201, 201)
    assert repeat.json() == first.json()
    assert (first.headers["Idempotent-Replayed"], repeat.headers["Idempotent-Replayed"]) == ("false", "true")
    assert [m["MessageId"] for m in drain(queue)] == [first.json()["message_id"]]


def test_a_keyed_message_carries_its_scoped_key_to_the_worker_in_aws_trace_header(
    client: Any, queue: SqsQueue, sqs: Any
) -> None:
    sent: list[dict[str, Any]] = []
    sqs.meta.events.register(
        "before-parameter-build.sqs.SendMessageBatch", lambda params, **_: sent.extend(params["Entries"])
    )

    client.post("/api/message", json=SEED, headers={"Idempotency-Key": "order-1001", "X-API-Key": "client-a"})
    client.post("/api/message", json=SEED)

    keyed, plain = sent
    header = keyed["MessageSystemAttributes"]["AWSTraceHeader"]["StringValue"]
    assert idempotency_key(header) == scoped_key("order-1001", "client-a").hex()  # hashed: the key never travels
    assert "order-1001" not in header
    assert "MessageSystemAttributes" not in plain
    assert keyed.get("MessageAttributes", {}) == plain.get("MessageAttributes", {})  # the user's ten stay theirs


def test_an_idempotency_key_reused_with_another_request_is_422(client: Any, queue: SqsQueue) -> None:
    headers = {"Idempotency-Key": "order-1001"}
    assert client.post("/api/message", json=SEED, headers=headers).status_code == 201

    response = client.post("/api/message", json={"body": "something else"}, headers=headers)

    assert_problem(response, 422, "used with a different request")
    assert queue.depth()["visible"] == 1


@pytest.mark.parametrize("key", ["", "has space", "k" * 129, "caf\u00e9"])
def test_a_malformed_idempotency_key_is_400(client: Any, key: str) -> None:
    response = client.post("/api/message", json=SEED, headers={"Idempotency-Key": key.encode("utf-8")})

    assert_problem(response, 400, "Idempotency-Key")


def test_a_repeat_while_the_first_is_being_sent_is_409(live_server: str, sqs: Any, queue: SqsQueue) -> None:
    sending = threading.Event()

    def slow_send(**_: Any) -> None:
        sending.set()
        time.sleep(1.0)

    sqs.meta.events.register("before-call.sqs.SendMessageBatch", slow_send)
    headers = {"Idempotency-Key": "slow-1"}

    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(requests.post, f"{live_server}/api/message", json=SEED, headers=headers, timeout=30)
        assert sending.wait(10)  # the first is at SQS
        repeat = requests.post(f"{live_server}/api/message", json=SEED, headers=headers, timeout=30)

    assert first.result().status_code == 201
    assert repeat.status_code == 409 and "still being sent" in repeat.json()["detail"]
    assert queue.depth()["visible"] == 1


@pytest.mark.parametrize("settings", [Settings(api_keys="alice,bob")])
def test_idempotency_keys_are_scoped_per_api_key(client: Any, queue: SqsQueue) -> None:
    same_key = {"Idempotency-Key": "k-1"}

    alice = client.post("/api/message", json=SEED, headers={**same_key, "X-API-Key": "alice"})
    bob = client.post("/api/message", json=SEED, headers={**same_key, "X-API-Key": "bob"})

    assert (alice.status_code, bob.status_code) == (201, 201)
    assert alice.json() != bob.json()
    assert queue.depth()["visible"] == 2


def test_on_a_fifo_queue_the_idempotency_key_becomes_the_deduplication_id(sqs: Any, drain: Any) -> None:
    settings = Settings(queue_name="orders.fifo")
    sqs_setup.set_up(settings, sqs)
    queue = SqsQueue(settings.queue_name, sqs)
    client = create_app(settings, queue=queue).test_client()
    fifo_message = {**SEED, "group_id": "g"}

    keyed = client.post("/api/message", json=fifo_message, headers={"Idempotency-Key": "k-7"})
    # a message that has a deduplication_id keeps it: the key then only guards replays
    both = client.post(
        "/api/message", json={**fifo_message, "deduplication_id": "own"}, headers={"Idempotency-Key": "k-8"}
    )

    assert (keyed.status_code, both.status_code) == (201, 201)
    received = {m["MessageId"]: m["Attributes"]["MessageDeduplicationId"] for m in drain(queue)}
    assert received == {keyed.json()["message_id"]: "k-7", both.json()["message_id"]: "own"}


def test_without_content_based_deduplication_a_key_does_not_stand_in_for_the_deduplication_id(
    sqs: Any, drain: Any
) -> None:
    sqs.create_queue(QueueName="strict.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"})
    queue = SqsQueue("strict.fifo", sqs)
    client = create_app(Settings(queue_name="strict.fifo"), queue=queue).test_client()

    keyed = client.post("/api/message", json={**SEED, "group_id": "g"}, headers={"Idempotency-Key": "k-9"})

    # as docs/api.md says: the served spec requires it, whatever the headers
    assert keyed.status_code == 400 and "deduplication_id" in keyed.json()["detail"]
    assert drain(queue) == []


def test_a_store_of_keys_given_is_the_one_used_even_while_empty(settings: Settings, queue: SqsQueue) -> None:
    store = IdempotencyStore(window_s=1, max_keys=5)  # empty, so falsy: len() is 0

    app = create_app(settings, queue=queue, keys=store)

    assert app.app.extensions[WRITER_EXTENSION].idempotency is store


def test_with_a_shared_table_a_repeat_on_another_writer_replays_the_first(
    settings: Settings, queue: SqsQueue, dynamodb: Any, drain: Any
) -> None:
    ensure_table(dynamodb, "keys")
    writers = [
        create_app(settings, queue=queue, keys=SharedStore("keys", dynamodb, window_s=300, lease_s=12))
        for _ in range(2)
    ]
    headers = {"Idempotency-Key": "order-1001"}

    first = writers[0].test_client().post("/api/message", json=SEED, headers=headers)
    repeat = writers[1].test_client().post("/api/message", json=SEED, headers=headers)
    reused = writers[1].test_client().post("/api/message", json={"body": "other"}, headers=headers)

    assert (first.status_code, repeat.status_code) == (201, 201)
    assert repeat.json() == first.json() and repeat.headers["Idempotent-Replayed"] == "true"
    assert_problem(reused, 422, "used with a different request")
    assert [m["MessageId"] for m in drain(queue)] == [first.json()["message_id"]]


def test_an_unreachable_shared_table_refuses_keyed_requests_only(
    settings: Settings, queue: SqsQueue, closed_endpoint: str
) -> None:
    tables = create_client(Settings(dynamodb_endpoint_url=closed_endpoint, sqs_max_attempts=1), service="dynamodb")
    app = create_app(settings, queue=queue, keys=SharedStore("keys", tables, window_s=300, lease_s=12))
    client = app.test_client()

    keyed = client.post("/api/message", json=SEED, headers={"Idempotency-Key": "k-1"})
    unkeyed = client.post("/api/message", json=SEED)

    assert_problem(keyed, 503, "keys")
    assert keyed.headers["retry-after"] == str(settings.retry_after_s)
    assert unkeyed.status_code == 201
    assert queue.depth()["visible"] == 1  # the keyed request was not sent


def test_bodies_and_attribute_values_stay_out_of_info_logs(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    client.post("/api/message", json={"body": "SECRET-BODY", "attributes": {"k": "SECRET-VALUE"}})
    client.post("/api/message", json={"body": "SECRET-BODY\u0000"})

    assert "POST /api/message" in caplog.text  # the access lines are there
    assert "SECRET" not in caplog.text


@pytest.fixture
def keyed_client(queue: SqsQueue, tmp_path: Any) -> Any:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# one key per line\nfile-key-2\n\n")
    settings = Settings(api_keys="key-1, key-3", api_keys_file=keys_file)
    return create_app(settings, queue=queue).test_client()


@pytest.mark.parametrize("key", ["key-1", "file-key-2", "key-3"])
def test_a_valid_api_key_is_let_in(keyed_client: Any, key: str) -> None:
    response = keyed_client.post("/api/message", json=SEED, headers={"X-API-Key": key})

    assert response.status_code == 201


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": ""}, {"X-API-Key": "key-2"}, {"X-API-Key": "key-1 "}, {"X-API-Key": b"k\xe9y"}],
    ids=["none", "empty", "unknown", "trailing-space", "non-ascii"],
)
def test_without_a_valid_api_key_every_operation_but_health_is_401(
    keyed_client: Any, queue: SqsQueue, headers: dict
) -> None:
    requests_needing_a_key = [
        keyed_client.post("/api/message", json=SEED, headers=headers),
        keyed_client.post("/api/messages", json={"messages": [SEED]}, headers=headers),
        keyed_client.get("/api/ready", headers=headers),
        keyed_client.get("/api/stats", headers=headers),
    ]
    for response in requests_needing_a_key:
        assert_problem(response, 401, "X-API-Key")
    assert keyed_client.get("/api/health", headers=headers).status_code == 200
    assert queue.depth()["visible"] == 0


def test_the_served_spec_says_whether_a_key_is_needed(keyed_client: Any, client: Any) -> None:
    keyed_spec = keyed_client.get("/api/openapi.json").json()
    open_spec = client.get("/api/openapi.json").json()

    assert keyed_spec["security"] == [{"apiKey": []}]
    assert "security" not in open_spec
    assert keyed_spec["paths"]["/health"]["get"]["security"] == []


def test_api_keys_never_reach_the_logs(keyed_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    keyed_client.post("/api/message", json=SEED, headers={"X-API-Key": "key-1"})
    keyed_client.post("/api/message", json=SEED, headers={"X-API-Key": "guess-123"})

    assert "key-1" not in caplog.text and "guess-123" not in caplog.text


# connexion used as its docs say: a spec with more in it, WSGI middleware added after create_app


def with_dry_run_parameter(source: dict[str, Any]) -> dict[str, Any]:
    """A copy of swagger.yml whose POST /api/message also takes `?dry_run=true|false`."""
    document = copy.deepcopy(source)
    post = document["paths"]["/message"]["post"]
    post["parameters"] = [
        *post.get("parameters", []),
        {"name": "dry_run", "in": "query", "required": False, "schema": {"type": "boolean"}},
    ]
    return document


def test_a_query_parameter_added_to_the_spec_is_served_and_validated_by_connexion(
    tmp_path: Path, settings: Settings, queue: SqsQueue, drain: Any
) -> None:
    # GIVEN a copy of swagger.yml with a query parameter on POST /api/message, as a file
    copied = tmp_path / "swagger.yml"
    copied.write_text(yaml.safe_dump(with_dry_run_parameter(dict(load_source()))), encoding="utf-8")

    # WHEN the writer is built on it
    app = create_app(settings, queue=queue, source=copied)
    client = app.test_client()

    # THEN it starts, and connexion's own validation checks what the prepared checks do not
    accepted = client.post("/api/message?dry_run=false", json={"body": "with a query"})
    refused = client.post("/api/message?dry_run=perhaps", json={"body": "never sent"})
    body_refused = client.post("/api/message?dry_run=true", json={"body": ""})
    served = client.get("/api/openapi.json").json()
    app.app.extensions[WRITER_EXTENSION].close()

    assert accepted.status_code == 201
    assert refused.status_code == 400 and refused.headers["content-type"] == "application/problem+json"
    assert "'perhaps' is not of type 'boolean'" in refused.json()["detail"]
    assert body_refused.status_code == 400 and "body" in body_refused.json()["detail"]
    assert [m["Body"] for m in drain(queue)] == ["with a query"]
    assert served["paths"]["/message"]["post"]["parameters"][-1]["name"] == "dry_run"
    refusals = metric(metric_samples(client.get("/metrics").text), "writer_messages_total", outcome="invalid")
    assert refusals == 2  # connexion's refusals are counted in the writer's vocabulary too


def test_a_wsgi_middleware_added_after_create_app_runs_around_every_handler(client: Any, app: Any) -> None:
    seen: list[str] = []

    class Tagging:
        def __init__(self, wsgi_app: Any) -> None:
            self.wsgi_app = wsgi_app

        def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
            seen.append(environ["PATH_INFO"])

            def tagged(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                return start_response(status, [*headers, ("X-Tagged", "yes")], exc_info)

            return self.wsgi_app(environ, tagged)

    app.add_wsgi_middleware(Tagging)

    health = client.get("/api/health")
    sent = client.post("/api/message", json={"body": "through the middleware"})

    assert health.status_code == 200 and health.headers["x-tagged"] == "yes"
    assert sent.status_code == 201 and sent.headers["x-tagged"] == "yes"
    assert seen == ["/api/health", "/api/message"]


def test_the_writer_starts_whatever_a_worker_only_setting_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR", "not a function")
    monkeypatch.setenv("WORKER_CONCURRENCY", "0")

    with pytest.raises(SystemExit) as shown:  # --help: the settings were read, the options parsed
        server.main(["--help"])

    assert shown.value.code == 0
