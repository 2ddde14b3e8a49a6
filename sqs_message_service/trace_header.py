"""The formats a message's trace context travels in, in one place: the AWSTraceHeader system
attribute, and the W3C `traceparent` (an HTTP header, or a message attribute where the SQS
endpoint drops AWSTraceHeader). AWSTraceHeader travels beside a message's body and its ten
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
from typing import Any, Optional

#: The field of the header that carries the writer's Idempotency-Key.
IDEMPOTENCY_FIELD = "IdempotencyKey"
_HEX_KEY = re.compile(r"^[0-9a-f]{32}$")
#: The message attribute that carries the context where AWSTraceHeader does not travel.
TRACEPARENT = "traceparent"
#: A trace context as both formats carry it: (trace id, span id, sampled).
Context = tuple[int, int, bool]


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


# The trace context: X-Ray's Root, Parent and Sampled, or W3C's traceparent.


def carried_context(message: Any) -> Optional[Context]:
    """The creation context a message carries (AWSTraceHeader first, then its `traceparent`
    attribute); None when it carries none."""
    carried = from_xray_header(message.trace_header)
    if carried is None and TRACEPARENT in message.attributes:
        carried = from_traceparent(message.attributes[TRACEPARENT])
    return carried


def traceparent(context: Context) -> str:
    """`context` as a W3C `traceparent` (version 00)."""
    trace_id, span_id, sampled = context
    return f"00-{trace_id:032x}-{span_id:016x}-{int(sampled):02x}"


def from_traceparent(value: str) -> Optional[Context]:
    """The context a W3C `traceparent` carries; None for one that is malformed or invalid."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or parts[0] == "ff":
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    return (trace_id, span_id, bool(flags & 1)) if trace_id and span_id else None


def xray_header(context: Context, existing: Optional[str] = None) -> str:
    """An AWSTraceHeader for `context`: X-Ray's Root is the W3C trace id as 1-<8 hex>-<24 hex>,
    Parent the span id. The fields of `existing` other than those three (the writer's
    IdempotencyKey, say) are kept."""
    trace_id, span_id, sampled = context
    trace_hex = f"{trace_id:032x}"
    kept = {name: value for name, value in fields(existing).items() if name not in ("Root", "Parent", "Sampled")}
    header = {
        "Root": f"1-{trace_hex[:8]}-{trace_hex[8:]}",
        "Parent": f"{span_id:016x}",
        "Sampled": str(int(sampled)),
        **kept,
    }
    return ";".join(f"{name}={value}" for name, value in header.items())


def from_xray_header(header: Optional[str]) -> Optional[Context]:
    """The context an AWSTraceHeader carries; None without a Root and a Parent (the writer's
    header with only an IdempotencyKey beside a root of its own carries no span)."""
    found = fields(header)
    root, parent = found.get("Root", ""), found.get("Parent", "")
    parts = root.split("-")
    if len(parts) != 3 or parts[0] != "1" or len(parts[1]) != 8 or len(parts[2]) != 24 or len(parent) != 16:
        return None
    try:
        trace_id, span_id = int(parts[1] + parts[2], 16), int(parent, 16)
    except ValueError:
        return None
    return (trace_id, span_id, found.get("Sampled") == "1") if trace_id and span_id else None
