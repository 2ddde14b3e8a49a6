"""batcher.GroupCommit: when calls start, what they carry, and how failures stay contained."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

import pytest

from sqs_message_service.batcher import Closed, GroupCommit, Overloaded

TIMEOUT_S = 5
HELD_S = 60  # how long a held submitter would wait: far past TIMEOUT_S, so only a wake-up lets it on


class RecordingFlush:
    """A flush that records each call's items, and can be held until released."""

    def __init__(self, *, hold: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        self.started.release()
        assert self.release.wait(TIMEOUT_S)
        if any(item < 0 for item in items):
            raise ValueError("negative item")
        return [item * 10 for item in items]


def wait_started(flush: RecordingFlush, calls: int = 1) -> None:
    for _ in range(calls):
        assert flush.started.acquire(timeout=TIMEOUT_S), "flush was not called"


def held_call(first: int = 1, **options: Any) -> tuple[RecordingFlush, GroupCommit[int, int], Future[int]]:
    """A group commit (with `options`) whose first call, carrying `first`, is under way and held
    until `flush.release` is set."""
    flush = RecordingFlush(hold=True)
    group: GroupCommit[int, int] = GroupCommit(flush, **options)
    submitted = group.submit(first)
    wait_started(flush)
    return flush, group, submitted


def test_a_lone_item_leaves_at_once_in_a_call_of_its_own() -> None:
    flush = RecordingFlush()
    group = GroupCommit(flush, max_batch=10)

    assert group.submit(7).result(TIMEOUT_S) == 70
    assert flush.calls == [[7]]
    group.close()


def test_items_arriving_during_a_call_leave_together_in_the_next() -> None:
    flush, group, first = held_call(max_batch=10, max_concurrent=2)

    waiting = [group.submit(n) for n in range(2, 7)]
    assert group.pending == 5  # fewer than a full batch: no second concurrent call
    flush.release.set()

    assert [f.result(TIMEOUT_S) for f in [first, *waiting]] == [10, 20, 30, 40, 50, 60]
    assert flush.calls == [[1], [2, 3, 4, 5, 6]]
    group.close()


def test_linger_makes_a_stream_share_calls() -> None:
    flush = RecordingFlush()
    group = GroupCommit(flush, max_batch=10, linger_s=0.3)

    first = group.submit(1)
    second = group.submit(2)  # within the linger of the first

    assert [first.result(TIMEOUT_S), second.result(TIMEOUT_S)] == [10, 20]
    assert flush.calls == [[1, 2]]
    group.close()


def test_eager_when_quiet_sends_a_lone_item_at_once_and_lingers_for_a_stream() -> None:
    flush = RecordingFlush()
    group = GroupCommit(flush, max_batch=10, linger_s=0.3, eager_when_quiet=True)

    started = time.monotonic()
    assert group.submit(1).result(TIMEOUT_S) == 10
    lone_s = time.monotonic() - started
    second = group.submit(2)  # within the linger of the first: a stream
    third = group.submit(3)

    assert [second.result(TIMEOUT_S), third.result(TIMEOUT_S)] == [20, 30]
    assert lone_s < 0.15  # did not wait out the 0.3 s linger
    assert flush.calls == [[1], [2, 3]]
    group.close()


def test_a_full_batch_starts_a_concurrent_call_and_the_rest_waits() -> None:
    flush, group, first = held_call(0, max_batch=3, max_concurrent=2)

    rest = [group.submit(n) for n in range(1, 5)]
    wait_started(flush)  # a second call began while the first is still in flight
    assert flush.calls[1] == [1, 2, 3]
    assert group.pending == 1
    flush.release.set()

    assert [f.result(TIMEOUT_S) for f in [first, *rest]] == [0, 10, 20, 30, 40]
    assert flush.calls[2] == [4]
    group.close()


def test_a_failing_call_fails_only_its_own_items() -> None:
    flush, group, blocker = held_call(5, max_batch=2)
    doomed = [group.submit(-1), group.submit(6)]  # one call: both fail
    fine = group.submit(7)  # the call after
    flush.release.set()

    assert blocker.result(TIMEOUT_S) == 50
    for future in doomed:
        with pytest.raises(ValueError, match="negative item"):
            future.result(TIMEOUT_S)
    assert fine.result(TIMEOUT_S) == 70
    group.close()


def test_a_failing_on_batch_neither_drops_its_call_nor_ends_its_sender() -> None:
    flush = RecordingFlush()
    reports: list[int] = []

    def on_batch(waits_s: list[float]) -> None:
        reports.append(len(waits_s))
        if len(reports) == 1:
            raise RuntimeError("metrics broke")

    group = GroupCommit(flush, max_batch=10, max_concurrent=2, on_batch=on_batch)

    assert group.submit(1).result(TIMEOUT_S) == 10
    assert [group.submit(n).result(TIMEOUT_S) for n in (2, 3)] == [20, 30]
    assert flush.calls == [[1], [2], [3]] and reports == [1, 1, 1]
    group.close()


def test_submitting_past_the_pending_limit_is_refused() -> None:
    flush, group, _ = held_call(max_batch=10, max_pending=2)
    group.submit(2)
    group.submit(3)

    with pytest.raises(Overloaded):
        group.submit(4)
    flush.release.set()
    group.close()


def test_a_submitter_willing_to_wait_gets_in_once_a_call_takes_the_pending_items() -> None:
    flush, group, _ = held_call(max_batch=2, max_pending=2)
    group.submit(2)
    group.submit(3)  # full: the call under way holds its thread
    with pytest.raises(Overloaded):
        group.submit(4, wait_s=0.05)  # nothing left meanwhile

    waiting = threading.Thread(target=lambda: results.append(group.submit(4, wait_s=HELD_S)), daemon=True)
    results: list[Future[int]] = []
    waiting.start()
    waiting.join(0.1)
    assert waiting.is_alive() and not results  # held back, not refused
    flush.release.set()  # the first call ends, the next takes 2 and 3: room for 4
    waiting.join(TIMEOUT_S)

    assert results[0].result(TIMEOUT_S) == 40
    group.close()


def test_close_wakes_a_waiting_submitter_with_closed() -> None:
    flush, group, _ = held_call(max_batch=10, max_pending=1)
    group.submit(2)
    raised: list[BaseException] = []

    def submit() -> None:
        try:
            group.submit(3, wait_s=HELD_S)
        except (Closed, Overloaded) as exc:
            raised.append(exc)

    waiting = threading.Thread(target=submit, daemon=True)
    waiting.start()
    waiting.join(0.1)
    assert waiting.is_alive()  # held, waiting for room, when the close comes
    closing = threading.Thread(target=group.close)
    closing.start()
    waiting.join(TIMEOUT_S / 2)  # the held call gives up after TIMEOUT_S: only the close can wake it before
    assert not waiting.is_alive()  # woken by the close itself, while the call still holds its thread
    flush.release.set()
    closing.join(TIMEOUT_S)

    assert len(raised) == 1 and isinstance(raised[0], Closed)


def test_a_cancelled_item_is_not_sent() -> None:
    flush, group, _ = held_call(max_batch=10)
    gave_up: Future[int] = group.submit(2)
    kept = group.submit(3)

    assert gave_up.cancel()
    flush.release.set()

    assert kept.result(TIMEOUT_S) == 30
    assert flush.calls == [[1], [3]]
    group.close()


def test_close_lets_pending_items_leave_then_refuses_more() -> None:
    flush, group, first = held_call(max_batch=10)
    second = group.submit(2)
    flush.release.set()

    group.close(timeout_s=TIMEOUT_S)

    assert (first.result(0), second.result(0)) == (10, 20)
    with pytest.raises(Closed):
        group.submit(3)


def test_a_flush_returning_the_wrong_number_of_results_fails_its_items() -> None:
    group: GroupCommit[int, int] = GroupCommit(lambda items: [], max_batch=10)

    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        group.submit(1).result(TIMEOUT_S)
    group.close()
