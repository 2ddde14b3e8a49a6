"""sqsinterface: batch planning, sending with per-entry outcomes, and error translation."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from doubles import PartlyFailingClient
from sqs_message_service.settings import Settings
from sqs_message_service.sqs import billable_requests
from sqsinterface import (
    BATCH_MAX_BYTES,
    MessageRejected,
    NotAuthorized,
    OutgoingMessage,
    QueueNotFound,
    QueueUnavailable,
    SqsQueue,
    create_client,
    payload_bytes,
    plan_batches,
)


@pytest.mark.parametrize(
    ("sizes", "max_entries", "max_bytes", "expected"),
    [
        ([], 10, 100, []),
        ([1] * 25, 10, 100, [range(0, 10), range(10, 20), range(20, 25)]),
        ([40, 40, 40, 40], 10, 100, [range(0, 2), range(2, 4)]),
        ([50, 50, 1], 10, 100, [range(0, 2), range(2, 3)]),  # exactly full, then a new batch
        ([10, 500, 10], 10, 100, [range(0, 1), range(1, 2), range(2, 3)]),  # oversized goes alone
        ([500], 10, 100, [range(0, 1)]),
    ],
)
def test_plan_batches_respects_entry_and_byte_limits(
    sizes: list[int], max_entries: int, max_bytes: int, expected: list[range]
) -> None:
    assert plan_batches(sizes, max_entries=max_entries, max_bytes=max_bytes) == expected


def test_payload_bytes_counts_body_and_attributes_in_utf8() -> None:
    assert payload_bytes("h\u00e9", {}) == 3
    assert payload_bytes("x", {"k\u00e9": "v\u4e2d"}) == 1 + 3 + len("String") + 4


def test_send_uses_the_fewest_calls_and_every_id_is_in_the_queue(
    queue: SqsQueue, sqs_calls: dict[str, int], drain: Any
) -> None:
    messages = [OutgoingMessage(body=f"m{i}") for i in range(25)]

    results = queue.send(messages)

    assert all(r.ok for r in results)
    assert sqs_calls["SendMessageBatch"] == 3
    in_queue = {m["MessageId"]: m["Body"] for m in drain(queue)}
    assert in_queue == {r.message_id: m.body for r, m in zip(results, messages, strict=True)}


def test_send_splits_batches_by_payload_size(queue: SqsQueue, sqs_calls: dict[str, int]) -> None:
    big = "x" * (BATCH_MAX_BYTES // 2)  # two fit in a batch, a third does not

    results = queue.send([OutgoingMessage(body=big)] * 3)

    assert all(r.ok for r in results)
    assert sqs_calls["SendMessageBatch"] == 2


def test_attributes_delay_and_group_reach_sqs(queue: SqsQueue, drain: Any) -> None:
    queue.send([OutgoingMessage(body="b", attributes={"kind": "order"}, group_id="g")])

    (received,) = drain(queue)

    assert received["MessageAttributes"]["kind"] == {"DataType": "String", "StringValue": "order"}


def test_each_entry_reports_its_own_outcome(queue: SqsQueue, drain: Any) -> None:
    partly_failing = SqsQueue(queue.name, PartlyFailingClient(queue.client))
    bodies = ["a", "reject", "b", "throttle", "c"]

    results = partly_failing.send([OutgoingMessage(body=b) for b in bodies])

    assert [r.ok for r in results] == [True, False, True, False, True]
    assert isinstance(results[1].error, MessageRejected)
    assert isinstance(results[3].error, QueueUnavailable)
    assert "InvalidParameterValue" in str(results[1].error)
    assert sorted(m["Body"] for m in drain(queue)) == ["a", "b", "c"]


def test_a_missing_queue_is_queue_not_found(sqs: Any) -> None:
    missing = SqsQueue("no-such-queue", sqs)

    assert not missing.exists()
    with pytest.raises(QueueNotFound, match="no-such-queue"):
        missing.depth()


def test_an_unreachable_endpoint_is_queue_unavailable_and_fails_entries_not_the_call(
    closed_endpoint: str,
) -> None:
    client = create_client(Settings(sqs_endpoint_url=closed_endpoint, sqs_max_attempts=1))
    queue = SqsQueue("messages", client)

    with pytest.raises(QueueUnavailable, match="unreachable"):
        queue.depth()
    queue._url = f"{closed_endpoint}/000000000000/messages"  # skip the lookup: test send itself
    results = queue.send([OutgoingMessage(body="a"), OutgoingMessage(body="b")])
    assert [type(r.error) for r in results] == [QueueUnavailable, QueueUnavailable]


def test_missing_credentials_are_not_authorized(monkeypatch: pytest.MonkeyPatch, closed_endpoint: str) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    client = create_client(Settings(sqs_endpoint_url=closed_endpoint, sqs_max_attempts=1))

    with pytest.raises(NotAuthorized, match="no AWS credentials"):
        SqsQueue("messages", client).depth()


def test_calls_are_counted_by_operation(queue: SqsQueue) -> None:
    before = queue.calls.get("GetQueueAttributes", 0)

    queue.depth()
    queue.depth()

    assert queue.calls["GetQueueAttributes"] == before + 2


@pytest.mark.parametrize(
    ("payload", "requests"), [(0, 1), (1, 1), (65_536, 1), (65_537, 2), (262_144, 4), (262_145, 5)]
)
def test_sqs_bills_a_request_per_started_64_kib(payload: int, requests: int) -> None:
    assert billable_requests(payload) == requests


def test_billable_requests_count_calls_and_their_payload(queue: SqsQueue) -> None:
    assert queue.url  # the URL lookup is one billable request of its own
    before = queue.billable_requests

    queue.send([OutgoingMessage(body="x" * 40_000) for _ in range(5)])  # 200,000 bytes: 4 requests
    received = queue.receive(max_messages=10, wait_s=0)  # 4 requests if all 5 came back
    queue.delete_messages([message.receipt_handle for message in received])  # 1 request

    assert len(received) == 5
    assert queue.billable_requests - before == 4 + 4 + 1


@pytest.mark.parametrize(
    ("code", "sender_fault", "final"),
    [
        ("ReceiptHandleIsInvalid", False, True),  # LocalStack's shape: final whatever SenderFault says
        ("AWS.SimpleQueueService.ReceiptHandleIsInvalid", False, True),
        ("ReceiptHandleIsInvalid", True, True),
        ("InternalError", False, False),
        ("AnythingElse", True, True),
    ],
)
def test_a_batch_entry_no_retry_can_change_is_final_whatever_its_sender_fault(
    code: str, sender_fault: bool, final: bool
) -> None:
    client = boto3.client("sqs", region_name="us-east-1")
    with Stubber(client) as stubber:
        stubber.add_response("get_queue_url", {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q"})
        stubber.add_response(
            "delete_message_batch",
            {
                "Successful": [],
                "Failed": [{"Id": "0", "SenderFault": sender_fault, "Code": code, "Message": "m"}],
            },
        )

        (outcome,) = SqsQueue("q", client).delete_messages(["rh"])

    assert isinstance(outcome, MessageRejected if final else QueueUnavailable)
    assert code in str(outcome)
