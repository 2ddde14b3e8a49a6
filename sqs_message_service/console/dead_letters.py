"""The dead letters as the console shows them and acts on them: a sampled page of them with the
reasons the worker recorded, their bodies on request, and the actions (redrive selected or all,
delete selected).

SQS has no peek: a listing receives a page (hidden while it is read, so that none comes twice)
and gives every message back at once (`dlq.sample`). It never reads the whole queue, so it takes
the same time at 100 dead letters or 100,000. One listing serves every page for LISTING_FRESH_S,
and only one runs at a time. A dead-letter queue with a redrive policy of its own is not read at
all: each receive would bring its messages nearer to being moved on.

An action on selected messages receives them again, to act with the receipt handle SQS knows
as their latest (an older one may be refused, or answered as done while nothing happened:
fauxqs does that on a delete), and gives back at once whatever else it read on the way.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from ..dlq import HOLD_S, back_to_source, reasons, redrive, sample, without_reasons
from ..sqs import BATCH_MAX_ENTRIES, ReceivedMessage, SqsError, SqsQueue

log = logging.getLogger(__name__)

#: How long one listing answers every page before a new one reads SQS again.
LISTING_FRESH_S = 10.0
#: The most dead letters one listing reads.
LISTING_MAX = 1000
#: The most dead letters an action on selected ones reads to find them.
FIND_MAX = 2 * LISTING_MAX


class RedriveJob:
    """A redrive of every dead letter, at a chosen rate, on a thread of its own, through
    `dlq.redrive`: SQS's StartMessageMoveTask where the endpoint has it, else receive, send,
    delete. Its progress is what the page shows."""

    def __init__(self, dead_letter_queue: SqsQueue, source: SqsQueue, rate: Optional[float]) -> None:
        self.state = "running"
        self.moved = 0
        self.total: Optional[int] = None
        self.rate = rate
        self.error: Optional[str] = None
        self.notes: list[str] = []
        self.started_at = time.time()
        self.ended_at: Optional[float] = None
        self._thread = threading.Thread(
            target=self._run, args=(dead_letter_queue, source), name="console-redrive", daemon=True
        )

    def start(self) -> "RedriveJob":
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def _progress(self, moved: int, total: Optional[int]) -> None:
        self.moved, self.total = moved, total if total is not None else self.total

    def _run(self, dead_letter_queue: SqsQueue, source: SqsQueue) -> None:
        try:
            self.moved = redrive(dead_letter_queue, source, rate=self.rate, progress=self._progress,
                                 say=self.notes.append)
            self.state = "done"
        except SqsError as exc:
            self.state, self.error = "failed", str(exc)
        except Exception as exc:  # a bug of ours: shown, and the console goes on
            log.exception("console: the redrive failed")
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.ended_at = time.time()
            log.info("console: redrive of all dead letters %s: %d moved%s", self.state, self.moved,
                     f" ({self.error})" if self.error else "")

    @property
    def running(self) -> bool:
        return self.state == "running"

    def as_dict(self) -> dict[str, Any]:
        return {"scope": "all", "state": self.state, "moved": self.moved, "total": self.total, "rate": self.rate,
                "error": self.error, "notes": self.notes, "started_at": self.started_at, "ended_at": self.ended_at}


class DeadLetters:
    """The dead-letter queue as the console reads it and acts on it."""

    def __init__(
        self, dead_letter_queue: SqsQueue, source: SqsQueue, *, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = dead_letter_queue
        self.source = source
        self.clock = clock
        self._lock = threading.Lock()  # one listing or action at a time
        self._listed: dict[str, ReceivedMessage] = {}  # by the dead letter's own message id
        self._listing: Optional[dict[str, Any]] = None
        self._listed_at = -1e18
        self._own_redrive_policy: Optional[str] = None
        self.job: Optional[RedriveJob] = None

    def own_redrive_policy(self) -> str:
        """The dead-letter queue's own RedrivePolicy ("" without one): read once."""
        if self._own_redrive_policy is None:
            self._own_redrive_policy = self.queue.attributes(["RedrivePolicy"]).get("RedrivePolicy", "")
        return self._own_redrive_policy

    def listing(self, *, limit: int, fresh: bool = False) -> dict[str, Any]:
        """Up to `limit` dead letters, newest failure first, and how they were read: the last
        listing when it is recent enough and as large, else a new one. After the first receive
        it short-polls, so that a queue with fewer than `limit` answers at once; on real SQS a
        listing of a small queue may therefore show fewer than it holds (read again)."""
        with self._lock:
            recent = self.clock() - self._listed_at < LISTING_FRESH_S
            if self._listing is not None and recent and not fresh and self._listing["limit"] >= limit:
                return {**self._listing, "items": self._listing["items"][:limit]}
            if self.own_redrive_policy():
                raise PermissionError(
                    f"the dead-letter queue {self.queue.name!r} has a redrive policy of its own: every receive "
                    "would bring its messages nearer to being moved on, so the console does not read it "
                    "(queue-dlq list does, if you must)"
                )
            started = time.monotonic()
            held = sample(self.queue, max_messages=min(limit, LISTING_MAX), next_wait_s=0)
            self._listed = {message.id: message for message in held}
            items = sorted((summary(message) for message in held), key=_failed_at, reverse=True)
            self._listing = {
                "limit": limit, "read": len(held), "read_at": time.time(), "items": items,
                "read_ms": round((time.monotonic() - started) * 1000, 1),
            }
            self._listed_at = self.clock()
            return self._listing

    def message(self, message_id: str) -> Optional[ReceivedMessage]:
        """A dead letter of the last listing, by its own id."""
        with self._lock:
            return self._listed.get(message_id)

    def delete(self, ids: list[str]) -> dict[str, Any]:
        """Delete the selected dead letters (by their own ids), found afresh (`_find`)."""
        with self._lock:
            found, missing = self._find(ids)
            outcomes = self.queue.delete_messages([message.receipt_handle for message in found]) if found else []
            done = [message.id for message, error in zip(found, outcomes, strict=True) if error is None]
            failed = {message.id: str(error) for message, error in zip(found, outcomes, strict=True) if error}
            self._forget(done)
        log.info("console: deleted %d dead letters (%d not found, %d refused)", len(done), len(missing), len(failed))
        return {"done": done, "missing": missing, "failed": failed}

    def redrive_selected(self, ids: list[str]) -> dict[str, Any]:
        """Move the selected dead letters back to the source queue as `dlq.py`'s redrive moves
        one: found afresh and held (`_find`), sent to the source, then deleted. A send the
        source refuses leaves it a dead letter, visible again; a delete refused after the send
        leaves it in both queues, never in neither."""
        with self._lock:
            found, missing = self._find(ids)
            failed: dict[str, str] = {}
            results = self.source.send([back_to_source(m, fifo=self.source.is_fifo) for m in found]) if found else []
            sent = [message for message, result in zip(found, results, strict=True) if result.ok]
            refused = [(message, result) for message, result in zip(found, results, strict=True) if not result.ok]
            for message, result in refused:
                failed[message.id] = f"the source queue refused it: {result.error}"
            if refused:
                self.queue.change_visibility([(message.receipt_handle, 0) for message, _ in refused])
            deletes = self.queue.delete_messages([message.receipt_handle for message in sent]) if sent else []
            done = [message.id for message in sent]
            for message, error in zip(sent, deletes, strict=True):
                if error is not None:
                    failed[message.id] = f"sent back, but still in the dead-letter queue ({error})"
            self._forget(done)
        log.info("console: redrove %d selected dead letters (%d not found, %d failed)", len(done), len(missing),
                 len(failed))
        return {"done": done, "missing": missing, "failed": failed}

    def _find(self, ids: list[str]) -> tuple[list[ReceivedMessage], list[str]]:
        """The selected dead letters, received again and held (HOLD_S), with the handles of this
        receive: SQS acts only on a message's latest receipt handle, and an older one may be
        refused or, worse, answered as done while nothing happened. Every other message read
        on the way is given back at once. Reads up to FIND_MAX messages; the ids not found by
        then (gone, or not reached) are `missing`."""
        if self.own_redrive_policy():
            raise PermissionError(f"the dead-letter queue {self.queue.name!r} has a redrive policy of its own")
        wanted = set(ids)
        found: list[ReceivedMessage] = []
        others: list[ReceivedMessage] = []
        read = 0
        try:
            while wanted and read < FIND_MAX:
                batch = self.queue.receive(max_messages=BATCH_MAX_ENTRIES, wait_s=1, visibility_timeout_s=HOLD_S)
                if not batch:
                    break
                read += len(batch)
                for message in batch:
                    if message.id in wanted:
                        wanted.discard(message.id)
                        found.append(message)
                    else:
                        others.append(message)
        finally:
            if others:
                self.queue.change_visibility([(message.receipt_handle, 0) for message in others])
        return found, [message_id for message_id in dict.fromkeys(ids) if message_id in wanted]

    def redrive_all(self, rate: Optional[float]) -> RedriveJob:
        """Start moving every dead letter back; refused (RuntimeError) while one such redrive runs."""
        with self._lock:
            if self.job is not None and self.job.running:
                raise RuntimeError("a redrive of every dead letter is already running")
            self.job = RedriveJob(self.queue, self.source, rate).start()
            self._listing = None  # what it listed is moving
            return self.job

    def _forget(self, ids: list[str]) -> None:
        for message_id in ids:
            self._listed.pop(message_id, None)
        if self._listing is not None and ids:
            gone = set(ids)
            self._listing = {**self._listing, "items": [i for i in self._listing["items"] if i["id"] not in gone]}


def summary(message: ReceivedMessage) -> dict[str, Any]:
    """A dead letter as the table shows it: everything but its body."""
    why = reasons(message)
    sent = None if message.sent_at_s is None else datetime.fromtimestamp(message.sent_at_s, timezone.utc)
    return {
        "id": message.id,
        "source_id": why["source_id"],
        "recorded": why["recorded"],
        "receive_count": why["attempts"],
        "worker": why["worker"],
        "failures": why["failures"],
        "first_failure_at": why["first_failure_at"],
        "last_failure_at": why["last_failure_at"],
        "dead_lettered_at": sent.isoformat(timespec="milliseconds") if sent else None,
        "attributes": sorted(without_reasons(message.attributes)),
        "body_bytes": len(message.body.encode("utf-8")),
    }


def _failed_at(item: dict[str, Any]) -> str:
    """When a dead letter last failed (ISO 8601, UTC, which sorts as text); for one SQS's
    redrive policy moved, when its copy was sent."""
    return str(item["last_failure_at"] or item["dead_lettered_at"] or "")


def body(message: ReceivedMessage) -> dict[str, Any]:
    return {"id": message.id, "body": message.body, "attributes": dict(without_reasons(message.attributes))}
