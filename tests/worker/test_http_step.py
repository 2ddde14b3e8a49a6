"""worker/http_step.py: each message POSTed to a real server on loopback, and each kind of answer
(2xx, 422, 429 or 503 with Retry-After, any other status, no answer in time, a refused
connection) turned into the outcome docs/worker.md documents."""

from __future__ import annotations

import json
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from sqs_message_service.worker.http_step import HttpStep, HttpStepFailed, retry_after_s
from sqsinterface import ReceivedMessage, Reject, RetryLater
from worker_doubles import RunningWorker


class StepServer:
    """A step's server: answers each POST as `answer(body, headers)` says, with (status, headers,
    text); records each request's headers and body, and the connections it accepted."""

    def __init__(self, answer: Callable[[str, dict[str, str]], tuple[int, dict[str, str], str]]) -> None:
        self.requests: list[tuple[dict[str, str], str]] = []
        self.connections = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                outer.connections += 1
                super().setup()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode("utf-8")
                headers = dict(self.headers.items())
                outer.requests.append((headers, body))
                status, extra, text = answer(body, headers)
                data = text.encode()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # the worker gave up on this request (the timeout test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/step"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., StepServer]]:
    servers: list[StepServer] = []

    def start(answer: Callable[[str, dict[str, str]], tuple[int, dict[str, str], str]]) -> StepServer:
        servers.append(StepServer(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def message(body: str = "hello", **fields: Any) -> ReceivedMessage:
    return ReceivedMessage(**{"id": "m-1", "body": body, "receipt_handle": "rh", **fields})


def test_a_2xx_is_success_and_the_request_says_what_the_message_is(serve: Callable[..., StepServer]) -> None:
    server = serve(lambda body, headers: (204, {}, ""))
    step = HttpStep(server.url, timeout_s=5, concurrency=4)
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"

    step(
        message(
            "ünïcode body\nline 2",
            receive_count=3,
            sent_at_s=1_700_000_000.5,
            group_id="g1",
            attributes={"kind": "order", "note": "naïve ☃"},
            trace_header=trace,
        )
    )

    ((headers, body),) = server.requests
    assert body == "ünïcode body\nline 2"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert (headers["X-Message-Id"], headers["X-Receive-Count"], headers["X-Group-Id"]) == ("m-1", "3", "g1")
    assert headers["X-Sent-At"] == "1700000000.500"
    assert headers["X-Processing-Key"] == "id:m-1"
    assert headers["X-Processing-Timeout"] == "5"
    assert json.loads(headers["X-Message-Attributes"]) == {"kind": "order", "note": "naïve ☃"}
    assert headers["X-Message-Attributes"].isascii()
    assert headers["traceparent"] == "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"


def test_connections_are_kept_and_reused(serve: Callable[..., StepServer]) -> None:
    server = serve(lambda body, headers: (200, {}, "ok"))
    step = HttpStep(server.url, timeout_s=5, concurrency=2)

    for number in range(20):
        step(message(f"m{number}"))

    assert len(server.requests) == 20
    assert server.connections == 1


def test_422_rejects_with_the_answer_as_reason(serve: Callable[..., StepServer]) -> None:
    server = serve(lambda body, headers: (422, {}, "no order_id in " + body))
    step = HttpStep(server.url, timeout_s=5, concurrency=1)

    with pytest.raises(Reject, match=r"^422 Unprocessable Entity: no order_id in \{\}$"):
        step(message("{}"))


@pytest.mark.parametrize("status", [429, 503])
def test_429_or_503_with_retry_after_asks_for_that_delay(serve: Callable[..., StepServer], status: int) -> None:
    server = serve(lambda body, headers: (status, {"Retry-After": "7"}, "slow down"))
    step = HttpStep(server.url, timeout_s=5, concurrency=1)

    with pytest.raises(RetryLater) as raised:
        step(message())

    assert raised.value.seconds == 7
    assert str(raised.value).startswith(f"{status} ")


def test_429_without_retry_after_is_a_failure_with_backoff(serve: Callable[..., StepServer]) -> None:
    server = serve(lambda body, headers: (429, {}, ""))
    step = HttpStep(server.url, timeout_s=5, concurrency=1)

    with pytest.raises(HttpStepFailed, match=r"^429 Too Many Requests$"):
        step(message())


def test_any_other_status_fails_with_the_status_and_the_start_of_the_answer(serve: Callable[..., StepServer]) -> None:
    server = serve(lambda body, headers: (500, {}, "database down: " + "x" * 1000))
    step = HttpStep(server.url, timeout_s=5, concurrency=1)

    with pytest.raises(HttpStepFailed) as raised:
        step(message())

    assert str(raised.value).startswith("500 Internal Server Error: database down: xxx")
    assert len(str(raised.value)) < 260


def test_a_redirect_is_not_followed_but_failed(serve: Callable[..., StepServer]) -> None:
    server = serve(lambda body, headers: (302, {"Location": "http://127.0.0.1:9/elsewhere"}, ""))
    step = HttpStep(server.url, timeout_s=5, concurrency=1)

    with pytest.raises(HttpStepFailed, match=r"^302 Found"):
        step(message())
    assert len(server.requests) == 1


def test_no_answer_within_the_timeout_is_a_failure_that_says_so(serve: Callable[..., StepServer]) -> None:
    release = threading.Event()

    def hang(body: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
        release.wait(10)
        return 200, {}, ""

    server = serve(hang)
    step = HttpStep(server.url, timeout_s=0.5, concurrency=1)
    started = time.monotonic()

    with pytest.raises(HttpStepFailed, match=r"no answer from .* within 0.5 s"):
        step(message())

    assert time.monotonic() - started < 2
    release.set()


def test_a_refused_connection_is_a_failure_that_says_so() -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    step = HttpStep(f"http://127.0.0.1:{port}/step", timeout_s=2, concurrency=1)

    with pytest.raises(HttpStepFailed, match="connection refused"):
        step(message())


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("120", 120), ("999999", 43_200), ("soon", None), ("-3", None)],
)
def test_retry_after_reads_seconds(value: Any, expected: Any) -> None:
    assert retry_after_s(value) == expected


def test_retry_after_reads_an_http_date() -> None:
    now = 1_700_000_000.0
    assert retry_after_s(formatdate(now + 90, usegmt=True), now_s=now) == pytest.approx(90)
    assert retry_after_s(formatdate(now - 90, usegmt=True), now_s=now) == 0


def test_the_worker_settles_each_answer_as_documented(
    start_worker: Callable[..., RunningWorker],
    serve: Callable[..., StepServer],
    drain: Any,
) -> None:
    """Through a worker: 204 deleted; 429 + Retry-After: 2, then 204; 500 every time, dead-lettered
    with the status and the answer as its reason; 422 dead-lettered on its first attempt."""
    answers: dict[str, tuple[int, dict[str, str], str]] = {"fine": (204, {}, ""), "broken": (500, {}, "database down")}
    retried_at: list[float] = []

    def answer(body: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
        if body == "busy":
            retried_at.append(time.monotonic())
            return (429, {"Retry-After": "2"}, "") if headers["X-Receive-Count"] == "1" else (204, {}, "")
        if body == "nonsense":
            return 422, {}, "not an order"
        return answers[body]

    server = serve(answer)
    running = start_worker(
        HttpStep(server.url, timeout_s=5, concurrency=4),
        ["fine", "busy", "broken", "nonsense"],
        max_receive_count=2,
        retry_backoff_base_s=0,
    )

    assert running.wait(30) == 0
    assert sorted(line.body for line in running.output_lines) == ["busy", "fine"]
    assert 1.5 <= retried_at[1] - retried_at[0] <= 5
    dead = {
        letter["Body"]: {name: value["StringValue"] for name, value in letter["MessageAttributes"].items()}
        for letter in drain(running.worker.dead_letter_queue)
    }
    assert (dead["broken"]["dead_letter.error"], dead["broken"]["dead_letter.attempts"]) == (
        "500 Internal Server Error: database down",
        "2",
    )
    assert (dead["nonsense"]["dead_letter.error_type"], dead["nonsense"]["dead_letter.attempts"]) == ("Reject", "1")
