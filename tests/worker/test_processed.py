"""worker/processed.py: the processed ledger on moto's DynamoDB, as several workers see it; its
keys, its calls per message, and a table that does not answer."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from doubles import Clock
from sqs_message_service.metrics import LedgerMetrics, by_label, total
from sqs_message_service.settings import Settings
from sqs_message_service.tables import ensure_table
from sqs_message_service.trace_header import with_idempotency_key
from sqs_message_service.worker.processed import ProcessedLedger, Verdict
from sqsinterface import ReceivedMessage, create_client

TABLE = "processed"
WINDOW_S = 3600
NOW = Clock.START


@pytest.fixture
def table(dynamodb: Any) -> str:
    ensure_table(dynamodb, TABLE, role="processed-messages", setting="PROCESSED_TABLE")
    return TABLE


def a_worker(client: Any, clock: Clock, name: str = "worker-a") -> ProcessedLedger:
    """One worker's ledger: each one is another worker process, with an owner of its own."""
    return ProcessedLedger(
        TABLE,
        client,
        queue_name="messages",
        window_s=WINDOW_S,
        worker_id=name,
        metrics=LedgerMetrics(),
        clock=clock,
    )


def message(n: int, **fields: Any) -> ReceivedMessage:
    return ReceivedMessage(id=f"id-{n}", body=f"body {n}", receipt_handle=f"handle-{n}", **fields)


def verdicts(claims: list[Any]) -> list[Verdict]:
    return [claim.verdict for claim in claims]


def calls(ledger: ProcessedLedger) -> dict[str, int]:
    assert ledger.metrics is not None
    return by_label(ledger.metrics.dynamodb_requests, "dynamodb_requests_total", "operation")


def test_fresh_keys_are_claimed_in_one_call(table: str, dynamodb: Any, clock: Clock) -> None:
    ledger = a_worker(dynamodb, clock)

    claims = ledger.claim([message(n) for n in range(10)], lease_until=NOW + 30)

    assert verdicts(claims) == [Verdict.CLAIMED] * 10
    assert calls(ledger) == {"TransactWriteItems": 1}
    record = dynamodb.get_item(TableName=TABLE, Key={"key": {"S": "messages/id:id-3"}})["Item"]
    assert record["state"]["S"] == "processing" and record["owner"]["S"] == ledger.owner
    assert float(record["lease_until"]["N"]) == NOW + 30
    assert int(record["expires_at"]["N"]) == NOW + WINDOW_S


def test_a_key_recorded_as_done_is_a_duplicate_for_every_worker(table: str, dynamodb: Any, clock: Clock) -> None:
    first, second = a_worker(dynamodb, clock), a_worker(dynamodb, clock, "worker-b")
    first.claim([message(1)], lease_until=NOW + 30)

    assert first.complete([message(1)]) == [None]
    clock.now += 100  # long after the lease: done is done

    assert verdicts(second.claim([message(1), message(2)], lease_until=clock.now + 30)) == [
        Verdict.DONE,
        Verdict.CLAIMED,
    ]
    assert verdicts(first.claim([message(1)], lease_until=clock.now + 30)) == [Verdict.DONE]


def test_a_key_under_another_live_lease_is_held_until_that_lease_ends(table: str, dynamodb: Any, clock: Clock) -> None:
    holder, other = a_worker(dynamodb, clock), a_worker(dynamodb, clock, "worker-b")
    holder.claim([message(1)], lease_until=NOW + 30)
    clock.now += 10

    (claim,) = other.claim([message(1)], lease_until=clock.now + 30)

    assert claim.verdict is Verdict.HELD
    assert claim.held_s == pytest.approx(20)


def test_a_lapsed_lease_is_claimed_again_at_once(table: str, dynamodb: Any, clock: Clock) -> None:
    killed, other = a_worker(dynamodb, clock), a_worker(dynamodb, clock, "worker-b")
    killed.claim([message(1)], lease_until=NOW + 30)
    clock.now += 30.001  # the message's invisibility, and the lease with it, just ended

    assert verdicts(other.claim([message(1)], lease_until=clock.now + 30)) == [Verdict.CLAIMED]


def test_a_lease_ending_as_its_message_comes_back_is_waited_out_not_sent_round_again(table: str, dynamodb: Any) -> None:
    # a real clock: the lease of a worker that died ends 0.3 s after its message came back here
    started = time.time()
    killed, other = (
        ProcessedLedger(TABLE, dynamodb, queue_name="messages", window_s=WINDOW_S, worker_id=name)
        for name in ("killed", "other")
    )
    killed.claim([message(1)], lease_until=started + 0.3)

    (claim,) = other.claim([message(1)], lease_until=started + 30)

    assert claim.verdict is Verdict.CLAIMED  # not HELD for 0.3 s, which would cost another receive
    assert time.time() - started >= 0.3


