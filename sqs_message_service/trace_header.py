"""The AWSTraceHeader system attribute: what travels with a message beside its body and its ten
message attributes, counted in neither SQS's size nor its attribute quota.

Its value is an X-Ray tracing header, `Root=1-<time>-<id>;Parent=...;Sampled=...`, whose format
allows fields of one's own (AWS's load balancers and Lambda add `Self=`, `CalledFrom=`,
`Lineage=`). The writer puts a keyed message's Idempotency-Key there, hashed and scoped per API
key, as `IdempotencyKey=<32 hex>`, so that the worker's processed ledger knows two sends of one
request as one message (worker/processed.py). Local engines differ: moto and fauxqs drop the
attribute from SendMessageBatch, so there a keyed message is known by its message id alone
(docs/local.md).
"""

from __future__ import annotations

import os
import re
import time
from typing import Optional

#: The field of the header that carries the writer's Idempotency-Key.
IDEMPOTENCY_FIELD = "IdempotencyKey"
_HEX_KEY = re.compile(r"^[0-9a-f]{32}$")


def new_root(now_s: Optional[float] = None) -> str:
    """An X-Ray trace id: version 1, the epoch seconds in 8 hex digits, 96 random bits."""
    seconds = int(time.time() if now_s is None else now_s)
    return f"1-{seconds:08x}-{os.urandom(12).hex()}"


def fields(header: Optional[str]) -> dict[str, str]:
    """The header's `name=value` fields; those without a name or a value are left out."""
    found: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name and value:
            found[name] = value
    return found


def with_idempotency_key(key_hex: str, header: Optional[str] = None) -> str:
    """`header` (or a new one, with a root of its own and no sampling decision) carrying
    `key_hex`, the scoped and hashed Idempotency-Key, in place of any it carried before."""
    if not _HEX_KEY.match(key_hex):
        raise ValueError(f"an Idempotency-Key travels as 32 lower-case hex digits, not {key_hex!r}")
    kept = {name: value for name, value in fields(header).items() if name != IDEMPOTENCY_FIELD}
    kept.setdefault("Root", new_root())
    ordered = {"Root": kept.pop("Root"), **kept, IDEMPOTENCY_FIELD: key_hex}
    return ";".join(f"{name}={value}" for name, value in ordered.items())


def idempotency_key(header: Optional[str]) -> Optional[str]:
    """The Idempotency-Key a header carries, as the writer put it there; None when it has none
    (or one not in that form: a header from elsewhere is never taken for a key)."""
    key = fields(header).get(IDEMPOTENCY_FIELD)
    return key if key is not None and _HEX_KEY.match(key) else None
