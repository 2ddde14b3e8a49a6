"""worker: batching, retries with backoff, dead letters, heartbeats, idling, outages."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

import pytest

from helpers import wait_until
from sqs_message_service.dlq import SOURCE_ID, failure_attributes
from sqs_message_service.metrics import WorkerMetrics, WorkerStats, total
from sqs_message_service.settings import Settings
from sqs_message_service.tables import ensure_table
from sqs_message_service.worker.consumer import receivers_for
from sqs_message_service.worker.engine import Worker
from sqs_message_service.worker.pane import poll_depths
from sqs_message_service.worker.processed import Claim, ProcessedLedger, Verdict
from sqs_message_service.worker.processing import SimulatedWork
from sqsinterface import BATCH_MAX_ENTRIES, QueueUnavailable, ReceivedMessage, SqsQueue, create_client
from worker_doubles import FAST, Recorder, RunningWorker


def test_successes_are_recorded_then_deleted_in_batches(
    start_worker: Callable[..., RunningWorker], sqs_calls: dict[str, int], queue: SqsQueue
) -> None:
    bodies = [f"message {n}" for n in range(30)]

    running = start_worker(SimulatedWork(process_time_s=0.01, failure_rate=0), bodies)

    assert running.wait() == 0
    assert sorted(line.body for line in running.output_lines) == sorted(bodies)
    assert {line.receive_count for line in running.output_lines} == {1}
    for line in running.output_lines:  # SQS's send time and ours, both from this machine's clock here
        assert line.sent_at is not None and line.sent_at <= line.processed_at
    stats, _ = running.stats.snapshot()
    assert 0 < stats["end_to_end_p50_s"] <= stats["end_to_end_p99_s"] < 30
    assert (stats["received"], stats["processed"], stats["deleted"], stats["failed"]) == (30, 30, 30, 0)
    assert sum(queue.depth().values()) == 0
    assert sqs_calls["DeleteMessageBatch"] < 15  # coalesced across processors, not one per message


def test_the_stats_are_the_metrics_prometheus_scrapes(start_worker: Callable[..., RunningWorker]) -> None:
    bodies = [f"message {n}" for n in range(20)]

    running = start_worker(SimulatedWork(process_time_s=0, failure_rate=0.5, seed=4), bodies, max_receive_count=2)

    assert running.wait() == 0
    poll_depths(running.worker)  # as the stats pane does, every interval and for the summary
    stats, _ = running.stats.snapshot()
    assert stats["processed"] + stats["dead_lettered"] == 20 and stats["retried"] > 0  # a mixed run
    value = running.worker.registry.get_sample_value
    for name in WorkerMetrics.COUNTERS:
        assert value(f"worker_messages_{name}_total") == stats[name], name
    assert value("worker_processing_duration_seconds_count") == stats["processed"] + stats["failed"]
    assert value("worker_end_to_end_latency_seconds_count") == stats["processed"]
    assert value("worker_messages_in_flight") == 0
    # The depth poll: what the dead-letter queue holds is what was dead-lettered.
    assert value("sqs_queue_messages", {"queue": "messages", "state": "visible"}) == 0
    assert value("sqs_queue_messages", {"queue": "messages-dlq", "state": "visible"}) == stats["dead_lettered"]
    dead_letters_sent = value("sqs_requests_total", {"queue": "messages-dlq", "operation": "SendMessageBatch"})
    assert dead_letters_sent == stats["dead_lettered"]
    assert (value("sqs_requests_total", {"queue": "messages", "operation": "ReceiveMessage"}) or 0) >= 3


def test_the_stats_pane_shows_percentiles_of_the_last_interval(queues: tuple[SqsQueue, SqsQueue]) -> None:
    queue, dead_letter_queue = queues
    worker = Worker(
        queue=queue,
        dead_letter_queue=dead_letter_queue,
        processor=SimulatedWork(process_time_s=0, failure_rate=0),
        settings=Settings(),
    )
    stats = WorkerStats(worker.metrics, (queue, dead_letter_queue))
    for _ in range(10):
        worker.metrics.processing_duration.observe(0.001)
    _, mark = stats.snapshot()
    for _ in range(10):
        worker.metrics.processing_duration.observe(4.0)

    since_start, _ = stats.snapshot()
    last_interval, _ = stats.snapshot(since=mark)

    assert since_start["latency_p50_s"] <= 0.001
    assert 2.5 < last_interval["latency_p50_s"] <= 5.0  # the bucket that holds 4.0
    assert last_interval["end_to_end_p50_s"] is None  # nothing observed


def test_a_message_failing_every_time_is_dead_lettered_with_its_reasons_and_gone_from_the_source(
    start_worker: Callable[..., RunningWorker], queues: tuple[SqsQueue, SqsQueue], drain: Any
) -> None:
    ids: set[str] = set()

    def fail(message: ReceivedMessage) -> None:
        ids.add(message.id)
        raise ValueError("cannot parse order\x00 42")

    recorder = Recorder(behaviour=fail)

    running = start_worker(recorder, ["poison"], attributes={"kind": "order"})

    assert running.wait() == 0
    assert recorder.receive_counts("poison") == [1, 2, 3]
    queue, dead_letter_queue = queues
    assert sum(queue.depth().values()) == 0
    (dead,) = drain(dead_letter_queue)
    attributes = {name: value["StringValue"] for name, value in dead["MessageAttributes"].items()}
    assert dead["Body"] == "poison"
    assert attributes == {
        "kind": "order",
        SOURCE_ID: ids.pop(),
        "dead_letter.error_type": "ValueError",
        "dead_letter.error": "cannot parse order  42",
        "dead_letter.attempts": "3",
        "dead_letter.worker": running.worker.worker_id,
        "dead_letter.at": attributes["dead_letter.at"],
        "dead_letter.earlier": attributes["dead_letter.earlier"],
    }
    assert datetime.fromisoformat(attributes["dead_letter.at"]).tzinfo is not None
    earlier = json.loads(attributes["dead_letter.earlier"])  # each attempt's error, as this worker saw them
    assert [(n, kind, text) for n, _, kind, text in earlier] == [
        (1, "ValueError", "cannot parse order  42"),
        (2, "ValueError", "cannot parse order  42"),
    ]
    stats, _ = running.stats.snapshot()
    assert (stats["failed"], stats["retried"], stats["dead_lettered"], stats["processed"]) == (3, 2, 1, 0)
    assert running.output_lines == []


def test_a_message_with_no_room_for_the_reasons_is_left_to_sqs_redrive(
    start_worker: Callable[..., RunningWorker], queues: tuple[SqsQueue, SqsQueue], drain: Any
) -> None:
    own = {f"a{n}": "v" for n in range(5)}  # 5 + the 6 reasons > SQS's 10

    running = start_worker(SimulatedWork(process_time_s=0, failure_rate=1.0), ["crowded"], attributes=own)

    assert running.wait() == 0
    queue, dead_letter_queue = queues
    (dead,) = drain(dead_letter_queue)
    assert dead["Body"] == "crowded"
    assert {name: value["StringValue"] for name, value in dead["MessageAttributes"].items()} == own
    assert sum(queue.depth().values()) == 0


def test_earlier_attempts_go_only_where_a_seventh_attribute_fits(
    start_worker: Callable[..., RunningWorker], queues: tuple[SqsQueue, SqsQueue], drain: Any
) -> None:
    own = {f"a{n}": "v" for n in range(4)}  # 4 + the 6 reasons = SQS's 10: no room for the earlier ones

    running = start_worker(SimulatedWork(process_time_s=0, failure_rate=1.0), ["full"], attributes=own)

    assert running.wait() == 0
    (dead,) = drain(queues[1])
    names = set(dead["MessageAttributes"])
    assert len(names) == 10 and "dead_letter.error" in names and "dead_letter.earlier" not in names


def test_failure_attributes_are_short_printable_and_never_empty() -> None:
    message = ReceivedMessage(id="m-1", body="b", receipt_handle="r", receive_count=5)
    at = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)

    long_error = failure_attributes(message, RuntimeError("x\n" * 500), worker_id="host:1", at=at)
    silent_error = failure_attributes(message, KeyError(), worker_id="host:1", at=at)

    assert len(long_error["dead_letter.error"]) <= 256 and "\n" not in long_error["dead_letter.error"]
    assert silent_error["dead_letter.error"] == "(no message)"
    assert silent_error["dead_letter.attempts"] == "5"
    assert silent_error["dead_letter.at"] == "2026-11-22T12:00:00.000+00:00"


def test_a_failed_message_comes_back_long_before_the_visibility_timeout(
    start_worker: Callable[..., RunningWorker],
) -> None:
    def fail_first_attempt(message: ReceivedMessage) -> None:
        if message.receive_count == 1:
            raise RuntimeError("first attempt fails")

    recorder = Recorder(behaviour=fail_first_attempt)

    running = start_worker(recorder, ["flaky"], visibility_timeout_s=30, retry_backoff_base_s=1)

    assert running.wait() == 0
    (_, _, first), (_, _, second) = recorder.attempts
    assert second - first < 5  # backoff of 1-2 s, not the 30 s visibility timeout
    assert [line.receive_count for line in running.output_lines] == [2]


def test_a_slow_message_is_not_delivered_twice_while_its_heartbeat_runs(
    start_worker: Callable[..., RunningWorker],
) -> None:
    def slow(message: ReceivedMessage) -> None:
        time.sleep(4.5)  # more than twice the visibility timeout

    recorder = Recorder(behaviour=slow)

    # Two slots: one busy with the slow message, one polling all the while.
    running = start_worker(recorder, ["slow"], visibility_timeout_s=2, worker_concurrency=2)

    assert running.wait() == 0
    assert recorder.receive_counts("slow") == [1]
    assert [line.body for line in running.output_lines] == ["slow"]


def test_an_undecodable_body_fails_that_message_only(
    start_worker: Callable[..., RunningWorker], queues: tuple[SqsQueue, SqsQueue], drain: Any
) -> None:
    decoded: list[Any] = []

    def decode_json(message: ReceivedMessage) -> None:
        decoded.append(json.loads(message.body))

    bodies = ['{"n": 1}', "{not json", '{"n": 2}', '"\\ud800 lone"', '{"n": 3}']

    running = start_worker(decode_json, bodies, max_receive_count=2)

    assert running.wait() == 0
    assert sorted(d["n"] for d in decoded if isinstance(d, dict)) == [1, 2, 3]
    dead = sorted(m["Body"] for m in drain(queues[1]))
    assert "{not json" in dead
    assert running.stats.snapshot()[0]["failed"] >= 2  # twice for the broken one


def test_a_stop_finishes_work_in_flight_and_returns_what_was_not_started(
    start_worker: Callable[..., RunningWorker], queue: SqsQueue
) -> None:
    started = threading.Event()

    def slow(message: ReceivedMessage) -> None:
        started.set()
        time.sleep(1)

    running = start_worker(slow, [f"m{n}" for n in range(10)], burst=False, worker_concurrency=3)
    assert started.wait(10)

    running.worker.stop()

    assert running.wait() == 0
    done = len(running.output_lines)
    assert 1 <= done <= 6  # what was in flight finished; no new work began
    depth = queue.depth()
    assert depth["in_flight"] == 0  # nothing left invisible
    assert depth["visible"] == 10 - done


def test_the_next_messages_are_received_before_a_processor_frees_up(
    start_worker: Callable[..., RunningWorker], queue: SqsQueue
) -> None:
    # GIVEN one processor, busy with a slow message, and more messages waiting
    started, finish = threading.Event(), threading.Event()

    def slow(message: ReceivedMessage) -> None:
        started.set()
        assert finish.wait(10)

    running = start_worker(slow, [f"m{n}" for n in range(15)], burst=False, worker_concurrency=1)
    assert started.wait(10)

    # THEN a receive's worth is already taken ahead (prefetched), beside the one in progress
    try:
        wait_until(
            lambda: queue.depth()["in_flight"] == 1 + BATCH_MAX_ENTRIES,
            timeout_s=5,
            what="one message in progress and a receive's worth prefetched",
        )
    finally:
        finish.set()
    running.worker.stop()
    assert running.wait() == 0


def test_an_sqs_outage_is_logged_once_and_does_not_stop_the_worker(
    closed_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(sqs_endpoint_url=closed_endpoint, sqs_max_attempts=1, **FAST)
    client = create_client(settings)
    worker = Worker(
        queue=SqsQueue("messages", client),
        dead_letter_queue=SqsQueue("messages-dlq", client),
        processor=Recorder(),
        settings=settings,
    )
    running = RunningWorker(worker, burst=False)

    def attempts() -> float:  # each receive starts with the queue's URL, which SQS never gives
        return total(worker.queue.metrics.requests, "sqs_requests_total", queue="messages")

    wait_until(lambda: "receiving failed" in caplog.text, timeout_s=10, what="outage logged")
    wait_until(lambda: attempts() >= 4, timeout_s=10, what="three receives, with backoff")

    assert running.thread.is_alive()
    assert caplog.text.count("receiving failed") == 1
    worker.stop()
    assert running.wait() == 0


def test_a_fifo_group_is_processed_in_order_even_when_a_receive_brings_several_of_it(
    start_worker: Callable[..., RunningWorker],
) -> None:
    """moto, like SQS, returns up to 10 messages of one group per receive: they must not be
    processed concurrently, and a failure must hold back the ones after it."""
    bodies = [f"line {n:02d}" for n in range(30)]

    def uneven_and_sometimes_failing(message: ReceivedMessage) -> None:
        number = int(message.body.split()[1])
        time.sleep((7 * number % 5) / 1000)  # completion order would differ from arrival order
        if number % 5 == 0 and message.receive_count == 1:
            raise RuntimeError("first attempt fails")

    running = start_worker(uneven_and_sometimes_failing, bodies, queue_name="lines.fifo", max_receive_count=5)

    assert running.wait() == 0
    assert [line.body for line in running.output_lines] == bodies


class ReceivesAtOnce:
    """Watches ReceiveMessage calls on a client: how many were under way at once, at most. Each
    is held `hold_s` first, as a round trip to SQS would, so that overlaps can be seen.

    Then moto's own part runs one call at a time: its ReceiveMessage checks that a message is
    visible and marks it received in two steps, without a lock, so two calls at once can both
    take one message (on a busy machine, they did). SQS's receive is atomic."""

    def __init__(self, sqs: Any, hold_s: float = 0.05) -> None:
        self.hold_s, self.now, self.most, self.calls = hold_s, 0, 0, 0
        self._lock = threading.Lock()
        self._engine = threading.Lock()  # held from the end of the hold to the call's end
        sqs.meta.events.register("before-call.sqs.ReceiveMessage", self._started)
        sqs.meta.events.register("after-call.sqs.ReceiveMessage", self._ended)
        sqs.meta.events.register("after-call-error.sqs.ReceiveMessage", self._ended)

    def _started(self, **_: Any) -> None:
        with self._lock:
            self.now += 1
            self.calls += 1
            self.most = max(self.most, self.now)
        time.sleep(self.hold_s)
        self._engine.acquire()

    def _ended(self, **_: Any) -> None:
        self._engine.release()
        with self._lock:
            self.now -= 1


