"""leases.py: the one lease store. Its conditions (a fresh claim, a free claim, a change by the
owner) on moto's DynamoDB, and its one translation of botocore's errors."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest

from sqs_message_service.leases import Cancelled, KeyTaken, LeaseTable, TableUnavailable
from sqs_message_service.tables import ensure_table

NOW = 1_700_000_000.0


@pytest.fixture
def leases(dynamodb: Any) -> LeaseTable:
    ensure_table(dynamodb, "leases")
    return LeaseTable("leases", dynamodb, claimed="working")


def record(key: str, owner: str, *, lease_until: float, expires_at: float, state: str = "working") -> dict[str, Any]:
    return {
        "key": {"S": key},
        "state": {"S": state},
        "owner": {"S": owner},
        "lease_until": {"N": str(lease_until)},
        "expires_at": {"N": str(expires_at)},
    }


def test_a_claim_takes_a_free_key_and_a_live_one_is_refused_with_its_record(leases: LeaseTable) -> None:
    leases.put_claim(record("k", "first", lease_until=NOW + 30, expires_at=NOW + 3600), now=NOW)

    with pytest.raises(KeyTaken) as taken:
        leases.put_claim(record("k", "second", lease_until=NOW + 30, expires_at=NOW + 3600), now=NOW + 1)

    assert taken.value.record["owner"]["S"] == "first"


@pytest.mark.parametrize("later", ["lease lapsed", "past its window"])
def test_a_claim_takes_a_key_whose_lease_lapsed_or_whose_window_passed(leases: LeaseTable, later: str) -> None:
    state = "working" if later == "lease lapsed" else "done"
    leases.put_claim(record("k", "dead", lease_until=NOW + 30, expires_at=NOW + 3600, state=state), now=NOW)
    now = NOW + 31 if later == "lease lapsed" else NOW + 3601

    leases.put_claim(record("k", "next", lease_until=now + 30, expires_at=now + 3600), now=now)

    item = leases.client.get_item(TableName="leases", Key={"key": {"S": "k"}})["Item"]
    assert item["owner"]["S"] == "next"


def test_a_fresh_claim_refuses_any_record_and_a_done_record_within_its_window_is_never_free(
    leases: LeaseTable,
) -> None:
    leases.put_claim(record("k", "a", lease_until=NOW, expires_at=NOW + 3600, state="done"), now=NOW)

    refused = leases.transact(
        [
            {
                "Put": leases.claim(
                    record("k", "b", lease_until=NOW + 99, expires_at=NOW + 9), now=NOW + 100, fresh_only=True
                )
            }
        ]
    )
    with pytest.raises(KeyTaken):
        leases.put_claim(record("k", "b", lease_until=NOW + 130, expires_at=NOW + 3700), now=NOW + 100)

    assert refused[0] is not None and refused[0]["Code"] == "ConditionalCheckFailed"


def test_a_change_to_a_claim_is_its_owners_only(leases: LeaseTable) -> None:
    leases.put_claim(record("k", "owner", lease_until=NOW + 30, expires_at=NOW + 3600), now=NOW)

    def give_back(owner: str) -> None:
        with leases.call("DeleteItem"):
            leases.client.delete_item(
                TableName="leases", Key={"key": {"S": "k"}}, **leases.owned(owner, still_claimed=True)
            )

    with pytest.raises(KeyTaken):
        give_back("someone else")
    give_back("owner")

    assert "Item" not in leases.client.get_item(TableName="leases", Key={"key": {"S": "k"}})


def client_error(code: str, **extra: Any) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "said the table"}, **extra}, "Op")


def test_every_error_is_translated_once_and_counted() -> None:
    calls: list[str] = []
    failures: list[int] = []
    leases = LeaseTable("t", client=None, claimed="working", counted=calls.append, failed=lambda: failures.append(1))

    def raising(error: Exception) -> Exception:
        with pytest.raises(Exception) as raised:
            with leases.call("PutItem"):
                raise error
        return raised.value

    taken = raising(client_error("ConditionalCheckFailedException", Item={"owner": {"S": "x"}}))
    cancelled = raising(client_error("TransactionCanceledException", CancellationReasons=[{"Code": "None"}]))
    throttled = raising(client_error("ProvisionedThroughputExceededException"))
    unreachable = raising(botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))

    assert isinstance(taken, KeyTaken) and taken.record == {"owner": {"S": "x"}}
    assert isinstance(cancelled, Cancelled) and cancelled.reasons == [{"Code": "None"}]
    assert isinstance(throttled, TableUnavailable)
    assert str(throttled) == "PutItem 't': ProvisionedThroughputExceededException: said the table"
    assert isinstance(unreachable, TableUnavailable) and "Could not connect" in str(unreachable)
    assert calls == ["PutItem"] * 4 and len(failures) == 2  # a refusal or a cancellation is not the table failing
