"""The processed ledger (PROCESSED_TABLE) as a user runs it: worker processes on moto's server
(SQS and DynamoDB), behind a proxy that refuses what a test says, with a step that writes every
attempt to a file. Each test fails without the ledger: SQS redelivers, and the step runs again."""

from __future__ import annotations

import collections
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import sqs_setup
from harness import ROOT, ApiProxy
from helpers import wait_until
from sqs_message_service.settings import Settings
from sqsinterface import OutgoingMessage, SqsQueue, create_client
from steps import attempts

TABLE = "processed"
VISIBILITY_TIMEOUT_S = 2
DELETE = "AmazonSQS.DeleteMessageBatch"
CHANGE_VISIBILITY = "AmazonSQS.ChangeMessageVisibilityBatch"


class Ledgered:
    """The queues and the table on one moto server, and how to start workers on them."""

    def __init__(self, endpoint: str, start: Callable[..., Any], tmp_path: Path) -> None:
        self.endpoint = endpoint
        self.start_script = start
        self.tmp_path = tmp_path
        self.step_log = tmp_path / "steps.jsonl"
        self.settings = Settings(
            sqs_endpoint_url=endpoint,
            dynamodb_endpoint_url=endpoint,
            processed_table=TABLE,
            visibility_timeout_s=VISIBILITY_TIMEOUT_S,
            max_receive_count=10,
        )
        client = create_client(self.settings)
        self.tables = create_client(self.settings, service="dynamodb")
        sqs_setup.set_up(self.settings, client, self.tables)
        self.queue = SqsQueue(self.settings.queue_name, client)
        self.dlq = SqsQueue(self.settings.dlq_name, client)
        self.workers = 0

    def send(self, bodies: list[str]) -> list[str]:
        results = self.queue.send([OutgoingMessage(body=body) for body in bodies])
        assert all(result.ok for result in results)
        return [str(result.message_id) for result in results]

    def worker(self, *args: str, sqs: str = "", dynamodb: str = "") -> tuple[Any, Path]:
        """A worker process on the ledger (through proxies, when given); with its summary file."""
        self.workers += 1
        summary = self.tmp_path / f"summary-{self.workers}.json"
        env = {
            "SQS_ENDPOINT_URL": sqs or self.endpoint,
            "DYNAMODB_ENDPOINT_URL": dynamodb or self.endpoint,
            "PROCESSED_TABLE": TABLE,
            "PROCESSOR": "steps:record",
            "STEP_LOG": str(self.step_log),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
            "RECEIVE_WAIT_SECONDS": "1",
            "RETRY_BACKOFF_BASE": "0",
            "STATS_INTERVAL": "60",
            "SQS_MAX_ATTEMPTS": "1",
            "DYNAMODB_MAX_ATTEMPTS": "1",
            "DYNAMODB_CONNECT_TIMEOUT": "1",
            "DYNAMODB_READ_TIMEOUT": "2",
        }
        process = self.start_script("worker.py", "--concurrency", "4", "--summary-json", str(summary), *args, env=env)
        return process, summary

    def steps(self, event: str) -> collections.Counter[str]:
        """How many times each message id reached the step (`start`) or returned from it (`end`)."""
        return collections.Counter(entry["id"] for entry in attempts(self.step_log) if entry["event"] == event)

    def records(self) -> dict[str, dict[str, Any]]:
        """The ledger's records, by message id."""
        items = self.tables.scan(TableName=TABLE)["Items"]
        return {item["message_id"]["S"]: item for item in items}

    def drained(self) -> bool:
        """Both queues empty; the queue read twice (a message coming back can be missed by one reading)."""
        return all(sum(queue.depth().values()) == 0 for queue in (self.queue, self.queue, self.dlq))


@pytest.fixture
def ledgered(moto_server: str, start: Callable[..., Any], tmp_path: Path) -> Ledgered:
    return Ledgered(moto_server, start, tmp_path)


@pytest.fixture
def proxy(moto_server: str) -> Iterator[ApiProxy]:
    running = ApiProxy(moto_server)
    yield running
    running.stop()