def test_a_backlog_is_fetched_by_several_receives_at_once(
    start_worker: Callable[..., RunningWorker], sqs: Any, queue: SqsQueue
) -> None:
    receives = ReceivesAtOnce(sqs)
    bodies = [f"m{n}" for n in range(120)]

    running = start_worker(SimulatedWork(process_time_s=0.05, failure_rate=0), bodies, worker_concurrency=64)

    assert running.wait() == 0
    assert receives.most == receivers_for(64) == 3
    assert sorted(line.body for line in running.output_lines) == sorted(bodies)  # each once
    assert sum(queue.depth().values()) == 0


def test_an_empty_queue_costs_one_long_poll_at_a_time(start_worker: Callable[..., RunningWorker], sqs: Any) -> None:
    receives = ReceivesAtOnce(sqs, hold_s=0)
    running = start_worker(Recorder(), ["the only one"], burst=False, worker_concurrency=64)
    wait_until(lambda: receives.calls >= 3, timeout_s=10, what="the queue polled, empty, twice")

    running.worker.stop()

    assert running.wait() == 0
    assert receives.most == 1


def test_an_idle_timer_under_a_second_still_long_polls(start_worker: Callable[..., RunningWorker], sqs: Any) -> None:
    waits: list[int] = []
    sqs.meta.events.register(
        "provide-client-params.sqs.ReceiveMessage", lambda params, **_: waits.append(params.get("WaitTimeSeconds", 0))
    )

    running = start_worker(Recorder(), ["the only one"], burst=False, exit_when_idle_s=0.5)

    assert running.wait() == 0  # idle: it stopped by itself
    assert waits and min(waits) >= 1, waits  # never a receive every BURST_POLL_S on an empty queue


