"""writer/service.to_outgoing: what the spec cannot say, checked as SQS would check it."""

from __future__ import annotations

from typing import Any

import pytest

from sqs_message_service.writer.errors import InvalidMessage, MessageTooLarge
from sqs_message_service.writer.service import to_outgoing
from sqsinterface import OutgoingMessage

LIMIT = 1024


def standard(fields: dict[str, Any], max_bytes: int = LIMIT) -> OutgoingMessage:
    return to_outgoing(fields, fifo=False, content_based_dedup=False, max_bytes=max_bytes)


def fifo(fields: dict[str, Any], content_based_dedup: bool = False) -> OutgoingMessage:
    return to_outgoing(fields, fifo=True, content_based_dedup=content_based_dedup, max_bytes=LIMIT)


def test_the_seed_example_becomes_a_plain_message() -> None:
    message = standard({"body": "This is a test message to enqueue"})

    assert message == OutgoingMessage(body="This is a test message to enqueue")


def test_every_optional_field_is_carried() -> None:
    message = standard(
        {"body": "b", "attributes": {"kind": "order", "a.b-c_1": "x"}, "delay_seconds": 5, "group_id": "g"}
    )

    assert message.attributes == {"kind": "order", "a.b-c_1": "x"}
    assert (message.delay_s, message.group_id, message.deduplication_id) == (5, "g", None)


@pytest.mark.parametrize(
    "body",
    ["tab\tnewline\ncr\r", "\u00e9\u4e2d\U0001f600", "\ud7ff\ue000\ufffd\U0010ffff"],
)
def test_characters_sqs_accepts_pass(body: str) -> None:
    assert standard({"body": body}).body == body


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("\x00", "U+0000 at position 0"),
        ("ok\x1f", "U+001F at position 2"),
        ("\ud800", "U+D800"),  # a lone surrogate, as JSON's "\ud800" decodes
        ("\ufffe", "U+FFFE"),
        ("\x7f\x08", "U+0008 at position 1"),
    ],
)
def test_characters_sqs_refuses_are_named_in_the_detail(body: str, named: str) -> None:
    with pytest.raises(InvalidMessage) as refused:
        standard({"body": body})

    assert refused.value.status == 400
    assert named in str(refused.value)


@pytest.mark.parametrize(
    "name",
    ["AWS.x", "aws.x", "Amazon.thing", "amazon.x", ".lead", "trail.", "a..b", "sp ace", "é", "x" * 257],
)
def test_attribute_names_sqs_refuses_are_refused(name: str) -> None:
    with pytest.raises(InvalidMessage, match="attribute name"):
        standard({"body": "b", "attributes": {name: "v"}})


@pytest.mark.parametrize("name", ["AWSx", "amazonian", "a.b", "A-Z_0-9", "x" * 256])
def test_attribute_names_sqs_accepts_pass(name: str) -> None:
    assert name in standard({"body": "b", "attributes": {name: "v"}}).attributes


def test_an_attribute_value_with_a_refused_character_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="attribute 'k' holds U\\+0000"):
        standard({"body": "b", "attributes": {"k": "\x00"}})


def test_size_counts_utf8_bytes_so_multibyte_text_can_be_too_large() -> None:
    fits = "\u00e9" * (LIMIT // 2)  # 2 bytes each: exactly the limit
    assert standard({"body": fits}).size_bytes == LIMIT

    with pytest.raises(MessageTooLarge) as refused:
        standard({"body": fits + "x"})
    assert refused.value.status == 413
    assert f"{LIMIT + 1} bytes" in str(refused.value)


def test_size_counts_attribute_names_types_and_values() -> None:
    # body 1000 + name 4 + "String" 6 + value 14 = 1024: exactly the limit
    assert standard({"body": "x" * 1000, "attributes": {"name": "v" * 14}}).size_bytes == LIMIT

    with pytest.raises(MessageTooLarge):
        standard({"body": "x" * 1000, "attributes": {"name": "v" * 15}})


def test_deduplication_id_on_a_standard_queue_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="only for FIFO queues"):
        standard({"body": "b", "deduplication_id": "d"})


def test_group_id_on_a_standard_queue_is_allowed_for_fair_queues() -> None:
    assert standard({"body": "b", "group_id": "tenant-1"}).group_id == "tenant-1"


@pytest.mark.parametrize(
    ("fields", "content_based_dedup", "detail"),
    [
        ({"body": "b", "deduplication_id": "d"}, False, "group_id is required"),
        (
            {"body": "b", "group_id": "g", "delay_seconds": 1, "deduplication_id": "d"},
            True,
            "delay_seconds is only for standard queues",
        ),
        ({"body": "b", "group_id": "g"}, False, "deduplication_id is required"),
    ],
)
def test_fifo_rules(fields: dict, content_based_dedup: bool, detail: str) -> None:
    with pytest.raises(InvalidMessage, match=detail):
        fifo(fields, content_based_dedup)


def test_fifo_message_needs_no_deduplication_id_with_content_based_deduplication() -> None:
    message = fifo({"body": "b", "group_id": "g"}, content_based_dedup=True)

    assert (message.group_id, message.deduplication_id) == ("g", None)
