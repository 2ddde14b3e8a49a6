"""Queue-reader: long-polls the queue, processes messages concurrently, deletes what succeeded,
lets failures come back after a backoff, and leaves poison messages to the dead-letter queue.

Made of parts with one job each, as dramatiq's worker is:

- `InFlight`, the ledger: every message received and not yet finished, in one structure behind
  one condition. It bounds receiving, tells the heartbeat what to extend, and is what a
  shutdown waits on. Nothing else is shared between the roles but it and the batchers.
- `Consumer`s receive: a receive's worth whenever the ledger has room. One always polls; above
  a few receives' worth of processors, helpers join it while receives come back full, so that
  a backlog is fetched by several receives at once and an empty queue costs one long poll.
- `ProcessorThread`s run the processing step; they never receive, and hand each message they
  are done with to the settler without waiting.
- `Settler`, a thread, makes the one decision of what becomes of each of those messages, and
  hands deletes and visibility changes to group commits that coalesce them into batch calls.
- `Heartbeat` keeps long work invisible.
- `Worker` wires them and orders the stop.

The entry point (`main`) adds what is the operator's, not the engine's: the stats pane, the
summary file, the metrics server and the signals.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import os
import queue as queue_module
import random
import signal
import socket
import sys
import threading
import time
from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, TextIO
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from batcher import Closed, GroupCommit, Overloaded
from config import ConfigError, Settings, add_option, configure_logging, with_options
from dlq import failure_attributes, without_reasons
from logs import ThrottledLog
from metrics import SqsMetrics, StatsMark, WorkerMetrics, WorkerStats, milliseconds
from sqsinterface import (
    BATCH_MAX_ENTRIES,
    MAX_ATTRIBUTES,
    EntryOutcome,
    OutgoingMessage,
    ReceivedMessage,
    SqsError,
    SqsQueue,
    create_client,
)
from worker_output import OutputWriter, ProcessedRecord

log = logging.getLogger(__name__)

#: The processing step: a plain function of one message. Returning means success (the message
#: is deleted); raising anything means failure (the message comes back after a backoff).
Processor = Callable[[ReceivedMessage], None]
#: A unit of work: one message, or on a FIFO queue one group's messages from a receive, which
#: one processor handles in order.
Unit = list[ReceivedMessage]

#: Pauses between receive attempts while SQS keeps failing: from this, doubling, to the cap.
OUTAGE_BACKOFF_BASE_S = 0.5
MAX_OUTAGE_BACKOFF_S = 30.0
#: While some slots are busy, how long the consumer waits for more to free up, so that one
#: receive fills several slots instead of one receive per finished message.
RECEIVE_GATHER_S = 0.05
#: Messages received ahead of free processors: a receive's worth for each receiver. They are in
#: flight, kept invisible by the heartbeat, and returned at once on shutdown if no processor
#: started them.
PREFETCH = BATCH_MAX_ENTRIES
#: The most receives in flight at once, however many processors: past a few, a worker's
#: threads contend for the GIL more than they gain, and a second worker process scales better.
MAX_RECEIVERS = 4
#: How long a delete or visibility change may wait for others to share its batch call.
ACK_LINGER_S = 0.02
#: How long the settler waits for room among the pending deletes and visibility changes before
#: it gives up on one (the message is then delivered again): while it waits, the messages stay
#: in the ledger, so the worker receives nothing new and processes no faster than it can
#: acknowledge.
ACK_BACKPRESSURE_S = 30.0
#: In burst mode, the pause between looks at a queue that still holds messages for later.
BURST_POLL_S = 0.05
#: SQS's longest visibility timeout: the longest a retry can be put off.
MAX_VISIBILITY_TIMEOUT_S = 43_200


class SimulatedFailure(Exception):
    """The simulated work failed on purpose (FAILURE_RATE)."""


class SimulatedWork:
    """The default processing step: sleeps `process_time_s` and fails with probability
    `failure_rate`. With a seed, whether an attempt fails depends only on (seed, body, receive
    count), so the same input fails the same way in every run whatever the thread timing."""

    def __init__(self, *, process_time_s: float, failure_rate: float, seed: Optional[int] = None) -> None:
        self.process_time_s = process_time_s
        self.failure_rate = failure_rate
        self.seed = seed

    def __call__(self, message: ReceivedMessage) -> None:
        if self.seed is None:
            draw = random.random()
        else:
            draw = random.Random(f"{self.seed}|{message.body}|{message.receive_count}").random()
        time.sleep(self.process_time_s)
        if draw < self.failure_rate:
            raise SimulatedFailure(f"simulated failure (FAILURE_RATE={self.failure_rate:g})")


def pin_to_cpu(cpu: int) -> None:
    """Run this thread, and every thread it starts from now on, on `cpu` only (WORKER_CPU).

    A worker's threads take turns at one GIL. Handed over between two cores, it takes waking a
    thread on the other core, which on a virtual machine costs several times a switch on one
    core; a busy worker does it thousands of times a second (docs/performance.md). Raises
    OSError where the CPU is not this process's to use, or the platform cannot pin."""
    if not hasattr(os, "sched_setaffinity"):
        raise OSError("this platform cannot pin a process to a CPU")
    allowed = os.sched_getaffinity(0)
    if cpu not in allowed:
        raise OSError(f"CPU {cpu} is not among this process's CPUs {sorted(allowed)}")
    os.sched_setaffinity(0, {cpu})


