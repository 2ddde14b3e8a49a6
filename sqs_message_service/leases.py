"""The one lease store: DynamoDB records that a writer or a worker claims for a while, then
completes, gives back or extends. The writer's idempotency keys (IDEMPOTENCY_TABLE,
writer/idempotency.py) and the worker's processed ledger (PROCESSED_TABLE, worker/processed.py)
are its users: each says what its records hold; the conditions and the translation of
botocore's errors are written here, once.

A record has a `key`, a `state` (claimed, or its user's final state), an `owner` and a
`lease_until` while claimed, and `expires_at`, the table's TTL attribute. A key is free when it
has no record, its record is past `expires_at` (DynamoDB's TTL removes records late), or it is
claimed under a lease that lapsed (its owner died mid-work). Times are epoch seconds.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Optional

import botocore.exceptions

#: A claim that takes only a key with no record: the common case, and the cheapest to check.
FRESH = "attribute_not_exists(#key)"
#: A claim that takes a free key (no record, past its window, or its lease lapsed).
FREE = "attribute_not_exists(#key) OR expires_at <= :now OR (#state = :claimed AND lease_until <= :now)"
#: A change to a claim: still this owner's (a completion, a give-back, an extension).
OWNED = "#owner = :owner"
#: The same, and still claimed (not completed meanwhile).
OWNED_AND_CLAIMED = "#owner = :owner AND #state = :claimed"


class TableUnavailable(Exception):
    """The table did not answer, or refused the call: nothing was written."""


class KeyTaken(Exception):
    """A condition refused a call: the key is live, as `record` (its item, when DynamoDB gave
    it) shows."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        super().__init__("the key is held or completed already")
        self.record = record


class Cancelled(Exception):
    """A TransactWriteItems was cancelled; `reasons` says why, item by item."""

    def __init__(self, reasons: list[dict[str, Any]]) -> None:
        super().__init__("transaction cancelled")
        self.reasons = reasons


def _nothing(*_: Any) -> None:
    pass


class LeaseTable:
    """One table of leases, for one user's records (`claimed` is its claimed state's name). It
    writes the conditions and translates every error; its user says what each record holds.
    `counted(operation)` is called before each call, `failed()` when one fails (metrics)."""

    def __init__(
        self,
        table: str,
        client: Any,
        *,
        claimed: str,
        counted: Callable[[str], None] = _nothing,
        failed: Callable[[], None] = _nothing,
    ) -> None:
        self.table, self.client, self.claimed = table, client, claimed
        self._counted, self._failed = counted, failed

    def check(self) -> None:
        """Raise TableUnavailable unless the table can be reached and exists (DescribeTable)."""
        with self.call("DescribeTable"):
            self.client.describe_table(TableName=self.table)

    # The conditions, as the parameters of a call.

    def claim(self, item: dict[str, Any], *, now: float, fresh_only: bool = False) -> dict[str, Any]:
        """A Put that claims `item`'s key when it is free (or, `fresh_only`, when it has no
        record), returning the record that refused it."""
        if fresh_only:
            return {
                "TableName": self.table,
                "Item": item,
                "ConditionExpression": FRESH,
                "ExpressionAttributeNames": {"#key": "key"},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        return {
            "TableName": self.table,
            "Item": item,
            "ConditionExpression": FREE,
            "ExpressionAttributeNames": {"#key": "key", "#state": "state"},
            "ExpressionAttributeValues": {":now": {"N": seconds(now)}, ":claimed": {"S": self.claimed}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def owned(self, owner: str, *, still_claimed: bool = False) -> dict[str, Any]:
        """The condition of a change to a claim: still `owner`'s (and, `still_claimed`, not
        completed meanwhile)."""
        names = {"#owner": "owner"}
        values: dict[str, Any] = {":owner": {"S": owner}}
        if still_claimed:
            names["#state"] = "state"
            values[":claimed"] = {"S": self.claimed}
        return {
            "ConditionExpression": OWNED_AND_CLAIMED if still_claimed else OWNED,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    # The calls.

    def put_claim(self, item: dict[str, Any], *, now: float) -> None:
        """Claim `item`'s key (PutItem). Raises KeyTaken with the live record, TableUnavailable."""
        with self.call("PutItem"):
            self.client.put_item(**self.claim(item, now=now))

    def transact(self, items: list[dict[str, Any]]) -> list[Optional[dict[str, Any]]]:
        """TransactWriteItems: one reason per item, all None when it went through; when it was
        cancelled, each item's reason ("ConditionalCheckFailed" with the record, or "None" for
        an item cancelled only because another failed)."""
        try:
            with self.call("TransactWriteItems"):
                self.client.transact_write_items(TransactItems=items)
        except Cancelled as cancelled:
            if len(cancelled.reasons) != len(items):
                raise self.unavailable("TransactWriteItems", "cancelled without a reason per item") from None
            return list(cancelled.reasons)
        return [None] * len(items)

    @contextlib.contextmanager
    def call(self, operation: str) -> Iterator[None]:
        """Count the call, and translate botocore's errors: a condition that refused it
        (KeyTaken), a transaction's cancellation (Cancelled), or the table unavailable."""
        self._counted(operation)
        try:
            yield
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code == "ConditionalCheckFailedException":
                raise KeyTaken(exc.response.get("Item", {})) from None
            if code == "TransactionCanceledException":
                raise Cancelled(exc.response.get("CancellationReasons", [])) from None
            raise self.unavailable(operation, f"{code}: {error.get('Message', '')}") from exc
        except botocore.exceptions.BotoCoreError as exc:  # unreachable, no credentials, timed out
            raise self.unavailable(operation, str(exc)) from exc

    def unavailable(self, operation: str, text: str) -> TableUnavailable:
        self._failed()
        return TableUnavailable(f"{operation} {self.table!r}: {text}")


def seconds(epoch_s: float) -> str:
    """A time as a lease keeps it: epoch seconds to the millisecond."""
    return f"{epoch_s:.3f}"
