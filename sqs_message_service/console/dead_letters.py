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

import collections
import contextlib
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Optional

from ..dlq import HOLD_S, back_to_source, reasons, redrive, sample, without_reasons
from ..sqs import BATCH_MAX_ENTRIES, ReceivedMessage, SqsError, SqsQueue

log = logging.getLogger(__name__)

#: How long one listing answers every page before a new one reads SQS again.
LISTING_FRESH_S = 10.0
#: The most dead letters one listing reads.
LISTING_MAX = 1000
#: The most dead letters an action on selected ones reads to find them.
FIND_MAX = 2 * LISTING_MAX
#: A "read again" reads SQS at most this often, whoever asks (each reading costs receives).
LISTING_MIN_S = 2.0
#: The bodies of listed dead letters the console keeps for "show", in bytes at most.
LISTED_BYTES = 64 * 1_048_576


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
            self.moved = redrive(
                dead_letter_queue, source, rate=self.rate, progress=self._progress, say=self.notes.append
            )
            self.state = "done"
        except SqsError as exc:
            self.state, self.error = "failed", str(exc)
        except Exception as exc:  # a bug of ours: shown, and the console goes on
            log.exception("console: the redrive failed")
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.ended_at = time.time()
            log.info(
                "console: redrive of all dead letters %s: %d moved%s",
                self.state,
                self.moved,
                f" ({self.error})" if self.error else "",
            )

    @property
    def running(self) -> bool:
        return self.state == "running"

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": "all",
            "state": self.state,
            "moved": self.moved,
            "total": self.total,
            "rate": self.rate,
            "error": self.error,
            "notes": self.notes,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


