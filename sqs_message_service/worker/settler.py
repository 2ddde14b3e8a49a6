"""The settler: the one place that decides what becomes of each message a processor is done with
(deleted, retried after a backoff, or dead-lettered with its reasons), on a thread of its own."""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from ..batcher import Closed, GroupCommit, Overloaded
from ..dlq import FailureHistory, failure_attributes, send_dead_letter
from ..hooks import NO_HOOKS, Hooks
from ..logs import ThrottledLog
from ..metrics import WorkerMetrics
from ..output import OutputWriter, ProcessedRecord
from ..settings import Settings
from ..sqs import BATCH_MAX_ENTRIES, EntryOutcome, ReceivedMessage, SqsQueue
from ..verdicts import Reject, RetryLater, TimedOut
from .backoff import compute_backoff
from .in_flight import InFlight
from .part import Part
from .processed import BATCH_WRITE_MAX_ITEMS, TRANSACT_MAX_ITEMS, ProcessedLedger

log = logging.getLogger(__name__)

#: How long a delete or visibility change may wait for others to share its batch call.
ACK_LINGER_S = 0.02
#: How long the settler waits for room among the pending deletes and visibility changes before
#: it gives up on one (the message is then delivered again): while it waits, the messages stay
#: in `InFlight`, so the worker receives nothing new and processes no faster than it can
#: acknowledge.
ACK_BACKPRESSURE_S = 30.0
#: How long a message whose step returned waits before its record as done is written again,
#: when the processed ledger did not take it; the heartbeat keeps it invisible meanwhile.
RECORD_RETRY_S = 1.0
#: SQS's longest visibility timeout: 12 hours.
MAX_VISIBILITY_S = 43_200
#: How often a kind of step failure is logged at WARNING (every one is at DEBUG).
FAILURE_LOG_INTERVAL_S = 10.0


def _traceback_of(error: BaseException) -> Any:
    """`exc_info` for a log line: the step's traceback when it raised, none for the worker's own
    verdicts (timed out) and a step's `Reject`, whose reason says it all."""
    if isinstance(error, (TimedOut, Reject, RetryLater)) or error.__traceback__ is None:
        return None
    return (type(error), error, error.__traceback__)


class FailureLog(ThrottledLog):
    """A failed attempt's line, at most once per kind of error per interval, with how many of
    that kind were not logged meanwhile."""

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        super().__init__(logger, interval_s)
        self._unlogged: dict[str, int] = {}

    def warning(self, error: BaseException, what: str = "") -> None:
        kind = type(error).__name__
        now = self._clock()
        if now - self._last.get(kind, -self.interval_s) < self.interval_s:
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            return
        self._last[kind] = now
        unlogged = self._unlogged.pop(kind, 0)
        self.logger.warning(
            "step failed: %s: %s (%s)%s",
            kind,
            error,
            what,
            f"; {unlogged} more {kind} since the last line" if unlogged else "",
        )


