"""Group commit: items submitted one at a time from many threads leave in batch calls.

The writer coalesces concurrent requests into SendMessageBatch calls with it; each caller gets a
future for its own item's result. The rule that decides when a call starts is what keeps it fast
when idle and cheap when busy:

- with no call in flight, whatever is pending leaves at once (a lone item waits for nothing);
- while calls are in flight, another starts only once a full batch is waiting, up to
  `max_concurrent` calls; smaller batches form from what arrives meanwhile.

With `linger_s`, an idle batcher waits up to that long for more items before a call that is not
full: fewer calls are worth a little delay. For work nobody waits on (the worker's deletes) every
batch lingers. With `eager_when_quiet` (the writer, whose callers wait for their answer) only a
stream does: an item that arrives after a quiet spell of `linger_s` leaves at once, so a lone
request pays nothing, while a steady stream fills its calls instead of sending one per item.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from typing import Callable, Deque, Generic, Optional, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(Exception):
    """More items are waiting than the batcher accepts (for longer than the caller would wait):
    the caller should answer "retry later"."""


class Closed(Exception):
    """The batcher was closed and takes no more items."""


class GroupCommit(Generic[T, R]):
    """Coalesce items into calls of `flush(items) -> results` (one result per item, in order).

    An exception from `flush` fails every item of that call, and only those. Threads start on the
    first `submit`; `close()` lets pending items leave, then stops them.
    """

    def __init__(
        self,
        flush: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int,
        max_concurrent: int = 1,
        max_pending: int = 1000,
        linger_s: float = 0.0,
        eager_when_quiet: bool = False,
        on_batch: Optional[Callable[[list[float]], None]] = None,
        name: str = "group-commit",
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._max_concurrent = max_concurrent
        self._max_pending = max_pending
        self._linger_s = linger_s
        self._eager_when_quiet = eager_when_quiet
        self._on_batch = on_batch  # each call's items' waits (seconds), for metrics
        self._name = name
        self._pending: Deque[tuple[T, Future[R], float]] = collections.deque()  # with arrival
        self._oldest_since = 0.0  # when the oldest pending item arrived (monotonic)
        self._last_arrival = float("-inf")
        self._quiet_before = False  # the oldest pending item came after a quiet spell
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the senders wait on it for items
        self._room = threading.Condition(lock)  # held submitters wait on it for room
        self._in_flight = 0
        self._closed = False
        self._threads: list[threading.Thread] = []

    def submit(self, item: T, *, wait_s: float = 0.0) -> Future[R]:
        """Queue one item; the future resolves once the call that carried it has returned. With
        `max_pending` items waiting, wait up to `wait_s` for room (backpressure on a caller
        that can slow down), then raise Overloaded."""
        future: Future[R] = Future()
        with self._cond:
            if len(self._pending) >= self._max_pending and not self._closed and wait_s > 0:
                self._room.wait_for(lambda: len(self._pending) < self._max_pending or self._closed, wait_s)
            if self._closed:
                raise Closed(f"{self._name} is closed")
            if len(self._pending) >= self._max_pending:
                raise Overloaded(f"{len(self._pending)} items already waiting in {self._name}")
            if not self._threads:
                self._start_threads()
            now = time.monotonic()
            first = not self._pending
            if first:
                self._oldest_since = now
                self._quiet_before = now - self._last_arrival >= self._linger_s
            self._last_arrival = now
            self._pending.append((item, future, now))
            # Wake a thread only when one may act on it: the first item (to send it, or start its
            # linger), or a full batch (a call may start beside those in flight). Any other item
            # joins what is waiting, and the thread whose call ends next takes it. Waking one
            # per item costs a thread switch each for nothing.
            if first or len(self._pending) % self._max_batch == 0:
                self._cond.notify()
        return future

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def close(self, timeout_s: float | None = None) -> None:
        """Take no more items; let the pending ones leave; wait for the threads to end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._room.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)

    def _start_threads(self) -> None:
        for number in range(self._max_concurrent):
            thread = threading.Thread(target=self._run, name=f"{self._name}-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _wait_s(self) -> float | None:
        """0 when a call should start now; otherwise how long to wait (None: until notified)."""
        waiting = len(self._pending)
        if not waiting:
            return None
        if waiting >= self._max_batch or self._closed:
            return 0.0
        if self._in_flight:
            return None
        if self._eager_when_quiet and self._quiet_before:
            return 0.0
        return max(0.0, self._oldest_since + self._linger_s - time.monotonic())

    def _take_batch(self) -> list[tuple[T, Future[R], float]] | None:
        with self._cond:
            while (wait_s := self._wait_s()) != 0.0:
                if self._closed and not self._pending:
                    return None
                self._cond.wait(wait_s)
            count = min(self._max_batch, len(self._pending))
            batch = [self._pending.popleft() for _ in range(count)]
            self._oldest_since = time.monotonic()  # of those left: they came in a stream
            self._quiet_before = False
            self._in_flight += 1
            self._room.notify_all()  # room for those waiting to submit, if any
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            # A caller that gave up (cancelled its future) is not sent.
            live = [entry for entry in batch if entry[1].set_running_or_notify_cancel()]
            try:
                if live:
                    if self._on_batch is not None:
                        now = time.monotonic()
                        try:
                            self._on_batch([now - arrived for _, _, arrived in live])
                        except Exception:  # its own failure, never the end of this sender
                            log.error("%s: on_batch failed", self._name, exc_info=True)
                    self._call([item for item, _, _ in live], [fut for _, fut, _ in live])
            finally:
                # No one to wake: this thread looks at what is pending next itself. (Waking every
                # sender after every call cost each of them a thread switch for nothing.)
                with self._cond:
                    self._in_flight -= 1

    def _call(self, items: list[T], futures: list[Future[R]]) -> None:
        try:
            results = self._flush(items)
            if len(results) != len(items):
                raise RuntimeError(f"flush returned {len(results)} results for {len(items)} items")
        except Exception as exc:
            log.error("%s: a batch of %d failed", self._name, len(items), exc_info=True)
            for future in futures:
                future.set_exception(exc)
            return
        for future, result in zip(futures, results, strict=True):
            future.set_result(result)
