"""The writer's limits at the socket (sqs_message_service/serving.py), against `python server.py`
on loopback: slow headers, oversized headers, a body that stops, too many connections. Short
limits come from the environment, so that each test takes a few seconds."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest
import requests

import sqs_setup
from doubles import SlowProxy
from harness import accepts_connections, free_port
from helpers import metric, metric_samples, wait_until
from sqs_message_service.aws import create_client
from sqs_message_service.settings import Settings

UNFINISHED = b"POST /api/message HTTP/1.1\r\nHost: x\r\n"  # and then nothing


def writer_with(moto_server: str, start_writer: Callable[..., Any], **limits: str) -> tuple[Any, str, int]:
    """A writer on moto with `limits` in its environment: (its process, its URL, its port)."""
    settings = Settings.from_env({"SQS_ENDPOINT_URL": moto_server})
    sqs_setup.set_up(settings, create_client(settings))
    writer, url = start_writer({"SQS_ENDPOINT_URL": moto_server, **limits})
    return writer, url, int(url.rsplit(":", 1)[1])


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_closed(connection: socket.socket, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it does not in time."""
    connection.settimeout(timeout_s)
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def read_response(connection: socket.socket) -> bytes:
    """One whole response (its head, then as many bytes as its Content-Length says)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        assert chunk, f"closed after {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def message_request(body: bytes = b'{"body": "hello"}', extra: bytes = b"") -> bytes:
    return (
        b"POST /api/message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def accepted(url: str) -> int:
    return int(requests.get(f"{url}/api/stats", timeout=10).json()["messages"]["accepted"])


def test_connections_with_unfinished_headers_are_closed_within_the_header_limit_while_requests_are_served(
    moto_server: str, start_writer: Callable[..., Any]
) -> None:
    # GIVEN a writer whose requests must complete their headers within 1 s
    _, url, port = writer_with(moto_server, start_writer, HEADER_TIMEOUT="1")

    # WHEN 200 connections each send the start of a request's headers, and then nothing
    slow = []
    for _ in range(200):
        connection = connect(port)
        connection.sendall(UNFINISHED)
        slow.append(connection)
    opened = time.monotonic()

    # THEN real requests are served meanwhile
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(
            pool.map(
                lambda n: requests.post(f"{url}/api/message", json={"body": f"m{n}"}, timeout=10).status_code, range(20)
            )
        )
    assert statuses == [201] * 20

    # AND each slow connection is answered 408 and closed within the limit (and the sweep's tenth)
    answers = [read_until_closed(connection, timeout_s=5) for connection in slow]
    closed_after_s = time.monotonic() - opened
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[0]
    assert closed_after_s < 1 + 1.5, closed_after_s
    for connection in slow:
        connection.close()
    assert requests.get(f"{url}/api/health", timeout=5).status_code == 200


@pytest.mark.parametrize("pieces", [1, 64], ids=["sent at once", "sent in pieces, never finished"])
def test_headers_over_the_cap_get_431_and_are_not_processed(
    moto_server: str, start_writer: Callable[..., Any], pieces: int
) -> None:
    # GIVEN a writer that takes at most 4 KiB of request line and headers
    _, url, port = writer_with(moto_server, start_writer, MAX_HEADER_BYTES="4096")
    padding = b"X-Padding: " + b"a" * 8192 + b"\r\n"

    # WHEN a valid message comes with 8 KiB of headers, whole or a piece at a time
    connection = connect(port)
    request = message_request(extra=padding) if pieces == 1 else (UNFINISHED + padding)[:-2]
    size = -(-len(request) // pieces)
    try:
        for start in range(0, len(request), size):
            connection.sendall(request[start : start + size])
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before the rest arrived

    # THEN it is answered 431 and the connection closed, and nothing was sent to the queue
    answer = read_until_closed(connection, timeout_s=5)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    connection.close()
    assert accepted(url) == 0
    # AND the same message with headers under the cap is taken
    small = connect(port)
    small.sendall(message_request(extra=b"X-Padding: " + b"a" * 1024 + b"\r\n"))
    assert read_response(small).startswith(b"HTTP/1.1 201 ")
    small.close()
    assert accepted(url) == 1


def test_a_body_that_stops_half_way_is_dropped_within_its_limit(
    moto_server: str, start_writer: Callable[..., Any]
) -> None:
    # GIVEN a writer that gives a request's body 1 s once its headers are in
    _, url, port = writer_with(moto_server, start_writer, BODY_TIMEOUT="1")
    body = b'{"body": "' + b"b" * 200 + b'"}'

    # WHEN a request announces its whole body and sends half of it
    connection = connect(port)
    connection.sendall(message_request(body)[: -len(body) // 2])
    sent = time.monotonic()

    # THEN the connection is answered 408 and closed within the limit, and nothing was sent
    answer = read_until_closed(connection, timeout_s=5)
    assert time.monotonic() - sent < 1 + 1.5
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    connection.close()
    assert accepted(url) == 0
    # AND the writer counts it as the 408 it was, not as an invalid message
    samples = metric_samples(requests.get(f"{url}/metrics", timeout=5).text)
    assert metric(samples, "writer_requests_total", method="POST", route="/api/message", status="408") == 1
    assert metric(samples, "writer_messages_total", outcome="invalid") == 0
    assert requests.post(f"{url}/api/message", json={"body": "whole"}, timeout=10).status_code == 201


def test_an_idle_keep_alive_connection_is_closed_after_its_time(
    moto_server: str, start_writer: Callable[..., Any]
) -> None:
    # GIVEN a writer that keeps an idle connection open for 1 s between requests
    _, _, port = writer_with(moto_server, start_writer, KEEP_ALIVE_TIMEOUT="1")

    # WHEN a connection is answered, then sends nothing more
    connection = connect(port)
    connection.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(connection).startswith(b"HTTP/1.1 200 ")
    answered = time.monotonic()

    # THEN the writer closes it after about that long, and not before
    assert read_until_closed(connection, timeout_s=5) == b""
    assert 0.9 < time.monotonic() - answered < 1 + 1.5
    connection.close()


def test_the_connection_cap_holds(moto_server: str, start_writer: Callable[..., Any]) -> None:
    # GIVEN a writer that keeps at most 20 connections open
    _, url, port = writer_with(moto_server, start_writer, MAX_CONNECTIONS="20", HEADER_TIMEOUT="60")
    health = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"

    # WHEN 20 connections are open and served
    held = []
    for _ in range(20):
        connection = connect(port)
        connection.sendall(health)
        assert read_response(connection).startswith(b"HTTP/1.1 200 ")
        held.append(connection)

    # THEN a 21st is answered 503 with Retry-After at once and closed
    extra = connect(port)
    answer = read_until_closed(extra, timeout_s=5)
    extra.close()
    assert answer.startswith(b"HTTP/1.1 503 ") and b"\r\nretry-after: 1\r\n" in answer.lower(), answer[:200]
    # AND the 20 are still served
    for connection in held:
        connection.sendall(health)
        assert read_response(connection).startswith(b"HTTP/1.1 200 ")

    # AND once one of them closes, a new connection is served
    held.pop().close()

    def served() -> bool:
        try:
            return requests.get(f"{url}/api/health", timeout=5, headers={"Connection": "close"}).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(served, timeout_s=5, what="a new connection served once one closed")
    for connection in held:
        connection.close()


def test_the_console_holds_the_same_limits(start: Callable[..., Any]) -> None:
    # GIVEN the console, whose requests must complete their headers within 1 s
    port = free_port()
    start(
        "-m",
        "sqs_message_service.console",
        "--port",
        str(port),
        env={"HEADER_TIMEOUT": "1", "SQS_ENDPOINT_URL": "http://127.0.0.1:9"},
    )
    wait_until(lambda: accepts_connections(port), timeout_s=30, what="the console listening")

    # WHEN a connection sends the start of a request's headers, and then nothing
    connection = connect(port)
    connection.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    sent = time.monotonic()

    # THEN it is answered 408 and closed within the limit
    answer = read_until_closed(connection, timeout_s=5)
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - sent < 1 + 1.5
    connection.close()


def test_a_saturated_writer_turns_requests_away_at_the_socket_with_retry_after_and_counts_them(
    moto_server: str, start_writer: Callable[..., Any]
) -> None:
    # GIVEN a writer that serves one request at a time, whose SQS takes 3 s to answer, serving one
    proxy = SlowProxy(int(moto_server.rsplit(":", 1)[1]), delay_s=0.0)
    try:
        writer, url, port = writer_with(moto_server, start_writer, SQS_ENDPOINT_URL=proxy.url, HANDLER_THREADS="2")
        proxy.delay_s = 3.0
        held = connect(port)
        held.sendall(message_request())
        wait_until(lambda: b" 503 " in answer_within(port, 0.5), timeout_s=10, what="the one place taken")

        # WHEN more requests come while it is taken
        answers = [answer_within(port, 2.0) for _ in range(5)]

        # THEN each is answered 503 with Retry-After, as soon as its headers are in
        assert all(a.startswith(b"http/1.1 503 ") and b"\r\nretry-after: 1\r\n" in a for a in answers), answers
        # AND one that asks for its connection to be closed is answered before the close
        closing = connect(port)
        closing.sendall(message_request(extra=b"Connection: close\r\n"))
        assert read_until_closed(closing, timeout_s=2).startswith(b"HTTP/1.1 503 ")
        closing.close()
        held.settimeout(10)
        read_response(held)
        held.close()
        proxy.delay_s = 0.0
        # AND each refusal is counted (7 or more: the wait above made some), with no access line
        samples = metric_samples(requests.get(f"{url}/metrics", timeout=5).text)
        busy = metric(samples, "writer_messages_total", outcome="busy")
        assert busy >= 7
        assert metric(samples, "writer_requests_total", method="POST", route="/api/message", status="503") == busy
        assert '"POST /api/message" 503' not in writer.output
        # AND once the place is free, a request is served
        assert requests.post(f"{url}/api/message", json={"body": "later"}, timeout=10).status_code == 201
    finally:
        proxy.stop()


def answer_within(port: int, timeout_s: float) -> bytes:
    """The answer (lowercased) to one message on a new connection; b"" if none within `timeout_s`
    (then the request goes on in the writer, holding its place)."""
    connection = connect(port)
    connection.settimeout(timeout_s)
    try:
        connection.sendall(message_request())
        return read_response(connection).lower()
    except TimeoutError:
        return b""
    finally:
        connection.close()
