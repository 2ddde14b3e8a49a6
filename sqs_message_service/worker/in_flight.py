"""What the worker holds: the messages received and not yet finished (`InFlight`),
and the queue of work between the consumers and the processors (`WorkQueue`)."""

from __future__ import annotations

import queue
import threading
import time
from typing import Optional

from ..sqs import BATCH_MAX_ENTRIES, ReceivedMessage

#: A unit of work: one message, or on a FIFO queue one group's messages from a receive, which
#: one processor handles in order.
Unit = list[ReceivedMessage]


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
    """The messages received and not yet finished, with when each one's invisibility
    ends. At most `capacity` at once: the processors' number plus a receive's worth ahead for
    each receiver. Receivers reserve their slots here before they receive, so that several
    receiving at once never fetch more than there is room for."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.receive_size = min(BATCH_MAX_ENTRIES, capacity)  # what a reservation gathers for: a whole receive
        self._cond = threading.Condition()
        self._messages: dict[str, tuple[ReceivedMessage, float]] = {}  # receipt handle -> (it, deadline)
        # Done with, and still to be kept invisible, but no longer holding a slot: the records
        # the processed ledger is writing before their deletes (`settling`).
        self._settling: dict[str, tuple[ReceivedMessage, float]] = {}
        self._reserved = 0  # slots promised to a receive under way

    def __len__(self) -> int:
        """Messages received and not finished, those settling included."""
        with self._cond:
            return len(self._messages) + len(self._settling)

    def reserve(self, *, gather_s: float, stop: threading.Event) -> int:
        """Wait for a free slot; then, if others are busy, up to `gather_s` for more to free, so
        that one receive fills several. Reserves and returns up to `receive_size`: at least 1, or 0
        once `stop` is set (and `wake` called). (Another receiver may take the slots meanwhile:
        then it waits again.)"""
        wanted = self.receive_size
        with self._cond:
            while not stop.is_set():
                while self._free() == 0 and not stop.is_set():
                    self._cond.wait()
                until = time.monotonic() + gather_s
                while self._free() < wanted and not stop.is_set() and (left_s := until - time.monotonic()) > 0:
                    self._cond.wait(left_s)
                reserved = min(wanted, self._free())
                if reserved > 0 and not stop.is_set():
                    self._reserved += reserved
                    return reserved
            return 0

    def receive(self, reserved: int, messages: list[ReceivedMessage], *, deadline: float) -> None:
        """What a receive for `reserved` slots brought: in flight until `deadline` (monotonic)
        unless extended; the slots it did not fill are free again."""
        with self._cond:
            self._reserved -= reserved
            for message in messages:
                self._messages[message.receipt_handle] = (message, deadline)
            self._cond.notify_all()

    def finish(self, messages: list[ReceivedMessage]) -> None:
        """These are no longer in flight here (done, or given back)."""
        with self._cond:
            was_full = self._free() <= 0
            for message in messages:
                self._messages.pop(message.receipt_handle, None)
                self._settling.pop(message.receipt_handle, None)
            self._notify_room(was_full)

    def settling(self, messages: list[ReceivedMessage]) -> None:
        """These are done with, but stay invisible until `finish`ed (the heartbeat extends them);
        their slots are free for the next receive meanwhile. A record that takes a DynamoDB
        round trip then holds back no processor."""
        with self._cond:
            was_full = self._free() <= 0
            for message in messages:
                entry = self._messages.pop(message.receipt_handle, None)
                if entry is not None:
                    self._settling[message.receipt_handle] = entry
            self._notify_room(was_full)

    def _notify_room(self, was_full: bool) -> None:
        """Under the lock: wake the waiters only when one of them can act: a first free slot, a
        receive's worth free, or nothing left. Waking every receiver at every message costs more
        thread switches than the processing itself, at a few thousand a second."""
        if was_full or self._free() >= self.receive_size or not (self._messages or self._settling):
            self._cond.notify_all()

    def due(self, before: float) -> list[ReceivedMessage]:
        """The messages whose invisibility ends before `before`, settling ones included."""
        with self._cond:
            return [
                message
                for held in (self._messages, self._settling)
                for message, deadline in held.values()
                if deadline < before
            ]

    def extended(self, messages: list[ReceivedMessage], deadline: float) -> None:
        """Their invisibility now ends at `deadline`; those finished meanwhile stay finished."""
        with self._cond:
            for message in messages:
                for held in (self._messages, self._settling):
                    if message.receipt_handle in held:
                        held[message.receipt_handle] = (message, deadline)

    def wake(self) -> None:
        """Let every waiting `reserve` look at its stop event again."""
        with self._cond:
            self._cond.notify_all()

    def wait_empty(self, timeout_s: float) -> bool:
        """Wait until nothing is in flight, at most `timeout_s`; whether that happened."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._messages or self._settling), timeout=max(0.0, timeout_s))

    def _free(self) -> int:
        return self.capacity - len(self._messages) - self._reserved


class WorkQueue:
    """Units of work from the consumers to the processors, in order. Once `close`d it takes no
    more: a consumer then gives back what it holds. `wake` ends one waiting `get` with None;
    sent after `close`, each None comes behind every unit queued, so the processors get and hand
    back all of those first."""

    def __init__(self) -> None:
        self._units: queue.SimpleQueue[Optional[Unit]] = queue.SimpleQueue()
        self._lock = threading.Lock()  # a put and the close are one after the other
        self._closed = False

    def put(self, unit: Unit) -> bool:
        """Queue `unit` for a processor; False once closed (the caller keeps it)."""
        with self._lock:
            if self._closed:
                return False
            self._units.put(unit)
            return True

    def get(self) -> Optional[Unit]:
        """The next unit, waiting for one; None when a processor is to stop."""
        return self._units.get()

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def wake(self) -> None:
        """End one `get` with None, after every unit already queued."""
        self._units.put(None)
