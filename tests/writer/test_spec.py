"""writer/spec.py: swagger.yml fitted to the queue, and a violation of it worded for the client."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from server import create_app
from sqs_message_service.settings import Settings
from sqs_message_service.writer.spec import RequestValidator, load_source, served_spec
from sqsinterface import SqsQueue, create_client

SOURCE = load_source()


def fields_of(document: dict[str, Any]) -> dict[str, Any]:
    return document["components"]["schemas"]["MessageFields"]


def test_a_standard_queue_has_no_deduplication_id() -> None:
    spec = served_spec(SOURCE, fifo=False, content_based_deduplication=False, keys_required=True)

    fields = fields_of(spec.document)
    assert set(fields["properties"]) == {"body", "attributes", "delay_seconds", "group_id"}
    assert fields["required"] == ["body"]
    assert spec.document["security"] == [{"apiKey": []}]


def test_a_fifo_queue_needs_a_group_and_has_no_delay() -> None:
    spec = served_spec(SOURCE, fifo=True, content_based_deduplication=True, keys_required=False)

    fields = fields_of(spec.document)
    assert set(fields["properties"]) == {"body", "attributes", "group_id", "deduplication_id"}
    assert fields["required"] == ["body", "group_id"]
    assert "security" not in spec.document


def test_a_fifo_queue_without_content_based_deduplication_needs_a_deduplication_id() -> None:
    spec = served_spec(SOURCE, fifo=True, content_based_deduplication=False, keys_required=False)

    assert fields_of(spec.document)["required"] == ["body", "group_id", "deduplication_id"]


def test_the_source_is_left_as_it_was() -> None:
    before = repr(SOURCE)

    served_spec(SOURCE, fifo=True, content_based_deduplication=False, keys_required=False)

    assert repr(SOURCE) == before


def first_violation(fifo: bool, body: Any, path: tuple[str, ...] = ("Message",)) -> str:
    spec = served_spec(SOURCE, fifo=fifo, content_based_deduplication=False, keys_required=False)
    schema = {"$ref": "#/components/schemas/" + "/".join(path), "components": spec.document["components"]}
    error = next(RequestValidator(schema).iter_errors(body))
    return spec.describe(error)


@pytest.mark.parametrize(
    ("fifo", "body", "detail"),
    [
        (
            False,
            {"body": "b", "deduplication_id": "d"},
            "deduplication_id is only for FIFO queues; this queue is standard",
        ),
        (
            True,
            {"body": "b", "group_id": "g", "deduplication_id": "d", "delay_seconds": 1},
            "delay_seconds is only for standard queues",
        ),
        (True, {"body": "b", "deduplication_id": "d"}, "group_id is required on a FIFO queue"),
        (
            True,
            {"body": "b", "group_id": "g"},
            "deduplication_id is required: this FIFO queue has no content-based deduplication",
        ),
        (False, {"body": "nul \u0000"}, "body holds U+0000 at position 4, a character SQS does not accept"),
        (False, {"body": "b", "attributes": {"k": "\u0007"}}, "attribute 'k' holds U+0007 at position 0"),
        (False, {"body": "b", "attributes": {"AWS.trace": "v"}}, "attribute name 'AWS.trace' is not allowed"),
        (False, {"body": "b", "attributes": {"n" * 257: "v"}}, "is not allowed: use up to 256 letters"),
        (False, {"body": 5}, "5 is not of type 'string' - 'body'"),
    ],
)
def test_a_violation_is_worded_for_the_client(fifo: bool, body: Any, detail: str) -> None:
    assert detail in first_violation(fifo, body)


def test_each_entry_of_a_batch_is_judged_on_its_own_by_the_served_fields() -> None:
    spec = served_spec(SOURCE, fifo=False, content_based_deduplication=False, keys_required=False)

    assert spec.entry_problem({"body": "b"}) is None
    assert spec.entry_problem({"body": "b", "deduplication_id": "d"}) == (
        "deduplication_id is only for FIFO queues; this queue is standard"
    )
    assert spec.entry_problem({"body": ""}) == "'' should be non-empty - 'body'"


def test_the_read_routes_take_read_max_lease_and_ask_no_key_without_read_keys() -> None:
    off = served_spec(SOURCE, fifo=False, content_based_deduplication=False, keys_required=True)
    on = served_spec(
        SOURCE, fifo=False, content_based_deduplication=False, keys_required=True, read_keys=True, max_lease_s=60
    )

    receive = "/messages/receive"
    assert off.document["paths"][receive]["post"]["security"] == []
    assert on.document["paths"][receive]["post"]["security"] == [{"readKey": []}]
    schemas = on.document["components"]["schemas"]
    assert schemas["ReceiveRequest"]["properties"]["lease_seconds"]["maximum"] == 60
    assert schemas["Extend"]["properties"]["lease_seconds"]["maximum"] == 60
    assert schemas["GiveBack"]["properties"]["delay_seconds"]["maximum"] == 60
    assert "message.receive_messages" not in on.message_operations
    assert "message.post_messages" in on.message_operations


def test_a_writer_on_a_fifo_queue_without_content_based_deduplication_serves_and_keeps_it(sqs: Any) -> None:
    # GIVEN a FIFO queue made by hand, without content-based deduplication
    sqs.create_queue(QueueName="plain.fifo", Attributes={"FifoQueue": "true"})
    client = create_app(Settings(queue_name="plain.fifo"), queue=SqsQueue("plain.fifo", sqs)).test_client()

    # THEN its spec requires a deduplication_id, and so does the writer
    served = client.get("/api/openapi.json").json()
    refused = client.post("/api/message", json={"body": "b", "group_id": "g"})
    accepted = client.post("/api/message", json={"body": "b", "group_id": "g", "deduplication_id": "d"})

    assert fields_of(served)["required"] == ["body", "group_id", "deduplication_id"]
    assert refused.status_code == 400 and "deduplication_id is required" in refused.json()["detail"]
    assert accepted.status_code == 201


def test_a_fifo_writer_that_cannot_reach_sqs_at_start_still_serves_and_says_so(
    closed_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    unreachable = SqsQueue("orders.fifo", create_client(Settings(sqs_endpoint_url=closed_endpoint, sqs_max_attempts=1)))

    client = create_app(Settings(queue_name="orders.fifo"), queue=unreachable).test_client()

    assert fields_of(client.get("/api/openapi.json").json())["required"] == ["body", "group_id"]
    assert "cannot read the queue's ContentBasedDeduplication" in caplog.text
    assert client.post("/api/message", json={"body": "b", "group_id": "g"}).status_code == 503