def load_processor(spec: str) -> Processor:
    """Import the user's processing step from 'module:function'."""
    module_name, _, function_name = spec.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    if not callable(function):
        raise TypeError(f"{spec} is not callable")
    return function


def backoff_s(attempt: int, *, base_s: float, max_s: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before attempt `attempt + 1`: `base_s` doubling with each attempt, capped
    at `max_s`, with jitter (between half and all of it) so that what failed together does not
    come back together."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    return ceiling * (0.5 + rng() / 2)


def compute_backoff(
    receive_count: int, *, base_s: float, max_s: float, rng: Callable[[], float] = random.random
) -> int:
    """Seconds a failed message stays invisible before its next attempt: `backoff_s` in the
    whole seconds SQS takes."""
    return min(MAX_VISIBILITY_TIMEOUT_S, math.ceil(backoff_s(receive_count, base_s=base_s, max_s=max_s, rng=rng)))


def receivers_for(concurrency: int) -> int:
    """How many receives a worker keeps in flight: one per two receives' worth of processors
    (one up to 29), at most MAX_RECEIVERS. One receive takes a round trip to SQS; while it is
    away the processors it feeds must have work in hand."""
    return max(1, min(MAX_RECEIVERS, concurrency // (2 * BATCH_MAX_ENTRIES)))


def work_units(messages: list[ReceivedMessage], *, fifo: bool) -> list[Unit]:
    """Split a receive into units for the processors. Standard queue: one message each. FIFO
    queue: one unit per message group, in the order SQS gave them, processed one after another."""
    if not fifo:
        return [[message] for message in messages]
    groups: dict[Optional[str], Unit] = {}
    for message in messages:
        groups.setdefault(message.group_id, []).append(message)
    return list(groups.values())


class InFlight:
    """The ledger of messages received and not yet finished, with when each one's invisibility
    ends. At most `capacity` at once: the processors' number plus a receive's worth ahead for
    each receiver. Receivers claim their slots here before they receive, so that several
    receiving at once never fetch more than there is room for."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.receive_size = min(BATCH_MAX_ENTRIES, capacity)  # what a claim gathers for: a whole receive
        self._cond = threading.Condition()
        self._messages: dict[str, tuple[ReceivedMessage, float]] = {}  # receipt handle -> (it, deadline)
        self._claimed = 0  # slots promised to a receive under way
        self._woken = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._messages)

    def claim(self, *, gather_s: float) -> int:
        """Wait for a free slot; then, if others are busy, up to `gather_s` for more to free, so
        that one receive fills several. Claims and returns up to `receive_size`: at least 1, or 0
        once woken. (Another receiver may take the slots meanwhile: then it waits again.)"""
        wanted = self.receive_size
        with self._cond:
            while not self._woken:
                while self._free() == 0 and not self._woken:
                    self._cond.wait()
                until = time.monotonic() + gather_s
                while self._free() < wanted and not self._woken and (left_s := until - time.monotonic()) > 0:
                    self._cond.wait(left_s)
                claimed = min(wanted, self._free())
                if claimed > 0 and not self._woken:
                    self._claimed += claimed
                    return claimed
            return 0

    def receive(self, claimed: int, messages: list[ReceivedMessage], *, deadline: float) -> None:
        """What a receive for `claimed` slots brought: in flight until `deadline` (monotonic)
        unless extended; the slots it did not fill are free again."""
        with self._cond:
            self._claimed -= claimed
            for message in messages:
                self._messages[message.receipt_handle] = (message, deadline)
            self._cond.notify_all()

    def finish(self, messages: list[ReceivedMessage]) -> None:
        """These are no longer in flight here (done, or handed back)."""
        with self._cond:
            was_full = self._free() <= 0
            for message in messages:
                self._messages.pop(message.receipt_handle, None)
            # Wake the waiters only when one of them can act: a first free slot, a receive's
            # worth free, or nothing left. Waking every receiver at every message costs more
            # thread switches than the processing itself, at a few thousand a second.
            if was_full or self._free() >= self.receive_size or not self._messages:
                self._cond.notify_all()

    def due(self, before: float) -> list[ReceivedMessage]:
        """The messages whose invisibility ends before `before`."""
        with self._cond:
            return [message for message, deadline in self._messages.values() if deadline < before]

    def extended(self, messages: list[ReceivedMessage], deadline: float) -> None:
        """Their invisibility now ends at `deadline`; those finished meanwhile stay finished."""
        with self._cond:
            for message in messages:
                if message.receipt_handle in self._messages:
                    self._messages[message.receipt_handle] = (message, deadline)

    def wake(self) -> None:
        """Let every `claim` return at once, for good: the worker is stopping."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def wait_empty(self, timeout_s: float) -> bool:
        """Wait until nothing is in flight, at most `timeout_s`; whether that happened."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._messages, timeout=max(0.0, timeout_s))

    def _free(self) -> int:
        return self.capacity - len(self._messages) - self._claimed


class Settler(threading.Thread):
    """What becomes of each message a processor is done with: the one place that decides, on a
    thread of its own.

    Processors hand over what they finished (`done`) and go on to their next message at once;
    this thread settles whatever gathered meanwhile, in one pass. Success: recorded in the output
    file, then deleted. Failure: made visible again after a backoff, or at MAX_RECEIVE_COUNT sent
    to the dead-letter queue with its reasons and then deleted. Only once a message is handed
    over does the ledger let it go, so the worker receives no faster than it settles, and the
    heartbeat no longer extends what is now a delete or a retry's backoff.
    Unstarted messages (shutdown, or behind a failed one of its FIFO group) are `release`d by
    whoever holds them: visible at once.

    Deletes and visibility changes go to group commits, `calls_at_once` calls of each at most;
    this thread waits while they are behind (ACK_BACKPRESSURE_S). If one fails, SQS still has
    the message and delivers it again after its visibility timeout.

    Why a thread of its own: when every processor settled its own messages, each took the
    output's, the metrics' and the group commits' locks once a message, and at a few thousand
    messages a second those threads queued on the locks and the GIL, a thread switch each time.
    One thread takes them once a message without anyone waiting, and a processor's work between
    two steps is a list append.
    """

    def __init__(
        self, *, queue: SqsQueue, dead_letter_queue: SqsQueue, ledger: InFlight, settings: Settings,
        metrics: WorkerMetrics, output: Optional[OutputWriter], worker_id: str, calls_at_once: int = 2,
    ) -> None:
        super().__init__(name="settler", daemon=True)
        self.queue = queue
        self.dead_letter_queue = dead_letter_queue
        self.ledger = ledger
        self.settings = settings
        self.metrics = metrics
        self.output = output
        self.worker_id = worker_id
        self._cond = threading.Condition()
        self._finished: list[tuple[ReceivedMessage, Optional[Exception], float]] = []  # (it, error, step's s)
        self._closing = False
        pending = 10 * settings.worker_concurrency
        self._deletes: GroupCommit[str, EntryOutcome] = GroupCommit(
            self._delete_batch, max_batch=BATCH_MAX_ENTRIES, max_concurrent=calls_at_once,
            max_pending=pending, linger_s=ACK_LINGER_S, name="delete",
        )
        self._visibility: GroupCommit[tuple[str, int], EntryOutcome] = GroupCommit(
            queue.change_visibility, max_batch=BATCH_MAX_ENTRIES, max_concurrent=calls_at_once,
            max_pending=pending, linger_s=ACK_LINGER_S, name="visibility",
        )

    def done(self, message: ReceivedMessage, error: Optional[Exception], step_s: float) -> None:
        """A processor is done with `message`: its step took `step_s` and raised `error` (None:
        succeeded). Returns at once; the message is settled on this thread."""
        with self._cond:
            self._finished.append((message, error, step_s))
            if len(self._finished) == 1:  # the thread may be waiting; otherwise it comes back for it
                self._cond.notify()

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._finished and not self._closing:
                    self._cond.wait()
                if not self._finished:
                    return  # closing, and all handed over
                finished, self._finished = self._finished, []
            for message, error, step_s in finished:
                try:
                    self._settle(message, error, step_s)
                finally:  # handed over: the heartbeat leaves it be, and there is room for another
                    self.ledger.finish([message])

    def _settle(self, message: ReceivedMessage, error: Optional[Exception], step_s: float) -> None:
        try:
            self.metrics.processing_duration.observe(step_s)
            if error is None:
                self._succeeded(message)
            else:
                self._failed(message, error)
        except Exception:  # a bug of ours: SQS still has the message, which comes back; the rest go on
            log.error("unexpected error settling message %r", message.id, exc_info=True)

    def _succeeded(self, message: ReceivedMessage) -> None:
        now = time.time()
        if self.output is not None:  # out before the delete (_delete_batch): nothing acknowledged is missing
            self.output.write(ProcessedRecord.of(message, processed_at_s=now))
        self.metrics.add("processed")
        if message.sent_at_s is not None:  # SQS's clock against ours: skew shows here too
            self.metrics.end_to_end.observe(max(0.0, now - message.sent_at_s))
        self._hand_over(self._deletes, message.receipt_handle, message, "deleted")

    def _failed(self, message: ReceivedMessage, error: Exception) -> None:
        self.metrics.add("failed")
        if message.receive_count < self.settings.max_receive_count:
            self.metrics.add("retried")
            delay_s = compute_backoff(
                message.receive_count, base_s=self.settings.retry_backoff_base_s,
                max_s=self.settings.retry_backoff_max_s,
            )
            log.debug("message %r failed (%s); retry in %d s", message.id, type(error).__name__, delay_s)
            self._hand_over(self._visibility, (message.receipt_handle, delay_s), message, "rescheduled")
            return
        self.metrics.add("dead_lettered")
        log.info("message %r failed %d times (%s: %s): to the dead-letter queue",
                 message.id, message.receive_count, type(error).__name__, error)
        if self._dead_letter(message, error):
            # Only now that the dead-letter queue has it: dying before this delete leaves a
            # copy in each queue, never none.
            self._hand_over(self._deletes, message.receipt_handle, message, "deleted after dead-lettering")
        else:  # visible at once instead: SQS's redrive policy moves it on the next receive
            self._hand_over(self._visibility, (message.receipt_handle, 0), message, "rescheduled")

    def release(self, messages: list[ReceivedMessage]) -> None:
        """Make messages visible again at once: received, but not to be processed here."""
        if messages:
            outcomes = self.queue.change_visibility([(message.receipt_handle, 0) for message in messages])
            self.metrics.add("released", sum(outcome is None for outcome in outcomes))

    def close(self, timeout_s: float) -> None:
        """Settle what the processors handed over, then let the pending deletes and visibility
        changes leave, for up to `timeout_s` in all."""
        until = time.monotonic() + timeout_s
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self.ident is not None:  # started
            self.join(timeout_s)
        for batcher in (self._deletes, self._visibility):
            batcher.close(timeout_s=max(1.0, until - time.monotonic()))
        if self.output is not None:  # records whose delete never left are kept all the same
            self.output.flush()

    def _delete_batch(self, receipt_handles: list[str]) -> list[EntryOutcome]:
        """A DeleteMessageBatch, once the records of the messages it deletes are written."""
        if self.output is not None:
            self.output.flush()
        return self.queue.delete_messages(receipt_handles)

    def _dead_letter(self, message: ReceivedMessage, error: Exception) -> bool:
        """Send the message to the dead-letter queue with why it failed; True once SQS has it.
        False, leaving it to SQS's redrive policy, when the reasons do not fit beside the
        message's own attributes, or SQS refuses the send."""
        reasons = failure_attributes(message, error, worker_id=self.worker_id, at=datetime.now(timezone.utc))
        own = without_reasons(message.attributes)  # a redriven message's earlier reasons go
        if len(own) + len(reasons) > MAX_ATTRIBUTES:
            log.info("message %r has %d attributes: no room for the reasons; SQS's redrive moves it",
                     message.id, len(own))
            return False
        dead_letter = OutgoingMessage(
            body=message.body, attributes={**own, **reasons}, group_id=message.group_id,
            deduplication_id=message.id if self.dead_letter_queue.is_fifo else None,
        )
        (result,) = self.dead_letter_queue.send([dead_letter])
        if result.error is not None:
            log.warning("message %r not sent to the dead-letter queue (%s); SQS's redrive moves it",
                        message.id, result.error)
        return result.ok

    def _hand_over(
        self, batcher: GroupCommit[Any, EntryOutcome], item: Any, message: ReceivedMessage, done: str
    ) -> None:
        """Give a delete or visibility change to its batcher without waiting for it."""

        def outcome_known(future: Future[EntryOutcome]) -> None:
            error = future.exception() or future.result()
            if error is not None:
                log.warning("message %r not %s (%s): it will be delivered again", message.id, done, error)
            elif done == "deleted":
                self.metrics.add("deleted")

        try:
            batcher.submit(item, wait_s=ACK_BACKPRESSURE_S).add_done_callback(outcome_known)
        except (Overloaded, Closed) as exc:
            log.warning("message %r not %s (%s): it will be delivered again", message.id, done, exc)


class Consumer(threading.Thread):
    """Receives a receive's worth whenever the ledger has room, and hands it to the processors
    as units of work. Backs off while SQS fails; with `idle_s`, stops the worker once the queue
    has been empty that long (0: as soon as it is drained).

    The first consumer always polls. A helper (`helper=True`) receives only while `backlog`
    is set: any consumer sets it when a receive comes back with all it asked for (more is
    likely waiting), a helper clears it when one comes back short, and then waits again."""

    def __init__(
        self, *, queue: SqsQueue, ledger: InFlight, work: queue_module.SimpleQueue[Optional[Unit]],
        settler: Settler, metrics: WorkerMetrics, visibility_timeout_s: int, wait_s: int,
        stopping: threading.Event, stop_worker: Callable[[], None], backlog: threading.Event,
        idle_s: Optional[float] = None, helper: int = 0,
    ) -> None:
        super().__init__(name=f"consumer-helper-{helper}" if helper else "consumer", daemon=True)
        self.queue, self.ledger, self.work, self.settler, self.metrics = queue, ledger, work, settler, metrics
        self.visibility_timeout_s = visibility_timeout_s
        self.stopping, self.stop_worker, self.backlog = stopping, stop_worker, backlog
        self.helper = bool(helper)
        self.idle_s = None if helper else idle_s  # the first consumer alone decides the queue is idle
        # An idle timer notices idleness within about its length, and long-polls at least 1 s:
        # below that, an empty queue would cost a receive every BURST_POLL_S.
        self.wait_s = wait_s if idle_s is None else min(wait_s, max(1, int(idle_s)))
        self._idle_since: Optional[float] = None

    def run(self) -> None:
        outage, failures = ThrottledLog(log), 0
        while not self.stopping.is_set():
            if self.helper:
                self.backlog.wait()  # Worker.stop sets it too, to let helpers end
                if self.stopping.is_set():
                    break
            claimed = self.ledger.claim(gather_s=RECEIVE_GATHER_S)
            if not claimed:
                break  # stopping
            try:
                messages = self.queue.receive(max_messages=claimed, wait_s=self.wait_s)
            except Exception as exc:  # SQS's errors, and a bug of ours: log, pause, carry on
                self.ledger.receive(claimed, [], deadline=0.0)
                if isinstance(exc, SqsError):
                    outage.warning(exc, "receiving")
                else:
                    log.error("unexpected error while receiving", exc_info=True)
                if self.helper:  # the first consumer backs off and finds the backlog again
                    self.backlog.clear()
                    continue
                failures += 1
                self.stopping.wait(backoff_s(failures, base_s=OUTAGE_BACKOFF_BASE_S, max_s=MAX_OUTAGE_BACKOFF_S))
                continue
            outage.recovered()
            failures = 0
            if self.stopping.is_set():  # arrived after the stop: back to the queue at once
                self.ledger.receive(claimed, [], deadline=0.0)
                self.settler.release(messages)
                break
            self.ledger.receive(claimed, messages, deadline=time.monotonic() + self.visibility_timeout_s)
            if len(messages) == claimed:
                self.backlog.set()
            elif self.helper:
                self.backlog.clear()
            if messages:
                self._idle_since = None
                self.metrics.add("received", len(messages))
                for unit in work_units(messages, fifo=self.queue.is_fifo):
                    self.work.put(unit)
            elif self.idle_s is not None and self._idle_for_long_enough():
                log.info("queue empty for %g s: stopping", self.idle_s)
                self.stop_worker()
            elif self.wait_s == 0:
                self.stopping.wait(BURST_POLL_S)

    def _idle_for_long_enough(self) -> bool:
        """Idle means nothing in flight here and nothing left in the queue for anyone, messages
        waiting out a backoff included."""
        try:
            empty = not len(self.ledger) and not sum(self.queue.depth().values())
        except SqsError:
            empty = False
        if not empty:
            self._idle_since = None
            return False
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        return now - self._idle_since >= (self.idle_s or 0.0)


class ProcessorThread(threading.Thread):
    """Runs the processing step on units of work until it gets None, and hands each message to
    the settler; never receives."""

    def __init__(
        self, number: int, *, work: queue_module.SimpleQueue[Optional[Unit]], processor: Processor,
        ledger: InFlight, settler: Settler, stopping: threading.Event,
    ) -> None:
        super().__init__(name=f"processor-{number}", daemon=True)
        self.work, self.processor, self.ledger, self.settler = work, processor, ledger, settler
        self.stopping = stopping

    def run(self) -> None:
        while (unit := self.work.get()) is not None:
            for position, message in enumerate(unit):
                if self.stopping.is_set():
                    self._release(unit[position:])  # never started: back at once
                    break
                if not self._handle(message) and position + 1 < len(unit):
                    self._release(unit[position + 1 :])  # FIFO: none may overtake the failed one
                    break

    def _handle(self, message: ReceivedMessage) -> bool:
        """Run the step on one message and hand it to the settler; True when it succeeded."""
        started = time.monotonic()
        error: Optional[Exception] = None
        try:
            self.processor(message)
        except Exception as exc:  # whatever the step raises is a failure of this message only
            error = exc
        self.settler.done(message, error, time.monotonic() - started)
        return error is None

    def _release(self, messages: list[ReceivedMessage]) -> None:
        try:
            self.settler.release(messages)
        except Exception:
            log.error("could not release %d messages", len(messages), exc_info=True)
        finally:
            self.ledger.finish(messages)


class Heartbeat(threading.Thread):
    """Every third of the visibility timeout, extends every message in flight whose
    invisibility would end before the beat after next, in batch calls."""

    def __init__(self, *, queue: SqsQueue, ledger: InFlight, visibility_timeout_s: int) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.queue, self.ledger, self.visibility_timeout_s = queue, ledger, visibility_timeout_s
        self.done = threading.Event()

    def run(self) -> None:
        interval_s = max(0.2, self.visibility_timeout_s / 3)
        while not self.done.wait(interval_s):
            now = time.monotonic()
            due = self.ledger.due(before=now + 2 * interval_s)
            if not due:
                continue
            outcomes = self.queue.change_visibility([(m.receipt_handle, self.visibility_timeout_s) for m in due])
            extended = []
            for message, outcome in zip(due, outcomes, strict=True):
                if outcome is None:
                    extended.append(message)
                else:
                    log.warning("heartbeat for %r failed (%s)", message.id, outcome)
            self.ledger.extended(extended, deadline=now + self.visibility_timeout_s)


class Worker:
    """Consumes `queue` with `processor` on `settings.worker_concurrency` threads until `stop()`,
    or, with `settings.exit_when_idle_s`, until the queue has been empty that long, with
    `receivers_for(concurrency)` receives in flight at most. Wires the parts and orders their
    stop; counts into `metrics` (served from `registry`)."""

    def __init__(
        self, *, queue: SqsQueue, dead_letter_queue: SqsQueue, processor: Processor, settings: Settings,
        output: Optional[OutputWriter] = None,
    ) -> None:
        self.queue, self.dead_letter_queue, self.processor = queue, dead_letter_queue, processor
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.registry = CollectorRegistry()  # what METRICS_PORT serves
        self.metrics = WorkerMetrics(self.registry)
        queue.metrics.expose_in(self.registry)  # and the dead-letter queue's, when they share it
        self.receivers = receivers_for(settings.worker_concurrency)
        self.ledger = InFlight(capacity=settings.worker_concurrency + PREFETCH * self.receivers)
        self.metrics.in_flight.set_function(lambda: len(self.ledger))
        self.settler = Settler(
            queue=queue, dead_letter_queue=dead_letter_queue, ledger=self.ledger, settings=settings,
            metrics=self.metrics, output=output, worker_id=self.worker_id,
            calls_at_once=1 + self.receivers,  # acks keep up with receives
        )
        self._stopping = threading.Event()
        self._backlog = threading.Event()  # receives come back full: helpers receive too

    def stop(self) -> None:
        """Ask for a graceful stop: receive no more; in-flight work finishes. Thread-safe."""
        if not self._stopping.is_set():
            log.info("stopping: finishing in-flight work, returning what was not started")
            self._stopping.set()
        self.ledger.wake()
        self._backlog.set()  # helpers waiting for a backlog see the stop

    def run(self, *, burst: bool = False) -> int:
        """Work until stopped, or with `burst` until the queue is drained; 0 when everything
        in flight was finished or handed back within SHUTDOWN_GRACE."""
        visibility_timeout_s = self._queue_visibility_timeout()
        work: queue_module.SimpleQueue[Optional[Unit]] = queue_module.SimpleQueue()
        consumers = [
            Consumer(
                queue=self.queue, ledger=self.ledger, work=work, settler=self.settler, metrics=self.metrics,
                visibility_timeout_s=visibility_timeout_s, wait_s=0 if burst else self.settings.receive_wait_s,
                stopping=self._stopping, stop_worker=self.stop, backlog=self._backlog,
                idle_s=0.0 if burst else self.settings.exit_when_idle_s, helper=number,
            )
            for number in range(self.receivers)
        ]
        processors = [
            ProcessorThread(number, work=work, processor=self.processor, ledger=self.ledger,
                            settler=self.settler, stopping=self._stopping)
            for number in range(self.settings.worker_concurrency)
        ]
        heartbeat = Heartbeat(queue=self.queue, ledger=self.ledger, visibility_timeout_s=visibility_timeout_s)
        for thread in (self.settler, *consumers, *processors, heartbeat):
            thread.start()
        self._stopping.wait()
        return 0 if self._shut_down(consumers, processors, heartbeat, work) else 1

    def _shut_down(
        self, consumers: list[Consumer], processors: list[ProcessorThread], heartbeat: Heartbeat,
        work: queue_module.SimpleQueue[Optional[Unit]],
    ) -> bool:
        """The order of a graceful stop: stop receiving; let the processors finish what they
        started and hand back what they did not, and the settler settle what they finished; join
        them; stop the heartbeat; let the acknowledgements leave. All within SHUTDOWN_GRACE."""
        until = time.monotonic() + self.settings.shutdown_grace_s

        def left_s() -> float:
            return max(0.0, until - time.monotonic())

        for consumer in consumers:
            consumer.join(left_s())  # a long poll under way ends, and hands back what it brought
        drained = self.ledger.wait_empty(left_s())
        for _ in processors:
            work.put(None)
        for processor in processors:
            processor.join(left_s())
        heartbeat.done.set()
        heartbeat.join(left_s())
        self.settler.close(left_s())
        clean = drained and not any(consumer.is_alive() for consumer in consumers)
        if not clean:
            log.warning("grace period (%g s) over with %d messages in flight: they return after their "
                        "visibility timeout", self.settings.shutdown_grace_s, len(self.ledger))
        return clean

    def _queue_visibility_timeout(self) -> int:
        """Heartbeats follow the queue's real visibility timeout, not just the setting."""
        try:
            return int(self.queue.attributes(["VisibilityTimeout"])["VisibilityTimeout"])
        except (SqsError, KeyError, ValueError) as exc:
            log.warning("cannot read the queue's visibility timeout (%s); using VISIBILITY_TIMEOUT=%d",
                        exc, self.settings.visibility_timeout_s)
            return self.settings.visibility_timeout_s


# The entry point: what the operator sees and controls.


def render_stats(
    title: str, snapshot: dict[str, Any], *, in_flight: int, per_second: float,
    depths: dict[str, Optional[dict[str, int]]], sqs_requests: int = 0,
) -> str:
    """The stats as a block that fits a narrow (28-column) tmux pane."""
    lines = [
        f"{title}  up {snapshot['uptime_s']:.0f}s",
        f"received      {snapshot['received']:>9}",
        f"processed     {snapshot['processed']:>9}",
        f"failed        {snapshot['failed']:>9}",
        f"retried       {snapshot['retried']:>9}",
        f"dead-lettered {snapshot['dead_lettered']:>9}",
        f"deleted       {snapshot['deleted']:>9}",
        f"in flight     {in_flight:>9}",
        f"msg/s         {per_second:>9.1f}",
        f"latency p50 {milliseconds(snapshot['latency_p50_s']):>11}",
        f"latency p99 {milliseconds(snapshot['latency_p99_s']):>11}",
        f"e2e p50     {milliseconds(snapshot['end_to_end_p50_s']):>11}",
        f"e2e p99     {milliseconds(snapshot['end_to_end_p99_s']):>11}",
        f"sqs requests  {sqs_requests:>9}",
        f"sqs req/msg   {sqs_requests / max(1, snapshot['processed']):>9.2f}",
    ]
    for label, depth in depths.items():
        if depth is None:
            lines.append(f"{label:<6}  (unavailable)")
        else:
            lines.append(f"{label:<6} visible {depth['visible']:>9}")
            lines.append(f"{'':<6} hidden  {depth['in_flight'] + depth['delayed']:>9}")
    return "\n".join(lines)


def poll_depths(worker: Worker) -> dict[str, Optional[dict[str, int]]]:
    """Both queues' depths, into the sqs_queue_messages gauges; None for one SQS did not give."""
    depths: dict[str, Optional[dict[str, int]]] = {}
    for label, queue in (("queue", worker.queue), ("dlq", worker.dead_letter_queue)):
        try:
            depth = queue.depth()
        except SqsError:
            depths[label] = None
            continue
        for state, messages in depth.items():
            worker.metrics.queue_messages.labels(queue.name, state).set(messages)
        depths[label] = depth
    return depths


class StatsPane:
    """Every STATS_INTERVAL, the queues' depths into the metrics and, on `out`, the stats of the
    last interval; at the end, the summary of the whole run."""

    def __init__(self, worker: Worker, stats: WorkerStats, out: Optional[TextIO], interval_s: float) -> None:
        self.worker, self.stats, self.out, self.interval_s = worker, stats, out, interval_s
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats", daemon=True)

    def __enter__(self) -> "StatsPane":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.done.set()
        self._thread.join(10)
        self.report("summary")

    def _run(self) -> None:
        mark: Optional[StatsMark] = None
        while not self.done.wait(self.interval_s):
            mark = self.report("worker", since=mark)

    def report(self, title: str, since: Optional[StatsMark] = None) -> StatsMark:
        snapshot, mark = self.stats.snapshot(since=since)
        depths = poll_depths(self.worker)
        if self.out is not None:
            text = render_stats(
                title, snapshot, in_flight=len(self.worker.ledger), per_second=snapshot["processed_per_s"],
                depths=depths, sqs_requests=self.stats.billable_requests,
            )
            clear = "\x1b[H\x1b[2J" if title != "summary" and self.out.isatty() else ""
            self.out.write(f"{clear}{text}\n\n")
            self.out.flush()
        return mark


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Queue-reader: long-polls QUEUE_NAME, processes messages concurrently, deletes "
        "what succeeded, lets failures come back after a backoff, and leaves messages that failed "
        "MAX_RECEIVE_COUNT times to the dead-letter queue. Every option also comes from the "
        "environment variable named in its help.",
    )
    add_option(parser, "--concurrency", "worker_concurrency", settings)
    add_option(parser, "--cpu", "worker_cpu", settings)
    add_option(parser, "--process-time", "process_time_s", settings)
    add_option(parser, "--failure-rate", "failure_rate", settings)
    add_option(parser, "--seed", "failure_seed", settings)
    add_option(parser, "--processor", "processor", settings, metavar="MODULE:FUNCTION")
    add_option(parser, "--output", "worker_output", settings, metavar="FILE")
    add_option(parser, "--stats-interval", "stats_interval_s", settings)
    add_option(parser, "--exit-when-idle", "exit_when_idle_s", settings, metavar="SECONDS")
    add_option(parser, "--grace", "shutdown_grace_s", settings)
    parser.add_argument("--summary-json", type=Path, metavar="FILE",
                        help="on exit, write the counters and the SQS calls by operation to FILE as JSON")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    try:
        settings = Settings.from_env()
        args = build_parser(settings).parse_args(argv)
        settings = with_options(settings, args)
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if settings.worker_cpu is not None:  # before any thread starts: they all inherit it
        try:
            pin_to_cpu(settings.worker_cpu)
        except OSError as exc:
            print(f"worker: WORKER_CPU={settings.worker_cpu}: {exc}", file=sys.stderr)
            return 2
    processor: Processor
    if settings.processor:
        processor = load_processor(settings.processor)
    else:
        processor = SimulatedWork(
            process_time_s=settings.process_time_s, failure_rate=settings.failure_rate, seed=settings.failure_seed
        )
    # A long poll holds the connection for up to RECEIVE_WAIT_SECONDS: the read timeout covers it.
    client = create_client(settings, read_timeout_s=settings.receive_wait_s + settings.sqs_read_timeout_s)
    sqs_metrics = SqsMetrics()
    with contextlib.ExitStack() as cleanup:
        output = None
        if settings.worker_output is not None:
            output = OutputWriter(cleanup.enter_context(open(settings.worker_output, "a", encoding="utf-8")))
        worker = Worker(
            queue=SqsQueue(settings.queue_name, client, sqs_metrics),
            dead_letter_queue=SqsQueue(settings.dlq_name, client, sqs_metrics),
            processor=processor, settings=settings, output=output,
        )
        try:
            metrics_server = serve_metrics(settings, worker.registry)
        except OSError as exc:
            print(f"worker: cannot serve metrics on {settings.host}:{settings.metrics_port} (METRICS_PORT): {exc}",
                  file=sys.stderr)
            return 2
        if metrics_server is not None:
            cleanup.callback(metrics_server.shutdown)
        _install_signal_handlers(worker)
        log.info(
            "worker %s on queue %r (%s), concurrency %d%s", worker.worker_id, settings.queue_name,
            settings.sqs_endpoint_url or f"AWS {settings.aws_region}", settings.worker_concurrency,
            "" if settings.worker_cpu is None else f", on CPU {settings.worker_cpu}",
        )
        stats = WorkerStats(worker.metrics, (worker.queue, worker.dead_letter_queue))
        with StatsPane(worker, stats, sys.stdout, settings.stats_interval_s):
            exit_code = worker.run()
        if args.summary_json is not None:
            args.summary_json.write_text(json.dumps(stats.summary(), indent=1) + "\n", encoding="utf-8")
        return exit_code


def serve_metrics(settings: Settings, registry: CollectorRegistry) -> Optional[WSGIServer]:
    """Serve `registry` for Prometheus on HOST:METRICS_PORT from a thread of its own (none when
    METRICS_PORT is 0). Raises OSError when the port is taken: better than running unwatched."""
    if not settings.metrics_port:
        return None
    server, _ = start_http_server(settings.metrics_port, addr=settings.host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
    return server


def _install_signal_handlers(worker: Worker) -> None:
    """First SIGINT/SIGTERM: graceful stop. Second: exit at once (what was in flight comes back
    after its visibility timeout)."""

    def graceful(signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGINT, at_once)
        signal.signal(signal.SIGTERM, at_once)
        worker.stop()

    def at_once(signum: int, _frame: Any) -> None:
        log.warning("second signal: exiting now")
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, graceful)
    signal.signal(signal.SIGTERM, graceful)


if __name__ == "__main__":
    sys.exit(main())
