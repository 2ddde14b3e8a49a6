"""Queue-reader: long-polls the queue, processes messages concurrently, deletes what succeeded,
lets failures come back after a backoff, and leaves poison messages to the dead-letter queue.

Made of small parts, each with one job: a consumer thread (the only one that receives), processor
threads (run the processing step, no receiving), a heartbeat thread (keeps long work invisible),
and group commits that coalesce deletes and visibility changes into batch calls. The main thread
reports stats and runs the shutdown.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
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
from typing import Any, Callable, Mapping, Optional, TextIO
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from batcher import Closed, GroupCommit, Overloaded
from config import ConfigError, Settings, configure_logging
from metrics import SqsMetrics, WorkerMetrics, buckets, milliseconds, quantile
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

log = logging.getLogger(__name__)

#: The processing step: a plain function of one message. Returning means success (the message
#: is deleted); raising anything means failure (the message comes back after a backoff).
Processor = Callable[[ReceivedMessage], None]

#: Longest pause between receive attempts while SQS keeps failing.
MAX_OUTAGE_BACKOFF_S = 30.0
#: While some slots are busy, how long the consumer waits for more to free up, so that one
#: receive fills several slots instead of one receive per finished message.
RECEIVE_GATHER_S = 0.05
#: Messages received ahead of free processors (a receive's worth). They are in flight, kept
#: invisible by the heartbeat, and returned at once on shutdown if no processor started them.
PREFETCH = BATCH_MAX_ENTRIES
#: How long a delete or visibility change may wait for others to share its batch call.
ACK_LINGER_S = 0.02


#: The attributes a dead letter gets from the worker that moved it; `SOURCE_ID` holds the id the
#: message had in the source queue (the copy in the dead-letter queue gets an id of its own).
DEAD_LETTER_PREFIX = "dead_letter."
SOURCE_ID = DEAD_LETTER_PREFIX + "source_id"
#: How much of an error's text travels with a dead letter.
ERROR_TEXT_CHARS = 256


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


def load_processor(spec: str) -> Processor:
    """Import the user's processing step from 'module:function'."""
    module_name, _, function_name = spec.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    if not callable(function):
        raise TypeError(f"{spec} is not callable")
    return function


def compute_backoff(
    receive_count: int, *, base_s: float, max_s: float, rng: Callable[[], float] = random.random
) -> int:
    """Seconds a failed message stays invisible before its next attempt: doubling with each
    receive, capped at `max_s`, with jitter (between half and all of it) so that messages that
    failed together do not return together. Whole seconds, as SQS takes them."""
    ceiling = min(max_s, base_s * 2 ** max(0, receive_count - 1))
    return min(43_200, math.ceil(ceiling * (0.5 + rng() / 2)))


def failure_attributes(
    message: ReceivedMessage, error: BaseException, *, worker_id: str, at: datetime
) -> dict[str, str]:
    """Why a message is dead-lettered, as message attributes an operator can read in any SQS
    console: its source id, the error's type and text, the attempts, which worker, when."""
    text = "".join(c if c.isprintable() else " " for c in str(error))[:ERROR_TEXT_CHARS].strip()
    return {
        SOURCE_ID: message.id,
        DEAD_LETTER_PREFIX + "error_type": type(error).__name__,
        DEAD_LETTER_PREFIX + "error": text or "(no message)",
        DEAD_LETTER_PREFIX + "attempts": str(message.receive_count),
        DEAD_LETTER_PREFIX + "worker": worker_id,
        DEAD_LETTER_PREFIX + "at": at.isoformat(timespec="milliseconds"),
    }


def without_reasons(attributes: Mapping[str, str]) -> dict[str, str]:
    """A message's own attributes, without the dead_letter.* ones a worker added."""
    return {name: value for name, value in attributes.items() if not name.startswith(DEAD_LETTER_PREFIX)}


