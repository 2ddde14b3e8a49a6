"""The writer's service, behind the HTTP handlers (message.py): each message checked against what
SQS accepts (rules.py) and built for sending, the group commit that sends them, backpressure,
Idempotency-Keys, and the counters that /metrics and /api/stats report.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Mapping, Optional, TypeVar, Union

from ..batcher import GroupCommit, Overloaded
from ..hooks import NO_HOOKS, Hooks
from ..leases import TableUnavailable
from ..metrics import WriterMetrics, by_label, total
from ..rules import attribute_name_problem, character_problem, queue_fields, size_problem
from ..settings import Settings
from ..sqs import BATCH_MAX_ENTRIES, OutgoingMessage, QueueUnavailable, SendResult, SqsError, SqsQueue
from ..trace_header import with_idempotency_key
from .errors import (
    Answerable,
    InvalidMessage,
    MessageTooLarge,
    QueueBacklogged,
    StoreUnavailable,
    WriterBusy,
    answer,
)
from .idempotency import IdempotencyStore, KeyStore, fingerprint, scoped_key

log = logging.getLogger(__name__)

#: Any error the writer answers, kept as what it is when counted (`Writer.refused`).
E = TypeVar("E", bound=Answerable)

#: Where the app keeps its Writer: `app.extensions[WRITER_EXTENSION]`.
WRITER_EXTENSION = "queue_writer"


def _check_characters(what: str, text: str) -> None:
    problem_text = character_problem(what, text)
    if problem_text is not None:
        raise InvalidMessage(problem_text)


def to_outgoing(
    fields: Mapping[str, Any],
    *,
    fifo: bool,
    content_based_dedup: bool,
    max_bytes: int,
) -> OutgoingMessage:
    """Check one message of a request against what SQS accepts and build what will be sent.

    Raises InvalidMessage (400) or MessageTooLarge (413) with a detail a client can act on.
    """
    body: str = fields["body"]
    attributes: dict[str, str] = dict(fields.get("attributes") or {})
    _check_characters("body", body)
    for name, value in attributes.items():
        name_problem = attribute_name_problem(name)
        if name_problem is not None:
            raise InvalidMessage(name_problem)
        _check_characters(f"attribute {name!r}", value)
    message = OutgoingMessage(
        body=body,
        attributes=attributes,
        delay_s=fields.get("delay_seconds"),
        group_id=fields.get("group_id"),
        deduplication_id=fields.get("deduplication_id"),
    )
    too_large = size_problem(message.size_bytes, max_bytes)
    if too_large is not None:
        raise MessageTooLarge(too_large)
    field_problem = queue_fields(fifo=fifo, content_based_deduplication=content_based_dedup).problem(fields)
    if field_problem is not None:
        raise InvalidMessage(field_problem)
    return message


def admission_limit(settings: Settings) -> int:
    """The requests one writer process serves at once (stack.Admission): one handler thread
    each, with one kept for /api/health. Past it a request is answered 503 before its body is
    read, at the socket when it can be. The group commit's own bound is one above, so that this
    limit, the cheap one, is always the one a request meets."""
    return max(1, settings.handler_threads - 1)


class Writer:
    """Everything behind the handlers: the queue, the group commit, and the counters that
    /metrics and /api/stats report. One per app, kept in `app.extensions`."""

    OUTCOMES = ("accepted", "invalid", "unavailable", "busy", "backlogged")

    def __init__(
        self,
        settings: Settings,
        queue: SqsQueue,
        dead_letter_queue: SqsQueue,
        metrics: WriterMetrics,
        idempotency: Optional[KeyStore] = None,
        hooks: Hooks = NO_HOOKS,
        entry_problem: Optional[Callable[[Any], Optional[str]]] = None,
    ) -> None:
        self.settings = settings
        # What the served spec finds wrong with a batch's entry (spec.ServedSpec.entry_problem)
        self.entry_problem = entry_problem
        self.hooks = hooks  # they see each message created (tracing: its creation in the request's trace)
        self.queue = queue
        self.dead_letter_queue = dead_letter_queue
        self.metrics = metrics
        # every outcome shows, at 0 until it happens; each series found once, not per request
        self._outcomes = {outcome: metrics.messages.labels(outcome) for outcome in self.OUTCOMES}
        self.started_at = time.time()
        self._group = GroupCommit(
            queue.send,
            max_batch=BATCH_MAX_ENTRIES,
            max_concurrent=settings.send_concurrency,
            linger_s=settings.send_linger_s,
            eager_when_quiet=True,  # a lone request is sent at once
            # Each waiting message holds a handler thread: this bound is never the first hit.
            max_pending=admission_limit(settings) + 1,
            on_batch=metrics.observe_batch,
            name="send",
        )
        self._backlog: Optional[int] = None  # the queue's depth while over MAX_QUEUE_DEPTH
        # Idempotency-Keys: in this process's memory unless a shared store is given.
        self.idempotency: KeyStore = (
            idempotency
            if idempotency is not None
            else IdempotencyStore(window_s=settings.idempotency_window_s, max_keys=settings.idempotency_max_keys)
        )
        self._closed = threading.Event()
        if settings.max_queue_depth is not None:
            threading.Thread(target=self._watch_depth, name="depth-watch", daemon=True).start()
        # Readiness and stats ask SQS for queue depths here, so that a hanging SQS cannot hold
        # them longer than SEND_TIMEOUT, as it cannot hold a send.
        self._lookups = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="lookup")

    def count(self, outcome: Optional[str], messages: int = 1) -> None:
        """Count `messages` under `outcome` (None: an answer that is no message's outcome)."""
        if outcome is not None:
            self._outcomes[outcome].inc(messages)  # every outcome's series, found at start

    def refused(self, error: E, messages: int = 1) -> E:
        """Count `messages` as refused with `error`, under its outcome; returns it, to be raised.
        Every refusal the writer decides is counted here, once, where it is decided."""
        self.count(answer(error).outcome, messages)
        return error

    def prepare(self, fields: Mapping[str, Any], idempotency_key: Optional[str] = None) -> OutgoingMessage:
        """Check one message and build what will be sent. On a FIFO queue an Idempotency-Key
        becomes the deduplication id of a message that has none, so that SQS too drops a
        repeat, across writers. (Without content-based deduplication the served spec requires
        a deduplication_id, so there every message that gets here has one.)"""
        reserved = self.hooks.context_attribute
        if reserved is not None and reserved in (fields.get("attributes") or {}):
            raise self.refused(
                InvalidMessage(
                    f"attribute {reserved!r} carries the trace context while tracing is on; name yours otherwise"
                )
            )
        if idempotency_key is not None and self.queue.is_fifo and fields.get("deduplication_id") is None:
            fields = {**fields, "deduplication_id": idempotency_key}
        try:
            return to_outgoing(
                fields,
                fifo=self.queue.is_fifo,
                content_based_dedup=self.queue.is_fifo and self.queue.content_based_deduplication,
                max_bytes=self.settings.max_message_bytes - self.hooks.context_bytes,  # room for the context
            )
        except InvalidMessage as exc:
            raise self.refused(exc) from None

    def prepare_entry(self, fields: Any) -> OutgoingMessage:
        """One entry of a batch request, judged on its own: what the served spec says of a
        message's fields (for a lone message the request checks say it), then `prepare`."""
        problem_text = self.entry_problem(fields) if self.entry_problem is not None else None
        if problem_text is not None:
            raise self.refused(InvalidMessage(problem_text))
        return self.prepare(fields)

    def _watch_depth(self) -> None:
        """Poll the queue's depth every DEPTH_POLL_INTERVAL, in the background, so that
        backpressure costs a request nothing. While SQS does not answer, the last verdict holds:
        sends report the outage themselves."""
        limit = self.settings.max_queue_depth
        assert limit is not None  # started only with MAX_QUEUE_DEPTH set
        while True:
            try:
                visible = self.queue.depth()["visible"]
            except SqsError:
                pass
            else:
                over = visible > limit
                if over != (self._backlog is not None):
                    log.info("queue depth %d: backpressure %s", visible, "on" if over else "off")
                self._backlog = visible if over else None
            if self._closed.wait(self.settings.depth_poll_interval_s):
                return

    def _refuse_when_backlogged(self, messages: int) -> None:
        backlog = self._backlog
        if backlog is not None:
            raise self.refused(
                QueueBacklogged(
                    f"the queue holds {backlog} messages, more than MAX_QUEUE_DEPTH="
                    f"{self.settings.max_queue_depth}; retry once the workers have caught up"
                ),
                messages,
            )

    def send_one(self, message: OutgoingMessage) -> SendResult:
        """Send through the group commit and wait, at most SEND_TIMEOUT, for this entry's result.
        Raises the entry's own error; a SendResult comes back only once SQS accepted it."""
        self._refuse_when_backlogged(1)
        message = self.hooks.created(message, self.queue.name, by_request=True)  # the request is its creation
        try:
            future = self._group.submit(message)
        except Overloaded as exc:
            raise self.refused(WriterBusy(f"the writer is saturated: {exc}")) from None
        try:
            result = future.result(timeout=self.settings.send_timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()  # not sent yet: it never will be; already sent: SQS has it
            result = SendResult(
                error=QueueUnavailable(f"SQS did not accept the message within {self.settings.send_timeout_s:g} s")
            )
        self._count_results([result])
        if result.error is not None:
            raise result.error
        return result

    def send_once(
        self, key: str, client: str, fields: Mapping[str, Any], message: OutgoingMessage
    ) -> tuple[dict[str, str], bool]:
        """Send under an Idempotency-Key: (the answer, whether it is a replay). A repeat of the
        same request gets the first answer and sends nothing; a failed send forgets the key. The
        key travels with the message (AWSTraceHeader), so that a worker with PROCESSED_TABLE
        processes once even two messages this store could not keep apart."""
        scoped = scoped_key(key, client)
        try:
            remembered = self.idempotency.begin(scoped, fingerprint(fields))
        except TableUnavailable as exc:  # a keyed request is never sent without its key kept
            raise self.refused(StoreUnavailable(str(exc))) from None
        if remembered is not None:
            return remembered, True
        if not self.queue.is_fifo:  # FIFO: the key is the message's deduplication id already (prepare)
            carried = with_idempotency_key(scoped.hex(), message.trace_header)
            message = dataclasses.replace(message, trace_header=carried)
        try:
            answered = accepted(self.send_one(message))
        except BaseException:
            self.idempotency.abandon(scoped)
            raise
        self.idempotency.finish(scoped, answered)
        return answered, False

    def send_many(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """Send a client's batch directly: it is already a batch, group commit adds nothing."""
        self._refuse_when_backlogged(len(messages))
        results = self.queue.send([self.hooks.created(message, self.queue.name) for message in messages])
        self._count_results(results)
        return results

    def _count_results(self, results: list[SendResult]) -> None:
        """Each entry under its outcome: accepted, or its error's (whose fault it was)."""
        if len(results) == 1:  # POST /api/message: one, and most of the traffic
            self.count("accepted" if results[0].error is None else answer(results[0].error).outcome)
            return
        outcomes = collections.Counter(
            "accepted" if result.error is None else answer(result.error).outcome for result in results
        )
        for outcome, messages in outcomes.items():
            self.count(outcome, messages)

    def depths(self, *queues: SqsQueue) -> list[Union[dict[str, int], SqsError]]:
        """Each queue's approximate depth, or its SqsError; asked at once and waited for at most
        SEND_TIMEOUT in all. A call left behind ends at the SQS client's own read timeout."""
        futures = [self._lookups.submit(queue.depth) for queue in queues]
        concurrent.futures.wait(futures, timeout=self.settings.send_timeout_s)
        results: list[Union[dict[str, int], SqsError]] = []
        for queue, future in zip(queues, futures, strict=True):
            if not future.done():
                future.cancel()
                results.append(
                    QueueUnavailable(
                        f"GetQueueAttributes {queue.name!r}: SQS did not answer within "
                        f"{self.settings.send_timeout_s:g} s"
                    )
                )
            elif isinstance(error := future.exception(), SqsError):
                results.append(error)
            else:
                results.append(future.result())  # raises what is not an SQS error: a bug, 500
        return results

    def close(self) -> None:
        self._closed.set()
        self._group.close(timeout_s=self.settings.send_timeout_s)
        self._lookups.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        """The counters of /metrics (of every writer process), and both queues' depths."""
        view = self.metrics.view
        queue_depth, dead_letter_depth = self.depths(self.queue, self.dead_letter_queue)
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "messages": by_label(view, "writer_messages_total", "outcome"),
            "sqs_calls": by_label(view, "sqs_requests_total", "operation", queue=self.queue.name),
            "sqs_billable_requests": int(total(view, "sqs_billable_requests_total")),  # both queues
            "group_commit": {
                "batches": int(total(view, "writer_send_batch_messages_count")),
                "messages": int(total(view, "writer_send_batch_messages_sum")),
            },
            "queue": _named_depth(self.queue, queue_depth),
            "dead_letter_queue": _named_depth(self.dead_letter_queue, dead_letter_depth),
        }


def _named_depth(queue: SqsQueue, depth: Union[dict[str, int], SqsError]) -> dict[str, Any]:
    if isinstance(depth, SqsError):
        return {"name": queue.name, "error": str(depth)}
    return {"name": queue.name, **depth}


def accepted(result: SendResult) -> dict[str, str]:
    """The answer to a message SQS accepted: its id, and on a FIFO queue its sequence number."""
    ids = {"message_id": str(result.message_id)}
    if result.sequence_number is not None:
        ids["sequence_number"] = result.sequence_number
    return ids