def test_a_stop_with_several_receivers_gives_back_everything_not_started(
    start_worker: Callable[..., RunningWorker], sqs: Any, queue: SqsQueue
) -> None:
    receives = ReceivesAtOnce(sqs)
    started = threading.Event()

    def slow(message: ReceivedMessage) -> None:
        started.set()
        time.sleep(0.5)

    running = start_worker(slow, [f"m{n}" for n in range(100)], burst=False, worker_concurrency=40)
    wait_until(lambda: receives.most == 2, timeout_s=10, what="two receives at once")
    assert started.wait(10)

    running.worker.stop()

    assert running.wait() == 0
    done = len(running.output_lines)
    assert 1 <= done <= 40 + 2 * BATCH_MAX_ENTRIES  # at most what it could hold: none fetched past that
    depth = queue.depth()
    assert depth["in_flight"] == 0  # nothing left invisible: all not started was given back
    assert depth["visible"] == 100 - done


def test_slow_deletes_hold_the_processors_back_instead_of_being_dropped(
    start_worker: Callable[..., RunningWorker], sqs: Any, queue: SqsQueue, caplog: pytest.LogCaptureFixture
) -> None:
    def slow_delete(**_: Any) -> None:
        time.sleep(0.2)

    sqs.meta.events.register("before-call.sqs.DeleteMessageBatch", slow_delete)
    bodies = [f"m{n}" for n in range(60)]

    # 2 processors: 20 deletes may wait, 2 calls of 10 leave at a time, 5 times slower than the work
    running = start_worker(SimulatedWork(process_time_s=0, failure_rate=0), bodies, worker_concurrency=2)

    assert running.wait() == 0
    assert "not deleted" not in caplog.text
    stats, _ = running.stats.snapshot()
    assert (stats["processed"], stats["deleted"]) == (60, 60)
    assert sum(queue.depth().values()) == 0


