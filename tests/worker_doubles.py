"""The worker in a thread on moto, for tests of the engine and of the steps it runs: `Recorder`, a
step that records each attempt; `RunningWorker`, a worker run until drained; and `start_worker`,
the fixture that sets up the queues, sends the bodies and starts one (tests/conftest.py)."""

from __future__ import annotations

import io
import threading
import time
from typing import Any, Callable, Iterator, Optional

import pytest

import sqs_setup
from sqs_message_service.metrics import WorkerStats
from sqs_message_service.output import OutputWriter, ProcessedRecord, parse_lines
from sqs_message_service.settings import Settings
from sqs_message_service.worker.engine import Worker
from sqs_message_service.worker.processed import ProcessedLedger
from sqsinterface import OutgoingMessage, ReceivedMessage, SqsQueue

FAST: dict[str, Any] = dict(receive_wait_s=1, stats_interval_s=60, retry_backoff_base_s=0)


# Pure parts


# The worker on moto


class Recorder:
    """A processing step that records every attempt and can be told what to do per body."""

    def __init__(self, behaviour: Optional[Callable[[ReceivedMessage], None]] = None) -> None:
        self.attempts: list[tuple[str, int, float]] = []
        self.behaviour = behaviour
        self._lock = threading.Lock()

    def __call__(self, message: ReceivedMessage) -> None:
        with self._lock:
            self.attempts.append((message.body, message.receive_count, time.monotonic()))
        if self.behaviour is not None:
            self.behaviour(message)

    def receive_counts(self, body: str) -> list[int]:
        with self._lock:
            return [count for b, count, _ in self.attempts if b == body]


class RunningWorker:
    """A worker running in a thread, by default until it has drained its queue (burst)."""

    def __init__(self, worker: Worker, output: Optional[io.StringIO] = None, burst: bool = True) -> None:
        self.worker = worker
        self.output = output
        self.stats = WorkerStats(worker.metrics, (worker.queue, worker.dead_letter_queue))
        self.exit_code: Optional[int] = None
        self.thread = threading.Thread(target=self._run, args=(burst,), daemon=True)
        self.thread.start()

    def _run(self, burst: bool) -> None:
        self.exit_code = self.worker.run(burst=burst)

    def wait(self, timeout_s: float = 30) -> int:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"worker still running after {timeout_s} s"
        assert self.exit_code is not None
        return self.exit_code

    @property
    def output_lines(self) -> list[ProcessedRecord]:
        assert self.output is not None
        return parse_lines(self.output.getvalue().splitlines())


@pytest.fixture
def start_worker(sqs: Any) -> Iterator[Callable[..., RunningWorker]]:
    """Create the queues for the given settings, send `bodies`, start a worker in a thread."""
    running: list[RunningWorker] = []

    def start(
        processor: Callable[[ReceivedMessage], None],
        bodies: list[str],
        burst: bool = True,
        attributes: Optional[dict[str, str]] = None,
        processed: Optional[ProcessedLedger] = None,
        deduplication_ids: Optional[list[str]] = None,
        **overrides: Any,
    ) -> RunningWorker:
        settings = Settings(**{**FAST, **overrides})
        sqs_setup.set_up(settings, sqs)
        queue = SqsQueue(settings.queue_name, sqs)
        group_id = "one-group" if settings.is_fifo else None
        results = queue.send(
            [
                OutgoingMessage(
                    body=body,
                    group_id=group_id,
                    attributes=attributes or {},
                    deduplication_id=deduplication_ids[n] if deduplication_ids else None,
                )
                for n, body in enumerate(bodies)
            ]
        )
        assert all(result.ok for result in results)
        output = io.StringIO()
        worker = Worker(
            queue=queue,
            dead_letter_queue=SqsQueue(settings.dlq_name, sqs, queue.metrics),  # as worker.main does
            processor=processor,
            settings=settings,
            output=OutputWriter(output),
            processed=processed,
        )
        running.append(RunningWorker(worker, output, burst=burst))
        return running[-1]

    yield start
    for item in running:
        item.worker.stop()
        item.thread.join(10)
        for consumer in item.worker.consumers:  # a receive a stop abandoned ends inside the mock
            consumer.join(FAST["receive_wait_s"] + 5)