class Bodies:
    """The listed dead letters' bodies and own attributes, for "show" on any open page: kept
    across listings, newest first out of LISTED_BYTES (a page's "show" may follow another
    page's listing), and forgotten once the message is redriven or deleted."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._messages: collections.OrderedDict[str, ReceivedMessage] = collections.OrderedDict()
        self._bytes = 0

    def keep(self, messages: list[ReceivedMessage]) -> None:
        for message in messages:
            self.forget([message.id])
            self._messages[message.id] = message
            self._bytes += _size(message)
        while self._bytes > self.budget_bytes and self._messages:
            _, oldest = self._messages.popitem(last=False)
            self._bytes -= _size(oldest)

    def get(self, message_id: str) -> Optional[ReceivedMessage]:
        return self._messages.get(message_id)

    def forget(self, ids: list[str]) -> None:
        for message_id in ids:
            gone = self._messages.pop(message_id, None)
            if gone is not None:
                self._bytes -= _size(gone)


def _size(message: ReceivedMessage) -> int:
    return len(message.body) + sum(len(name) + len(value) for name, value in message.attributes.items())


class DeadLetters:
    """The dead-letter queue as the console reads it and acts on it. One listing or action at a
    time; none while a redrive of every dead letter runs (a listing would hide, for a moment,
    messages that redrive is looking for, and it would end early)."""

    def __init__(
        self,
        dead_letter_queue: SqsQueue,
        source: SqsQueue,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = dead_letter_queue
        self.source = source
        self.clock = clock
        self._lock = threading.Lock()
        self._bodies = Bodies(LISTED_BYTES)
        self._listing: Optional[dict[str, Any]] = None
        self._listed_at = -1e18
        self._own_redrive_policy: Optional[str] = None
        self.job: Optional[RedriveJob] = None

    def own_redrive_policy(self) -> str:
        """The dead-letter queue's own RedrivePolicy ("" without one): read once."""
        if self._own_redrive_policy is None:
            self._own_redrive_policy = self.queue.attributes(["RedrivePolicy"]).get("RedrivePolicy", "")
        return self._own_redrive_policy

    def _may_read(self) -> None:
        if self.job is not None and self.job.running:
            raise RuntimeError("a redrive of every dead letter is running: the dead letters are read again after it")
        if self.own_redrive_policy():
            raise PermissionError(
                f"the dead-letter queue {self.queue.name!r} has a redrive policy of its own: every receive "
                "would bring its messages nearer to being moved on, so the console does not read it "
                "(queue-dlq list does, if you must)"
            )

    def listing(self, *, limit: int, fresh: bool = False) -> dict[str, Any]:
        """Up to `limit` dead letters, newest failure first, and how they were read: the last
        listing when it is recent enough and as large, else a new one; `fresh` asks for a new
        one, at most every LISTING_MIN_S. After the first receive it short-polls, so that a
        queue with fewer than `limit` answers at once; on real SQS a listing of a small queue
        may therefore show fewer than it holds (read again)."""
        with self._lock:
            age = self.clock() - self._listed_at
            if (
                self._listing is not None
                and self._listing["limit"] >= limit
                and (age < LISTING_MIN_S or (age < LISTING_FRESH_S and not fresh))
            ):
                return {**self._listing, "items": self._listing["items"][:limit]}
            self._may_read()
            started = time.monotonic()
            held = sample(self.queue, max_messages=min(limit, LISTING_MAX), next_wait_s=0)
            self._bodies.keep(held)
            items = sorted((summary(message) for message in held), key=_failed_at, reverse=True)
            self._listing = {
                "limit": limit,
                "read": len(held),
                "read_at": time.time(),
                "items": items,
                "read_ms": round((time.monotonic() - started) * 1000, 1),
            }
            self._listed_at = self.clock()
            return self._listing

    def message(self, message_id: str) -> Optional[ReceivedMessage]:
        """A listed dead letter, by its own id, while its body is kept."""
        with self._lock:
            return self._bodies.get(message_id)

    def delete(self, ids: list[str]) -> dict[str, Any]:
        """Delete the selected dead letters (by their own ids), found afresh (`_find`)."""
        with self._lock:
            self._may_read()
            found, missing = self._find(ids)
            with self._giving_back(found) as unsettled:
                outcomes = self.queue.delete_messages([message.receipt_handle for message in found]) if found else []
                unsettled.clear()  # deleted, or refused: either way nothing of ours holds them
            done = [message.id for message, error in zip(found, outcomes, strict=True) if error is None]
            failed = {message.id: str(error) for message, error in zip(found, outcomes, strict=True) if error}
            self._forget(done)
        log.info("console: deleted %d dead letters (%d not found, %d refused)", len(done), len(missing), len(failed))
        return {"done": done, "missing": missing, "failed": failed}

    def redrive_selected(self, ids: list[str]) -> dict[str, Any]:
        """Move the selected dead letters back to the source queue as `dlq.py`'s redrive moves
        one: found afresh and held (`_find`), sent to the source, then deleted. A send the
        source refuses leaves it a dead letter, visible again; a delete refused after the send
        leaves it in both queues, never in neither. `done` holds only those moved and deleted."""
        with self._lock:
            self._may_read()
            found, missing = self._find(ids)
            failed: dict[str, str] = {}
            with self._giving_back(found) as unsettled:
                back = [back_to_source(message, fifo=self.source.is_fifo) for message in found]
                results = self.source.send(back) if back else []
                sent = [message for message, result in zip(found, results, strict=True) if result.ok]
                for message, result in zip(found, results, strict=True):
                    if not result.ok:
                        failed[message.id] = f"the source queue refused it: {result.error}"
                unsettled[:] = [message for message in found if message.id in failed]  # visible again, below
                deletes = self.queue.delete_messages([message.receipt_handle for message in sent]) if sent else []
            done = []
            for message, error in zip(sent, deletes, strict=True):
                if error is None:
                    done.append(message.id)
                else:
                    failed[message.id] = f"sent back, but still in the dead-letter queue ({error})"
            self._forget(done)
        log.info(
            "console: redrove %d selected dead letters (%d not found, %d failed)", len(done), len(missing), len(failed)
        )
        return {"done": done, "missing": missing, "failed": failed}

    @contextlib.contextmanager
    def _giving_back(self, held: list[ReceivedMessage]) -> Iterator[list[ReceivedMessage]]:
        """Whatever of `held` the block leaves in the list it is given (all of it, if the block
        raises) is made visible again at once, not after HOLD_S."""
        unsettled = list(held)
        try:
            yield unsettled
        except BaseException:
            unsettled[:] = held
            raise
        finally:
            if unsettled:
                self.queue.change_visibility([(message.receipt_handle, 0) for message in unsettled])

    def _find(self, ids: list[str]) -> tuple[list[ReceivedMessage], list[str]]:
        """The selected dead letters, received again and held (HOLD_S), each with the newest
        receipt handle SQS gave for it: SQS acts only on a message's latest handle, and an
        older one may be refused or, worse, answered as done while nothing happened (fauxqs
        does that on a delete). Every other message read on the way is given back at once.
        Reads up to FIND_MAX messages; the ids not found by then are `missing` (gone, or not
        reached: on a very deep queue, or behind others of its group on a FIFO queue)."""
        wanted = set(ids)
        received: dict[str, ReceivedMessage] = {}  # by id, its newest receive
        read = 0
        try:
            while not wanted <= received.keys() and read < FIND_MAX:
                batch = self.queue.receive(max_messages=BATCH_MAX_ENTRIES, wait_s=1, visibility_timeout_s=HOLD_S)
                if not batch:
                    break
                read += len(batch)
                received.update((message.id, message) for message in batch)
        finally:
            others = [message for message_id, message in received.items() if message_id not in wanted]
            if others:
                self.queue.change_visibility([(message.receipt_handle, 0) for message in others])
        found = [received[message_id] for message_id in dict.fromkeys(ids) if message_id in received]
        return found, [message_id for message_id in dict.fromkeys(ids) if message_id not in received]

    def redrive_all(self, rate: Optional[float]) -> RedriveJob:
        """Start moving every dead letter back; refused (RuntimeError) while one such redrive runs."""
        with self._lock:
            if self.job is not None and self.job.running:
                raise RuntimeError("a redrive of every dead letter is already running")
            self.job = RedriveJob(self.queue, self.source, rate).start()
            self._listing = None  # what it listed is moving
            return self.job

    def _forget(self, ids: list[str]) -> None:
        self._bodies.forget(ids)
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