def test_a_record_past_its_window_counts_as_absent(table: str, dynamodb: Any, clock: Clock) -> None:
    ledger = a_worker(dynamodb, clock)
    ledger.claim([message(1)], lease_until=NOW + 30)
    ledger.complete([message(1)])
    clock.now += WINDOW_S  # DynamoDB's TTL may not have removed it yet

    assert verdicts(ledger.claim([message(1)], lease_until=clock.now + 30)) == [Verdict.CLAIMED]


def test_a_claim_given_back_frees_the_key_and_only_its_owner_can(table: str, dynamodb: Any, clock: Clock) -> None:
    owner, other = a_worker(dynamodb, clock), a_worker(dynamodb, clock, "worker-b")
    owner.claim([message(1), message(2)], lease_until=NOW + 30)

    other.give_back([message(1)])  # not its claim: left as it is
    assert verdicts(other.claim([message(1)], lease_until=NOW + 30)) == [Verdict.HELD]
    owner.give_back([message(1)])

    assert verdicts(other.claim([message(1), message(2)], lease_until=NOW + 30)) == [Verdict.CLAIMED, Verdict.HELD]


def test_the_heartbeat_extends_its_own_leases_only(table: str, dynamodb: Any, clock: Clock) -> None:
    owner, other = a_worker(dynamodb, clock), a_worker(dynamodb, clock, "worker-b")
    owner.claim([message(1)], lease_until=NOW + 30)
    other.claim([message(2)], lease_until=NOW + 30)

    owner.extend([message(1), message(2)], lease_until=NOW + 90)
    clock.now += 60

    assert verdicts(other.claim([message(1)], lease_until=clock.now + 30)) == [Verdict.HELD]
    assert verdicts(owner.claim([message(2)], lease_until=clock.now + 30)) == [Verdict.CLAIMED]  # lapsed


def test_an_extension_does_not_undo_a_completion(table: str, dynamodb: Any, clock: Clock) -> None:
    ledger = a_worker(dynamodb, clock)
    ledger.claim([message(1)], lease_until=NOW + 30)
    ledger.complete([message(1)])

    ledger.extend([message(1)], lease_until=NOW + 90)

    assert verdicts(ledger.claim([message(1)], lease_until=NOW + 30)) == [Verdict.DONE]


def test_two_copies_of_one_key_in_one_receive_are_claimed_once(table: str, dynamodb: Any, clock: Clock) -> None:
    key = with_idempotency_key("0123456789abcdef0123456789abcdef")
    copies = [message(1, trace_header=key), message(2, trace_header=key)]  # one request sent twice

    claims = a_worker(dynamodb, clock).claim(copies, lease_until=NOW + 30)

    assert verdicts(claims) == [Verdict.CLAIMED, Verdict.HELD]
    assert claims[1].held_s == pytest.approx(30)


def test_completions_leave_in_batches_of_25(table: str, dynamodb: Any, clock: Clock) -> None:
    ledger = a_worker(dynamodb, clock)
    messages = [message(n) for n in range(30)]
    ledger.claim(messages, lease_until=NOW + 30)

    assert ledger.complete(messages) == [None] * 30
    assert calls(ledger) == {"TransactWriteItems": 1, "BatchWriteItem": 2}


def test_a_table_that_does_not_answer_makes_every_claim_unavailable(closed_endpoint: str, clock: Clock) -> None:
    client = create_client(Settings(dynamodb_endpoint_url=closed_endpoint, dynamodb_max_attempts=1), service="dynamodb")
    ledger = a_worker(client, clock)

    assert verdicts(ledger.claim([message(1), message(2)], lease_until=NOW + 30)) == [Verdict.UNAVAILABLE] * 2
    assert all(error is not None for error in ledger.complete([message(1)]))
    ledger.give_back([message(1)])  # best effort: no raise
    assert ledger.metrics is not None
    assert total(ledger.metrics.ledger_errors, "worker_ledger_errors_total") == 3


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({}, "id:id-1"),
        ({"deduplication_id": "order-1001"}, "dedup:order-1001"),
        ({"deduplication_id": hashlib.sha256(b"body 1").hexdigest()}, "id:id-1"),  # SQS's, from the body
        (
            {"trace_header": with_idempotency_key("00112233445566778899aabbccddeeff")},
            "idempotency:00112233445566778899aabbccddeeff",
        ),
        ({"trace_header": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"}, "id:id-1"),  # someone else's
    ],
    ids=[
        "message-id",
        "fifo-deduplication-id",
        "content-based-deduplication",
        "writer-idempotency-key",
        "a-trace-header-without-a-key",
    ],
)
def test_a_message_is_known_by_its_processing_key(fields: dict[str, Any], key: str) -> None:
    assert message(1, **fields).processing_key == key
