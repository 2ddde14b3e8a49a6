"""What SQS accepts in a message, each rule once, with the words that tell a client what to change.

The served spec (writer/spec.py) and the writer's checks of each message (writer/service.py)
both use these; swagger.yml states the same patterns and limits, and tests/test_rules.py fails
when the two differ. What a schema cannot say is checked here only: the size as SQS counts it
and lone surrogates.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Optional

#: SQS accepts at most this many message attributes on one message.
MAX_ATTRIBUTES = 10
#: The longest attribute name SQS accepts.
MAX_ATTRIBUTE_NAME_CHARS = 256
#: The longest MessageGroupId or MessageDeduplicationId (also the Idempotency-Key's bound).
MAX_ID_CHARS = 128
#: The longest delay SQS takes for one message.
MAX_DELAY_S = 900
#: SQS's data type for the string attributes this service sends (it counts towards the size).
STRING = "String"

#: Characters SQS refuses in a body or attribute value, as a regex class: all but #x9, #xA,
#: #xD, #x20-#xD7FF, #xE000-#xFFFD and #x10000-#x10FFFF. Lone surrogates (#xD800-#xDFFF) too,
#: which JSON can carry (\ud800) but a JSON Schema pattern cannot name.
_REFUSED_IN_SPEC = r"\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF"
#: The pattern swagger.yml gives a body and every attribute value.
TEXT_PATTERN = f"^[^{_REFUSED_IN_SPEC}]*$"
#: The pattern of a group or deduplication id: printable ASCII, no space.
ID_PATTERN = "^[!-~]+$"
#: SQS's rule for attribute names: A-Z a-z 0-9 _ - . ; no leading, trailing or doubled period;
#: no "AWS." or "Amazon." prefix in any case (with MAX_ATTRIBUTE_NAME_CHARS).
ATTRIBUTE_NAME_PATTERN = r"^(?!(?:[Aa][Ww][Ss]|[Aa][Mm][Aa][Zz][Oo][Nn])\.)[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$"

_REFUSED = re.compile(f"[{_REFUSED_IN_SPEC}\ud800-\udfff]")
_ATTRIBUTE_NAME = re.compile(ATTRIBUTE_NAME_PATTERN)


def payload_bytes(body: str, attributes: Mapping[str, str]) -> int:
    """The size SQS checks against its limit: the body plus every attribute's name, data type and
    value, all in UTF-8."""
    size = len(body.encode("utf-8"))
    for name, value in attributes.items():
        size += len(name.encode("utf-8")) + len(STRING) + len(value.encode("utf-8"))
    return size


def character_problem(what: str, text: str) -> Optional[str]:
    """What is wrong with `text` for SQS (its first character SQS refuses), or None."""
    bad = _REFUSED.search(text)
    if bad is None:
        return None
    return (
        f"{what} holds U+{ord(bad.group()):04X} at position {bad.start()}, a character SQS "
        "does not accept (allowed: tab, newline, carriage return, U+0020 to U+D7FF, "
        "U+E000 to U+FFFD, U+10000 to U+10FFFF)"
    )


def attribute_name_problem(name: str) -> Optional[str]:
    """What is wrong with `name` as an SQS message attribute's name, or None."""
    if len(name) <= MAX_ATTRIBUTE_NAME_CHARS and _ATTRIBUTE_NAME.match(name):
        return None
    return (
        f"attribute name {name[:64]!r} is not allowed: use up to {MAX_ATTRIBUTE_NAME_CHARS} letters, digits, "
        "'_', '-' or '.', not starting with 'AWS.' or 'Amazon.', with no leading, "
        "trailing or doubled '.'"
    )


def size_problem(size_bytes: int, max_bytes: int) -> Optional[str]:
    """What is wrong with a message of `size_bytes` (as `payload_bytes` counts) on a queue that
    takes `max_bytes`, or None."""
    if size_bytes <= max_bytes:
        return None
    return f"the message is {size_bytes} bytes (body and attributes in UTF-8); the limit is {max_bytes}"


@dataclass(frozen=True)
class QueueFields:
    """Which optional fields a kind of queue refuses or needs, each with why."""

    #: field -> why this queue takes no such field
    absent: Mapping[str, str]
    #: field -> why this queue needs it
    required: Mapping[str, str]

    def problem(self, fields: Mapping[str, Any]) -> Optional[str]:
        """Why `fields` do not suit this queue (the first reason), or None."""
        for name, why in self.required.items():
            if fields.get(name) is None:
                return why
        for name, why in self.absent.items():
            if fields.get(name) is not None:
                return why
        return None


@functools.cache  # four kinds of queue at most; asked once a message
def queue_fields(*, fifo: bool, content_based_deduplication: bool) -> QueueFields:
    """What SQS asks of a message's fields on a queue of this kind: on a FIFO queue a group, no
    delay of its own, and a deduplication id unless the queue derives it from the body; on a
    standard queue no deduplication id."""
    if not fifo:
        return QueueFields(
            absent=MappingProxyType(
                {
                    "deduplication_id": "deduplication_id is only for FIFO queues; this queue is standard",
                }
            ),
            required=MappingProxyType({}),
        )
    required = {"group_id": "group_id is required on a FIFO queue"}
    if not content_based_deduplication:
        required["deduplication_id"] = (
            "deduplication_id is required: this FIFO queue has no content-based deduplication"
        )
    return QueueFields(  # read-only: every caller shares the one answer
        absent=MappingProxyType(
            {
                "delay_seconds": "delay_seconds is only for standard queues; this queue is FIFO, where SQS takes a "
                "delay for the whole queue only (its DelaySeconds attribute)",
            }
        ),
        required=MappingProxyType(required),
    )
