"""The queue-writer's handlers (bound by `operationId` in swagger.yml) and what the spec cannot say:
a message's size as SQS counts it (UTF-8, attributes included) and lone surrogates; and each
entry of a batch on its own merit, against the same rules as the spec's.

The served spec has already checked types, fields, ranges and characters before a handler runs.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import re
import threading
import time
from typing import Any, Mapping, Optional, Union

import flask

from batcher import GroupCommit, Overloaded
from config import Settings
from errors import (
    InvalidMessage,
    MessageTooLarge,
    QueueBacklogged,
    QueueUnavailable,
    ServiceError,
    SqsError,
    StoreUnavailable,
    WriterBusy,
    problem,
)
from idempotency import IdempotencyStore, KeyStore, fingerprint, scoped_key
from metrics import WriterMetrics, by_label, total
from sqsinterface import BATCH_MAX_ENTRIES, OutgoingMessage, SendResult, SqsQueue

log = logging.getLogger(__name__)

#: Characters SQS refuses in a body or attribute value: all but #x9, #xA, #xD, #x20-#xD7FF,
#: #xE000-#xFFFD and #x10000-#x10FFFF. JSON can still carry them (as \u0000 or a lone \ud800).
_DISALLOWED = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: SQS's rule for attribute names: up to 256 of A-Z a-z 0-9 _ - . ; no leading, trailing or
#: doubled period; no "AWS." or "Amazon." prefix in any case.
_ATTRIBUTE_NAME = re.compile(r"^(?!(?i:aws|amazon)\.)(?!.*\.\.)(?!\.)[A-Za-z0-9_.-]{1,256}(?<!\.)$")

WRITER_EXTENSION = "queue_writer"


def character_problem(what: str, text: str) -> Optional[str]:
    """What is wrong with `text` for SQS (its first character SQS refuses), or None."""
    bad = _DISALLOWED.search(text)
    if bad is None:
        return None
    return (
        f"{what} holds U+{ord(bad.group()):04X} at position {bad.start()}, a character SQS "
        "does not accept (allowed: tab, newline, carriage return, U+0020 to U+D7FF, "
        "U+E000 to U+FFFD, U+10000 to U+10FFFF)"
    )


def attribute_name_problem(name: str) -> Optional[str]:
    """What is wrong with `name` as an SQS message attribute's name, or None."""
    if _ATTRIBUTE_NAME.fullmatch(name):
        return None
    return (
        f"attribute name {name[:64]!r} is not allowed: use up to 256 letters, digits, "
        "'_', '-' or '.', not starting with 'AWS.' or 'Amazon.', with no leading, "
        "trailing or doubled '.'"
    )


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
    if message.size_bytes > max_bytes:
        raise MessageTooLarge(
            f"the message is {message.size_bytes} bytes (body and attributes in UTF-8); "
            f"the limit is {max_bytes}"
        )
    if fifo:
        if message.group_id is None:
            raise InvalidMessage("group_id is required on a FIFO queue")
        if message.delay_s is not None:
            raise InvalidMessage(
                "delay_seconds is not supported per message on a FIFO queue; "
                "set DelaySeconds on the queue instead"
            )
        if message.deduplication_id is None and not content_based_dedup:
            raise InvalidMessage(
                "deduplication_id is required: this FIFO queue has no content-based deduplication"
            )
    elif message.deduplication_id is not None:
        raise InvalidMessage("deduplication_id is only for FIFO queues; this queue is standard")
    return message


