"""The worker's engine: `Worker` wires its parts and orders their stop, as dramatiq's does.

- `InFlight` (in_flight.py): every message received and not yet finished, behind one
  condition. It bounds receiving, tells the heartbeat what to extend, and is what a stop waits
  on. Nothing else is shared between the roles but it, the work queue and the settler.
- `Consumer`s receive (consumer.py): a receive's worth whenever `InFlight` has room. One always
  polls; above a few receives' worth of processors, helpers join it while receives come back
  full, so that a backlog is fetched by several receives at once and an empty queue costs one
  long poll.
- `ProcessorThread`s run a plain processing step (processing.py), each attempt bracketed by the
  `DeadlineWatch` (deadlines.py), which settles an attempt past PROCESSING_TIMEOUT and replaces
  its stuck thread; an `async def` step runs instead as coroutines on one event loop
  (`CoroutineProcessing`, coroutines.py). Neither receives; each hands the message it is done
  with to the settler without waiting.
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

import itertools
import logging
import os
import socket
import threading
import time
from typing import Optional

from prometheus_client import CollectorRegistry

from ..hooks import NO_HOOKS, Hooks, combine
from ..metrics import WorkerMetrics
from ..output import OutputWriter
from ..settings import Settings
from ..sqs import SqsError, SqsQueue
from .admission import Admission
from .consumer import PREFETCH, Backlog, Consumer, receivers_for
from .coroutines import CoroutineProcessing
from .deadlines import DeadlineWatch
from .heartbeat import Heartbeat
from .in_flight import InFlight, WorkQueue
from .processed import ProcessedLedger
from .processing import ProcessorThread
from .settler import Settler
from .steps import Processor, runs_as_coroutine

log = logging.getLogger(__name__)

#: How long a stop waits for a receive under way before it abandons it. A receive that finds
#: messages comes back within a round trip, and then gives them back itself; only an empty long
#: poll lasts longer (up to RECEIVE_WAIT_SECONDS), and it brings nothing worth waiting for.
RECEIVE_ABANDON_S = 0.5
#: The end of SHUTDOWN_GRACE kept for giving back what an async step has not finished: its
#: attempts are cancelled and their messages made visible at once (at most a second, at most a
#: tenth of the grace).
GIVE_BACK_S = 1.0


class Worker:
    """Consumes `queue` with `processor` on `settings.worker_concurrency` threads until stopped,
    or, with `settings.exit_when_idle_s`, until the queue has been empty that long, with
    `receivers_for(concurrency)` receives in flight at most. Counts into `metrics` (served from
    `registry`), which are hooks (hooks.py) of each message's life beside `tracing`
    (tracing.configure's) and any other `hooks`. Those two also watch the queues' sends and
    receives, through `SqsQueue.watched_by`: a queue's own metrics count its calls."""

    def __init__(
        self,
        *,
        queue: SqsQueue,
        dead_letter_queue: SqsQueue,
        processor: Processor,
        settings: Settings,
        output: Optional[OutputWriter] = None,
        processed: Optional[ProcessedLedger] = None,
        tracing: Hooks = NO_HOOKS,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        watching = combine(tracing, hooks)
        queue, dead_letter_queue = queue.watched_by(watching), dead_letter_queue.watched_by(watching)
        self.queue, self.dead_letter_queue, self.processor = queue, dead_letter_queue, processor
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.registry = CollectorRegistry()  # what METRICS_PORT serves
        # the processed ledger's calls and errors count here too
        self.metrics = WorkerMetrics(self.registry, ledger=None if processed is None else processed.metrics)
        self.hooks = combine(tracing, self.metrics, hooks)
        self.processed = processed
        queue.metrics.expose_in(self.registry)  # and the dead-letter queue's, when they share it
        self.receivers = receivers_for(settings.worker_concurrency)
        # With the processed ledger a receive waits for its claim before the processors see it:
        # a second receive's worth ahead for each receiver keeps them busy meanwhile.
        ahead = PREFETCH * self.receivers * (1 if processed is None else 2)
        self.in_flight = InFlight(capacity=settings.worker_concurrency + ahead)
        self.metrics.in_flight.set_function(lambda: len(self.in_flight))
        self.work = WorkQueue()
        self.settler = Settler(
            queue=queue,
            dead_letter_queue=dead_letter_queue,
            in_flight=self.in_flight,
            settings=settings,
            metrics=self.metrics,
            output=output,
            worker_id=self.worker_id,
            calls_at_once=1 + self.receivers,  # acks keep up with receives
            processed=processed,
            hooks=self.hooks,
        )
        self.admission = None if processed is None else self._admission(processed)
        self.consumers: list[Consumer] = []
        self.processors: list[ProcessorThread] = []
        self._processor_numbers = itertools.count()  # processor-0, -1, …: replacements go on counting
        # an async def step's runner, or a plain step's deadlines
        self.coroutines, self.watch = self._step_runner(processor)
        self.heartbeat: Optional[Heartbeat] = None
        self._stop_requested = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopped: Optional[bool] = None  # how the stop went, once it is over

    def _admission(self, processed: ProcessedLedger) -> Admission:
        """What claims each received message in the processed ledger before the processors see it."""
        return Admission(
            processed=processed,
            fifo=self.queue.is_fifo,
            in_flight=self.in_flight,
            work=self.work,
            settler=self.settler,
            calls_at_once=1 + self.receivers,
        )

    def _step_runner(self, processor: Processor) -> tuple[Optional[CoroutineProcessing], Optional[DeadlineWatch]]:
        """An async def step runs as coroutines on one loop; a plain one on the processor threads,
        under a DeadlineWatch."""
        settings = self.settings
        if runs_as_coroutine(processor):
            coroutines = CoroutineProcessing(
                work=self.work,
                processor=processor,
                in_flight=self.in_flight,
                settler=self.settler,
                metrics=self.metrics,
                concurrency=settings.worker_concurrency,
                timeout_s=settings.processing_timeout_s,
                hooks=self.hooks,
                queue_name=self.queue.name,
            )
            return coroutines, None
        max_stuck = settings.max_stuck_threads
        watch = DeadlineWatch(
            timeout_s=settings.processing_timeout_s,
            metrics=self.metrics,
            max_stuck=settings.worker_concurrency if max_stuck is None else max_stuck,
            settle=self.settler.done,
            give_back=self.settler.give_back,
            replace=self._replace_stuck,
        )
        return None, watch

    def request_stop(self) -> None:
        """Ask `run` to stop the worker; returns at once, from any thread or a signal handler."""
        if not self._stop_requested.is_set():
            log.info("stopping: finishing in-flight work, returning what was not started")
            self._stop_requested.set()
            for consumer in self.consumers:  # no receive more, from now on
                consumer.stop()

    def run(self, *, burst: bool = False) -> int:
        """Work until stopped, or with `burst` until the queue is drained; 0 when everything
        in flight was finished or given back within SHUTDOWN_GRACE."""
        visibility_timeout_s = self._queue_visibility_timeout()
        backlog = Backlog()  # receives come back full: helpers receive too
        self.consumers = [
            Consumer(
                queue=self.queue,
                in_flight=self.in_flight,
                work=self.work,
                settler=self.settler,
                metrics=self.metrics,
                visibility_timeout_s=visibility_timeout_s,
                wait_s=0 if burst else self.settings.receive_wait_s,
                stop_worker=self.request_stop,
                backlog=backlog,
                idle_s=0.0 if burst else self.settings.exit_when_idle_s,
                helper=number,
                admission=self.admission,
            )
            for number in range(self.receivers)
        ]
        if self.coroutines is None:
            self.processors = [self._processor_thread() for _ in range(self.settings.worker_concurrency)]
        self.heartbeat = Heartbeat(
            queue=self.queue,
            in_flight=self.in_flight,
            visibility_timeout_s=visibility_timeout_s,
            processed=self.processed,
        )
        parts = (self.settler, *self.consumers, *self.processors, self.coroutines, self.watch, self.heartbeat)
        for part in parts:
            if part is not None:
                part.start()
        if self._stop_requested.is_set():  # asked before the consumers existed
            for consumer in self.consumers:
                consumer.stop()
        self._stop_requested.wait()
        return 0 if self.stop() else 1

    @property
    def healthy(self) -> bool:
        """False once MAX_STUCK_THREADS threads of the step are stuck past PROCESSING_TIMEOUT: a
        process that can no longer run its step at its concurrency (the worker's /health)."""
        return self.watch is None or self.watch.healthy

    def _processor_thread(self) -> ProcessorThread:
        return ProcessorThread(
            next(self._processor_numbers),
            work=self.work,
            processor=self.processor,
            in_flight=self.in_flight,
            settler=self.settler,
            watch=self.watch,
            hooks=self.hooks,
            queue_name=self.queue.name,
        )

    def _replace_stuck(self, stuck: object) -> None:
        """The deadline watch gave up on a thread: a new one takes its slot (not once stopping)."""
        if self._stop_requested.is_set():
            return
        thread = self._processor_thread()
        self.processors.append(thread)
        thread.start()

    def stop(self) -> bool:
        """Stop every part, in the order that keeps the guarantees, within SHUTDOWN_GRACE; True
        when everything in flight was finished or given back. Blocks until then; a second
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
        for processor in list(self.processors):
            processor.stop()
        if self.coroutines is not None:
            self.coroutines.stop()
        for consumer in self.consumers:
            consumer.join(min(left_s(), RECEIVE_ABANDON_S))
        abandoned = sum(consumer.is_alive() for consumer in self.consumers)
        if abandoned:
            log.info("not waiting for %d receive(s) under way: what they bring is made visible again", abandoned)
        if self.coroutines is None:
            drained = self.in_flight.wait_empty(left_s())
        else:  # what has not finished by the end of the grace is cancelled and given back
            give_back_s = min(GIVE_BACK_S, self.settings.shutdown_grace_s / 10)
            drained = self.in_flight.wait_empty(left_s() - give_back_s)
            if not drained:
                log.info(
                    "grace period ending: cancelling %d attempt(s) still running, handing their messages back",
                    len(self.in_flight),
                )
                self.coroutines.give_back_in_flight()
                drained = self.in_flight.wait_empty(left_s())
        if self.admission is not None:  # what it still claims finds the work queue closed: given back
            self.admission.close(max(1.0, left_s()))
        for processor in list(self.processors):
            if self.watch is None or not self.watch.is_stuck(processor):  # a stuck one never ends
                processor.join(left_s())
        if self.coroutines is not None and self.coroutines.ident is not None:
            self.coroutines.join(left_s())
        if self.watch is not None:
            self.watch.stop()
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat.join(left_s())
        self.settler.stop()
        if self.settler.ident is not None:  # started
            self.settler.join(max(1.0, left_s()))
        if not drained:
            log.warning(
                "grace period (%g s) over with %d messages in flight: they return after their visibility timeout",
                self.settings.shutdown_grace_s,
                len(self.in_flight),
            )
        return drained

    def _queue_visibility_timeout(self) -> int:
        """Heartbeats follow the queue's real visibility timeout, not just the setting."""
        try:
            return int(self.queue.attributes(["VisibilityTimeout"])["VisibilityTimeout"])
        except (SqsError, KeyError, ValueError) as exc:
            log.warning(
                "cannot read the queue's visibility timeout (%s); using VISIBILITY_TIMEOUT=%d",
                exc,
                self.settings.visibility_timeout_s,
            )
            return self.settings.visibility_timeout_s
