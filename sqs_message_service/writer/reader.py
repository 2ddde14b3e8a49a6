"""The read routes' service, behind the handlers in message.py: receive with a bounded long poll
and a lease, acknowledge, give back (to the dead-letter queue on the last allowed receive, with
the reader's reason), extend a lease. Stateless between requests: a token says all there is
to know of its message (tokens.py).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
import os
import queue
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Optional, Sequence, Union

from ..dlq import failure_attributes, send_dead_letter
from ..hooks import NO_HOOKS, Hooks
from ..metrics import WriterMetrics
from ..settings import Settings
from ..sqs import EntryOutcome, LeaseLapsed, QueueUnavailable, ReceivedMessage, SqsQueue
from ..trace_header import carried_context, traceparent
from .errors import Answerable, NotAToken, PollsBusy, TryLater
from .tokens import Token, TokenError, Tokens

log = logging.getLogger(__name__)

#: Where the app keeps its Reader: `app.extensions[READER_EXTENSION]`.
READER_EXTENSION = "queue_reader"


class GivenBack(Exception):
    """A reader gave the message back: the reason it gave, as a dead letter's error."""


@dataclass(frozen=True)
class Settled:
    """One token's outcome: None when SQS did it, else the error it is answered with; whether
    the message went to the dead-letter queue."""

    error: Optional[Answerable] = None
    dead_lettered: bool = False