def work_units(messages: list[ReceivedMessage], *, fifo: bool) -> list[list[ReceivedMessage]]:
    """Split a receive into units for the processors. Standard queue: one message each. FIFO
    queue: one unit per message group, in the order SQS gave them, processed one after another."""
    if not fifo:
        return [[message] for message in messages]
    groups: dict[Optional[str], list[ReceivedMessage]] = {}
    for message in messages:
        groups.setdefault(message.group_id, []).append(message)
    return list(groups.values())


@dataclasses.dataclass(frozen=True)
class StatsMark:
    """Where one stats report stood, so that the next shows the rate and the latency
    percentiles of the interval between them rather than since start."""

    at: float
    processed: int
    processing: list[tuple[float, float]]  # cumulative histogram buckets
    end_to_end: list[tuple[float, float]]


def _since(current: list[tuple[float, float]], earlier: Optional[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    if earlier is None:
        return current
    return [(bound, count - before) for (bound, count), (_, before) in zip(current, earlier)]


def render_stats(
    title: str,
    snapshot: dict[str, Any],
    *,
    in_flight: int,
    per_second: float,
    depths: dict[str, Optional[dict[str, int]]],
    sqs_requests: int = 0,
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


class _OncePerKind:
    """Log an error the first time its kind is seen in a row, and once more on recovery."""

    def __init__(self) -> None:
        self.failing: Optional[str] = None

    def error(self, exc: Exception, what: str) -> None:
        kind = type(exc).__name__
        if kind != self.failing:
            log.warning("%s failed (%s: %s); retrying with backoff", what, kind, exc)
            self.failing = kind

    def recovered(self, what: str) -> None:
        if self.failing is not None:
            log.info("%s works again", what)
            self.failing = None


class Worker:
    """Consume `queue` with `processor` on `settings.worker_concurrency` threads until `stop()`,
    or until the queue has been empty for `exit_when_idle_s` seconds."""

    def __init__(
        self,
        *,
        queue: SqsQueue,
        dead_letter_queue: SqsQueue,
        processor: Processor,
        settings: Settings,
        output: Optional[TextIO] = None,
        stats_out: Optional[TextIO] = None,
        exit_when_idle_s: Optional[float] = None,
        summary_path: Optional[Path] = None,
    ) -> None:
        self.queue = queue
        self.dead_letter_queue = dead_letter_queue
        self.processor = processor
        self.settings = settings
        self.output = output
        self.stats_out = stats_out
        self.exit_when_idle_s = exit_when_idle_s
        self.summary_path = summary_path
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.started = time.monotonic()
        self.registry = CollectorRegistry()  # what METRICS_PORT serves
        self.metrics = WorkerMetrics(self.registry)
        queue.metrics.expose_in(self.registry)  # and the dead-letter queue's, when they share it
        self.metrics.in_flight.set_function(lambda: self.in_flight)
        self.visibility_timeout_s = settings.visibility_timeout_s
        self.poll_wait_s = settings.receive_wait_s
        if exit_when_idle_s is not None:  # notice idleness within about its own length
            self.poll_wait_s = min(self.poll_wait_s, max(1, int(exit_when_idle_s)))
        self._stopping = threading.Event()  # receive no more
        self._done = threading.Event()  # nothing in flight any more: the heartbeat can end
        # Units of work: one message, or on a FIFO queue one group's messages from a receive,
        # which must be processed in order by one processor.
        self._work: queue_module.Queue[Optional[list[ReceivedMessage]]] = queue_module.Queue()
        self._slots = threading.Condition()
        self._in_flight = 0
        self._in_progress: dict[str, tuple[ReceivedMessage, float]] = {}  # handle -> deadline
        self._in_progress_lock = threading.Lock()
        self._output_lock = threading.Lock()
        # Processors hand deletes and visibility changes over without waiting; these coalesce
        # them into batch calls. Shutdown lets what is pending leave.
        self._deletes = GroupCommit(
            queue.delete_messages, max_batch=BATCH_MAX_ENTRIES, max_concurrent=2,
            max_pending=10 * settings.worker_concurrency, linger_s=ACK_LINGER_S, name="delete",
        )
        self._visibility = GroupCommit(
            queue.change_visibility, max_batch=BATCH_MAX_ENTRIES, max_concurrent=2,
            max_pending=10 * settings.worker_concurrency, linger_s=ACK_LINGER_S, name="visibility",
        )
        self._consumer = threading.Thread(target=self._consume, name="consumer", daemon=True)

    # Lifecycle

    def stop(self) -> None:
        """Ask for a graceful stop: receive no more; in-flight work finishes. Thread-safe."""
        if not self._stopping.is_set():
            log.info("stopping: finishing in-flight work, returning what was not started")
            self._stopping.set()
        with self._slots:
            self._slots.notify_all()

    @property
    def in_flight(self) -> int:
        with self._slots:
            return self._in_flight

    def run(self) -> int:
        """Work until stopped; returns 0 when everything in flight was finished or returned."""
        self._read_visibility_timeout()
        self._consumer.start()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        for number in range(self.settings.worker_concurrency):
            threading.Thread(target=self._process_loop, name=f"processor-{number}", daemon=True).start()
        previous: Optional[StatsMark] = None
        next_report = time.monotonic() + self.settings.stats_interval_s
        while not self._stopping.wait(0.1):
            if time.monotonic() >= next_report:
                previous = self._report(previous)
                next_report += self.settings.stats_interval_s
        clean = self._shut_down()
        self._report(previous, title="summary")
        if self.summary_path is not None:
            self.summary_path.write_text(json.dumps(self.summary(), indent=1) + "\n", encoding="utf-8")
        return 0 if clean else 1

    def snapshot(self, since: Optional[StatsMark] = None) -> tuple[dict[str, Any], StatsMark]:
        """The counters since start, read from the metrics, with latency percentiles estimated
        from their histograms over the observations since `since` (or since start); and the
        mark for the next snapshot."""
        now = time.monotonic()
        counts = {name: self.metrics.count(name) for name in WorkerMetrics.COUNTERS}
        mark = StatsMark(
            now, counts["processed"],
            buckets(self.metrics.processing_duration, "worker_processing_duration_seconds"),
            buckets(self.metrics.end_to_end, "worker_end_to_end_latency_seconds"),
        )
        processing = _since(mark.processing, since and since.processing)
        end_to_end = _since(mark.end_to_end, since and since.end_to_end)
        interval_s = now - (since.at if since else self.started)
        snapshot = {
            **counts,
            "uptime_s": now - self.started,
            "processed_per_s": (counts["processed"] - (since.processed if since else 0)) / max(1e-9, interval_s),
            "latency_p50_s": quantile(processing, 0.50),
            "latency_p99_s": quantile(processing, 0.99),
            "end_to_end_p50_s": quantile(end_to_end, 0.50),
            "end_to_end_p99_s": quantile(end_to_end, 0.99),
        }
        return snapshot, mark

    def summary(self) -> dict[str, Any]:
        """The counters and the SQS calls by operation, for programs (make e2e, make bench)."""
        calls = collections.Counter(self.queue.calls) + collections.Counter(self.dead_letter_queue.calls)
        snapshot, _ = self.snapshot()
        return {**snapshot, "sqs_calls": dict(calls), "sqs_billable_requests": self._billable_requests}

    @property
    def _billable_requests(self) -> int:
        """What SQS bills this worker: both queues, depth polls for the stats included."""
        return self.queue.billable_requests + self.dead_letter_queue.billable_requests

    def _read_visibility_timeout(self) -> None:
        """Heartbeats follow the queue's real visibility timeout, not just the setting."""
        try:
            attributes = self.queue.attributes(["VisibilityTimeout"])
            self.visibility_timeout_s = int(attributes["VisibilityTimeout"])
        except (SqsError, KeyError, ValueError) as exc:
            log.warning(
                "cannot read the queue's visibility timeout (%s); using VISIBILITY_TIMEOUT=%d",
                exc, self.visibility_timeout_s,
            )

    def _shut_down(self) -> bool:
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        while time.monotonic() < deadline and (self._consumer.is_alive() or self.in_flight):
            time.sleep(0.02)
        for _ in range(self.settings.worker_concurrency):
            self._work.put(None)
        clean = not self._consumer.is_alive() and self.in_flight == 0
        self._done.set()
        if not clean:
            log.warning(
                "grace period (%g s) over with %d messages in flight: they return after their "
                "visibility timeout", self.settings.shutdown_grace_s, self.in_flight,
            )
        self._deletes.close(timeout_s=max(1.0, deadline - time.monotonic()))
        self._visibility.close(timeout_s=max(1.0, deadline - time.monotonic()))
        return clean

    # The consumer: the only thread that receives.

    def _wait_for_free_slots(self) -> int:
        """Block until a slot is free; then, if others are still busy, give them up to
        RECEIVE_GATHER_S to finish so that one receive fills several slots.

        Slots are the processors plus PREFETCH: messages received ahead wait for a processor,
        so that one finishing a message finds the next instead of waiting for a receive."""
        capacity = self.settings.worker_concurrency + PREFETCH
        wanted = min(BATCH_MAX_ENTRIES, capacity)
        with self._slots:
            while self._in_flight >= capacity and not self._stopping.is_set():
                self._slots.wait()
            gather_until = time.monotonic() + RECEIVE_GATHER_S
            while capacity - self._in_flight < wanted and not self._stopping.is_set():
                remaining_s = gather_until - time.monotonic()
                if remaining_s <= 0:
                    break
                self._slots.wait(remaining_s)
            return capacity - self._in_flight

    def _consume(self) -> None:
        outage = _OncePerKind()
        pause_s = 0.0
        idle_since: Optional[float] = None
        while not self._stopping.is_set():
            free = self._wait_for_free_slots()
            if self._stopping.is_set():
                break
            try:
                messages = self.queue.receive(max_messages=min(BATCH_MAX_ENTRIES, free), wait_s=self.poll_wait_s)
            except SqsError as exc:
                outage.error(exc, "receiving")
                pause_s = min(MAX_OUTAGE_BACKOFF_S, max(0.5, pause_s * 2))
                self._stopping.wait(pause_s * (0.5 + random.random() / 2))
                continue
            except Exception:  # a bug of ours: log it, keep consuming
                log.error("unexpected error while receiving", exc_info=True)
                self._stopping.wait(1.0)
                continue
            outage.recovered("receiving")
            pause_s = 0.0
            if self._stopping.is_set():
                self._release(messages)  # arrived after the stop: back to the queue at once
                break
            if messages:
                idle_since = None
                self._accept(messages)
            elif self.exit_when_idle_s is not None:
                idle_since = self._idle_check(idle_since)

    def _accept(self, messages: list[ReceivedMessage]) -> None:
        deadline = time.monotonic() + self.visibility_timeout_s
        with self._slots:
            self._in_flight += len(messages)
        with self._in_progress_lock:
            for message in messages:
                self._in_progress[message.receipt_handle] = (message, deadline)
        self.metrics.add("received", len(messages))
        for unit in work_units(messages, fifo=self.queue.is_fifo):
            self._work.put(unit)

    def _idle_check(self, idle_since: Optional[float]) -> Optional[float]:
        """Idle means nothing in flight here and nothing left in the queue for anyone, messages
        waiting out a backoff included."""
        if self.in_flight:
            return None
        try:
            depth = self.queue.depth()
        except SqsError:
            return None
        if sum(depth.values()):
            return None
        now = time.monotonic()
        if idle_since is None:
            return now
        if now - idle_since >= self.exit_when_idle_s:  # type: ignore[operator]
            log.info("queue empty for %g s: exiting", self.exit_when_idle_s)
            self.stop()
        return idle_since

    # Processors: run the processing step; no receiving.

    def _process_loop(self) -> None:
        while True:
            unit = self._work.get()
            if unit is None:
                return
            for position, message in enumerate(unit):
                if self._stopping.is_set():
                    self._finish(unit[position:], release=True)  # never started: back at once
                    break
                succeeded = self._handle_safely(message)
                self._finish([message], release=False)
                if not succeeded and len(unit) > position + 1:
                    # FIFO: later messages of the group must not overtake the failed one.
                    self._finish(unit[position + 1 :], release=True)
                    break

    def _finish(self, messages: list[ReceivedMessage], *, release: bool) -> None:
        """These messages are no longer this worker's: free their slots (after releasing them)."""
        try:
            if release:
                self._release(messages)
        except Exception:
            log.error("could not release %d messages", len(messages), exc_info=True)
        finally:
            for message in messages:
                self._forget(message)
            with self._slots:
                self._in_flight -= len(messages)
                self._slots.notify_all()

    def _handle_safely(self, message: ReceivedMessage) -> bool:
        try:
            return self._handle(message)
        except Exception:
            log.error("unexpected error handling message %r", message.id, exc_info=True)
            return False

    def _handle(self, message: ReceivedMessage) -> bool:
        """Process one message; True when it succeeded."""
        started = time.monotonic()
        error: Optional[Exception] = None
        try:
            self.processor(message)
        except Exception as exc:  # whatever the step raises is a failure of this message only
            error = exc
        self.metrics.processing_duration.observe(time.monotonic() - started)
        if error is not None:
            self._failed(message, error)
            return False
        self._record(message)  # flushed before the delete: nothing acknowledged is missing from it
        self.metrics.add("processed")
        if message.sent_at_s is not None:  # SQS's clock against ours: skew shows here too
            self.metrics.end_to_end.observe(max(0.0, time.time() - message.sent_at_s))
        self._acknowledge(self._deletes, message.receipt_handle, message, "deleted")
        return True

    def _failed(self, message: ReceivedMessage, exc: Exception) -> None:
        self.metrics.add("failed")
        if message.receive_count < self.settings.max_receive_count:
            self.metrics.add("retried")
            delay_s = compute_backoff(
                message.receive_count,
                base_s=self.settings.retry_backoff_base_s,
                max_s=self.settings.retry_backoff_max_s,
            )
            log.debug("message %r failed (%s); retry in %d s", message.id, type(exc).__name__, delay_s)
        else:
            self.metrics.add("dead_lettered")
            log.info(
                "message %r failed %d times (%s: %s): to the dead-letter queue",
                message.id, message.receive_count, type(exc).__name__, exc,
            )
            if self._dead_letter(message, exc):
                # Only now that the dead-letter queue has it: dying before this delete leaves
                # a copy in each queue, never none.
                self._acknowledge(self._deletes, message.receipt_handle, message, "deleted after dead-lettering")
                return
            # Visible at once instead: SQS's redrive policy moves it on the next receive.
            delay_s = 0
        self._acknowledge(self._visibility, (message.receipt_handle, delay_s), message, "rescheduled")

    def _dead_letter(self, message: ReceivedMessage, exc: Exception) -> bool:
        """Send the message to the dead-letter queue with why it failed; True once SQS has it.
        False, leaving it to SQS's redrive policy, when the reasons do not fit beside the
        message's own attributes, or SQS refuses the send."""
        reason = failure_attributes(message, exc, worker_id=self.worker_id, at=datetime.now(timezone.utc))
        own = without_reasons(message.attributes)  # a redriven message's earlier reasons go
        if len(own) + len(reason) > MAX_ATTRIBUTES:
            log.info("message %r has %d attributes: no room for the reasons; SQS's redrive moves it",
                     message.id, len(own))
            return False
        dead_letter = OutgoingMessage(
            body=message.body,
            attributes={**own, **reason},
            group_id=message.group_id,
            deduplication_id=message.id if self.dead_letter_queue.is_fifo else None,
        )
        (result,) = self.dead_letter_queue.send([dead_letter])
        if result.error is not None:
            log.warning("message %r not sent to the dead-letter queue (%s); SQS's redrive moves it",
                        message.id, result.error)
        return result.ok

    def _acknowledge(self, batcher: GroupCommit, item: Any, message: ReceivedMessage, done: str) -> None:
        """Hand a delete or visibility change to its batcher without waiting for it. If it
        fails, SQS still has the message: it is delivered again after its visibility timeout."""

        def outcome_known(future: Future[EntryOutcome]) -> None:
            error = future.exception() or future.result()
            if error is not None:
                log.warning("message %r not %s (%s): it will be delivered again", message.id, done, error)
            elif done == "deleted":
                self.metrics.add("deleted")

        try:
            batcher.submit(item).add_done_callback(outcome_known)
        except (Overloaded, Closed) as exc:
            log.warning("message %r not %s (%s): it will be delivered again", message.id, done, exc)

    def _record(self, message: ReceivedMessage) -> None:
        if self.output is None:
            return
        line = json.dumps(
            {
                "id": message.id,
                "body": message.body,
                "receive_count": message.receive_count,
                "sent_at": _iso(message.sent_at_s) if message.sent_at_s is not None else None,
                "processed_at": _iso(time.time()),
            },
            ensure_ascii=False,
        )
        with self._output_lock:
            self.output.write(line + "\n")
            self.output.flush()

    def _release(self, messages: list[ReceivedMessage]) -> None:
        """Make messages visible again at once (they were received but will not be processed)."""
        if not messages:
            return
        outcomes = self.queue.change_visibility([(m.receipt_handle, 0) for m in messages])
        self.metrics.add("released", sum(outcome is None for outcome in outcomes))

    def _forget(self, message: ReceivedMessage) -> None:
        with self._in_progress_lock:
            self._in_progress.pop(message.receipt_handle, None)

    # Heartbeat: keeps long work invisible.

    def _heartbeat(self) -> None:
        """Every third of the visibility timeout, extend every message in progress whose
        invisibility would end before the next beat and one more, in batch calls."""
        while True:
            interval_s = max(0.2, self.visibility_timeout_s / 3)
            if self._done.wait(interval_s):
                return
            now = time.monotonic()
            with self._in_progress_lock:
                due = [m for m, deadline in self._in_progress.values() if deadline - now < 2 * interval_s]
            if not due:
                continue
            outcomes = self._extend(due)
            with self._in_progress_lock:
                for message, outcome in zip(due, outcomes):
                    if outcome is None and message.receipt_handle in self._in_progress:
                        self._in_progress[message.receipt_handle] = (message, now + self.visibility_timeout_s)

    def _extend(self, messages: list[ReceivedMessage]) -> list[EntryOutcome]:
        changes = [(m.receipt_handle, self.visibility_timeout_s) for m in messages]
        outcomes = self.queue.change_visibility(changes)
        for message, outcome in zip(messages, outcomes):
            if outcome is not None:
                log.warning("heartbeat for %r failed (%s)", message.id, outcome)
        return outcomes

    # Stats

    def _report(self, previous: Optional[StatsMark], title: str = "worker") -> StatsMark:
        """Poll the queues' depths into their gauges and, with a stats pane, show the stats: the
        rate and percentiles over the last interval, or over the whole run for the summary."""
        snapshot, mark = self.snapshot(since=None if title == "summary" else previous)
        depths = {"queue": self._poll_depth(self.queue), "dlq": self._poll_depth(self.dead_letter_queue)}
        if self.stats_out is not None:
            text = render_stats(
                title, snapshot, in_flight=self.in_flight, per_second=snapshot["processed_per_s"],
                depths=depths, sqs_requests=self._billable_requests,
            )
            clear = "\x1b[H\x1b[2J" if title != "summary" and self.stats_out.isatty() else ""
            self.stats_out.write(f"{clear}{text}\n\n")
            self.stats_out.flush()
        return mark

    def _poll_depth(self, queue: SqsQueue) -> Optional[dict[str, int]]:
        try:
            depth = queue.depth()
        except SqsError:
            return None
        for state, messages in depth.items():
            self.metrics.queue_messages.labels(queue.name, state).set(messages)
        return depth


def read_output(path: Path) -> list[dict[str, Any]]:
    """The records of an --output file, in order. A line cut short by a worker killed while
    writing it is skipped: its message was not deleted, so it comes back."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="milliseconds")


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Queue-reader: long-polls QUEUE_NAME, processes messages concurrently, deletes "
        "what succeeded, lets failures come back after a backoff, and leaves messages that failed "
        "MAX_RECEIVE_COUNT times to the dead-letter queue. Every option also comes from the "
        "environment variable named in its help.",
    )
    add = parser.add_argument
    add("--concurrency", type=int, default=settings.worker_concurrency,
        help="messages processed at once (WORKER_CONCURRENCY, default %(default)s)")
    add("--process-time", type=float, default=settings.process_time_s,
        help="seconds of simulated work per message (PROCESS_TIME, default %(default)s)")
    add("--failure-rate", type=float, default=settings.failure_rate,
        help="probability that simulated work fails, 0 to 1 (FAILURE_RATE, default %(default)s)")
    add("--seed", type=int, default=settings.failure_seed,
        help="makes simulated failures repeatable (FAILURE_SEED, default random)")
    add("--processor", default=settings.processor or None, metavar="MODULE:FUNCTION",
        help="your processing step instead of the simulated work (PROCESSOR)")
    add("--output", default=settings.worker_output, metavar="FILE",
        help="append one JSON line per processed and deleted message (WORKER_OUTPUT)")
    add("--stats-interval", type=float, default=settings.stats_interval_s,
        help="seconds between stats reports (STATS_INTERVAL, default %(default)s)")
    add("--exit-when-idle", type=float, default=settings.exit_when_idle_s, metavar="SECONDS",
        help="exit gracefully once the queue has been empty this long (EXIT_WHEN_IDLE)")
    add("--summary-json", type=Path, metavar="FILE",
        help="on exit, write the counters and the SQS calls by operation to FILE as JSON")
    add("--grace", type=float, default=settings.shutdown_grace_s,
        help="seconds to finish in-flight work after SIGINT/SIGTERM (SHUTDOWN_GRACE, default %(default)s)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    try:
        settings = Settings.from_env()
        args = build_parser(settings).parse_args(argv)
        settings = dataclasses.replace(  # checked again: a flag gets the same bounds as its variable
            settings,
            worker_concurrency=args.concurrency,
            process_time_s=args.process_time,
            failure_rate=args.failure_rate,
            failure_seed=args.seed,
            stats_interval_s=args.stats_interval,
            shutdown_grace_s=args.grace,
        )
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    processor: Processor
    if args.processor:
        processor = load_processor(args.processor)
    else:
        processor = SimulatedWork(
            process_time_s=settings.process_time_s, failure_rate=settings.failure_rate, seed=settings.failure_seed
        )
    # A long poll holds the connection for up to RECEIVE_WAIT_SECONDS: the read timeout covers it.
    client = create_client(settings, read_timeout_s=settings.receive_wait_s + settings.sqs_read_timeout_s)
    sqs_metrics = SqsMetrics()
    with contextlib.ExitStack() as cleanup:
        output = cleanup.enter_context(open(args.output, "a", encoding="utf-8")) if args.output else None
        worker = Worker(
            queue=SqsQueue(settings.queue_name, client, sqs_metrics),
            dead_letter_queue=SqsQueue(settings.dlq_name, client, sqs_metrics),
            processor=processor,
            settings=settings,
            output=output,
            stats_out=sys.stdout,
            exit_when_idle_s=args.exit_when_idle,
            summary_path=args.summary_json,
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
            "worker %s on queue %r (%s), concurrency %d", worker.worker_id, settings.queue_name,
            settings.sqs_endpoint_url or f"AWS {settings.aws_region}", settings.worker_concurrency,
        )
        return worker.run()


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