def summary_of(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def test_deletes_refused_then_accepted_each_message_is_processed_once(ledgered: Ledgered, proxy: ApiProxy) -> None:
    # GIVEN 60 messages, and an SQS that refuses the worker's deletes for 8 s, so that with a
    # 2 s visibility timeout every message comes back after its step returned, several times
    ids = ledgered.send([f"m{n}" for n in range(60)])
    proxy.refusing = {DELETE}
    worker, summary = ledgered.worker(sqs=proxy.url)
    wait_until(lambda: len(ledgered.steps("end")) == 60, timeout_s=60, what="every message processed once")
    refused_from = time.monotonic()
    wait_until(lambda: time.monotonic() - refused_from >= 8, timeout_s=10, what="8 s of refused deletes")

    # WHEN SQS takes the deletes again
    proxy.refusing = set()
    wait_until(ledgered.drained, timeout_s=60, what="the queue drained")
    assert worker.stop(signal.SIGTERM, timeout_s=30) == 0, worker.output[-3000:]

    # THEN each message reached the step once, though SQS delivered it again and again
    assert proxy.refused[DELETE] > 0
    assert ledgered.steps("start") == collections.Counter({message_id: 1 for message_id in ids})
    stats = summary_of(summary)
    assert stats["received"] > 60 and stats["duplicates"] > 0, stats
    print(f"received {stats['received']}, duplicates {stats['duplicates']}, refused deletes {proxy.refused[DELETE]}")


def test_a_worker_killed_after_its_step_returned_and_before_the_delete_does_not_rerun_it(
    ledgered: Ledgered, proxy: ApiProxy
) -> None:
    # GIVEN a worker that processed 20 messages and recorded them as done, but could not delete them
    ids = ledgered.send([f"m{n}" for n in range(20)])
    proxy.refusing = {DELETE}
    first, _ = ledgered.worker(sqs=proxy.url)
    wait_until(
        lambda: sum(r["state"]["S"] == "done" for r in ledgered.records().values()) == 20,
        timeout_s=60,
        what="20 records done",
    )

    # WHEN it is killed with SIGKILL, and another worker takes the queue
    first.kill()
    first.wait()
    second, summary = ledgered.worker("--exit-when-idle", "2")
    assert second.wait(timeout=60) == 0, second.output[-3000:]

    # THEN the second worker deleted them all without running the step again
    assert ledgered.steps("start") == collections.Counter({message_id: 1 for message_id in ids})
    assert summary_of(summary)["duplicates"] == 20
    assert ledgered.drained()


def test_a_worker_killed_mid_step_has_it_run_again_after_the_lease_not_the_window(ledgered: Ledgered) -> None:
    # GIVEN a worker in the middle of a 30 s step (its heartbeat keeps message and lease alive)
    (message_id,) = ledgered.send(["slow:30"])
    first, _ = ledgered.worker()
    wait_until(lambda: ledgered.steps("start")[message_id] == 1, timeout_s=30, what="the step started")

    # WHEN it is killed with SIGKILL, and another worker runs
    first.kill()
    first.wait()
    killed_at = time.monotonic()
    second, _ = ledgered.worker("--exit-when-idle", "2")
    assert second.wait(timeout=60) == 0, second.output[-3000:]
    rerun = [e for e in attempts(ledgered.step_log) if e["event"] == "start" and e["pid"] == second.pid]

    # THEN the step ran again, once the killed worker's lease lapsed with the message's
    # invisibility (seconds), not after PROCESSED_WINDOW (the queue's retention: days)
    assert ledgered.steps("start")[message_id] == 2 and ledgered.steps("end")[message_id] == 1
    assert len(rerun) == 1 and rerun[0]["receive_count"] == 2
    assert ledgered.records()[message_id]["state"]["S"] == "done"
    print(f"ran again {time.monotonic() - killed_at:.1f} s after the kill (lease {VISIBILITY_TIMEOUT_S} s)")


def test_two_workers_racing_for_one_redelivered_message_process_it_once(ledgered: Ledgered, proxy: ApiProxy) -> None:
    # GIVEN a worker whose visibility extensions SQS refuses, 6 s into a step on a message whose
    # visibility timeout is 2 s: SQS delivers the message again while the step runs
    (message_id,) = ledgered.send(["slow:6"])
    proxy.refusing = {CHANGE_VISIBILITY}
    first, first_summary = ledgered.worker(sqs=proxy.url)
    wait_until(lambda: ledgered.steps("start")[message_id] == 1, timeout_s=30, what="the first step started")

    # WHEN a second worker polls the queue too, while the first is still at it
    second, second_summary = ledgered.worker("--exit-when-idle", "3")
    assert second.wait(timeout=60) == 0, second.output[-3000:]
    wait_until(lambda: ledgered.steps("end")[message_id] == 1, timeout_s=30, what="the first step returned")
    assert first.stop(signal.SIGTERM, timeout_s=30) == 0, first.output[-3000:]

    # THEN the step ran once: whichever worker received the redelivery found the key held
    # (the second, or the first's own other consumer), and then done
    assert ledgered.steps("start")[message_id] == 1
    assert summary_of(first_summary)["held"] + summary_of(second_summary)["held"] >= 1
    assert ledgered.drained()


def test_with_dynamodb_stopped_nothing_is_processed_blindly_nothing_is_lost_and_processing_resumes(
    ledgered: Ledgered, moto_server: str
) -> None:
    # GIVEN a worker that processed 10 messages
    dynamodb = ApiProxy(moto_server)
    try:
        ids = ledgered.send([f"before {n}" for n in range(10)])
        worker, summary = ledgered.worker(dynamodb=dynamodb.url)
        wait_until(lambda: len(ledgered.steps("end")) == 10, timeout_s=30, what="10 messages processed")

        # WHEN DynamoDB stops answering, and 20 more messages arrive
        dynamodb.down = True
        ids += ledgered.send([f"during {n}" for n in range(20)])
        down_from = time.monotonic()
        wait_until(lambda: time.monotonic() - down_from >= 6, timeout_s=10, what="6 s of outage")
        during_outage = sum(ledgered.steps("start").values())

        # AND it answers again
        dynamodb.down = False
        wait_until(
            lambda: len(ledgered.steps("end")) == 30 and ledgered.drained(),
            timeout_s=90,
            what="every message processed",
        )
        assert worker.stop(signal.SIGTERM, timeout_s=30) == 0, worker.output[-3000:]
    finally:
        dynamodb.stop()

    # THEN nothing reached the step while the table did not answer, and each message did once after
    assert during_outage == 10
    assert ledgered.steps("start") == collections.Counter({message_id: 1 for message_id in ids})
    assert "did not take the claims" in worker.output and "works again" in worker.output
    assert summary_of(summary)["dead_lettered"] == 0
