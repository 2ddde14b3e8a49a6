"""trace_header.py: the writer's Idempotency-Key in AWSTraceHeader, beside whatever else the header
carries, and never taken from a header that someone else wrote; and the trace context in X-Ray's
and W3C's formats."""

from __future__ import annotations

import re

import pytest

from sqs_message_service.trace_header import (
    IDEMPOTENCY_FIELD,
    fields,
    from_traceparent,
    from_xray_header,
    idempotency_key,
    traceparent,
    with_idempotency_key,
    xray_header,
)

KEY = "0123456789abcdef0123456789abcdef"
CLIENT_TRACE, CLIENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_a_new_header_is_an_x_ray_root_with_the_key() -> None:
    header = with_idempotency_key(KEY)

    assert re.fullmatch(rf"Root=1-[0-9a-f]{{8}}-[0-9a-f]{{24}};{IDEMPOTENCY_FIELD}={KEY}", header)
    assert idempotency_key(header) == KEY


def test_a_header_keeps_its_trace_and_its_other_fields_and_gets_the_key_once() -> None:
    traced = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a:1"

    header = with_idempotency_key(KEY, with_idempotency_key("f" * 32, traced))

    assert fields(header) == {**fields(traced), IDEMPOTENCY_FIELD: KEY}
    assert header.startswith("Root=1-5759e988-bd862e3fe1be46a994272793;") and header.count(IDEMPOTENCY_FIELD) == 1


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        f"Root=1-a-b;{IDEMPOTENCY_FIELD}=order-1001",
        f"{IDEMPOTENCY_FIELD}={KEY.upper()}",
    ],
)
def test_no_key_is_read_from_a_header_the_writer_did_not_write(header: str | None) -> None:
    assert idempotency_key(header) is None


def test_only_a_hashed_key_travels() -> None:
    with pytest.raises(ValueError, match="32 lower-case hex"):
        with_idempotency_key("order-1001")


def test_the_x_ray_header_and_traceparent_carry_the_same_context() -> None:
    context = (int(CLIENT_TRACE, 16), int(CLIENT_SPAN, 16), True)
    header = xray_header(context, "Root=1-00000000-000000000000000000000000;IdempotencyKey=" + "a" * 32)

    key = "a" * 32
    assert header == f"Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent={CLIENT_SPAN};Sampled=1;IdempotencyKey={key}"
    assert (
        from_xray_header(header)
        == from_traceparent(traceparent(context))
        == (int(CLIENT_TRACE, 16), int(CLIENT_SPAN, 16), True)
    )
    assert from_xray_header("Root=1-5759e988-bd862e3fe1be46a994272793;Lineage=a:1") is None  # no Parent: no span
    assert from_xray_header("IdempotencyKey=" + "a" * 32) is None and from_traceparent("00-zz-yy-01") is None
