"""Idempotency keys for POST /api/message: a request repeated with the same `Idempotency-Key`
gets the first one's answer instead of a second message.

Two stores keep the keys, for IDEMPOTENCY_WINDOW seconds, hashed and scoped per API key, with the
answer but never the body. `IdempotencyStore` keeps them in the writer's memory, at most
IDEMPOTENCY_MAX_KEYS (the oldest go first): one process's promise. `SharedStore` keeps them in a
DynamoDB table (IDEMPOTENCY_TABLE), so the promise holds across writer processes and replicas: a
conditional put claims a key with a lease, the answer replaces the claim once SQS has the
message, a failed send gives the key back, and DynamoDB's TTL removes records after the window.
This module owns that table's layout and calls; tables.py creates it.

Statuses follow the IETF draft on the Idempotency-Key header: a key reused with a different
request is 422, a repeat that arrives while the first is still being sent is 409.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Protocol

from ..leases import KeyTaken, LeaseTable, TableUnavailable
from .errors import KeyInProgress, KeyReused

log = logging.getLogger(__name__)

#: How much longer than SEND_TIMEOUT a claim on a key lasts: a writer's send cannot outlast it,
#: and clocks of writers on different hosts may differ by this much.
LEASE_MARGIN_S = 2.0
#: A key's states in the table: claimed while its first request is sent, then answered.
SENDING, ANSWERED = "sending", "answered"


class KeyStore(Protocol):
    """What the writer asks of a store of Idempotency-Keys."""

    def begin(self, key: bytes, request: bytes) -> Optional[dict[str, str]]: ...

    def finish(self, key: bytes, answer: dict[str, str]) -> None: ...

    def abandon(self, key: bytes) -> None: ...


def fingerprint(fields: Mapping[str, Any]) -> bytes:
    """What makes two requests the same request: the JSON body, with keys in a fixed order."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _digest(canonical)


def scoped_key(key: str, client: str) -> bytes:
    """The key as the writer stores it: per client (the API key, when there are keys), so that
    one client can neither collide with nor read another's answers; hashed, so that neither
    key is kept in memory as it came."""
    return _digest(f"{client}\0{key}")


def _digest(text: str) -> bytes:
    """128 bits of BLAKE2b: ample to tell requests apart, and half the memory of SHA-256's."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _encode(answer: dict[str, str]) -> str:
    """An answer as both stores keep it: compact JSON, the lightest form."""
    return json.dumps(answer, separators=(",", ":"))


def _replay(same_request: bool, answer: Optional[str]) -> dict[str, str]:
    """What a repeat of a live key gets, from either store: the first answer, or why not."""
    if not same_request:
        raise KeyReused("this Idempotency-Key was used with a different request; use a new key")
    if answer is None:
        raise KeyInProgress("the first request with this Idempotency-Key is still being sent; retry")
    decoded: dict[str, str] = json.loads(answer)
    return decoded


@dataclass(slots=True)
class _Entry:
    fingerprint: bytes
    expires_at: float
    answer: Optional[str] = None  # the answer as JSON (the lightest form); None while sending


class IdempotencyStore:
    """Keys and the answers they got, for `window_s` seconds and at most `max_keys` keys."""

    def __init__(self, *, window_s: float, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._entries: collections.OrderedDict[bytes, _Entry] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def begin(self, key: bytes, request: bytes) -> Optional[dict[str, str]]:
        """The first answer, for a repeat of `request` under `key`. None when this is the first
        request: the caller sends it, then calls `finish` with the answer, or `abandon`."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(fingerprint=request, expires_at=now + self.window_s)
                while len(self._entries) > self.max_keys:
                    self._entries.popitem(last=False)
                return None
            return _replay(entry.fingerprint == request, entry.answer)

    def finish(self, key: bytes, answer: dict[str, str]) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.answer = _encode(answer)

    def abandon(self, key: bytes) -> None:
        """The first request failed: forget the key, so that a retry sends anew."""
        with self._lock:
            self._entries.pop(key, None)

    def _expire(self, now: float) -> None:
        # Entries are kept in arrival order and all live equally long: the oldest expire first.
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.expires_at > now:
                return
            self._entries.popitem(last=False)


