"""The idempotency store on its own: repeats, conflicts, the window and the bound on keys."""

from __future__ import annotations

import pytest

from idempotency import IdempotencyStore, KeyInProgress, KeyReused, fingerprint, scoped_key

ANSWER = {"message_id": "m-1"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> IdempotencyStore:
    return IdempotencyStore(window_s=300, max_keys=3, clock=clock)


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


def test_an_abandoned_key_sends_anew(store: IdempotencyStore) -> None:
    store.begin(b"k", b"request")
    store.abandon(b"k")

    assert store.begin(b"k", b"request") is None


def test_a_key_is_forgotten_after_the_window(store: IdempotencyStore, clock: Clock) -> None:
    store.begin(b"k", b"request")
    store.finish(b"k", ANSWER)

    clock.now += 299
    assert store.begin(b"k", b"request") == ANSWER
    clock.now += 1
    assert store.begin(b"k", b"request") is None


def test_past_max_keys_the_oldest_is_forgotten(store: IdempotencyStore) -> None:
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
