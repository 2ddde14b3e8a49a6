"""client: the load it makes, what it counts, its bounds, and its exit code."""

from __future__ import annotations

import http.server
import io
import itertools
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import client
from client import Client, file_jobs, load_jobs
from helpers import metric, metric_samples
from sqs_message_service.output import ProcessedRecord
from sqs_message_service.settings import Settings
from sqsinterface import ReceivedMessage, SqsQueue


def test_each_batch_has_exactly_the_malformed_requests_asked_for() -> None:
    jobs = list(itertools.islice(load_jobs(batch_size=10, malformed_per_batch=1, run_id="r"), 30))

    assert [sum(j.malformed for j in jobs[i : i + 10]) for i in (0, 10, 20)] == [1, 1, 1]
    assert len({j.body for j in jobs if not j.malformed}) == 27  # distinct bodies


def test_malformed_requests_can_be_switched_off() -> None:
    jobs = itertools.islice(load_jobs(batch_size=5, malformed_per_batch=0, run_id="r"), 20)

    assert not any(job.malformed for job in jobs)


def test_a_load_is_counted_as_the_writer_answered_and_ids_are_written(
    live_server: str, queue: SqsQueue, drain: Any
) -> None:
    ids = io.StringIO()
    load = Client(
        url=live_server,
        jobs=load_jobs(batch_size=10, malformed_per_batch=1, run_id="r"),
        concurrency=4,
        count=50,
        duration_s=None,
        ids_out=ids,
    )

    stats = load.run()

    assert stats.counts == {
        "sent": 50,
        "201": 45,
        "400": 5,
        "other 4xx": 0,
        "5xx": 0,
        "conn errors": 0,
        "retry-after": 0,
    }
    assert stats.unexpected == 0 and not stats.failed
    assert set(ids.getvalue().split()) == {m["MessageId"] for m in drain(queue)}


def test_the_rate_limit_spaces_requests_out(live_server: str) -> None:
    load = Client(
        url=live_server,
        jobs=load_jobs(batch_size=10, malformed_per_batch=0, run_id="r"),
        concurrency=4,
        count=11,
        duration_s=None,
        rate=20,
    )

    started = time.monotonic()
    assert load.run().counts["201"] == 11

    assert time.monotonic() - started >= 0.5  # the 11th request is due 10/20 s after the first


def test_a_duration_bounds_the_run(live_server: str) -> None:
    # enough senders that the rate, not the writer's answer time, paces them (a loaded machine
    # answered in 700 ms, and two senders sent 2 in the half second)
    load = Client(
        url=live_server,
        jobs=load_jobs(batch_size=10, malformed_per_batch=1, run_id="r"),
        concurrency=10,
        count=None,
        duration_s=0.5,
        rate=20,
    )

    stats = load.run()

    assert 5 <= stats.counts["sent"] <= 12


class CtrlCOnFirstStats(io.StringIO):
    """Stats output where Ctrl-C arrives as the first live figures are written: KeyboardInterrupt
    where the main thread of a run spends its time, deterministically, whatever thread pytest
    runs the test on (a real SIGINT reaches only a process's main thread)."""

    interrupted = False

    def write(self, text: str) -> int:
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return super().write(text)


def test_ctrl_c_ends_the_run_as_its_duration_would_with_the_summary(live_server: str) -> None:
    load = Client(
        url=live_server,
        jobs=load_jobs(batch_size=10, malformed_per_batch=0, run_id="r"),
        concurrency=2,
        count=None,
        duration_s=60,
        rate=20,
    )
    out = CtrlCOnFirstStats()

    started = time.monotonic()
    stats = load.run(stats_out=out, stats_interval_s=0.5)

    assert out.interrupted and time.monotonic() - started < 7
    summary = re.search(r"^summary .*^sent +(\d+)$", out.getvalue(), re.MULTILINE | re.DOTALL)
    assert summary is not None, out.getvalue()
    assert 1 <= int(summary[1]) <= 20 and stats.counts["sent"] <= 20


