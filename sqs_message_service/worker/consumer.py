"""The consumers: the only threads that receive. Each receives a receive's worth whenever the
`InFlight` has room and hands it to the processors as units of work."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from ..logs import ThrottledLog
from ..metrics import WorkerMetrics
from ..sqs import BATCH_MAX_ENTRIES, ReceivedMessage, SqsError, SqsQueue
from .admission import Admission
from .backoff import backoff_s
from .in_flight import InFlight, WorkQueue, work_units
from .part import Part
from .settler import Settler

log = logging.getLogger(__name__)

#: Pauses between receive attempts while SQS keeps failing: from this, doubling, to the cap.
OUTAGE_BACKOFF_BASE_S = 0.5
MAX_OUTAGE_BACKOFF_S = 30.0
#: While some slots are busy, how long the consumer waits for more to free up, so that one
#: receive fills several slots instead of one receive per finished message.
RECEIVE_GATHER_S = 0.05
#: Messages received ahead of free processors: a receive's worth for each receiver. They are in
#: flight, kept invisible by the heartbeat, and returned at once on shutdown if no processor
#: started them.
PREFETCH = BATCH_MAX_ENTRIES
#: The most receives in flight at once, however many processors: past a few, a worker's
#: threads contend for the GIL more than they gain, and a second worker process scales better.
MAX_RECEIVERS = 4
#: In burst mode, the pause between looks at a queue that still holds messages for later.
BURST_POLL_S = 0.05


def receivers_for(concurrency: int) -> int:
    """How many receives a worker keeps in flight: one per two receives' worth of processors
    (one up to 29), at most MAX_RECEIVERS. One receive takes a round trip to SQS; while it is
    away the processors it feeds must have work in hand."""
    return max(1, min(MAX_RECEIVERS, concurrency // (2 * BATCH_MAX_ENTRIES)))


class Backlog:
    """Whether receives come back full, so that helpers receive too; a helper waits for it in a
    wait that its stop cuts short."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._full = False

    def set(self) -> None:
        with self._cond:
            if not self._full:
                self._full = True
                self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._full = False

    def wait(self, stop: threading.Event) -> bool:
        """Wait until receives come back full (True) or `stop` is set (False)."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or stop.is_set())
            return not stop.is_set()

    def wake(self) -> None:
        """Let every waiting helper look at its stop event again."""
        with self._cond:
            self._cond.notify_all()


class Consumer(Part):
    """Receives a receive's worth whenever `InFlight` has room, and hands it to the processors
    as units of work. Backs off while SQS fails; with `idle_s`, stops the worker once the queue
    has been empty that long (0: as soon as it is drained).

    The first consumer always polls. A helper (`helper=True`) receives only while `backlog`
    is set: any consumer sets it when a receive comes back with all it asked for (more is
    likely waiting), a helper clears it when one comes back short, and then waits again.

    Asked to stop, it receives no more; a receive under way is not waited for (`Worker.stop`
    abandons it): whatever it brings back after the stop is made visible again at once, and
    if the process ends first, SQS makes it visible after its visibility timeout."""

    def __init__(
        self,
        *,
        queue: SqsQueue,
        in_flight: InFlight,
        work: WorkQueue,
        settler: Settler,
        metrics: WorkerMetrics,
        visibility_timeout_s: int,
        wait_s: int,
        stop_worker: Callable[[], None],
        backlog: Backlog,
        idle_s: Optional[float] = None,
        helper: int = 0,
        admission: Optional[Admission] = None,
    ) -> None:
        super().__init__(name=f"consumer-helper-{helper}" if helper else "consumer")
        self.queue, self.in_flight, self.work, self.settler, self.metrics = queue, in_flight, work, settler, metrics
        self.admission = admission  # with the processed ledger: claims before the processors start
        self.visibility_timeout_s = visibility_timeout_s
        self.stop_worker, self.backlog = stop_worker, backlog
        self.helper = bool(helper)
        self.idle_s = None if helper else idle_s  # the first consumer alone decides the queue is idle
        # An idle timer notices idleness within about its length, and long-polls at least 1 s:
        # below that, an empty queue would cost a receive every BURST_POLL_S.
        self.wait_s = wait_s if idle_s is None else min(wait_s, max(1, int(idle_s)))
        self._idle_since: Optional[float] = None

    def run(self) -> None:
        outage, failures = ThrottledLog(log), 0
        while not self.stopping:
            if self.helper and not self.backlog.wait(self._stop_asked):
                break  # stopping
            if self.admission is not None and self.admission.down:  # receive nothing it cannot claim
                self.pause(backoff_s(self.admission.failures, base_s=OUTAGE_BACKOFF_BASE_S, max_s=MAX_OUTAGE_BACKOFF_S))
                if self.stopping or not self.admission.answers():
                    continue
            reserved = self.in_flight.reserve(gather_s=RECEIVE_GATHER_S, stop=self._stop_asked)
            if not reserved:
                break  # stopping
            try:
                messages = self.queue.receive(max_messages=reserved, wait_s=self.wait_s)
            except Exception as exc:  # SQS's errors, and a bug of ours: log, pause, carry on
                self.in_flight.receive(reserved, [], deadline=0.0)
                if isinstance(exc, SqsError):
                    outage.warning(exc, "receiving")
                else:
                    log.error("unexpected error while receiving", exc_info=True)
                if self.helper:  # the first consumer backs off and finds the backlog again
                    self.backlog.clear()
                    continue
                failures += 1
                self.pause(backoff_s(failures, base_s=OUTAGE_BACKOFF_BASE_S, max_s=MAX_OUTAGE_BACKOFF_S))
                continue
            outage.recovered()
            failures = 0
            if self.stopping:  # arrived after the stop: back to the queue at once
                self._give_back(reserved, messages)
                break
            deadline = time.monotonic() + self.visibility_timeout_s
            self.in_flight.receive(reserved, messages, deadline=deadline)
            if len(messages) == reserved:
                self.backlog.set()
            elif self.helper:
                self.backlog.clear()
            if messages:
                self._idle_since = None
                self.metrics.add("received", len(messages))
                if self.admission is not None:  # its threads hand on what they claim
                    self.admission.admit(messages, deadline)
                    continue
                refused = [
                    message
                    for unit in work_units(messages, fifo=self.queue.is_fifo)
                    if not self.work.put(unit)  # the processors are stopping: none will start it
                    for message in unit
                ]
                if refused:
                    self.settler.give_back(refused, claimed=False)
            elif self.idle_s is not None and self._idle_for_long_enough():
                log.info("queue empty for %g s: stopping", self.idle_s)
                self.stop_worker()
            elif self.wait_s == 0:
                self.pause(BURST_POLL_S)

    def _wake(self) -> None:
        self.in_flight.wake()
        self.backlog.wake()

    def _give_back(self, reserved: int, messages: list[ReceivedMessage]) -> None:
        """A receive that came back after the stop: its messages visible again at once."""
        self.in_flight.receive(reserved, [], deadline=0.0)
        if messages:
            log.info("a receive under way at the stop brought %d messages: made visible again", len(messages))
            self.settler.give_back(messages, claimed=False)

    def _idle_for_long_enough(self) -> bool:
        """Idle means nothing in flight here and nothing left in the queue for anyone, messages
        waiting out a backoff included."""
        try:
            empty = not len(self.in_flight) and self._queue_reads_empty()
        except SqsError:
            empty = False
        if not empty:
            self._idle_since = None
            return False
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        return now - self._idle_since >= (self.idle_s or 0.0)

    def _queue_reads_empty(self) -> bool:
        """Two readings of the queue's depth, both zero. One is not enough: a message whose
        visibility runs out while SQS counts can be missed by every figure of that reading (moto
        counts "visible" and "not visible" at different instants), and a burst worker that
        stopped on it would leave that message behind. The second reading counts it."""
        return not sum(self.queue.depth().values()) and not sum(self.queue.depth().values())
