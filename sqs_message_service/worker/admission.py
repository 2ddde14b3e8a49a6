"""Admission: with the processed ledger (PROCESSED_TABLE), what the consumers receive is claimed
before the processors see it, off the consumers' threads.

A claim is a DynamoDB round trip. Made on the thread that receives, it would sit between one
receive and the next, and a worker could then receive no faster than one claim after another.
Here the consumers hand each receive over and go back to receiving; the claims of the receives
that arrive meanwhile leave together, in one TransactWriteItems of up to 100 messages.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Optional

from ..batcher import Closed, GroupCommit, Overloaded
from ..leases import TableUnavailable
from ..logs import ThrottledLog
from ..sqs import BATCH_MAX_ENTRIES, ReceivedMessage
from .in_flight import InFlight, WorkQueue, work_units
from .processed import TRANSACT_MAX_ITEMS, Claim, ProcessedLedger, Verdict, wall_clock
from .settler import Settler

log = logging.getLogger(__name__)

#: A receive, with when its messages' invisibility ends (monotonic).
Received = tuple[list[ReceivedMessage], float]


class Admission:
    """Claims each receive's messages in the processed ledger and hands on what was claimed:
    a duplicate is deleted; a message held under another live lease comes back when that lease
    ends; if the table does not answer none is processed, and they come back after their
    visibility timeout while the consumers wait for the table (`down`, `answers`). On a FIFO
    queue a group stops at its first message not claimed: the ones behind it must not overtake
    it."""

    def __init__(
        self,
        *,
        processed: ProcessedLedger,
        fifo: bool,
        in_flight: InFlight,
        work: WorkQueue,
        settler: Settler,
        calls_at_once: int,
    ) -> None:
        self.processed, self.fifo, self.in_flight, self.work, self.settler = processed, fifo, in_flight, work, settler
        self.failures = 0  # claims and checks in a row that failed; 0: claims go through
        self._trial = False  # the table answered its check: one receive may try a claim again
        self._lock = threading.Lock()
        self._down = ThrottledLog(log)
        self._claims: GroupCommit[Received, list[Claim]] = GroupCommit(
            self._claim,
            max_batch=TRANSACT_MAX_ITEMS // BATCH_MAX_ENTRIES,
            max_concurrent=calls_at_once,
            max_pending=in_flight.capacity,
            name="claim",
        )

    @property
    def down(self) -> bool:
        """The last claim did not go through: receive nothing until `answers` opens a trial."""
        with self._lock:
            return self.failures > 0 and not self._trial

    def admit(self, messages: list[ReceivedMessage], deadline: float) -> None:
        """Claim a receive's messages, in flight until `deadline`; returns at once."""
        with self._lock:
            self._trial = False  # that receive was the trial: its claim says whether the outage is over
        try:
            future = self._claims.submit((messages, deadline))
        except (Overloaded, Closed):  # stopping: none will be processed here
            self.settler.give_back(messages, claimed=False)
            return
        future.add_done_callback(lambda claimed: self._dispatch(messages, claimed))

    def answers(self) -> bool:
        """While claims fail: ask the table once (DescribeTable, which costs no receive). True
        when it answers: then one receive may try a claim. The outage is over only when a claim
        goes through, so a table that answers its description but refuses writes (throttled,
        a key disabled, a right missing) costs a receive's worth of receive counts per trial,
        with the pauses between trials growing, never a receive at every pause."""
        try:
            self.processed.check()
        except TableUnavailable as exc:
            with self._lock:
                self.failures += 1
            self._down.warning(exc, "checking the processed ledger")
            return False
        with self._lock:
            self._trial = True
        return True

    def close(self, timeout_s: float) -> None:
        self._claims.close(timeout_s=timeout_s)

    def _claim(self, receives: list[Received]) -> list[list[Claim]]:
        """One claim call for several receives, their leases ending with the earliest of their
        invisibilities; the claims of each receive."""
        messages = [message for received, _ in receives for message in received]
        claims = self.processed.claim(messages, lease_until=wall_clock(min(deadline for _, deadline in receives)))
        split, start = [], 0
        for received, _ in receives:
            split.append(claims[start : start + len(received)])
            start += len(received)
        return split

    def _dispatch(self, messages: list[ReceivedMessage], claimed: Future[list[Claim]]) -> None:
        try:
            claims = claimed.result()
        except Exception:  # a bug of ours: as if the table had not answered
            log.error("unexpected error claiming %d messages", len(messages), exc_info=True)
            claims = [Claim(message, Verdict.UNAVAILABLE) for message in messages]
        admitted: list[ReceivedMessage] = []
        behind: list[ReceivedMessage] = []  # claimed, but behind a message of its group that cannot go first
        unclaimed: list[ReceivedMessage] = []  # the table did not answer
        later: list[tuple[ReceivedMessage, float]] = []  # back to the queue after so many seconds
        blocked_groups: set[Optional[str]] = set()
        for claim in claims:
            message, verdict = claim.message, claim.verdict
            if verdict is Verdict.DONE:
                self.settler.skip_duplicates([message])
            elif verdict is Verdict.CLAIMED and not (self.fifo and message.group_id in blocked_groups):
                admitted.append(message)
            else:
                blocked_groups.add(message.group_id)
                if verdict is Verdict.CLAIMED:
                    behind.append(message)
                elif verdict is Verdict.HELD:
                    later.append((message, claim.held_s))
                else:  # UNAVAILABLE: left as it is, to come back after its visibility timeout
                    unclaimed.append(message)
        if any(claim.verdict is Verdict.UNAVAILABLE for claim in claims):
            with self._lock:
                self.failures += 1  # the pauses between trials grow with each failed one
            self._down.warning(
                TableUnavailable(
                    f"PROCESSED_TABLE {self.processed.table!r} did not take the claims: nothing is processed until it "
                    "does, and what was received comes back after its visibility timeout"
                ),
                "claiming",
            )
        elif claims:
            with self._lock:
                was_down, self.failures = self.failures > 0, 0
            if was_down:
                self._down.recovered()
        if later:
            self.settler.come_back_later(later)
        if behind:
            self.settler.give_back(behind)
        if unclaimed:
            self.settler.leave(unclaimed)
        refused = [
            message for unit in work_units(admitted, fifo=self.fifo) if not self.work.put(unit) for message in unit
        ]
        if refused:  # the processors are stopping: none will start these
            self.settler.give_back(refused)