def test_a_worker_holds_no_more_than_it_can_settle_while_deletes_are_slow(
    start_worker: Callable[..., RunningWorker], sqs: Any
) -> None:
    def slow_delete(**_: Any) -> None:
        time.sleep(0.3)

    sqs.meta.events.register("before-call.sqs.DeleteMessageBatch", slow_delete)
    held: list[int] = []
    running = start_worker(
        SimulatedWork(process_time_s=0, failure_rate=0), [f"m{n}" for n in range(120)], worker_concurrency=2
    )
    metrics = running.worker.metrics
    while running.thread.is_alive():
        held.append(metrics.count("received") - metrics.count("deleted"))
        time.sleep(0.01)

    assert running.wait() == 0
    assert metrics.count("deleted") == 120
    # What may be in flight (2 processing + a receive's worth ahead), the deletes allowed to wait (10 a
    # processor) and the 2 calls of 10 under way: the processors outrun the deletes 30 times
    # over, and still nothing more is received until the settler has handed messages over.
    assert max(held) <= 12 + 20 + 2 * BATCH_MAX_ENTRIES


def test_an_error_while_settling_one_message_leaves_the_worker_settling_the_rest(
    start_worker: Callable[..., RunningWorker], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    patched = threading.Event()
    running = start_worker(lambda message: patched.wait(10), [f"m{n}" for n in range(30)], visibility_timeout_s=2)
    observe = running.worker.metrics.processing_duration.observe
    broken: list[float] = []

    def observe_once_broken(amount: float, *args: Any) -> None:
        if not broken:
            broken.append(amount)
            raise RuntimeError("a bug while settling")
        observe(amount, *args)

    monkeypatch.setattr(running.worker.metrics.processing_duration, "observe", observe_once_broken)
    patched.set()

    assert running.wait() == 0  # that message came back after its visibility timeout, and went
    assert broken and "unexpected error settling message" in caplog.text
    assert running.worker.metrics.count("deleted") == 30


def test_a_record_is_written_before_its_message_is_deleted(
    start_worker: Callable[..., RunningWorker], sqs: Any
) -> None:
    bodies_by_handle: dict[str, str] = {}
    unwritten_at_delete: list[str] = []
    running: list[RunningWorker] = []

    def remember(message: ReceivedMessage) -> None:
        bodies_by_handle[message.receipt_handle] = message.body

    def check_written(params: dict[str, Any], **_: Any) -> None:
        written = {line.body for line in running[0].output_lines}
        deleted = {bodies_by_handle[entry["ReceiptHandle"]] for entry in params["Entries"]}
        unwritten_at_delete.extend(deleted - written)

    sqs.meta.events.register("before-parameter-build.sqs.DeleteMessageBatch", check_written)
    running.append(start_worker(remember, [f"m{n}" for n in range(25)]))

    assert running[0].wait() == 0
    assert len(running[0].output_lines) == 25 and unwritten_at_delete == []


# The worker with the processed ledger (PROCESSED_TABLE)


@pytest.fixture
def processed(dynamodb: Any) -> ProcessedLedger:
    ensure_table(dynamodb, "processed", role="processed-messages", setting="PROCESSED_TABLE")
    return ProcessedLedger("processed", dynamodb, queue_name="messages", window_s=3600)


def refuse_deletes(queue: SqsQueue, monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    """The queue's first `times` DeleteMessageBatch calls fail, as an SQS that times out would;
    the list counts the deletes refused."""
    delete, refused = queue.delete_messages, [0]

    def refusing(handles: Any) -> list[Any]:
        if refused[0] < times:
            refused[0] += 1
            return [QueueUnavailable("DeleteMessageBatch: refused by the test")] * len(handles)
        return delete(handles)

    monkeypatch.setattr(queue, "delete_messages", refusing)
    return refused


def test_a_redelivery_of_a_processed_message_is_deleted_without_the_step(
    start_worker: Callable[..., RunningWorker], processed: ProcessedLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a worker whose first deletes fail, so that what it processed comes back
    recorder = Recorder()
    bodies = [f"m{n}" for n in range(20)]
    running = start_worker(recorder, bodies, visibility_timeout_s=1, max_receive_count=5, processed=processed)
    refused = refuse_deletes(running.worker.queue, monkeypatch, times=2)

    # WHEN it runs until the queue is drained
    assert running.wait() == 0

    # THEN each message reached the step once, and the redeliveries were deleted as duplicates
    assert refused[0] == 2
    assert sorted(body for body, _, _ in recorder.attempts) == sorted(bodies)
    assert running.worker.metrics.count("duplicates") > 0
    assert running.worker.metrics.count("deleted") == 20 - running.worker.metrics.count("duplicates")


def test_an_async_step_with_the_processed_ledger_runs_each_message_once_whatever_sqs_redelivers(
    start_worker: Callable[..., RunningWorker], processed: ProcessedLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an async step, and a worker whose first deletes fail, so that what it processed comes back
    finished: list[str] = []

    async def step(message: ReceivedMessage) -> None:
        await asyncio.sleep(0.01)
        finished.append(message.body)

    bodies = [f"m{n}" for n in range(20)]
    running = start_worker(step, bodies, visibility_timeout_s=1, max_receive_count=5, processed=processed)
    refused = refuse_deletes(running.worker.queue, monkeypatch, times=2)

    # WHEN it runs until the queue is drained
    assert running.wait() == 0

    # THEN each message reached the step once, and the redeliveries were deleted as duplicates
    assert refused[0] == 2
    assert sorted(finished) == sorted(bodies)
    assert running.worker.coroutines is not None
    assert running.worker.metrics.count("duplicates") > 0


def test_a_failed_step_gives_its_claim_back_and_its_retry_runs(
    start_worker: Callable[..., RunningWorker], processed: ProcessedLedger
) -> None:
    def fail_first_time(message: ReceivedMessage) -> None:
        if message.receive_count == 1:
            raise RuntimeError("first attempt fails")

    recorder = Recorder(fail_first_time)
    running = start_worker(recorder, ["m1", "m2"], visibility_timeout_s=30, processed=processed)

    assert running.wait() == 0
    assert recorder.receive_counts("m1") == [1, 2] and recorder.receive_counts("m2") == [1, 2]
    assert running.worker.metrics.count("held") == 0  # the retry found its key free, not held
    assert running.worker.metrics.count("processed") == 2


def test_a_message_whose_key_another_worker_holds_comes_back_when_that_lease_ends(
    start_worker: Callable[..., RunningWorker], dynamodb: Any
) -> None:
    # GIVEN a FIFO message (known by its deduplication id, order-1001) whose key a worker that
    # was killed mid-step holds for 2 more seconds
    ensure_table(dynamodb, "processed", role="processed-messages", setting="PROCESSED_TABLE")
    ledgers = [
        ProcessedLedger("processed", dynamodb, queue_name="messages.fifo", window_s=3600, worker_id=name)
        for name in ("killed", "this")
    ]
    held_until, lease_ends_at = time.time() + 2, time.monotonic() + 2
    killed_claim = ReceivedMessage(id="earlier", body="m1", receipt_handle="-", deduplication_id="order-1001")
    assert [c.verdict for c in ledgers[0].claim([killed_claim], lease_until=held_until)] == [Verdict.CLAIMED]
    recorder = Recorder()

    # WHEN a worker receives it
    running = start_worker(
        recorder, ["m1"], queue_name="messages.fifo", processed=ledgers[1], deduplication_ids=["order-1001"]
    )

    # THEN it leaves it until that lease ends, then processes it, once
    assert running.wait() == 0
    assert [body for body, _, _ in recorder.attempts] == ["m1"]
    assert recorder.attempts[0][2] >= lease_ends_at - 0.1  # SQS's clock is ms, ours a float
    assert running.worker.metrics.count("held") >= 1


def test_a_stop_gives_back_the_claims_of_the_messages_it_gives_back(
    start_worker: Callable[..., RunningWorker], processed: ProcessedLedger, dynamodb: Any
) -> None:
    # GIVEN a worker with the processed ledger, busy with slow steps and more claimed in hand
    started = threading.Event()

    def slow(message: ReceivedMessage) -> None:
        started.set()
        time.sleep(0.3)

    running = start_worker(slow, [f"m{n}" for n in range(40)], processed=processed, burst=False)
    assert started.wait(10)

    # WHEN it stops
    running.worker.stop()

    # THEN what it finished is recorded done, and what it gave back unstarted has no claim left
    # in the way of the next worker
    states = [item["state"]["S"] for item in dynamodb.scan(TableName="processed")["Items"]]
    assert states.count("done") == running.worker.metrics.count("processed") > 0
    assert "processing" not in states
    assert running.worker.metrics.count("released") > 0


def test_a_table_that_answers_but_takes_no_claim_keeps_the_worker_waiting_longer_each_time(
    start_worker: Callable[..., RunningWorker],
    processed: ProcessedLedger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a table that describes itself (DescribeTable answers) but takes no claim, as a
    # throttled table or a role without PutItem would
    attempts: list[int] = []

    def refused(messages: Any, **_: Any) -> list[Claim]:
        attempts.append(len(messages))
        return [Claim(message, Verdict.UNAVAILABLE) for message in messages]

    monkeypatch.setattr(processed, "claim", refused)
    recorder = Recorder()

    # WHEN a worker tries for a while
    running = start_worker(
        recorder, [f"m{n}" for n in range(5)], processed=processed, burst=False, visibility_timeout_s=1
    )
    wait_until(lambda: len(attempts) >= 3, timeout_s=30, what="three claims tried")
    admission = running.worker.admission
    assert admission is not None

    # THEN nothing reached the step, and the outage was never taken as over: each trial that
    # failed made the next pause longer
    assert recorder.attempts == []
    assert admission.failures >= 2 and admission.down
    assert "works again" not in caplog.text
