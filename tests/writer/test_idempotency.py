"""The stores of Idempotency-Keys on their own: repeats, conflicts, the window, the bound on keys
in memory; and the shared store's table on moto, as two writers see it."""

from __future__ import annotations

from typing import Any, Optional, Union

import pytest

from doubles import Clock
from sqs_message_service.leases import TableUnavailable
from sqs_message_service.settings import Settings
from sqs_message_service.tables import ensure_table
from sqs_message_service.writer.idempotency import (
    IdempotencyStore,
    KeyInProgress,
    KeyReused,
    SharedStore,
    fingerprint,
    scoped_key,
)
from sqsinterface import create_client

ANSWER = {"message_id": "m-1"}
TABLE = "idempotency-keys"
WINDOW_S = 300
LEASE_S = 12


@pytest.fixture
def table(dynamodb: Any) -> str:
    ensure_table(dynamodb, TABLE)
    return TABLE


def shared_store(dynamodb: Any, clock: Clock) -> SharedStore:
    """One writer's view of the table: each call is another process or replica."""
    return SharedStore(TABLE, dynamodb, window_s=WINDOW_S, lease_s=LEASE_S, clock=clock)


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest, clock: Clock) -> Union[IdempotencyStore, SharedStore]:
    """Each store, for what both promise."""
    if request.param == "memory":
        return IdempotencyStore(window_s=WINDOW_S, max_keys=3, clock=clock)
    request.getfixturevalue("table")
    return shared_store(request.getfixturevalue("dynamodb"), clock)


def test_a_repeat_gets_the_first_answer(store: IdempotencyStore) -> None:
    assert store.begin(b"k", b"request") is None
    store.finish(b"k", ANSWER)

    assert store.begin(b"k", b"request") == ANSWER


def test_a_key_reused_with_another_request_is_refused(store: IdempotencyStore) -> None:
    store.begin(b"k", b"request")
    store.finish(b"k", ANSWER)

    with pytest.raises(KeyReused):
        store.begin(b"k", b"another request")


def test_a_repeat_while_the_first_is_in_progress_is_refused(store: IdempotencyStore) -> None:
    store.begin(b"k", b"request")

    with pytest.raises(KeyInProgress):
        store.begin(b"k", b"request")
    with pytest.raises(KeyReused):  # another request under a key in progress is still a reuse
        store.begin(b"k", b"another request")


def test_an_abandoned_key_sends_anew(store: IdempotencyStore) -> None:
    store.begin(b"k", b"request")
    store.abandon(b"k")

    assert store.begin(b"k", b"request") is None


def test_a_key_is_forgotten_after_the_window(store: IdempotencyStore, clock: Clock) -> None:
    store.begin(b"k", b"request")
    store.finish(b"k", ANSWER)

    clock.now += WINDOW_S - 1
    assert store.begin(b"k", b"request") == ANSWER
    clock.now += 1
    assert store.begin(b"k", b"request") is None


def test_keys_are_kept_apart(store: IdempotencyStore) -> None:
    store.begin(b"k", b"request")
    store.finish(b"k", ANSWER)

    assert store.begin(b"other", b"request") is None


def test_past_max_keys_the_oldest_is_forgotten(clock: Clock) -> None:
    store = IdempotencyStore(window_s=WINDOW_S, max_keys=3, clock=clock)
    for key in (b"a", b"b", b"c", b"d"):
        store.begin(key, b"request")
        store.finish(key, ANSWER)

    assert len(store) == 3
    assert store.begin(b"b", b"request") == ANSWER
    assert store.begin(b"a", b"request") is None  # forgotten: a first request again


def test_the_fingerprint_is_the_json_whatever_its_key_order() -> None:
    assert fingerprint({"body": "b", "delay_seconds": 1}) == fingerprint({"delay_seconds": 1, "body": "b"})
    assert fingerprint({"body": "b"}) != fingerprint({"body": "c"})


def test_keys_are_scoped_per_client() -> None:
    assert scoped_key("k", "client-1") != scoped_key("k", "client-2")
    assert scoped_key("k", "client-1") == scoped_key("k", "client-1")


# The shared store: what one writer did, another sees.