class SharedStore:
    """Keys and answers in a DynamoDB table, shared by every writer process and replica: a user
    of the lease store (leases.py).

    A record is a key's claim while its first request is being sent (`state` "sending", with an
    `owner` and a `lease_until`), then its answer (`state` "answered"). `expires_at` is the
    table's TTL attribute: IDEMPOTENCY_WINDOW after the first request. A record past it, or a
    claim whose lease lapsed (its writer died mid-send), counts as no record: the key is free
    again. Keys are hashed and scoped per API key, as in memory; no body is stored.

    Any failure of the table is TableUnavailable (the writer answers 503): a keyed request is
    never sent without its key kept. Which claim is this writer's is known by its owner token,
    kept per key.
    """

    def __init__(
        self, table: str, client: Any, *, window_s: float, lease_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.table = table
        self.client = client
        self.window_s = window_s
        self.lease_s = lease_s
        self.leases = LeaseTable(table, client, claimed=SENDING)
        self._clock = clock
        self._owners: dict[bytes, str] = {}  # the keys this writer holds a claim on, with its token
        self._lock = threading.Lock()

    def begin(self, key: bytes, request: bytes) -> Optional[dict[str, str]]:
        """The first answer, for a repeat of `request` under `key`; None when this request is
        the first (or the first's claim lapsed): this writer then holds the key's claim."""
        now = self._clock()
        owner = uuid.uuid4().hex
        claim = {
            "key": {"S": key.hex()},
            "fingerprint": {"S": request.hex()},
            "state": {"S": SENDING},
            "owner": {"S": owner},
            "lease_until": {"N": _later(now + self.lease_s)},
            "expires_at": {"N": _later(now + self.window_s)},
        }
        try:
            self.leases.put_claim(claim, now=now)
        except KeyTaken as taken:
            if taken.record.get("owner", {}).get("S") != owner:
                return self._repeat(taken.record, request)
            # botocore retried a PutItem whose answer was lost: the claim it refuses is this one
        with self._lock:
            self._owners[key] = owner
        return None

    def finish(self, key: bytes, answer: dict[str, str]) -> None:
        """SQS has the message: the key's answer replaces this writer's claim on it. A failure
        here is logged, not raised: the message was sent, and its 201 is true."""
        owned = self.leases.owned(self._forget_owner(key))
        # or already so, when botocore retried an UpdateItem whose answer was lost
        owned["ConditionExpression"] += " OR (#state = :answered AND answer = :answer)"
        owned["ExpressionAttributeNames"]["#state"] = "state"
        owned["ExpressionAttributeValues"].update({":answered": {"S": ANSWERED}, ":answer": {"S": _encode(answer)}})
        try:
            with self.leases.call("UpdateItem"):
                self.client.update_item(
                    TableName=self.table,
                    Key={"key": {"S": key.hex()}},
                    UpdateExpression="SET #state = :answered, answer = :answer REMOVE lease_until, #owner",
                    **owned,
                )
        except (TableUnavailable, KeyTaken) as exc:
            log.error(
                "an answer was not kept for its Idempotency-Key (%s): a retry after the lease lapses is sent again", exc
            )

    def abandon(self, key: bytes) -> None:
        """The send failed: give the key back (if the claim is still this writer's), so that a
        retry sends anew. A failure here leaves the claim to lapse with its lease."""
        owned = self.leases.owned(self._forget_owner(key))
        try:
            with self.leases.call("DeleteItem"):
                self.client.delete_item(TableName=self.table, Key={"key": {"S": key.hex()}}, **owned)
        except (TableUnavailable, KeyTaken) as exc:
            log.warning("an Idempotency-Key was not given back (%s): it is free once its lease lapses", exc)

    def _repeat(self, record: Mapping[str, Any], request: bytes) -> dict[str, str]:
        """The answer for a repeat, found in the live `record` of its key."""
        answered = record.get("state", {}).get("S") == ANSWERED
        return _replay(
            record.get("fingerprint", {}).get("S") == request.hex(), record["answer"]["S"] if answered else None
        )

    def _forget_owner(self, key: bytes) -> str:
        with self._lock:
            return self._owners.pop(key, "")


def _later(seconds: float) -> str:
    """A time as the table keeps it, whole epoch seconds as TTL wants them, rounded up: a key
    lives at least its window, a claim at least its lease."""
    return str(math.ceil(seconds))
