"""The worker as a user runs it, against moto_server: signals, and the 300-message check."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Callable

import pytest

import sqs_setup
from config import Settings
from sqsinterface import OutgoingMessage, SqsQueue, create_client
from conftest import wait_until

pytestmark = pytest.mark.integration


def loaded_queues(endpoint: str, bodies: list[str]) -> tuple[SqsQueue, SqsQueue]:
    """Create the queue and DLQ on `endpoint` and send `bodies` to the queue."""
    settings = Settings(sqs_endpoint_url=endpoint)
    client = create_client(settings)
    sqs_setup.set_up(settings, client)
    queue = SqsQueue(settings.queue_name, client)
    queue.send([OutgoingMessage(body=b) for b in bodies])
    return queue, SqsQueue(settings.dlq_name, client)


def dead_letters(dlq: SqsQueue) -> list[str]:
    bodies = []
    while batch := dlq.receive(max_messages=10, wait_s=0):
        bodies.extend(m.body for m in batch)
        dlq.change_visibility([(m.receipt_handle, 600) for m in batch])
    return bodies


def output_bodies(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["body"] for line in path.read_text().splitlines()]


def test_sigterm_while_busy_finishes_in_flight_work_and_exits_0(
    moto_server: str, start: Callable[..., Any], tmp_path: Path
) -> None:
    bodies = [f"m{n}" for n in range(12)]
    queue, _ = loaded_queues(moto_server, bodies)
    output = tmp_path / "processed.jsonl"

    worker = start(
        "worker.py", "--concurrency", "4", "--process-time", "1.5", "--failure-rate", "0",
        "--output", str(output), "--grace", "10",
        env={"SQS_ENDPOINT_URL": moto_server, "RECEIVE_WAIT_SECONDS": "1"},
    )
    # Busy for sure: a first message is done, and the worker keeps receiving while it works.
    # (SQS counts messages in flight before a processor starts them: no sync point.)
    wait_until(lambda: len(output_bodies(output)) >= 1, timeout_s=30, what="first message processed")

    assert worker.stop(signal.SIGTERM, timeout_s=15) == 0, worker.output[-3000:]

    processed = output_bodies(output)
    assert len(processed) == len(set(processed)), worker.output[-3000:]  # nothing processed twice
    depth = queue.depth()
    assert depth["in_flight"] == 0, worker.output[-3000:]  # nothing left invisible
    assert depth["visible"] + len(processed) == len(bodies)  # nothing lost
    assert "summary" in worker.output


def test_300_messages_at_failure_rate_0_3_end_processed_or_dead_lettered_never_both(
    moto_server: str, start: Callable[..., Any], tmp_path: Path
) -> None:
    bodies = [f"message {n}" for n in range(300)]
    queue, dlq = loaded_queues(moto_server, bodies)
    output = tmp_path / "processed.jsonl"

    worker = start(
        "worker.py", "--failure-rate", "0.3", "--seed", "3", "--process-time", "0.002",
        "--output", str(output), "--exit-when-idle", "2", "--stats-interval", "5",
        env={"SQS_ENDPOINT_URL": moto_server, "RECEIVE_WAIT_SECONDS": "1", "RETRY_BACKOFF_BASE": "0"},
    )
    assert worker.popen.wait(timeout=240) == 0, worker.output[-2000:]

    processed, dead = output_bodies(output), dead_letters(dlq)
    print(f"processed {len(processed)}, dead-lettered {len(dead)}")
    assert len(processed) == len(set(processed)), worker.output[-3000:]
    assert set(processed).isdisjoint(dead)
    assert sorted(processed + dead) == sorted(bodies)
    assert len(dead) > 0  # 0.3 ** 3: about 8 of 300 fail three times
    assert sum(queue.depth().values()) == 0