def test_a_repeat_on_another_writer_gets_the_first_answer(table: str, dynamodb: Any, clock: Clock) -> None:
    first, second = shared_store(dynamodb, clock), shared_store(dynamodb, clock)
    assert first.begin(b"k", b"request") is None

    with pytest.raises(KeyInProgress):
        second.begin(b"k", b"request")
    first.finish(b"k", ANSWER)
    assert second.begin(b"k", b"request") == ANSWER
    with pytest.raises(KeyReused):
        second.begin(b"k", b"another request")


def test_a_lapsed_lease_frees_the_key_and_the_late_writer_cannot_overwrite_it(
    table: str, dynamodb: Any, clock: Clock
) -> None:
    died, survivor = shared_store(dynamodb, clock), shared_store(dynamodb, clock)
    died.begin(b"k", b"request")  # and its writer died mid-send

    clock.now += LEASE_S - 1
    with pytest.raises(KeyInProgress):
        survivor.begin(b"k", b"request")
    clock.now += 1
    assert survivor.begin(b"k", b"request") is None  # the lease lapsed: this writer sends
    died.finish(b"k", {"message_id": "from the writer thought dead"})  # logged, not kept
    died.abandon(b"k")  # nor can it give back a claim no longer its own
    survivor.finish(b"k", ANSWER)

    assert survivor.begin(b"k", b"request") == ANSWER


def test_an_answered_key_has_no_lease_to_lapse(table: str, dynamodb: Any, clock: Clock) -> None:
    store = shared_store(dynamodb, clock)
    store.begin(b"k", b"request")
    store.finish(b"k", ANSWER)

    clock.now += LEASE_S * 10
    assert store.begin(b"k", b"request") == ANSWER


class RetriedOnce:
    """botocore retrying `operation` once after it succeeded, as when its answer is lost on the way
    back (a read timeout: standard retries send it again)."""

    def __init__(self, client: Any, operation: str) -> None:
        self.retried = 0
        client.meta.events.register(f"needs-retry.dynamodb.{operation}", self._needs_retry)

    def _needs_retry(self, attempts: int, **_: Any) -> Optional[float]:
        if attempts == 1:
            self.retried += 1
            return 0.0  # retry at once
        return None


def test_a_claim_whose_put_is_retried_is_still_this_writers(table: str, dynamodb: Any, clock: Clock) -> None:
    store, other = shared_store(dynamodb, clock), shared_store(dynamodb, clock)
    retried = RetriedOnce(dynamodb, "PutItem")

    assert store.begin(b"k", b"request") is None  # not a 409 against its own claim
    store.finish(b"k", ANSWER)

    assert retried.retried == 1
    assert other.begin(b"k", b"request") == ANSWER


def test_an_answer_whose_update_is_retried_is_kept_without_complaint(
    table: str, dynamodb: Any, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = shared_store(dynamodb, clock)
    store.begin(b"k", b"request")
    retried = RetriedOnce(dynamodb, "UpdateItem")

    store.finish(b"k", ANSWER)

    assert retried.retried == 1
    assert not [record for record in caplog.records if record.levelname == "ERROR"]
    assert store.begin(b"k", b"request") == ANSWER


def test_the_table_keeps_the_hashed_key_and_the_answer_never_the_body(table: str, dynamodb: Any, clock: Clock) -> None:
    key, request = scoped_key("client's key", "api key"), fingerprint({"body": "a secret"})
    store = shared_store(dynamodb, clock)
    store.begin(key, request)
    store.finish(key, ANSWER)

    [item] = dynamodb.scan(TableName=TABLE)["Items"]
    assert set(item) == {"key", "fingerprint", "state", "answer", "expires_at"}
    assert item["key"] == {"S": key.hex()} and item["fingerprint"] == {"S": request.hex()}
    assert int(item["expires_at"]["N"]) == clock.now + WINDOW_S  # the TTL attribute, in epoch seconds
    assert "secret" not in str(item) and "client's key" not in str(item)


def test_a_missing_table_is_unavailable(dynamodb: Any, clock: Clock) -> None:
    with pytest.raises(TableUnavailable, match="ResourceNotFoundException"):
        shared_store(dynamodb, clock).begin(b"k", b"request")


def test_an_unreachable_store_is_unavailable(closed_endpoint: str, clock: Clock) -> None:
    settings = Settings(dynamodb_endpoint_url=closed_endpoint, sqs_max_attempts=1)
    store = SharedStore(TABLE, create_client(settings, service="dynamodb"), window_s=WINDOW_S, lease_s=LEASE_S)

    with pytest.raises(TableUnavailable, match="Could not connect"):
        store.begin(b"k", b"request")