class Writer:
    """Everything behind the handlers: the queue, the group commit, and the counters that
    /metrics and /api/stats report. One per app, kept in `app.extensions`."""

    OUTCOMES = ("accepted", "invalid", "unavailable", "busy", "backlogged")

    def __init__(
        self, settings: Settings, queue: SqsQueue, dead_letter_queue: SqsQueue, metrics: WriterMetrics,
        idempotency: Optional[KeyStore] = None,
    ) -> None:
        self.settings = settings
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
            # Each waiting message holds a handler thread, so this bound is never the first hit.
            max_pending=settings.handler_threads,
            on_batch=metrics.observe_batch,
            name="send",
        )
        self._backlog: Optional[int] = None  # the queue's depth while over MAX_QUEUE_DEPTH
        # Idempotency-Keys: in this process's memory unless a shared store is given.
        self.idempotency: KeyStore = idempotency if idempotency is not None else IdempotencyStore(
            window_s=settings.idempotency_window_s, max_keys=settings.idempotency_max_keys
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

    def refused(self, error: ServiceError, messages: int = 1) -> ServiceError:
        """Count `messages` as refused with `error`, under its outcome; returns it, to be raised.
        Every refusal the writer decides is counted here, once, where it is decided."""
        self.count(error.outcome, messages)
        return error

    def prepare(self, fields: Mapping[str, Any], idempotency_key: Optional[str] = None) -> OutgoingMessage:
        """Check one message and build what will be sent. On a FIFO queue an Idempotency-Key
        becomes the deduplication id of a message that has none, so that SQS too drops a
        repeat, across writers. (Without content-based deduplication the served spec requires
        a deduplication_id, so there every message that gets here has one.)"""
        if idempotency_key is not None and self.queue.is_fifo and fields.get("deduplication_id") is None:
            fields = {**fields, "deduplication_id": idempotency_key}
        try:
            return to_outgoing(
                fields,
                fifo=self.queue.is_fifo,
                content_based_dedup=self.queue.is_fifo and self.queue.content_based_deduplication,
                max_bytes=self.settings.max_message_bytes,
            )
        except InvalidMessage as exc:
            raise self.refused(exc) from None

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
        try:
            future = self._group.submit(message)
        except Overloaded as exc:
            raise self.refused(WriterBusy(f"the writer is saturated: {exc}")) from None
        try:
            result = future.result(timeout=self.settings.send_timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()  # not sent yet: it never will be; already sent: SQS has it
            result = SendResult(
                error=QueueUnavailable(
                    f"SQS did not accept the message within {self.settings.send_timeout_s:g} s"
                )
            )
        self._count_results([result])
        if result.error is not None:
            raise result.error
        return result

    def send_once(
        self, key: str, client: str, fields: Mapping[str, Any], message: OutgoingMessage
    ) -> tuple[dict[str, str], bool]:
        """Send under an Idempotency-Key: (the answer, whether it is a replay). A repeat of the
        same request gets the first answer and sends nothing; a failed send forgets the key."""
        scoped = scoped_key(key, client)
        try:
            remembered = self.idempotency.begin(scoped, fingerprint(fields))
        except StoreUnavailable as exc:
            raise self.refused(exc) from None
        if remembered is not None:
            return remembered, True
        try:
            answer = _accepted(self.send_one(message))
        except BaseException:
            self.idempotency.abandon(scoped)
            raise
        self.idempotency.finish(scoped, answer)
        return answer, False

    def send_many(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """Send a client's batch directly: it is already a batch, group commit adds nothing."""
        self._refuse_when_backlogged(len(messages))
        results = self.queue.send(messages)
        self._count_results(results)
        return results

    def _count_results(self, results: list[SendResult]) -> None:
        """Each entry under its outcome: accepted, or its error's (whose fault it was)."""
        if len(results) == 1:  # POST /api/message: one, and most of the traffic
            self.count("accepted" if results[0].error is None else results[0].error.outcome)
            return
        outcomes = collections.Counter(
            "accepted" if result.error is None else result.error.outcome for result in results
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
                results.append(QueueUnavailable(
                    f"GetQueueAttributes {queue.name!r}: SQS did not answer within "
                    f"{self.settings.send_timeout_s:g} s"
                ))
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


def current_writer() -> Writer:
    return flask.current_app.extensions[WRITER_EXTENSION]


def _accepted(result: SendResult) -> dict[str, str]:
    answer = {"message_id": str(result.message_id)}
    if result.sequence_number is not None:
        answer["sequence_number"] = result.sequence_number
    return answer


# Handlers, bound by operationId in swagger.yml. Each names its Content-Type because the spec
# lists two per operation (application/json, and application/problem+json for errors).

JsonResponse = tuple[dict[str, Any], int, dict[str, str]]
_JSON = {"Content-Type": "application/json"}



def post_message(body: dict[str, Any]) -> JsonResponse:
    writer = current_writer()
    key = _idempotency_key(flask.request.headers.get("Idempotency-Key"))
    message = writer.prepare(body, idempotency_key=key)
    if key is None:
        return _accepted(writer.send_one(message)), 201, _JSON
    client = flask.request.headers.get("X-API-Key", "")
    answer, replayed = writer.send_once(key, client, body, message)
    return answer, 201, {**_JSON, "Idempotent-Replayed": "true" if replayed else "false"}


def _idempotency_key(key: Optional[str]) -> Optional[str]:
    """The Idempotency-Key header's key, without the quotes of the IETF draft's form ("key");
    the spec has checked its length and characters."""
    if key is None:
        return None
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    return key or None


def post_messages(body: dict[str, Any]) -> JsonResponse:
    """Each entry is checked and sent on its own merit; the answer reports each one, in order,
    with the status and problem it would have had alone.

    200 even when some entries failed (as SQS's own batch API does), unless SQS took none of the
    entries it was sent, each for a reason of its own side (unreachable, missing queue, no
    permission): then that 503, so that a client retries the whole request.
    """
    writer = current_writer()
    prepared: list[Union[OutgoingMessage, InvalidMessage]] = []
    for fields in body["messages"]:
        try:
            prepared.append(writer.prepare(fields))
        except InvalidMessage as exc:
            prepared.append(exc)
    to_send = [entry for entry in prepared if isinstance(entry, OutgoingMessage)]
    sent = iter(writer.send_many(to_send) if to_send else [])
    outcomes: list[Union[SendResult, ServiceError]] = [
        entry if isinstance(entry, InvalidMessage) else next(sent) for entry in prepared
    ]
    failures = [outcome.error for outcome in outcomes if isinstance(outcome, SendResult) and outcome.error]
    if to_send and len(failures) == len(to_send) and all(error.retry_later for error in failures):
        raise failures[0]  # counted by send_many already, answered by the error handler
    results = [{"index": index, **_entry_outcome(outcome)} for index, outcome in enumerate(outcomes)]
    accepted = sum(result["status"] == 201 for result in results)
    return {"accepted": accepted, "failed": len(results) - accepted, "results": results}, 200, _JSON


def _entry_outcome(outcome: Union[SendResult, ServiceError]) -> dict[str, Any]:
    """One entry of a batch's answer: 201 and its ids, or its problem's status, title, detail."""
    if isinstance(outcome, SendResult):
        if outcome.error is None:
            return {"status": 201, **_accepted(outcome)}
        outcome = outcome.error
    body = problem(outcome)
    return {"status": body["status"], "title": body["title"], "detail": body["detail"]}


def health() -> JsonResponse:
    """Liveness: the process answers. No SQS call, so an SQS outage does not restart writers."""
    return {"status": "ok"}, 200, _JSON


def ready() -> JsonResponse:
    """Readiness: the queue exists and answers (one GetQueueAttributes call)."""
    writer = current_writer()
    (depth,) = writer.depths(writer.queue)
    if isinstance(depth, SqsError):
        raise depth  # QueueNotFound / QueueUnavailable / NotAuthorized -> 503
    return {"status": "ready", "queue": writer.queue.name}, 200, _JSON


def stats() -> JsonResponse:
    return current_writer().stats(), 200, _JSON