class Reader:
    """Everything behind the read routes. One per app, kept in `app.extensions`.

    `queue` is the queue on a client whose read timeout covers a 20 s long poll. A long poll
    runs on a thread of its own (at most READ_MAX_POLLS at once), so that `stop()` can answer the
    request at once: what the abandoned receive brings back afterwards is made visible again."""

    def __init__(
        self,
        settings: Settings,
        queue: SqsQueue,
        dead_letter_queue: SqsQueue,
        metrics: WriterMetrics,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.dead_letter_queue = dead_letter_queue
        self.metrics = metrics
        self.hooks = hooks  # for the attribute they add to each message, which is not the sender's
        self.tokens = Tokens(queue.name, settings.read_token_secret)
        self.reader_id = f"reader@{socket.gethostname()}:{os.getpid()}"
        self._outcomes = {
            outcome: metrics.reads.labels(outcome)
            for outcome in ("received", "acknowledged", "given_back", "dead_lettered", "extended", "lapsed")
        }
        self._polls = threading.BoundedSemaphore(settings.read_max_polls)
        self._poll_threads = PollThreads()
        self._stopping = threading.Event()
        self._waiting: set[threading.Event] = set()
        self._lock = threading.Lock()

    # Receive

    def receive(self, *, max_messages: int, wait_s: int, lease_s: Optional[int]) -> list[dict[str, Any]]:
        """Up to `max_messages`, each with its token; none when `wait_s` passed without one, or
        the writer began to stop meanwhile."""
        self.refuse_if_stopping()
        if wait_s == 0:
            received = self.queue.receive(max_messages=max_messages, wait_s=0, visibility_timeout_s=lease_s)
        else:
            received = self._long_poll(max_messages, wait_s, lease_s)
        self._outcomes["received"].inc(len(received))
        return [self._answer(message) for message in received]

    def _long_poll(self, max_messages: int, wait_s: int, lease_s: Optional[int]) -> list[ReceivedMessage]:
        if not self._polls.acquire(blocking=False):
            raise PollsBusy(
                f"{self.settings.read_max_polls} long polls already wait here (READ_MAX_POLLS); "
                "retry later, or with wait_seconds 0"
            )
        try:
            with self.metrics.long_polls.track_inprogress():
                return self._wait_for_poll(max_messages, wait_s, lease_s)
        finally:
            self._polls.release()

    def _wait_for_poll(self, max_messages: int, wait_s: int, lease_s: Optional[int]) -> list[ReceivedMessage]:
        """The poll's messages once it answers; none at once if the writer begins to stop."""
        future = self._poll(max_messages, wait_s, lease_s)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        with self._lock:
            self._waiting.add(done)
            if self._stopping.is_set():
                done.set()
        try:
            done.wait(wait_s + self.settings.sqs_read_timeout_s + self.settings.sqs_connect_timeout_s)
        finally:
            with self._lock:
                self._waiting.discard(done)
        if not future.done():  # stopping (or SQS hangs): answer now, give back what comes later
            future.add_done_callback(self._give_back_late)
            if self._stopping.is_set():
                return []
            raise QueueUnavailable(f"ReceiveMessage {self.queue.name!r}: SQS did not answer in time")
        return future.result()

    def _poll(self, max_messages: int, wait_s: int, lease_s: Optional[int]) -> concurrent.futures.Future[Any]:
        """The receive on a poll thread, in the request's context (its span: the receive is
        its child)."""
        return self._poll_threads.submit(
            contextvars.copy_context(),
            self.queue.receive,
            max_messages=max_messages,
            wait_s=wait_s,
            visibility_timeout_s=lease_s,
        )

    def _give_back_late(self, future: concurrent.futures.Future[list[ReceivedMessage]]) -> None:
        """What a receive abandoned at a stop brought back: visible again at once, lost to no one."""
        if future.cancelled() or future.exception() is not None:
            return
        messages = future.result()
        if messages:
            outcomes = self.queue.change_visibility([(message.receipt_handle, 0) for message in messages])
            log.info(
                "gave back %d messages a long poll brought after the writer began to stop",
                sum(outcome is None for outcome in outcomes),
            )

    def _answer(self, message: ReceivedMessage) -> dict[str, Any]:
        attributes = dict(message.attributes)
        if self.hooks.context_attribute is not None:  # the writer's, not the sender's
            attributes.pop(self.hooks.context_attribute, None)
        answer: dict[str, Any] = {
            "message_id": message.id,
            "body": message.body,
            "attributes": attributes,
            "receive_count": message.receive_count,
            "token": self.tokens.make(message, with_copy=message.receive_count >= self.settings.max_receive_count),
        }
        if message.group_id is not None:
            answer["group_id"] = message.group_id
        carried = carried_context(message)  # the creation's context, as the message carries it
        if carried is not None:
            answer["traceparent"] = traceparent(carried)
        return answer

    def stop(self) -> None:
        """The writer is stopping: long polls answer now (with nothing), receives are refused."""
        with self._lock:
            self._stopping.set()
            for done in self._waiting:
                done.set()

    def close(self) -> None:
        """Stop, and let the poll threads end once what they run has answered."""
        self.stop()
        self._poll_threads.close()

    def refuse_if_stopping(self) -> None:
        """TryLater when the writer is stopping: before a receive changes anything."""
        if self._stopping.is_set():
            raise TryLater("the writer is stopping: read through another")

    # Acknowledge, give back, extend

    def _read(self, tokens: Sequence[str]) -> list[Union[Token, NotAToken]]:
        read: list[Union[Token, NotAToken]] = []
        for index, token in enumerate(tokens):
            try:
                read.append(self.tokens.read(token))
            except TokenError as exc:
                read.append(NotAToken(f"tokens.{index}: not a token of this queue: {exc}"))
        return read

    def acknowledge(self, tokens: Sequence[str]) -> list[Settled]:
        """Delete each token's message (DeleteMessageBatch, ten at a time)."""
        read = self._read(tokens)
        outcomes = self._each(read, lambda valid: self.queue.delete_messages([t.receipt_handle for t in valid]))
        self._count(outcomes, "acknowledged")
        return outcomes

    def extend(self, tokens: Sequence[str], *, lease_s: int) -> list[Settled]:
        """Each token's message hidden for `lease_s` more seconds from now."""
        read = self._read(tokens)
        outcomes = self._each(
            read, lambda valid: self.queue.change_visibility([(t.receipt_handle, lease_s) for t in valid])
        )
        self._count(outcomes, "extended")
        return outcomes

    def give_back(self, tokens: Sequence[str], *, delay_s: int, reason: Optional[str]) -> list[Settled]:
        """Each token's message visible again after `delay_s`; on its last allowed receive, sent
        to the dead-letter queue with `reason` instead (then deleted here)."""
        read = self._read(tokens)
        last = self.settings.max_receive_count
        outcomes: list[Optional[Settled]] = [
            Settled(error=token) if isinstance(token, NotAToken) else None for token in read
        ]
        back: list[tuple[int, Token, int]] = []
        for index, token in enumerate(read):
            if not isinstance(token, Token):
                continue
            if token.receive_count >= last and self._dead_letter(token, reason):
                outcomes[index] = self._delete_dead_lettered(token)
            else:  # at the last receive without a copy to send: SQS's redrive policy moves it next time
                back.append((index, token, 0 if token.receive_count >= last else delay_s))
        if back:
            changed = self.queue.change_visibility([(token.receipt_handle, seconds) for _, token, seconds in back])
            for (index, _, _), outcome in zip(back, changed, strict=True):
                outcomes[index] = Settled(error=outcome)
        settled = [outcome if outcome is not None else Settled() for outcome in outcomes]
        self._count([outcome for outcome in settled if not outcome.dead_lettered], "given_back")
        self._outcomes["dead_lettered"].inc(sum(outcome.dead_lettered for outcome in settled))
        return settled

    def _dead_letter(self, token: Token, reason: Optional[str]) -> bool:
        """Send the token's copy of its message to the dead-letter queue with the reader's reason
        (dlq.failure_attributes, as a worker's failure); True once SQS has it."""
        message = token.copy
        if message is None:
            if token.carries_copy:
                log.warning(
                    "a token given back on its last receive was signed with another READ_TOKEN_SECRET: "
                    "SQS's redrive policy moves the message, without the reader's reason"
                )
            return False
        error = GivenBack(reason or "given back by a reader, with no reason")
        reasons = failure_attributes(message, error, worker_id=self.reader_id, at=datetime.now(timezone.utc))
        return send_dead_letter(
            self.dead_letter_queue, message, reasons, max_message_bytes=self.settings.max_message_bytes
        )

    def _delete_dead_lettered(self, token: Token) -> Settled:
        """Only once the dead-letter queue has it: a failure here leaves a copy in each queue,
        never none."""
        (outcome,) = self.queue.delete_messages([token.receipt_handle])
        return Settled(error=outcome, dead_lettered=outcome is None)

    def _each(
        self,
        read: list[Union[Token, NotAToken]],
        call: Any,
    ) -> list[Settled]:
        """`call` with the valid tokens, and every token's outcome in order."""
        valid = [token for token in read if isinstance(token, Token)]
        done: Sequence[EntryOutcome] = call(valid) if valid else []
        results = iter(done)
        return [
            Settled(error=token) if isinstance(token, NotAToken) else Settled(error=next(results)) for token in read
        ]

    def _count(self, outcomes: Sequence[Settled], done: str) -> None:
        self._outcomes[done].inc(sum(outcome.error is None for outcome in outcomes))
        self._outcomes["lapsed"].inc(sum(isinstance(outcome.error, LeaseLapsed) for outcome in outcomes))


class PollThreads:
    """Daemon threads for long polls, started when none is idle, and kept: a thread a receive
    saves its start. Daemon threads, not an executor's (which are joined at exit), so that a poll
    abandoned at a stop keeps no process from exiting. How many: the most polls at once, which
    Reader._long_poll bounds by READ_MAX_POLLS, plus any abandoned one still waiting on SQS; a
    poll never waits for a thread."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._started = 0
        self._lock = threading.Lock()

    def submit(
        self,
        context: contextvars.Context,
        function: Callable[..., Any],
        **kwargs: Any,
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((future, context, function, kwargs))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                self._started += 1
                threading.Thread(target=self._work, name=f"long-poll-{self._started}", daemon=True).start()
        return future

    def close(self) -> None:
        """Let the threads end once the polls queued before have run."""
        with self._lock:
            for _ in range(self._started):
                self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, context, function, kwargs = job
            result, error = None, None
            try:
                result = context.run(function, **kwargs)
            except BaseException as exc:  # handed to the request, as raised
                error = exc
            self._idle.release()  # idle before the answer goes back: the request's next poll finds it
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
            # an idle thread holds nothing of the last poll: its request's context, its messages
            del job, future, context, function, kwargs, result, error
