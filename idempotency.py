"""Idempotency keys for POST /api/message: a request repeated with the same `Idempotency-Key`
gets the first one's answer instead of a second message.

The writer remembers each key for IDEMPOTENCY_WINDOW seconds, in process, and at most
IDEMPOTENCY_MAX_KEYS of them (the oldest go first). Statuses follow the IETF draft on the
Idempotency-Key header: a key reused with a different request is 422, a repeat that arrives
while the first is still being sent is 409.
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from errors import KeyInProgress, KeyReused


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
            if entry.fingerprint != request:
                raise KeyReused("this Idempotency-Key was used with a different request; use a new key")
            if entry.answer is None:
                raise KeyInProgress("the first request with this Idempotency-Key is still being sent; retry")
            return json.loads(entry.answer)

    def finish(self, key: bytes, answer: dict[str, str]) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.answer = json.dumps(answer, separators=(",", ":"))

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
