"""The heartbeat: keeps long work invisible, so that SQS does not deliver it again meanwhile."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Optional

from ..sqs import ReceivedMessage, SqsQueue
from .in_flight import InFlight
from .part import Part
from .processed import ProcessedLedger, wall_clock

log = logging.getLogger(__name__)


class Heartbeat(Part):
    """Every third of the visibility timeout, extends every message in flight whose
    invisibility would end before the beat after next, in batch calls; and with the processed
    ledger, their claims' leases with them, so that a lease ends when the invisibility does."""

    def __init__(
        self,
        *,
        queue: SqsQueue,
        in_flight: InFlight,
        visibility_timeout_s: int,
        processed: Optional[ProcessedLedger] = None,
    ) -> None:
        super().__init__(name="heartbeat")
        self.queue, self.in_flight, self.visibility_timeout_s = queue, in_flight, visibility_timeout_s
        self.processed = processed
        # The leases are extended on a thread of their own: a DynamoDB that stalls (attempts
        # of seconds each) must never hold back the next beat's visibility extensions.
        self._leases = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease-extension")
        self._extending: Optional[concurrent.futures.Future[None]] = None

    def run(self) -> None:
        interval_s = max(0.2, self.visibility_timeout_s / 3)
        while not self.pause(interval_s):
            now = time.monotonic()
            due = self.in_flight.due(before=now + 2 * interval_s)
            if not due:
                continue
            outcomes = self.queue.change_visibility([(m.receipt_handle, self.visibility_timeout_s) for m in due])
            extended = []
            for message, outcome in zip(due, outcomes, strict=True):
                if outcome is None:
                    extended.append(message)
                else:
                    log.warning("heartbeat for %r failed (%s)", message.id, outcome)
            self.in_flight.extended(extended, deadline=now + self.visibility_timeout_s)
            if self.processed is not None:  # all of them: a lease outlives a visibility SQS would not extend
                self._extend_leases(due, lease_until=wall_clock(now + self.visibility_timeout_s))
        self._leases.shutdown(wait=False)

    def _extend_leases(self, messages: list[ReceivedMessage], *, lease_until: float) -> None:
        """Hand the leases' extension to its thread, unless the last one is still under way (a
        stalled table): then this beat's is skipped, and the next beat's covers it."""
        if self._extending is not None and not self._extending.done():
            log.warning("the last extension of %d leases is still under way: this beat's is skipped", len(messages))
            return
        assert self.processed is not None
        self._extending = self._leases.submit(self.processed.extend, messages, lease_until=lease_until)
