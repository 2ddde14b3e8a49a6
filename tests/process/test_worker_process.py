"""The worker as a user runs it, against moto_server: signals, and the 300-message check."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

import sqs_setup
from harness import ROOT, accepts_connections, free_port
from helpers import Samples, metric, metric_samples, start_moto_server, wait_until
from sqs_message_service.cli import EXIT_FAILED, EXIT_USAGE
from sqs_message_service.output import read_records
from sqs_message_service.settings import Settings
from sqsinterface import OutgoingMessage, SqsQueue, create_client


def loaded_queues(endpoint: str, bodies: list[str]) -> tuple[SqsQueue, SqsQueue]:
    """Create the queue and DLQ on `endpoint` and send `bodies` to the queue."""
    settings = Settings(sqs_endpoint_url=endpoint)
    client = create_client(settings)
    sqs_setup.set_up(settings, client)
    queue = SqsQueue(settings.queue_name, client)
    queue.send([OutgoingMessage(body=b) for b in bodies])
    return queue, SqsQueue(settings.dlq_name, client)


def dead_letters(dlq: SqsQueue) -> list[str]:
    bodies: list[str] = []
    while batch := dlq.receive(max_messages=10, wait_s=0):
        bodies.extend(m.body for m in batch)
        dlq.change_visibility([(m.receipt_handle, 600) for m in batch])
    return bodies


def output_bodies(path: Path) -> list[str]:
    return [record.body for record in read_records(path)]


def test_sigterm_while_busy_finishes_in_flight_work_and_exits_0(
    moto_server: str, start: Callable[..., Any], tmp_path: Path
) -> None:
    bodies = [f"m{n}" for n in range(12)]
    queue, _ = loaded_queues(moto_server, bodies)
    output = tmp_path / "processed.jsonl"

    worker = start(
        "worker.py",
        "--concurrency",
        "4",
        "--process-time",
        "1.5",
        "--failure-rate",
        "0",
        "--output",
        str(output),
        "--grace",
        "10",
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


def receives_started(metrics_url: str) -> float:
    """How many ReceiveMessage calls the worker has begun (counted as each one starts)."""
    with urllib.request.urlopen(metrics_url, timeout=2) as response:
        samples = metric_samples(response.read().decode())
    return metric(samples, "sqs_requests_total", queue="messages", operation="ReceiveMessage")


@pytest.mark.parametrize("delay_s", [0, 5], ids=["brought-back-by-the-receive-under-way", "arriving-after-the-exit"])
def test_sigterm_to_an_idle_worker_in_a_20_s_long_poll_exits_at_once_and_loses_nothing_sent_meanwhile(
    moto_server: str, start: Callable[..., Any], tmp_path: Path, delay_s: int
) -> None:
    """The message sent during the stop either ends the long poll under way (delay 0: the
    receive brings it back after the stop, and the worker makes it visible again) or becomes
    visible only after the worker is gone (delay 5: the long poll is abandoned, not waited for)."""
    # GIVEN an idle worker on an empty queue, its receive in a 20 s long poll
    settings = Settings(sqs_endpoint_url=moto_server, visibility_timeout_s=2, receive_wait_s=20)
    client = create_client(settings)
    sqs_setup.set_up(settings, client)
    queue = SqsQueue(settings.queue_name, client)
    output, metrics_port = tmp_path / "processed.jsonl", free_port()
    worker = start(
        "worker.py",
        "--output",
        str(output),
        "--failure-rate",
        "0",
        "--stats-interval",
        "60",
        env={"SQS_ENDPOINT_URL": moto_server, "RECEIVE_WAIT_SECONDS": "20", "METRICS_PORT": str(metrics_port)},
    )
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    wait_until(
        lambda: accepts_connections(metrics_port) and receives_started(metrics_url) >= 1,
        timeout_s=30,
        what="the worker's first receive under way",
    )

    # WHEN it is sent SIGTERM, and a message arrives during the stop
    stopped_at = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    (sent,) = queue.send([OutgoingMessage(body="sent during the stop", delay_s=delay_s)])
    exit_code = worker.wait(10)
    exit_s = time.monotonic() - stopped_at
    print(f"exited {exit_s:.2f} s after SIGTERM")

    # THEN it exits within 2 s, not at the end of its long poll, cleanly
    assert exit_code == 0, worker.output[-3000:]
    assert exit_s < 2.0, f"{exit_s:.1f} s to exit: {worker.output[-2000:]}"
    # AND the message was not processed, and is not lost (visible again at once, after its delay,
    # or after its 2 s visibility timeout if the worker ended before it could give it back)
    assert output_bodies(output) == []
    found: list[Any] = []

    def received() -> bool:
        found.extend(queue.receive(max_messages=1, wait_s=1))
        return bool(found)

    wait_until(received, timeout_s=15, what="the message sent during the stop, still in the queue")
    assert [(message.id, message.body) for message in found] == [(sent.message_id, "sent during the stop")]


def test_300_messages_at_failure_rate_0_3_end_processed_or_dead_lettered_never_both(
    moto_server: str, start: Callable[..., Any], tmp_path: Path
) -> None:
    bodies = [f"message {n}" for n in range(300)]
    queue, dlq = loaded_queues(moto_server, bodies)
    output = tmp_path / "processed.jsonl"

    worker = start(
        "worker.py",
        "--failure-rate",
        "0.3",
        "--seed",
        "3",
        "--process-time",
        "0.002",
        "--output",
        str(output),
        "--exit-when-idle",
        "2",
        "--stats-interval",
        "5",
        env={"SQS_ENDPOINT_URL": moto_server, "RECEIVE_WAIT_SECONDS": "1", "RETRY_BACKOFF_BASE": "0"},
    )
    assert worker.wait(timeout=240) == 0, worker.output[-2000:]

    processed, dead = output_bodies(output), dead_letters(dlq)
    print(f"processed {len(processed)}, dead-lettered {len(dead)}")
    assert len(processed) == len(set(processed)), worker.output[-3000:]
    assert set(processed).isdisjoint(dead)
    assert sorted(processed + dead) == sorted(bodies)
    assert len(dead) > 0  # 0.3 ** 3: about 8 of 300 fail three times
    assert sum(queue.depth().values()) == 0


def test_the_worker_resumes_by_itself_when_sqs_comes_back(start: Callable[..., Any], tmp_path: Path) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    output = tmp_path / "processed.jsonl"
    worker = start(
        "worker.py",
        "--output",
        str(output),
        "--failure-rate",
        "0",
        env={"SQS_ENDPOINT_URL": endpoint, "RECEIVE_WAIT_SECONDS": "1", "SQS_MAX_ATTEMPTS": "1"},
    )
    wait_until(lambda: "receiving failed" in worker.output, timeout_s=20, what="outage noticed")

    sqs, _ = start_moto_server(tmp_path / "moto.log", port=port)
    try:
        loaded_queues(endpoint, ["after the outage"])

        wait_until(lambda: output_bodies(output) == ["after the outage"], timeout_s=60, what="processed")
        assert worker.poll() is None  # the same process, never restarted
        # Once per kind of error, not per attempt. Two kinds may show: the endpoint down
        # (QueueUnavailable), then, if a receive comes between moto's start and the queue's
        # creation, the queue missing (QueueNotFound).
        failures = [line for line in worker.output.splitlines() if "receiving failed" in line]
        kinds = [line.split("receiving failed (", 1)[1].split(":", 1)[0] for line in failures]
        assert kinds in (["QueueUnavailable"], ["QueueUnavailable", "QueueNotFound"]), failures
        assert "receiving works again" in worker.output
    finally:
        assert worker.stop() == 0
        sqs.stop()


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as response:
        return metric_samples(response.read().decode())


def test_the_worker_serves_its_metrics_on_metrics_port_and_they_move(
    moto_server: str, start: Callable[..., Any]
) -> None:
    loaded_queues(moto_server, [f"m{n}" for n in range(5)])
    port = free_port()
    worker = start(
        "worker.py",
        "--failure-rate",
        "0",
        "--process-time",
        "0",
        env={"SQS_ENDPOINT_URL": moto_server, "RECEIVE_WAIT_SECONDS": "1", "METRICS_PORT": str(port)},
    )
    url = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: accepts_connections(port), timeout_s=20, what="metrics port open")

    wait_until(lambda: metric(scrape(url), "worker_messages_processed_total") == 5, timeout_s=30, what="5 processed")
    loaded_queues(moto_server, ["one more"])
    wait_until(lambda: metric(scrape(url), "worker_messages_processed_total") == 6, timeout_s=30, what="6 processed")
    assert metric(scrape(url), "worker_messages_received_total") == 6
    assert worker.stop() == 0


def test_a_taken_metrics_port_stops_the_worker_with_a_clear_error(moto_server: str, start: Callable[..., Any]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = start("worker.py", env={"SQS_ENDPOINT_URL": moto_server, "METRICS_PORT": str(port)})

        assert worker.wait(timeout=30) == EXIT_FAILED  # as the writer's taken PORT: it may be free later
    assert f"cannot serve metrics on 127.0.0.1:{port} (METRICS_PORT)" in worker.output


def cpus_of_threads(pid: int) -> set[str]:
    """The CPUs each thread of process `pid` may run on, as Linux lists them ('1', '0-1')."""
    lists = set()
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                lists.add(line.split(":", 1)[1].strip())
    return lists


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="pinning shows only where a process may use more than one CPU (Linux)",
)
def test_worker_cpu_runs_every_thread_of_the_worker_on_that_cpu(
    moto_server: str, start: Callable[..., Any], tmp_path: Path
) -> None:
    cpu = max(os.sched_getaffinity(0))
    loaded_queues(moto_server, [f"m{n}" for n in range(30)])
    output = tmp_path / "processed.jsonl"

    worker = start(
        "worker.py",
        "--concurrency",
        "8",
        "--process-time",
        "0.05",
        "--failure-rate",
        "0",
        "--output",
        str(output),
        "--exit-when-idle",
        "1",
        env={
            "SQS_ENDPOINT_URL": moto_server,
            "RECEIVE_WAIT_SECONDS": "1",
            "WORKER_CPU": str(cpu),
            "METRICS_PORT": str(free_port()),
        },
    )
    wait_until(lambda: len(output_bodies(output)) >= 1, timeout_s=30, what="first message processed")
    threads_cpus = cpus_of_threads(worker.pid)  # the processors, the consumer, the settler...

    assert worker.wait(timeout=60) == 0, worker.output[-2000:]
    assert threads_cpus == {str(cpu)}
    assert len(output_bodies(output)) == 30
    assert f"on CPU {cpu}" in worker.output


def test_a_worker_cpu_not_among_the_process_cpus_stops_the_worker_with_a_clear_error(
    moto_server: str, start: Callable[..., Any]
) -> None:
    cpu = max(os.sched_getaffinity(0)) + 1 if hasattr(os, "sched_getaffinity") else 0
    worker = start("worker.py", env={"SQS_ENDPOINT_URL": moto_server, "WORKER_CPU": str(cpu)})

    assert worker.wait(timeout=30) == EXIT_USAGE
    assert f"worker: WORKER_CPU={cpu}: " in worker.output


@pytest.mark.parametrize("step", ["steps:record", "steps:record_async"])
def test_a_step_that_never_returns_is_timed_out_dead_lettered_and_a_sigterm_still_stops_within_grace(
    moto_server: str, start: Callable[..., Any], tmp_path: Path, step: str
) -> None:
    """The hung attempt fails as timed out at PROCESSING_TIMEOUT, comes back, and is dead-lettered
    with that reason at MAX_RECEIVE_COUNT; the other messages are processed meanwhile. With a
    plain step, the stuck threads are replaced until MAX_STUCK_THREADS, then /health says 503."""
    bodies = ["hang", *(f"m{n}" for n in range(6))]
    queue, dead_letter_queue = loaded_queues(moto_server, bodies)
    port = free_port()
    worker = start(
        "worker.py",
        "--concurrency",
        "2",
        "--grace",
        "4",
        env={
            "SQS_ENDPOINT_URL": moto_server,
            "RECEIVE_WAIT_SECONDS": "1",
            "PROCESSOR": step,
            "PYTHONPATH": str(ROOT / "tests"),
            "STEP_LOG": str(tmp_path / "steps.jsonl"),
            "PROCESSING_TIMEOUT": "1",
            "MAX_RECEIVE_COUNT": "2",
            "RETRY_BACKOFF_BASE": "0",
            "MAX_STUCK_THREADS": "2",
            "METRICS_PORT": str(port),
        },
    )
    wait_until(lambda: bool(dead_letter_queue.depth()["visible"]), timeout_s=40, what="the hung message dead-lettered")

    (dead,) = dead_letter_queue.receive(max_messages=10, wait_s=0)
    assert dead.body == "hang"
    assert (dead.attributes["dead_letter.error_type"], dead.attributes["dead_letter.error"]) == (
        "TimedOut",
        "timed out after 1 s",
    )
    assert dead.attributes["dead_letter.attempts"] == "2"
    wait_until(lambda: queue.depth()["visible"] + queue.depth()["in_flight"] == 0, timeout_s=30, what="drained")
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert metric(samples, "worker_messages_processed_total") == 6
    assert metric(samples, "worker_messages_timed_out_total") == 2
    health = urllib.request.Request(f"http://127.0.0.1:{port}/health")
    if step == "steps:record":  # two threads stuck, the bound: the orchestrator should restart it
        assert metric(samples, "worker_stuck_threads") == 2
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(health, timeout=2)
        assert unhealthy.value.code == 503
        assert json.loads(unhealthy.value.read())["status"] == "unhealthy"
        unhealthy.value.close()
    else:  # a coroutine is cancelled: nothing stuck
        with urllib.request.urlopen(health, timeout=2) as answer:
            assert answer.status == 200
    started = time.monotonic()

    assert worker.stop(signal.SIGTERM, timeout_s=15) == 0, worker.output[-3000:]
    assert time.monotonic() - started < 4 + 2  # SHUTDOWN_GRACE, and the process's own exit
    assert "past PROCESSING_TIMEOUT=1" in worker.output