class Settler(Part):
    """What becomes of each message a processor is done with: the one place that decides, on a
    thread of its own.

    Processors hand over what they finished (`done`) and go on to their next message at once;
    this thread settles whatever gathered meanwhile, in one pass. Success: recorded in the output
    file, then deleted. Failure: made visible again after a backoff, or at MAX_RECEIVE_COUNT sent
    to the dead-letter queue with its reasons and then deleted. Only once a message is handed
    over does `InFlight` let it go, so the worker receives no faster than it settles, and the
    heartbeat no longer extends what is now a delete or a retry's backoff.
    Unstarted messages (shutdown, or behind a failed one of its FIFO group) are given back
    (`give_back`) by whoever holds them: visible at once. Every way a message leaves `InFlight`
    is a verb of this class: the other parts say what happened, the settler lets it go. Asked to
    stop, it settles what it was handed, then lets the pending deletes and visibility changes
    leave (for up to SHUTDOWN_GRACE), and ends.

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
        self,
        *,
        queue: SqsQueue,
        dead_letter_queue: SqsQueue,
        in_flight: InFlight,
        settings: Settings,
        metrics: WorkerMetrics,
        output: Optional[OutputWriter],
        worker_id: str,
        calls_at_once: int = 2,
        processed: Optional[ProcessedLedger] = None,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        super().__init__(name="settler")
        self.queue = queue
        self.dead_letter_queue = dead_letter_queue
        self.in_flight = in_flight
        self.settings = settings
        self.metrics = metrics
        self.output = output
        self.worker_id = worker_id
        # They see each attempt, retry, dead-lettering and settlement (the worker's metrics count
        # them), and watch each batched delete and visibility change (tracing's settle spans).
        self.hooks = hooks
        self.history = FailureHistory()  # each attempt's error, for the dead letter's reasons
        self._failure_log = FailureLog(log, FAILURE_LOG_INTERVAL_S)
        self._cond = threading.Condition()
        self._finished: list[tuple[ReceivedMessage, Optional[BaseException], float]] = []  # (it, error, step's s)
        pending = 10 * settings.worker_concurrency

        def commit(call: Any, max_batch: int, name: str) -> Any:
            """Each kind of call in group commits: `calls_at_once` at most, acks kept short."""
            return GroupCommit(
                call,
                max_batch=max_batch,
                max_concurrent=calls_at_once,
                max_pending=pending,
                linger_s=ACK_LINGER_S,
                name=name,
            )

        self._deletes: GroupCommit[ReceivedMessage, EntryOutcome] = commit(
            self._delete_batch, BATCH_MAX_ENTRIES, "delete"
        )
        self._visibility: GroupCommit[tuple[ReceivedMessage, int], EntryOutcome] = commit(
            self._change_visibility_batch, BATCH_MAX_ENTRIES, "visibility"
        )
        self.processed = processed
        self._unrecorded: list[tuple[ReceivedMessage, float]] = []  # done, not yet recorded: (it, when to retry)
        if processed is not None:
            self._records: GroupCommit[ReceivedMessage, Optional[Exception]] = commit(
                processed.complete, BATCH_WRITE_MAX_ITEMS, "record"
            )
            self._gives_back: GroupCommit[ReceivedMessage, None] = commit(
                processed.give_back, TRANSACT_MAX_ITEMS, "give-back"
            )

    def done(self, message: ReceivedMessage, error: Optional[BaseException], step_s: float) -> None:
        """A processor is done with `message`: its step took `step_s` and raised `error` (None:
        succeeded). Returns at once; the message is settled on this thread."""
        with self._cond:
            self._finished.append((message, error, step_s))
            if len(self._finished) == 1:  # the thread may be waiting; otherwise it comes back for it
                self._cond.notify()

    def run(self) -> None:
        while True:
            with self._cond:
                while not (due := self._due_records()) and not self._finished and not self.stopping:
                    self._cond.wait(self._next_record_s())
                if not self._finished and not due:
                    break  # stopping, and all handed over
                finished, self._finished = self._finished, []
            for message, error, step_s in finished:
                handed_over = True
                try:
                    handed_over = self._settle(message, error, step_s)
                finally:  # handed over: the heartbeat leaves it be, and there is room for another
                    if handed_over:
                        self.in_flight.finish([message])
                    else:  # its record is being written: room for another, still kept invisible
                        self.in_flight.settling([message])
            for message in due:
                self._record_then_delete(message)
        self._drain()

    def _due_records(self) -> list[ReceivedMessage]:
        """Under the lock: the records as done to write again now (all of them when stopping)."""
        now = time.monotonic()
        due = [message for message, at in self._unrecorded if at <= now or self.stopping]
        if due:
            self._unrecorded = [(message, at) for message, at in self._unrecorded if not (at <= now or self.stopping)]
        return due

    def _next_record_s(self) -> Optional[float]:
        """Under the lock: how long until the next record is to be written again (None: no wait)."""
        if not self._unrecorded:
            return None
        return max(0.0, min(at for _, at in self._unrecorded) - time.monotonic())

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _drain(self) -> None:
        """Let the pending deletes and visibility changes leave, then flush the output file:
        records whose delete never left are kept all the same."""
        batchers: list[GroupCommit[Any, Any]] = [self._deletes, self._visibility]
        if self.processed is not None:  # records first: they hand over the deletes they allow
            batchers = [self._records, self._gives_back, *batchers]
        for batcher in batchers:
            batcher.close(timeout_s=max(1.0, self.settings.shutdown_grace_s))
        if self.output is not None:
            self.output.flush()

    def _settle(self, message: ReceivedMessage, error: Optional[BaseException], step_s: float) -> bool:
        """Decide what becomes of `message`; False while it stays in flight here (its record as
        done is being written), True once it is handed over."""
        try:
            if error is None:
                return self._succeeded(message, step_s)
            self._failed(message, error, step_s)
        except Exception:  # a bug of ours: SQS still has the message, which comes back; the rest go on
            log.error("unexpected error settling message %r", message.id, exc_info=True)
        return True

    def _succeeded(self, message: ReceivedMessage, step_s: float) -> bool:
        if self.output is not None:  # out before the delete (_delete_batch): nothing acknowledged is missing
            self.output.write(ProcessedRecord.of(message, processed_at_s=time.time()))
        self.hooks.attempted(message, None, step_s)  # after its output line: what counts as processed is in it
        if self.history:
            self.history.forget(message.id)
        if self.processed is not None:
            self._record_then_delete(message)
            return False
        self._hand_over(self._deletes, message, message, "deleted")
        return True

    def _record_then_delete(self, message: ReceivedMessage) -> None:
        """Record the message as done in the processed ledger, then delete it. Until the table
        takes the record the message stays in flight here, kept invisible by the heartbeat, and
        the record is written again every RECORD_RETRY_S: deleted unrecorded, a redelivery
        would run the step again. A worker that stops first leaves it to come back."""

        def recorded(future: Future[Optional[Exception]]) -> None:
            error = future.exception() or future.result()
            if error is None:
                self._hand_over(self._deletes, message, message, "deleted")
                self.in_flight.finish([message])
            elif self.stopping:
                log.warning(
                    "message %r processed but not recorded as done (%s): stopping, it comes back "
                    "and is processed again",
                    message.id,
                    error,
                )
                self.in_flight.finish([message])
            else:
                log.warning(
                    "message %r processed but not recorded as done (%s): kept, and recorded again in %g s",
                    message.id,
                    error,
                    RECORD_RETRY_S,
                )
                with self._cond:
                    self._unrecorded.append((message, time.monotonic() + RECORD_RETRY_S))
                    self._cond.notify()

        try:
            self._records.submit(message, wait_s=ACK_BACKPRESSURE_S).add_done_callback(recorded)
        except (Overloaded, Closed) as exc:
            failed: Future[Optional[Exception]] = Future()
            failed.set_result(exc)
            recorded(failed)

    def _failed(self, message: ReceivedMessage, error: BaseException, step_s: float) -> None:
        """A failed attempt: back after its backoff (or the delay a `RetryLater` asked for), or
        dead-lettered with its reasons on its MAX_RECEIVE_COUNT-th receive or a `Reject`."""
        self.hooks.attempted(message, error, step_s)
        rejected = isinstance(error, Reject)
        if not rejected and message.receive_count < self.settings.max_receive_count:
            if isinstance(error, RetryLater):
                delay_s = error.seconds
            else:
                delay_s = compute_backoff(
                    message.receive_count,
                    base_s=self.settings.retry_backoff_base_s,
                    max_s=self.settings.retry_backoff_max_s,
                )
            self.hooks.retried(message, error, delay_s)
            self._log_failure(message, error, f"back in {delay_s} s")
            self.history.failed(message, error, datetime.now(timezone.utc))
            self._give_back_then(
                message, lambda: self._hand_over(self._visibility, (message, delay_s), message, "rescheduled")
            )
            return
        self.hooks.dead_lettered(message, error)
        with self.hooks.dead_lettering(message):  # tracing: the line and the dead-letter copy's send join its trace
            log.warning(
                "message %r %s (%s: %s): to the dead-letter queue",
                message.id,
                "rejected by the step" if rejected else f"failed {message.receive_count} times",
                type(error).__name__,
                error,
                exc_info=_traceback_of(error),
            )
            sent = self._dead_letter(message, error, self.history.forget(message.id))
        self._give_back_then(message, lambda: None)  # a redrive with the same key is processed again
        if sent:
            # Only now that the dead-letter queue has it: dying before this delete leaves a
            # copy in each queue, never none.
            self._hand_over(self._deletes, message, message, "deleted after dead-lettering")
        else:  # visible at once instead: SQS's redrive policy moves it on the next receive
            self._hand_over(self._visibility, (message, 0), message, "rescheduled")

    def _log_failure(self, message: ReceivedMessage, error: BaseException, then: str) -> None:
        """Each failed attempt, with its reason: at WARNING once per kind of error every
        FAILURE_LOG_INTERVAL_S (a step failing on every message is not a log flood), and at DEBUG
        every time, with the step's traceback."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "message %r failed on receive %d (%s: %s); %s",
                message.id,
                message.receive_count,
                type(error).__name__,
                error,
                then,
                exc_info=_traceback_of(error),
            )
        else:
            self._failure_log.warning(error, f"message {message.id!r}, receive {message.receive_count}; {then}")

    def _give_back_then(self, message: ReceivedMessage, then: Callable[[], None]) -> None:
        """Give the message's claim back in the processed ledger (if there is one), then `then`:
        the retry that follows finds its key free."""
        if self.processed is None:
            then()
            return
        try:
            self._gives_back.submit(message, wait_s=ACK_BACKPRESSURE_S).add_done_callback(lambda _: then())
        except (Overloaded, Closed):  # the claim lapses with its lease instead
            then()

    # What the other parts say of the messages they will not finish: each verb lets the message
    # go from `InFlight` here, so that the settler is the one place a message leaves it.

    def skip_duplicates(self, messages: list[ReceivedMessage]) -> None:
        """Messages the processed ledger knows as done: deleted without the step."""
        for message in messages:
            log.debug(
                "message %r (%s) was processed already: deleted as a duplicate", message.id, message.processing_key
            )
            self.metrics.add("duplicates")
            self._hand_over(self._deletes, message, message, "deleted as a duplicate")
        self.in_flight.finish(messages)

    def come_back_later(self, messages: list[tuple[ReceivedMessage, float]]) -> None:
        """Messages not to be processed now, visible again after the seconds given with each
        (when the lease that holds its key ends)."""
        for message, after_s in messages:
            self.metrics.add("held")
            seconds = min(MAX_VISIBILITY_S, max(0, math.ceil(after_s)))
            self._hand_over(self._visibility, (message, seconds), message, "left to come back")
        self.in_flight.finish([message for message, _ in messages])

    def leave(self, messages: list[ReceivedMessage]) -> None:
        """Messages left as they are, to come back after their visibility timeout (the
        processed ledger could not claim them)."""
        self.in_flight.finish(messages)

    def give_back(self, messages: list[ReceivedMessage], *, claimed: bool = True) -> None:
        """Messages received but not to be processed here after all (the worker stopping, a FIFO
        group held up, a deadline's unit behind a timed-out message): their claims given back
        first when `claimed` (with the processed ledger), then visible again at once, so that
        whoever receives them next can claim them. Never raises, from whichever thread holds
        them: what SQS does not make visible now, it makes visible after the visibility timeout
        all the same."""
        if not messages:
            return
        if claimed and self.processed is not None:
            self.processed.give_back(messages)  # best effort: a claim not given back lapses with its lease
        try:
            outcomes = self.queue.change_visibility([(message.receipt_handle, 0) for message in messages])
            for message, outcome in zip(messages, outcomes, strict=True):
                if outcome is None:
                    self.hooks.settled(message, "given back")
        except Exception:
            log.error("could not give back %d messages", len(messages), exc_info=True)
        finally:
            self.in_flight.finish(messages)

    def _delete_batch(self, messages: list[ReceivedMessage]) -> list[EntryOutcome]:
        """A DeleteMessageBatch, once the records of the messages it deletes are written."""
        if self.output is not None:
            self.output.flush()
        with self.hooks.settling("delete", self.queue.name, messages) as watching:
            outcomes = self.queue.delete_messages([message.receipt_handle for message in messages])
            self._note_failure(watching, outcomes)
        return outcomes

    def _change_visibility_batch(self, changes: list[tuple[ReceivedMessage, int]]) -> list[EntryOutcome]:
        """A ChangeMessageVisibilityBatch: each message visible again after its seconds."""
        with self.hooks.settling("change_visibility", self.queue.name, [message for message, _ in changes]) as watching:
            outcomes = self.queue.change_visibility([(message.receipt_handle, seconds) for message, seconds in changes])
            self._note_failure(watching, outcomes)
        return outcomes

    def _note_failure(self, watching: Any, outcomes: list[EntryOutcome]) -> None:
        failure = next((outcome for outcome in outcomes if outcome is not None), None)
        if failure is not None:
            self.hooks.failed(watching, failure)

    def _dead_letter(self, message: ReceivedMessage, error: BaseException, earlier: list[list[Any]]) -> bool:
        """Send the message to the dead-letter queue with why it failed; True once SQS has it.
        False, leaving it to SQS's redrive policy, when the reasons do not fit beside the
        message's own attributes, or SQS refuses the send. The `earlier` attempts' errors this
        worker saw go too where a seventh attribute fits, in number and in size."""
        reasons = failure_attributes(message, error, worker_id=self.worker_id, at=datetime.now(timezone.utc))
        return send_dead_letter(
            self.dead_letter_queue, message, reasons, max_message_bytes=self.settings.max_message_bytes, earlier=earlier
        )

    def _hand_over(
        self, batcher: GroupCommit[Any, EntryOutcome], item: Any, message: ReceivedMessage, done: str
    ) -> None:
        """Give a delete or visibility change to its batcher without waiting for it."""

        def outcome_known(future: Future[EntryOutcome]) -> None:
            error = future.exception() or future.result()
            if error is not None:
                log.warning("message %r not %s (%s): it will be delivered again", message.id, done, error)
            else:
                self.hooks.settled(message, done)

        try:
            batcher.submit(item, wait_s=ACK_BACKPRESSURE_S).add_done_callback(outcome_known)
        except (Overloaded, Closed) as exc:
            log.warning("message %r not %s (%s): it will be delivered again", message.id, done, exc)
