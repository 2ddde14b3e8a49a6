"""The read routes as a user meets them: a writer process on a local SQS engine, `client.py copy`
through it both ways, a long poll's timing, and a stop in the middle of one."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

import sqs_setup
from e2e import local_system
from harness import ROOT
from helpers import LOCAL_ENGINE, metric, metric_samples, wait_until
from sqs_message_service.settings import Settings
from sqsinterface import OutgoingMessage, create_client

WRITE_KEY, READ_KEY = "copy-writer", "copy-reader"
KEYS = {"API_KEYS": WRITE_KEY, "READ_KEYS": READ_KEY}
READER = {"X-API-Key": "copy-reader"}


def copy(url: str, source: Path, destination: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "client.py",
            "copy",
            str(source),
            str(destination),
            "--url",
            url,
            "--api-key",
            "copy-writer",
            "--read-key",
            "copy-reader",
            "--idle-timeout",
            "30",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def ten_thousand_lines() -> bytes:
    """10,000 lines of every kind a file has: empty ones, tabs, carriage returns, text in many
    scripts (the Basic Multilingual Plane: fauxqs refuses what lies beyond, which SQS takes),
    repeats, and a last line without a newline."""
    kinds = [
        "",
        "\t indented\twith tabs",
        "caf\u00e9 \u00fcber \u03b1\u03b2\u03b3 \u65e5\u672c\u8a9e \u0645\u0631\u062d\u0628\u0627",
        "trailing spaces   ",
        "windows line\r",
        "the same line",
        "the same line",
        '{"json": [1, 2]}',
    ]
    lines = [f"{n:05d} {kinds[n % len(kinds)]}" if n % 9 else kinds[n % len(kinds)] for n in range(10_000)]
    return ("\n".join(lines)).encode("utf-8")  # no newline after the last


@pytest.mark.parametrize("queue_name", ["lines.fifo", "lines"], ids=["FIFO queue", "standard queue"])
def test_a_10000_line_file_copied_through_the_api_comes_back_identical(tmp_path: Path, queue_name: str) -> None:
    # GIVEN a writer that reads, on a queue of this kind
    source, destination = tmp_path / "input.txt", tmp_path / "output.txt"
    source.write_bytes(ten_thousand_lines())
    with local_system(
        tmp_path, engine=LOCAL_ENGINE, QUEUE_NAME=queue_name, API_KEYS=WRITE_KEY, READ_KEYS=READ_KEY
    ) as system:
        # WHEN the file is copied through the API, both ways
        started = time.monotonic()
        run = copy(system.writer_url, source, destination)
        took_s = time.monotonic() - started
        depth = system.queue(queue_name).depth()

    # THEN OUTPUT is INPUT, byte for byte, and the queue holds nothing more
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert destination.read_bytes() == source.read_bytes()
    assert depth == {"visible": 0, "in_flight": 0, "delayed": 0}
    print(f"{queue_name}: 10,000 lines copied in {took_s:.1f} s")


def test_any_line_sqs_can_carry_survives_a_copy(
    moto_server: str, start_writer: Callable[..., Any], tmp_path: Path
) -> None:
    # GIVEN a writer that reads, on moto's server (fauxqs refuses characters SQS takes)
    env = {"SQS_ENDPOINT_URL": moto_server, "QUEUE_NAME": "lines", **KEYS}
    settings = Settings.from_env(env)
    sqs_setup.set_up(settings, create_client(settings))
    _, url = start_writer(env)
    longest = "x" * (settings.max_message_bytes - 100)  # the attributes the copy adds take the rest
    lines = ["", "\t", "\r", "emoji \U0001f600 and astral \U00010348", "\ufffd \u200b zero-width", longest, " ", "end"]
    source, destination = tmp_path / "input.txt", tmp_path / "output.txt"
    source.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))

    run = copy(url, source, destination)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert destination.read_bytes() == source.read_bytes()


@pytest.fixture
def reading_writer(tmp_path: Path) -> Any:
    """A writer that reads, on the local engine, its queue empty."""
    with local_system(
        tmp_path, engine=LOCAL_ENGINE, QUEUE_NAME="waits", API_KEYS=WRITE_KEY, READ_KEYS=READ_KEY
    ) as system:
        yield system


def polls_waiting(system: Any, count: int) -> None:
    """Once `count` long polls wait in the writer (its writer_long_polls gauge), not a guess."""

    def waiting() -> bool:
        page = requests.get(system.writer_url + "/metrics", timeout=5).text
        return metric(metric_samples(page), "writer_long_polls") == count

    wait_until(waiting, timeout_s=10, what=f"{count} long poll(s) waiting in the writer")


def test_an_empty_receive_answers_when_its_wait_is_over_and_not_later(reading_writer: Any) -> None:
    url = reading_writer.writer_url + "/api/messages/receive"

    started = time.monotonic()
    response = requests.post(url, json={"wait_seconds": 5}, headers=READER, timeout=30)
    took_s = time.monotonic() - started

    assert response.status_code == 200 and response.json() == {"messages": []}
    assert 4.5 <= took_s <= 5.5, took_s


def test_a_long_poll_answers_as_soon_as_a_message_comes(reading_writer: Any) -> None:
    url = reading_writer.writer_url + "/api/messages/receive"
    answered: list[Any] = []
    poll = threading.Thread(
        target=lambda: answered.append(
            (requests.post(url, json={"wait_seconds": 20}, headers=READER, timeout=30), time.monotonic())
        )
    )
    poll.start()
    polls_waiting(reading_writer, 1)

    sent_at = time.monotonic()
    reading_writer.queue("waits").send([OutgoingMessage(body="now")])
    poll.join(30)

    response, at = answered[0]
    assert [m["body"] for m in response.json()["messages"]] == ["now"]
    assert at - sent_at < 2.0


def test_a_writer_stop_cuts_a_long_poll_short_and_loses_nothing(reading_writer: Any) -> None:
    # GIVEN a long poll of 20 s waiting on an empty queue, with a lease of 2 s
    url = reading_writer.writer_url + "/api/messages/receive"
    answered: list[Any] = []

    def poll() -> None:
        response = requests.post(url, json={"wait_seconds": 20, "lease_seconds": 2}, headers=READER, timeout=30)
        answered.append((response, time.monotonic()))

    poller = threading.Thread(target=poll)
    poller.start()
    polls_waiting(reading_writer, 1)

    # WHEN the writer gets SIGTERM, and a message arrives while its abandoned receive still waits
    writer = reading_writer.processes["writer"]
    stopped_at = time.monotonic()
    writer.send_signal(signal.SIGTERM)
    poller.join(30)
    reading_writer.queue("waits").send([OutgoingMessage(body="sent during the stop")])
    exit_code = writer.wait(30)

    # THEN the poll is answered at once, empty; the writer exits; the message is not lost
    response, at = answered[0]
    assert response.status_code == 200 and response.json() == {"messages": []}
    assert at - stopped_at < 1.5, at - stopped_at
    assert exit_code in (0, -signal.SIGTERM)
    queue = reading_writer.queue("waits")
    found: list[Any] = []

    def visible() -> bool:
        found.extend(queue.receive(max_messages=10, wait_s=1))
        return bool(found)

    wait_until(visible, timeout_s=10, what="the message visible to another reader")
    assert [message.body for message in found] == ["sent during the stop"]


def test_the_lapsed_lease_of_a_message_received_again_is_410_on_the_local_engine(reading_writer: Any) -> None:
    base = reading_writer.writer_url + "/api/messages"
    reading_writer.queue("waits").send([OutgoingMessage(body="slow")])
    (first,) = requests.post(
        base + "/receive", json={"wait_seconds": 5, "lease_seconds": 1}, headers=READER, timeout=30
    ).json()["messages"]
    again = requests.post(
        base + "/receive", json={"wait_seconds": 5, "lease_seconds": 30}, headers=READER, timeout=30
    ).json()["messages"]
    assert [m["message_id"] for m in again] == [first["message_id"]]

    response = requests.post(
        base + "/extend", json={"tokens": [first["token"]], "lease_seconds": 30}, headers=READER, timeout=30
    )

    assert response.status_code == 410, response.text
    assert response.headers["content-type"] == "application/problem+json"
