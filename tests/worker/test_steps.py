"""The steps as users write them, run by the worker on moto: `async def` steps as coroutines, a
plain function returning an awaitable, a deadline (PROCESSING_TIMEOUT) for a step that never
returns, and what a step can say (`Reject`, `RetryLater`)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from helpers import wait_until
from sqsinterface import ReceivedMessage, Reject, RetryLater, SqsQueue
from worker_doubles import RunningWorker


def dead_letter_reasons(drain: Any, dead_letter_queue: SqsQueue) -> list[dict[str, str]]:
    return [
        {"body": dead["Body"], **{name: value["StringValue"] for name, value in dead["MessageAttributes"].items()}}
        for dead in drain(dead_letter_queue)
    ]


@pytest.fixture
def hung() -> Iterator[threading.Event]:
    """What a hung step waits on; set at the end so that its threads end with the test."""
    release = threading.Event()
    yield release
    release.set()
    for thread in threading.enumerate():  # let the released steps' threads say so while the test's log is open
        if thread.name.startswith("processor-"):
            thread.join(5)


# Async steps


def test_an_async_step_runs_each_of_many_messages_once_to_its_end_as_coroutines(
    start_worker: Callable[..., RunningWorker], queues: tuple[SqsQueue, SqsQueue]
) -> None:
    bodies = [f"message {n}" for n in range(120)]
    finished: list[str] = []
    threads: set[str] = set()
    running_now, most_at_once = 0, 0

    async def step(message: ReceivedMessage) -> None:
        nonlocal running_now, most_at_once
        running_now += 1  # one event loop: no lock needed, and none must be
        most_at_once = max(most_at_once, running_now)
        threads.add(threading.current_thread().name)
        await asyncio.sleep(0.2)  # long enough for several receives' worth to be under way at once
        running_now -= 1
        finished.append(message.body)  # only once the step's code ran to its end

    running = start_worker(step, bodies, worker_concurrency=32)

    assert running.wait() == 0
    assert sorted(finished) == sorted(bodies)  # each exactly once
    assert sorted(line.body for line in running.output_lines) == sorted(bodies)
    assert threads == {"coroutines"}  # not a thread each
    assert most_at_once > 10  # concurrently, up to WORKER_CONCURRENCY
    stats, _ = running.stats.snapshot()
    assert (stats["processed"], stats["deleted"], stats["failed"]) == (120, 120, 0)
    assert sum(queues[0].depth().values()) == 0


def test_a_plain_function_returning_an_awaitable_counts_only_once_it_was_awaited(
    start_worker: Callable[..., RunningWorker],
) -> None:
    bodies = [f"message {n}" for n in range(20)]
    finished: list[str] = []

    async def really(message: ReceivedMessage) -> None:
        await asyncio.sleep(0.001)
        finished.append(message.body)

    def step(message: ReceivedMessage) -> Any:  # a plain def returning a coroutine
        return really(message)

    running = start_worker(step, bodies)

    assert running.wait() == 0
    assert sorted(finished) == sorted(bodies)
    stats, _ = running.stats.snapshot()
    assert stats["processed"] == 20


def test_an_async_steps_failures_come_back_and_dead_letter_with_their_reasons(
    start_worker: Callable[..., RunningWorker], queues: tuple[SqsQueue, SqsQueue], drain: Any
) -> None:
    async def step(message: ReceivedMessage) -> None:
        await asyncio.sleep(0)
        if message.body == "poison":
            raise ValueError(f"cannot read {message.body}")

    running = start_worker(step, ["poison", "fine"], max_receive_count=2)

    assert running.wait() == 0
    (dead,) = dead_letter_reasons(drain, queues[1])
    assert (dead["body"], dead["dead_letter.error_type"], dead["dead_letter.error"]) == (
        "poison",
        "ValueError",
        "cannot read poison",
    )
    assert [line.body for line in running.output_lines] == ["fine"]


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_step_raising_system_exit_fails_that_message_and_the_worker_goes_on(
    start_worker: Callable[..., RunningWorker], kind: str
) -> None:
    def plain(message: ReceivedMessage) -> None:
        if message.body == "exits" and message.receive_count == 1:
            raise SystemExit(3)

    async def in_async(message: ReceivedMessage) -> None:
        plain(message)

    running = start_worker(plain if kind == "plain" else in_async, ["exits", "fine"], max_receive_count=2)

    assert running.wait() == 0
    assert sorted((line.body, line.receive_count) for line in running.output_lines) == [("exits", 2), ("fine", 1)]


# The deadline


def test_a_plain_step_that_never_returns_is_timed_out_dead_lettered_and_the_worker_still_stops(
    start_worker: Callable[..., RunningWorker],
    queues: tuple[SqsQueue, SqsQueue],
    drain: Any,
    hung: threading.Event,
) -> None:
    def step(message: ReceivedMessage) -> None:
        if message.body == "hangs":
            hung.wait()  # a socket with no timeout

    running = start_worker(
        step, ["hangs", "fine"], processing_timeout_s=0.5, max_receive_count=2, worker_concurrency=2, shutdown_grace_s=3
    )

    assert running.wait(30) == 0  # drained: the hung attempts were settled without their threads
    (dead,) = dead_letter_reasons(drain, queues[1])
    assert (dead["body"], dead["dead_letter.error_type"], dead["dead_letter.error"]) == (
        "hangs",
        "TimedOut",
        "timed out after 0.5 s",
    )
    assert dead["dead_letter.attempts"] == "2"
    stats, _ = running.stats.snapshot()
    assert (stats["timed_out"], stats["dead_lettered"], stats["processed"]) == (2, 1, 1)
    value = running.worker.registry.get_sample_value
    assert value("worker_stuck_threads") == 2  # both still hung, both replaced (bound: concurrency 2)
    assert not running.worker.healthy  # 2 stuck of MAX_STUCK_THREADS = WORKER_CONCURRENCY = 2
    started = time.monotonic()
    assert running.worker.stop()  # stuck threads are not waited for
    assert time.monotonic() - started < 3


def test_a_stuck_thread_is_replaced_and_health_holds_until_the_bound(
    start_worker: Callable[..., RunningWorker], hung: threading.Event
) -> None:
    def step(message: ReceivedMessage) -> None:
        if message.body == "hangs":
            hung.wait()

    running = start_worker(
        step,
        ["hangs"] + [f"m{n}" for n in range(10)],
        processing_timeout_s=0.3,
        max_receive_count=1,
        worker_concurrency=1,
        max_stuck_threads=3,
    )

    assert running.wait(30) == 0
    assert sorted(line.body for line in running.output_lines) == [f"m{n}" for n in range(10)]  # a new thread ran them
    assert running.worker.registry.get_sample_value("worker_stuck_threads") == 1
    assert running.worker.healthy  # 1 stuck, bound 3
    hung.set()  # the hung call returns at last: its outcome is dropped, the thread no longer stuck
    wait_until(
        lambda: running.worker.registry.get_sample_value("worker_stuck_threads") == 0,
        timeout_s=5,
        what="the stuck thread to return",
    )
    assert sorted(line.body for line in running.output_lines) == [f"m{n}" for n in range(10)]


def test_an_async_step_past_its_deadline_is_cancelled_and_comes_back_after_its_backoff(
    start_worker: Callable[..., RunningWorker], queues: tuple[SqsQueue, SqsQueue], drain: Any
) -> None:
    cancelled: list[int] = []

    async def step(message: ReceivedMessage) -> None:
        if message.receive_count == 1:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.append(message.receive_count)
                raise

    running = start_worker(step, ["slow once"], processing_timeout_s=0.3, max_receive_count=3)

    assert running.wait(30) == 0
    assert cancelled == [1]
    assert [(line.body, line.receive_count) for line in running.output_lines] == [("slow once", 2)]
    stats, _ = running.stats.snapshot()
    assert (stats["timed_out"], stats["failed"], stats["processed"]) == (1, 1, 1)
    assert running.worker.healthy


def test_a_stop_lets_async_attempts_finish_within_the_grace_and_gives_back_the_rest(
    start_worker: Callable[..., RunningWorker], queues: tuple[SqsQueue, SqsQueue]
) -> None:
    started = threading.Event()

    async def step(message: ReceivedMessage) -> None:
        started.set()
        await asyncio.sleep(0.5 if message.body.startswith("short") else 3600)

    running = start_worker(
        step,
        ["short 1", "short 2", "endless"],
        burst=False,
        shutdown_grace_s=2,
        worker_concurrency=3,
        processing_timeout_s=7200,
    )
    assert started.wait(10)
    time.sleep(0.2)  # all three under way
    begun = time.monotonic()

    running.worker.request_stop()

    assert running.wait(10) == 0  # nothing left in flight: the endless one was given back
    assert time.monotonic() - begun < 2.5
    assert sorted(line.body for line in running.output_lines) == ["short 1", "short 2"]
    visible = queues[0].depth()["visible"]
    assert visible == 1  # back at once, not after its visibility timeout


# What a step can say


def test_reject_dead_letters_on_the_first_attempt_with_its_reason(
    start_worker: Callable[..., RunningWorker], queues: tuple[SqsQueue, SqsQueue], drain: Any
) -> None:
    attempts: list[int] = []

    def step(message: ReceivedMessage) -> None:
        attempts.append(message.receive_count)
        raise Reject("not an order: no order_id")

    running = start_worker(step, ["{}"], max_receive_count=5)

    assert running.wait() == 0
    assert attempts == [1]
    (dead,) = dead_letter_reasons(drain, queues[1])
    assert (dead["dead_letter.error_type"], dead["dead_letter.error"], dead["dead_letter.attempts"]) == (
        "Reject",
        "not an order: no order_id",
        "1",
    )
    stats, _ = running.stats.snapshot()
    assert (stats["rejected"], stats["dead_lettered"], stats["retried"]) == (1, 1, 0)


def test_reject_on_fifo_dead_letters_that_message_and_keeps_its_groups_order(
    start_worker: Callable[..., RunningWorker], drain: Any
) -> None:
    bodies = [f"line {n:02d}" for n in range(12)]

    def step(message: ReceivedMessage) -> None:
        if message.body == "line 04":
            raise Reject("line 04 is not a line")

    running = start_worker(step, bodies, queue_name="lines.fifo", max_receive_count=5)

    assert running.wait() == 0
    assert [line.body for line in running.output_lines] == [body for body in bodies if body != "line 04"]
    dead_letter_queue = running.worker.dead_letter_queue
    assert [dead["body"] for dead in dead_letter_reasons(drain, dead_letter_queue)] == ["line 04"]


def test_retry_later_brings_the_message_back_after_that_many_seconds(
    start_worker: Callable[..., RunningWorker],
) -> None:
    seen: list[float] = []

    def step(message: ReceivedMessage) -> None:
        seen.append(time.monotonic())
        if message.receive_count == 1:
            raise RetryLater(6, "the API said Retry-After: 6")

    running = start_worker(step, ["rate limited"], retry_backoff_base_s=0, max_receive_count=3)

    assert running.wait(30) == 0
    assert len(seen) == 2
    assert 5.5 <= seen[1] - seen[0] <= 9  # not the 0 s backoff: the 6 s asked for
    assert [line.receive_count for line in running.output_lines] == [2]


@pytest.mark.parametrize("seconds, expected", [(6, 6), (0.2, 1), (-5, 0), (10**9, 43_200)])
def test_retry_later_takes_whole_seconds_within_sqs_bounds(seconds: float, expected: int) -> None:
    assert RetryLater(seconds).seconds == expected


@pytest.mark.parametrize("seconds", [float("nan"), "6", None, True])
def test_retry_later_refuses_what_is_not_a_number(seconds: Any) -> None:
    with pytest.raises(TypeError):
        RetryLater(seconds)
