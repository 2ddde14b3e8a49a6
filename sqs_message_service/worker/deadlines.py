"""The deadline of each attempt a processor thread makes (PROCESSING_TIMEOUT), and what follows
when one outlives it: a thread cannot be killed, so its message is settled as timed out without
it, and the thread is counted as stuck and replaced, up to MAX_STUCK_THREADS. At that bound the
worker's /health turns unhealthy, so that an orchestrator restarts the process.

An async step's deadline is its own (coroutines.py): a coroutine can be cancelled.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from typing import Callable

from ..metrics import WorkerMetrics
from ..sqs import ReceivedMessage
from ..verdicts import TimedOut
from .part import Part

log = logging.getLogger(__name__)

#: The longest the watch sleeps between two looks: a timeout is noticed within this (or a
#: tenth of PROCESSING_TIMEOUT, whichever is shorter), at a cost of one look at a small dict.
MAX_LOOK_INTERVAL_S = 1.0
MIN_LOOK_INTERVAL_S = 0.02


class Late(enum.Enum):
    """What a thread whose step returned is told to do next."""

    NO = "carry on: the outcome is the thread's to settle"
    CARRY_ON = "timed out meanwhile, and not replaced: drop the outcome, take the next unit"
    END = "timed out meanwhile, and replaced: drop the outcome, end the thread"


class _Attempt:
    __slots__ = ("deadline", "message", "rest", "started")

    def __init__(self, message: ReceivedMessage, rest: list[ReceivedMessage], started: float, deadline: float):
        self.message, self.rest, self.started, self.deadline = message, rest, started, deadline


#: What the watch does with a timed-out attempt: settle it as failed (message, error, seconds)
#: and give back the messages of its unit behind it.
Settle = Callable[[ReceivedMessage, Exception, float], None]
GiveBack = Callable[[list[ReceivedMessage]], None]


class DeadlineWatch(Part):
    """Watches the attempts of the processor threads. `begin` and `end` bracket each attempt;
    past `timeout_s` the watch settles it as `TimedOut` through `settle`, gives back the rest of
    its unit (a FIFO group's: none may overtake it), and calls `replace` for the thread, until
    `max_stuck` threads are stuck at once."""

    def __init__(
        self,
        *,
        timeout_s: float,
        max_stuck: int,
        metrics: WorkerMetrics,
        settle: Settle,
        give_back: GiveBack,
        replace: Callable[[threading.Thread], None],
    ) -> None:
        super().__init__(name="deadline-watch")
        self.timeout_s, self.max_stuck, self.metrics = timeout_s, max_stuck, metrics
        self._settle, self._give_back, self._replace = settle, give_back, replace
        self._lock = threading.Lock()
        self._attempts: dict[threading.Thread, _Attempt] = {}
        self._stuck: dict[threading.Thread, bool] = {}  # thread -> whether it was replaced
        self._look_s = min(MAX_LOOK_INTERVAL_S, max(MIN_LOOK_INTERVAL_S, timeout_s / 10))
        metrics.stuck_threads.set_function(self.stuck)

    def begin(self, thread: threading.Thread, message: ReceivedMessage, rest: list[ReceivedMessage]) -> float:
        """`thread` starts an attempt at `message`, with `rest` of its unit behind; its start."""
        started = time.monotonic()
        with self._lock:
            self._attempts[thread] = _Attempt(message, rest, started, started + self.timeout_s)
        return started

    def end(self, thread: threading.Thread) -> Late:
        """`thread`'s step returned: whether its outcome is still its own to settle."""
        with self._lock:
            if self._attempts.pop(thread, None) is not None:
                return Late.NO
            replaced = self._stuck.pop(thread)
        log.warning(
            "%s: the step returned after its deadline; its outcome is dropped (the message was already "
            "settled as timed out), and the thread %s",
            thread.name,
            "ends: another took its place" if replaced else "takes the next message",
        )
        return Late.END if replaced else Late.CARRY_ON

    def stuck(self) -> int:
        """Threads whose step has outlived its deadline and not returned yet."""
        with self._lock:
            return len(self._stuck)

    def is_stuck(self, thread: threading.Thread) -> bool:
        with self._lock:
            return thread in self._stuck

    @property
    def healthy(self) -> bool:
        """False once MAX_STUCK_THREADS threads are stuck: the process should be restarted."""
        return self.stuck() < max(1, self.max_stuck)

    def run(self) -> None:
        while not self.pause(self._look_s):
            self.look(time.monotonic())

    def look(self, now: float) -> None:
        """Settle every attempt past its deadline at `now` (the thread's loop, and tests)."""
        late = []
        with self._lock:
            for thread, attempt in list(self._attempts.items()):
                if attempt.deadline <= now:
                    del self._attempts[thread]
                    self._stuck[thread] = replaced = len(self._stuck) < self.max_stuck
                    late.append((thread, attempt, replaced))
            stuck = len(self._stuck)
        for thread, attempt, replaced in late:
            self.metrics.add("timed_out")
            log.warning(
                "message %r: the step on %s has run %.1f s, past PROCESSING_TIMEOUT=%g: the attempt fails as "
                "timed out; the thread cannot be stopped and is %s (%d stuck)",
                attempt.message.id,
                thread.name,
                now - attempt.started,
                self.timeout_s,
                "replaced"
                if replaced
                else f"not replaced: MAX_STUCK_THREADS={self.max_stuck} reached, /health answers 503",
                stuck,
            )
            self._settle(attempt.message, TimedOut(self.timeout_s), now - attempt.started)
            if attempt.rest:
                self._give_back(attempt.rest)
            if replaced:
                self._replace(thread)
