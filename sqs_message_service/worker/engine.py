"""The worker's engine: `Worker` wires its parts and orders their stop, as dramatiq's does.

- `InFlight`, the ledger (ledger.py): every message received and not yet finished, behind one
  condition. It bounds receiving, tells the heartbeat what to extend, and is what a stop waits
  on. Nothing else is shared between the roles but it, the work queue and the settler.
- `Consumer`s receive (consumer.py): a receive's worth whenever the ledger has room. One always
  polls; above a few receives' worth of processors, helpers join it while receives come back
  full, so that a backlog is fetched by several receives at once and an empty queue costs one
  long poll.
- `ProcessorThread`s run the processing step (processing.py); they never receive, and hand each
  message they are done with to the settler without waiting.
- `Settler` (settler.py), a thread, decides what becomes of each of those messages, and hands
  deletes and visibility changes to group commits that coalesce them into batch calls.
- `Heartbeat` (heartbeat.py) keeps long work invisible.
- With PROCESSED_TABLE, the `ProcessedLedger` (processed.py) keeps each key to one run of the
  step: `Admission` (admission.py) claims what the consumers receive before the processors
  start, the settler records what is done before it deletes, and the heartbeat extends the
  claims with the invisibility.

Every part is a `Part`: `stop()` asks, `join(timeout)` waits. What the operator sees and
controls (stats pane, summary file, signals, metrics server, options) is worker.py's.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Optional

from prometheus_client import CollectorRegistry

from ..metrics import WorkerMetrics
from ..output import OutputWriter
from ..settings import Settings
from ..sqs import SqsError, SqsQueue
from ..tracing import NO_TRACING, NoTracing
from .admission import Admission
from .consumer import PREFETCH, Backlog, Consumer, receivers_for
from .heartbeat import Heartbeat
from .ledger import InFlight, WorkQueue
from .processed import ProcessedLedger
from .processing import Processor, ProcessorThread
from .settler import Settler

log = logging.getLogger(__name__)

#: How long a stop waits for a receive under way before it abandons it. A receive that finds
#: messages comes back within a round trip, and then hands them back itself; only an empty long
#: poll lasts longer (up to RECEIVE_WAIT_SECONDS), and it brings nothing worth waiting for.
RECEIVE_ABANDON_S = 0.5


class Worker:
    """Consumes `queue` with `processor` on `settings.worker_concurrency` threads until stopped,
    or, with `settings.exit_when_idle_s`, until the queue has been empty that long, with
    `receivers_for(concurrency)` receives in flight at most. Counts into `metrics` (served from
    `registry`)."""

    def __init__(
        self, *, queue: SqsQueue, dead_letter_queue: SqsQueue, processor: Processor, settings: Settings,
        output: Optional[OutputWriter] = None, processed: Optional[ProcessedLedger] = None,
        tracing: NoTracing = NO_TRACING,
    ) -> None:
        self.queue, self.dead_letter_queue, self.processor = queue, dead_letter_queue, processor
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.registry = CollectorRegistry()  # what METRICS_PORT serves
        self.metrics = WorkerMetrics(self.registry)
        self.processed = processed
        self.tracing = tracing  # on: spans for each receive, attempt and settlement (tracing.py)
        if tracing.enabled:
            queue.tracing = dead_letter_queue.tracing = tracing
        if processed is not None and processed.metrics is None:  # its calls and errors count here
            processed.metrics = self.metrics
        queue.metrics.expose_in(self.registry)  # and the dead-letter queue's, when they share it
        self.receivers = receivers_for(settings.worker_concurrency)
        # With the processed ledger a receive waits for its claim before the processors see it:
        # a second receive's worth ahead for each receiver keeps them busy meanwhile.
        ahead = PREFETCH * self.receivers * (1 if processed is None else 2)
        self.ledger = InFlight(capacity=settings.worker_concurrency + ahead)
        self.metrics.in_flight.set_function(lambda: len(self.ledger))
        self.work = WorkQueue()
        self.settler = Settler(
            queue=queue, dead_letter_queue=dead_letter_queue, ledger=self.ledger, settings=settings,
            metrics=self.metrics, output=output, worker_id=self.worker_id,
            calls_at_once=1 + self.receivers,  # acks keep up with receives
            processed=processed, tracing=tracing,
        )
        self.admission = None if processed is None else Admission(
            processed=processed, fifo=queue.is_fifo, ledger=self.ledger, work=self.work, settler=self.settler,
            calls_at_once=1 + self.receivers,
        )
        self.consumers: list[Consumer] = []
        self.processors: list[ProcessorThread] = []
        self.heartbeat: Optional[Heartbeat] = None
        self._stop_requested = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopped: Optional[bool] = None  # how the stop went, once it is over

    def request_stop(self) -> None:
        """Ask `run` to stop the worker; returns at once, from any thread or a signal handler."""
        if not self._stop_requested.is_set():
            log.info("stopping: finishing in-flight work, returning what was not started")
            self._stop_requested.set()
            for consumer in self.consumers:  # no receive more, from now on
                consumer.stop()

    def run(self, *, burst: bool = False) -> int:
        """Work until stopped, or with `burst` until the queue is drained; 0 when everything
        in flight was finished or handed back within SHUTDOWN_GRACE."""
        visibility_timeout_s = self._queue_visibility_timeout()
        backlog = Backlog()  # receives come back full: helpers receive too
        self.consumers = [
            Consumer(
                queue=self.queue, ledger=self.ledger, work=self.work, settler=self.settler, metrics=self.metrics,
                visibility_timeout_s=visibility_timeout_s, wait_s=0 if burst else self.settings.receive_wait_s,
                stop_worker=self.request_stop, backlog=backlog,
                idle_s=0.0 if burst else self.settings.exit_when_idle_s, helper=number, admission=self.admission,
            )
            for number in range(self.receivers)
        ]
        self.processors = [
            ProcessorThread(number, work=self.work, processor=self.processor, ledger=self.ledger, settler=self.settler,
                            tracing=self.tracing, queue_name=self.queue.name)
            for number in range(self.settings.worker_concurrency)
        ]
        self.heartbeat = Heartbeat(
            queue=self.queue, ledger=self.ledger, visibility_timeout_s=visibility_timeout_s, processed=self.processed,
        )
        for part in (self.settler, *self.consumers, *self.processors, self.heartbeat):
            part.start()
        if self._stop_requested.is_set():  # asked before the consumers existed
            for consumer in self.consumers:
                consumer.stop()
        self._stop_requested.wait()
        return 0 if self.stop() else 1

    def stop(self) -> bool:
        """Stop every part, in the order that keeps the guarantees, within SHUTDOWN_GRACE; True
        when everything in flight was finished or handed back. Blocks until then; a second
        caller waits for the first one's stop and gets its result.

        1. The consumers receive no more. A receive under way is abandoned after
           RECEIVE_ABANDON_S: what it brings back is made visible again at once (or, if the
           process ends first, after its visibility timeout), never processed.
        2. The work queue takes no more; the processors finish the message each is on and hand
           back every unit not started.
        3. Once nothing is in flight, the processors end; then the heartbeat, which kept their
           long work invisible until then.
        4. The settler settles what it was handed, and lets the deletes and visibility changes
           leave."""
        self.request_stop()
        with self._stop_lock:
            if self._stopped is None:
                self._stopped = self._stop_parts()
            return self._stopped

    def _stop_parts(self) -> bool:
        until = time.monotonic() + self.settings.shutdown_grace_s

        def left_s() -> float:
            return max(0.0, until - time.monotonic())

        self.work.close()
        for processor in self.processors:
            processor.stop()
        for consumer in self.consumers:
            consumer.join(min(left_s(), RECEIVE_ABANDON_S))
        abandoned = sum(consumer.is_alive() for consumer in self.consumers)
        if abandoned:
            log.info("not waiting for %d receive(s) under way: what they bring is made visible again", abandoned)
        drained = self.ledger.wait_empty(left_s())
        if self.admission is not None:  # what it still claims finds the work queue closed: handed back
            self.admission.close(max(1.0, left_s()))
        for processor in self.processors:
            processor.join(left_s())
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat.join(left_s())
        self.settler.stop()
        if self.settler.ident is not None:  # started
            self.settler.join(max(1.0, left_s()))
        if not drained:
            log.warning("grace period (%g s) over with %d messages in flight: they return after their "
                        "visibility timeout", self.settings.shutdown_grace_s, len(self.ledger))
        return drained

    def _queue_visibility_timeout(self) -> int:
        """Heartbeats follow the queue's real visibility timeout, not just the setting."""
        try:
            return int(self.queue.attributes(["VisibilityTimeout"])["VisibilityTimeout"])
        except (SqsError, KeyError, ValueError) as exc:
            log.warning("cannot read the queue's visibility timeout (%s); using VISIBILITY_TIMEOUT=%d",
                        exc, self.settings.visibility_timeout_s)
            return self.settings.visibility_timeout_s