def test_file_mode_sends_every_line_in_order(live_server: str, queue: SqsQueue, drain: Any, tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    source.write_text("first\nsecond\n\nfourth\n")

    stats = Client(
        url=live_server, jobs=file_jobs(source, group_id=None, run_id="r"), concurrency=1, count=None, duration_s=None
    ).run()

    assert stats.counts["201"] == 4
    assert sorted(m["Body"] for m in drain(queue)) == sorted(["first", "second", " ", "fourth"])


def test_connection_errors_make_the_exit_code_1_unless_allowed(
    closed_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["--url", closed_endpoint, "--count", "3", "--wait-ready", "0", "--stats-interval", "5"]

    assert client.main(arguments) == 1
    assert "conn errors           3" in capsys.readouterr().out
    assert client.main([*arguments, "--allow-errors"]) == 0


def test_a_writer_that_never_answers_is_reported(closed_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert client.main(["--url", closed_endpoint, "--wait-ready", "0.3"]) == 1
    assert "did not answer" in capsys.readouterr().err


def test_a_url_where_the_writer_answers_404_fails_at_once_naming_the_url_to_give(
    app: Any, live_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a writer, and a client told the endpoint's URL instead of the writer's base URL
    wrong = f"{live_server}/api/message"

    # WHEN the client starts, willing to wait 20 s for the writer
    exit_code = client.main(["--url", wrong, "--count", "1", "--wait-ready", "20"])

    # THEN it exits non-zero after the first answer, naming what it tried and what to give
    error = capsys.readouterr().err
    assert exit_code == 2
    assert f"{wrong}/api/health answered 404" in error
    assert f"--url {live_server}" in error
    samples = metric_samples(app.test_client().get("/metrics").text)
    assert metric(samples, "writer_requests_total", method="GET", route="other", status="404") == 1


def test_another_program_on_the_writers_port_is_named_as_such_not_as_a_wrong_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a program that is not the writer, answering 404 on the port the client is given
    class NotTheWriter(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotTheWriter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        # WHEN the client starts there
        exit_code = client.main(["--url", url, "--count", "1", "--wait-ready", "5"])
    finally:
        server.shutdown()
        server.server_close()

    # THEN it says another program holds the port, and does not blame the URL's form
    error = capsys.readouterr().err
    assert exit_code == 2
    assert "is not the writer; another program holds that port?" in error and "PORT" in error
    assert "without /api" not in error


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("http://host:5000/api/message", "http://host:5000"),
        ("http://host:5000/prefix/api/health/", "http://host:5000/prefix"),
        ("http://host:5000/elsewhere", "http://host:5000"),
    ],
)
def test_the_base_url_is_what_comes_before_api(given: str, base: str) -> None:
    assert client.base_url(given) == base


@pytest.mark.parametrize("settings", [Settings(api_keys="secret-key")])
def test_the_api_key_is_sent_with_every_request(live_server: str) -> None:
    def jobs() -> Any:
        return load_jobs(batch_size=5, malformed_per_batch=0, run_id="r")

    with_key = Client(url=live_server, jobs=jobs(), concurrency=2, count=5, duration_s=None, api_key="secret-key")
    without_key = Client(url=live_server, jobs=jobs(), concurrency=2, count=5, duration_s=None)

    assert with_key.run().counts["201"] == 5
    assert without_key.run().counts["other 4xx"] == 5  # 401


@pytest.mark.parametrize("settings", [Settings(max_queue_depth=2, depth_poll_interval_s=0.1)])
def test_a_503_with_retry_after_is_waited_out_and_the_message_sent_again(live_server: str, queue: SqsQueue) -> None:
    # GIVEN a writer that refuses while its queue holds more than 2 messages, and a consumer
    # that empties the queue every half second
    stop = threading.Event()

    def consume() -> None:
        while not stop.wait(0.5):
            while batch := queue.receive(max_messages=10, wait_s=0):
                queue.delete_messages([message.receipt_handle for message in batch])

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    jobs = load_jobs(batch_size=10, malformed_per_batch=0, run_id="r")

    # WHEN the client sends 20 messages at 20 a second, faster than the consumer drains them
    try:
        stats = Client(url=live_server, jobs=jobs, concurrency=3, count=20, duration_s=None, rate=20).run()
    finally:
        stop.set()
        consumer.join(5)

    # THEN it waited out the 503s and every message was accepted: none reported as a 5xx
    assert stats.counts["retry-after"] > 0
    assert (stats.counts["sent"], stats.counts["201"], stats.counts["5xx"]) == (20, 20, 0)


def test_processing_latency_is_from_sending_to_processed_at(tmp_path: Path) -> None:
    requested_at = {"a": 1000.0, "b": 1000.5, "c": 1001.0}
    processed = tmp_path / "processed.jsonl"

    def line(message_id: str, processed_at_s: float) -> str:
        message = ReceivedMessage(id=message_id, body="b", receipt_handle="r")
        return ProcessedRecord.of(message, processed_at_s=processed_at_s).to_line() + "\n"

    processed.write_text(
        line("a", 1000.25)
        + line("b", 1001.5)
        + line("a", 1010.0)  # a redelivery: the first counts
        + '{"id": "c", "proc'  # a line being written
    )

    latencies = client.processing_latencies(requested_at, processed, quiet_s=0.3)

    assert latencies == [0.25, 1.0]  # c is not there: left out once the file stayed quiet


def test_a_connection_the_writer_closed_while_idle_is_opened_again_not_failed() -> None:
    # GIVEN a server that answers one request per connection, then closes it, as uvicorn closes
    # a keep-alive connection left idle for 5 s
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[socket.socket] = []
    closed = threading.Semaphore(0)

    def serve() -> None:
        while len(connections) < 3:
            conn, _ = listener.accept()
            connections.append(conn)
            conn.recv(65536)
            conn.sendall(b'HTTP/1.1 201 Created\r\nContent-Length: 20\r\n\r\n{"message_id": "m1"}')
            conn.close()
            closed.release()

    threading.Thread(target=serve, daemon=True).start()
    url = urllib.parse.urlsplit(f"http://127.0.0.1:{listener.getsockname()[1]}/api/message")
    connection = client._KeepAlive(url, timeout_s=5)

    # WHEN three requests go out one after the other, the server having closed in between
    answers = []
    for _ in range(3):
        answers.append(connection.post(b'{"body": "x"}', {"Content-Type": "application/json"})[0])
        assert closed.acquire(timeout=5)  # the server has closed that connection

    # THEN each went on a new connection instead of failing on the closed one
    assert answers == [201, 201, 201]
    assert len(connections) == 3
    connection.close()
    listener.close()
