"""The processed ledger (PROCESSED_TABLE): a DynamoDB record per message key, so that the processing
step runs once per key, whatever SQS redelivers.

Before the step, the worker claims each message's key with a lease that ends when the message's
invisibility ends (the heartbeat extends both). After the step returns, it records the key as
done, and only then deletes the message. At the claim, a key found done is a duplicate: deleted
without the step. A key held under another live lease is left to come back when that lease
ends. A failed step gives its claim back, so that its retry runs as without the ledger. A worker
killed mid-step leaves a lease that lapses with the message's invisibility: when the message
comes back, it is claimed again at once.

A record: `key` (the queue's name and the message's `processing_key`), `state` ("processing" or
"done"), `owner` and `lease_until` while processing, `message_id`, and `expires_at`, the
table's TTL: PROCESSED_WINDOW after the claim, then after the completion. A record past
`expires_at` counts as absent, whether or not DynamoDB has removed it yet.

What the calls cost, per message: the claims of one receive are one TransactWriteItems of
puts on the condition that the key has no record (DynamoDB names each refused item with its
record, so no read comes first; a key whose record is free again, past its window or its lease
lapsed, is claimed in a second call on the condition that says so);
the completions leave in BatchWriteItem calls of up to 25; gives-back and lease extensions, which
only failures and long steps need, are TransactWriteItems conditional on the owner.

A user of the lease store (leases.py), which writes the conditions and translates the errors.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from ..leases import LeaseTable, TableUnavailable, seconds
from ..metrics import LedgerMetrics
from ..sqs import ReceivedMessage

log = logging.getLogger(__name__)

#: DynamoDB's limits: items in one TransactWriteItems, and puts in one BatchWriteItem.
TRANSACT_MAX_ITEMS = 100
BATCH_WRITE_MAX_ITEMS = 25
#: How many times a call is made again for the items DynamoDB left undone (a transaction
#: cancelled for another item's condition, or a batch's unprocessed items) before they fail.
ROUNDS = 4
#: The pause before a batch's unprocessed items are written again, doubled each round.
UNPROCESSED_PAUSE_S = 0.05
#: A lease that ends within this is waited out and claimed, rather than its message sent back
#: for another receive (which SQS counts): the lease of a worker that died ends as its message's
#: invisibility does, give or take the receive's round trip.
LAPSING_S = 1.0

PROCESSING, DONE_STATE = "processing", "done"


class Verdict(enum.Enum):
    """What a claim found for one message."""

    CLAIMED = "claimed"  # this worker holds it: run the step
    DONE = "done"  # processed already: delete it without the step
    HELD = "held"  # another live lease holds it: let it come back when that ends
    UNAVAILABLE = "unavailable"  # the table did not answer: do not process blindly


@dataclass(frozen=True)
class Claim:
    message: ReceivedMessage
    verdict: Verdict
    held_s: float = 0.0  # HELD: seconds until the lease that holds it ends


class ProcessedLedger:
    """The worker's view of PROCESSED_TABLE for one queue: claims, completions, gives-back and
    lease extensions, each for many messages at once. Thread-safe: it keeps no state but its
    owner token, which names this worker's claims."""

    def __init__(
        self,
        table: str,
        client: Any,
        *,
        queue_name: str,
        window_s: float,
        worker_id: Optional[str] = None,
        metrics: Optional[LedgerMetrics] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.client = client
        self.queue_name = queue_name
        self.window_s = window_s
        # whose claim a record is: this process, and this ledger in it
        self.owner = f"{worker_id or f'{socket.gethostname()}:{os.getpid()}'}/{uuid.uuid4().hex[:8]}"
        # its calls and failures count there, from the start; the worker that uses it exposes them
        self.metrics = metrics if metrics is not None else LedgerMetrics()
        self.leases = LeaseTable(table, client, claimed=PROCESSING, counted=self._counted, failed=self._failed)
        self._clock = clock

    def record_key(self, message: ReceivedMessage) -> str:
        return f"{self.queue_name}/{message.processing_key}"

    def check(self) -> None:
        """Raise TableUnavailable unless the table can be reached and exists (DescribeTable):
        at start, and to find out whether an outage has ended."""
        self.leases.check()

    def _counted(self, operation: str) -> None:
        self.metrics.dynamodb_requests.labels(self.table, operation).inc()

    def _failed(self) -> None:
        self.metrics.ledger_errors.inc()

    # Claims, before the step.

    def claim(self, messages: Sequence[ReceivedMessage], *, lease_until: float) -> list[Claim]:
        """Claim each message's key until `lease_until` (epoch seconds), in as few calls as the
        table allows: one verdict per message, in order. A message whose key another message of
        this call claims is HELD; every message is UNAVAILABLE when the table did not answer."""
        verdicts: dict[str, Claim] = {}
        first_of_key: dict[str, ReceivedMessage] = {}
        for message in messages:
            first_of_key.setdefault(self.record_key(message), message)
        pending = list(first_of_key.items())
        try:
            for round_number in range(ROUNDS):
                if not pending:
                    break
                pending = self._claim_round(pending, lease_until, verdicts, fresh_only=round_number == 0)
            lapsing = [
                (key, claim.message)
                for key, claim in verdicts.items()
                if claim.verdict is Verdict.HELD and claim.held_s < LAPSING_S
            ]
            if lapsing and not pending:  # a dead worker's lease, ending as its message came back
                time.sleep(max(verdicts[key].held_s for key, _ in lapsing))
                for key, _ in lapsing:
                    del verdicts[key]
                pending = self._claim_round(lapsing, lease_until, verdicts, fresh_only=False)
        except TableUnavailable:
            pending = [(key, m) for key, m in first_of_key.items() if key not in verdicts]
        for key, message in pending:  # still undecided: as good as no answer
            verdicts[key] = Claim(message, Verdict.UNAVAILABLE)
        claims = []
        for message in messages:
            key = self.record_key(message)
            first = first_of_key[key]
            if message is first:
                claims.append(verdicts[key])
            elif verdicts[key].verdict is Verdict.CLAIMED:  # a second copy of one key waits for the first
                claims.append(Claim(message, Verdict.HELD, max(0.0, lease_until - self._clock())))
            else:
                claims.append(Claim(message, verdicts[key].verdict, verdicts[key].held_s))
        return claims

    def _claim_round(
        self,
        pending: list[tuple[str, ReceivedMessage]],
        lease_until: float,
        verdicts: dict[str, Claim],
        *,
        fresh_only: bool,
    ) -> list[tuple[str, ReceivedMessage]]:
        """One TransactWriteItems per TRANSACT_MAX_ITEMS claims; what is left undecided. With
        `fresh_only` a claim takes only a key that has no record: the common case, and the
        cheapest condition to check. A key whose record turns out free (past its window, or its
        lease lapsed) is left undecided, for the next round's full condition."""
        now = self._clock()
        undecided: list[tuple[str, ReceivedMessage]] = []
        for start in range(0, len(pending), TRANSACT_MAX_ITEMS):
            chunk = pending[start : start + TRANSACT_MAX_ITEMS]
            items = [{"Put": self._claim_item(key, message, now, lease_until, fresh_only)} for key, message in chunk]
            reasons = self.leases.transact(items)
            for (key, message), reason in zip(chunk, reasons, strict=True):
                verdict = None
                if reason is None:
                    verdict = Claim(message, Verdict.CLAIMED)
                elif reason.get("Code") == "ConditionalCheckFailed":
                    verdict = self._verdict_from(message, reason.get("Item", {}), now)
                if verdict is None:  # cancelled for another item, a conflict, or a free record
                    undecided.append((key, message))
                else:
                    verdicts[key] = verdict
        return undecided

    def _claim_item(
        self, key: str, message: ReceivedMessage, now: float, lease_until: float, fresh_only: bool
    ) -> dict[str, Any]:
        item = {
            "key": {"S": key},
            "state": {"S": PROCESSING},
            "owner": {"S": self.owner},
            "lease_until": {"N": seconds(lease_until)},
            "message_id": {"S": message.id},
            "expires_at": {"N": str(math.ceil(now + self.window_s))},
        }
        return self.leases.claim(item, now=now, fresh_only=fresh_only)

    def _verdict_from(self, message: ReceivedMessage, record: dict[str, Any], now: float) -> Optional[Claim]:
        """A claim the table refused, from the record that refused it: done, or held until its
        lease ends; None when the record is free after all (past its window, or its lease
        lapsed). (DynamoDB makes a TransactWriteItems that botocore sends again idempotent, so
        a refused claim is never this very claim's own.)"""
        if float(record.get("expires_at", {}).get("N", "inf")) <= now:
            return None
        if record.get("state", {}).get("S") == DONE_STATE:
            return Claim(message, Verdict.DONE)
        lease_until = float(record.get("lease_until", {}).get("N", now))
        return Claim(message, Verdict.HELD, lease_until - now) if lease_until > now else None

    # Completions, after the step returned.

    def complete(self, messages: Sequence[ReceivedMessage]) -> list[Optional[Exception]]:
        """Record each message's key as done, for PROCESSED_WINDOW; one outcome per message (None:
        recorded). The record replaces the claim whoever holds it: the step returned for that
        key, so that no one runs it again."""
        now = self._clock()
        expires_at = str(math.ceil(now + self.window_s))
        by_key: dict[str, dict[str, Any]] = {}
        for message in messages:
            by_key[self.record_key(message)] = {
                "key": {"S": self.record_key(message)},
                "state": {"S": DONE_STATE},
                "message_id": {"S": message.id},
                "done_at": {"N": seconds(now)},
                "expires_at": {"N": expires_at},
            }
        failed: dict[str, Exception] = {}
        keys = list(by_key)
        for start in range(0, len(keys), BATCH_WRITE_MAX_ITEMS):
            chunk = keys[start : start + BATCH_WRITE_MAX_ITEMS]
            try:
                self._write_all([by_key[key] for key in chunk])
            except TableUnavailable as exc:
                failed.update((key, exc) for key in chunk)
        return [failed.get(self.record_key(message)) for message in messages]

    def _write_all(self, records: list[dict[str, Any]]) -> None:
        """BatchWriteItem `records`, writing again what DynamoDB left unprocessed."""
        requests = [{"PutRequest": {"Item": record}} for record in records]
        pause_s = UNPROCESSED_PAUSE_S
        for _ in range(ROUNDS):
            with self.leases.call("BatchWriteItem"):
                response = self.client.batch_write_item(RequestItems={self.table: requests})
            requests = response.get("UnprocessedItems", {}).get(self.table, [])
            if not requests:
                return
            time.sleep(pause_s)
            pause_s *= 2
        raise self.leases.unavailable(
            "BatchWriteItem", f"{len(requests)} records left unprocessed after {ROUNDS} calls"
        )

    # Gives-back and extensions, on this worker's own claims.

    def give_back(self, messages: Sequence[ReceivedMessage]) -> list[None]:
        """Give back the claims this worker holds on these messages' keys (a failed step): the
        retry runs when it comes. Best effort, and never raises: a claim not given back lapses
        with its lease."""
        keys = {self.record_key(message) for message in messages}
        self._on_own_claims(
            keys,
            lambda key: {
                "Delete": {
                    "TableName": self.table,
                    "Key": {"key": {"S": key}},
                    **self.leases.owned(self.owner, still_claimed=True),
                }
            },
            "given back",
        )
        return [None] * len(messages)

    def extend(self, messages: Sequence[ReceivedMessage], *, lease_until: float) -> None:
        """Extend this worker's claims on these messages' keys until `lease_until`, as the
        heartbeat extends their invisibility. Best effort, and never raises: a lease not
        extended may lapse while the step runs, and another worker that receives the message
        then may run it too."""
        keys = {self.record_key(message) for message in messages}
        owned = self.leases.owned(self.owner, still_claimed=True)
        owned["ExpressionAttributeValues"][":lease_until"] = {"N": seconds(lease_until)}
        self._on_own_claims(
            keys,
            lambda key: {
                "Update": {
                    "TableName": self.table,
                    "Key": {"key": {"S": key}},
                    "UpdateExpression": "SET lease_until = :lease_until",
                    **owned,
                }
            },
            "extended",
        )

    def _on_own_claims(self, keys: set[str], item: Callable[[str], dict[str, Any]], done: str) -> None:
        """Change each claim of `keys` that is still this worker's; those that are not (done,
        lapsed and claimed by another) are left as they are."""
        pending = sorted(keys)
        try:
            for _ in range(ROUNDS):
                if not pending:
                    return
                undecided = []
                for start in range(0, len(pending), TRANSACT_MAX_ITEMS):
                    chunk = pending[start : start + TRANSACT_MAX_ITEMS]
                    reasons = self.leases.transact([item(key) for key in chunk])
                    undecided += [
                        key
                        for key, reason in zip(chunk, reasons, strict=True)
                        if reason is not None and reason.get("Code") != "ConditionalCheckFailed"
                    ]
                pending = undecided
        except TableUnavailable as exc:
            log.warning("%d claims not %s (%s): they lapse with their leases", len(pending), done, exc)
            return
        except Exception:  # a bug of ours or the client's: best effort, never the caller's thread's end
            log.error("%d claims not %s: they lapse with their leases", len(pending), done, exc_info=True)
            return
        if pending:
            log.warning("%d claims not %s after %d calls: they lapse with their leases", len(pending), done, ROUNDS)


def wall_clock(deadline: float) -> float:
    """A `time.monotonic()` deadline as epoch seconds, for a lease others read."""
    return time.time() + (deadline - time.monotonic())
