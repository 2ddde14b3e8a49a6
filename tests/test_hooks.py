"""hooks.py: a `Hooks` of one's own sees each point of a message's life, in order, from the worker
and the writer that are handed it; and several hooks combined are each called, each with its own
watch."""

from __future__ import annotations

import contextlib
import io
import threading
from typing import Any, ContextManager, Iterator, Optional, Sequence

import sqs_setup
from server import create_app
from sqs_message_service.hooks import NO_HOOKS, UNWATCHED, HookList, Hooks, combine
from sqs_message_service.output import OutputWriter
from sqs_message_service.settings import Settings
from sqs_message_service.tracing import NO_TRACING
from sqs_message_service.verdicts import Reject
from sqs_message_service.worker.engine import Worker
from sqs_message_service.writer.service import WRITER_EXTENSION
from sqsinterface import OutgoingMessage, ReceivedMessage, SqsQueue


class Seen(Hooks):
    """Notes each point it is called at, with the body of the message it is about."""

    def __init__(self, name: str = "seen") -> None:
        self.name = name
        self.points: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def note(self, point: str, body: str = "") -> None:
        with self._lock:
            self.points.append((point, body))

    def of(self, body: str) -> list[str]:
        with self._lock:
            return [point for point, about in self.points if about == body]

    @contextlib.contextmanager
    def request(self, method: str, headers: Sequence[tuple[bytes, bytes]]) -> Iterator[Any]:
        self.note("request")
        yield f"{self.name}'s request"

    def answered(self, watch: Any, method: str, route: str, status: int, duration_s: float) -> None:
        self.note(f"answered {method} {route} {status} in {watch}")

    def created(self, message: OutgoingMessage, queue: str, *, by_request: bool = False) -> OutgoingMessage:
        self.note("created by the request" if by_request else "created", message.body)
        return message

    @contextlib.contextmanager
    def sending(self, queue: str, messages: Sequence[OutgoingMessage]) -> Iterator[Any]:
        for message in messages:
            self.note("sending", message.body)
        yield None

    def received(self, watch: Any, messages: Sequence[ReceivedMessage]) -> None:
        for message in messages:
            self.note("received", message.body)

    @contextlib.contextmanager
    def processing(self, message: ReceivedMessage, queue: str) -> Iterator[Any]:
        self.note("processing", message.body)
        yield f"{self.name}'s attempt"

    def attempted(self, message: ReceivedMessage, error: Optional[BaseException], step_s: float) -> None:
        self.note("succeeded" if error is None else f"failed: {error}", message.body)

    def settled(self, message: ReceivedMessage, how: str) -> None:
        self.note(f"settled: {how}", message.body)

    def dead_lettered(self, message: ReceivedMessage, error: BaseException) -> None:
        self.note("dead-lettered", message.body)

    def failed(self, watch: Any, error: BaseException, error_type: Optional[str] = None) -> None:
        self.note(f"failed in {watch}")


def test_a_worker_calls_its_hooks_at_each_point_of_a_message_s_life_in_order(sqs: Any) -> None:
    settings = Settings(receive_wait_s=1, stats_interval_s=60, retry_backoff_base_s=0, max_receive_count=1)
    sqs_setup.set_up(settings, sqs)
    queue = SqsQueue(settings.queue_name, sqs)
    assert all(result.ok for result in queue.send([OutgoingMessage(body="order 1"), OutgoingMessage(body="poison")]))

    def step(message: ReceivedMessage) -> None:
        if message.body == "poison":
            raise Reject("not an order")

    seen = Seen()
    worker = Worker(
        queue=queue,
        dead_letter_queue=SqsQueue(settings.dlq_name, sqs, queue.metrics),
        processor=step,
        settings=settings,
        output=OutputWriter(io.StringIO()),
        hooks=seen,
    )
    assert worker.run(burst=True) == 0

    assert seen.of("order 1") == ["received", "processing", "succeeded", "settled: deleted"]
    assert seen.of("poison") == [
        "received",
        "processing",
        "failed: not an order",
        "dead-lettered",
        "sending",
        "settled: deleted after dead-lettering",
    ]
    assert ("failed in seen's attempt", "") in seen.points  # the attempt's own watch, given back
    assert worker.metrics.count("processed") == 1 and worker.metrics.count("rejected") == 1  # the metrics' hooks too


def test_a_writer_calls_its_hooks_for_each_request_and_message(settings: Settings, queue: SqsQueue) -> None:
    seen = Seen()
    app = create_app(settings, queue=queue, hooks=seen)
    client = app.test_client()

    assert client.post("/api/message", json={"body": "one"}).status_code == 201
    assert client.post("/api/messages", json={"messages": [{"body": "two"}, {"body": "three"}]}).status_code == 200
    app.app.extensions[WRITER_EXTENSION].close()

    assert seen.of("one") == ["created by the request", "sending"]
    assert seen.of("two") == seen.of("three") == ["created", "sending"]
    answered = [point for point, _ in seen.points if point.startswith("answered")]
    assert answered == [
        "answered POST /api/message 201 in seen's request",
        "answered POST /api/messages 200 in seen's request",
    ]


def test_combined_hooks_are_each_called_in_order_each_with_its_own_watch() -> None:
    first, second = Seen("first"), Seen("second")
    both = combine(first, NO_HOOKS, second)
    message = ReceivedMessage(id="id-1", body="order 1", receipt_handle="handle-1")

    with both.processing(message, "messages") as watch:
        both.failed(watch, ValueError("no"))
    both.settled(message, "deleted")

    assert isinstance(both, HookList) and both.hooks == (first, second)
    assert first.points == [
        ("processing", "order 1"),
        ("failed in first's attempt", ""),
        ("settled: deleted", "order 1"),
    ]
    assert second.points == [
        ("processing", "order 1"),
        ("failed in second's attempt", ""),
        ("settled: deleted", "order 1"),
    ]


def test_one_watching_hook_among_others_is_called_as_it_would_be_alone() -> None:
    class Counting(Hooks):  # watches nothing: counts
        def __init__(self) -> None:
            self.settled_messages = 0
            self.failures: list[tuple[Any, str]] = []

        def settled(self, message: ReceivedMessage, how: str) -> None:
            self.settled_messages += 1

        def failed(self, watch: Any, error: BaseException, error_type: Optional[str] = None) -> None:
            self.failures.append((watch, str(error)))

    watching, counting = Seen(), Counting()
    both = combine(watching, counting)
    message = ReceivedMessage(id="id-1", body="order 1", receipt_handle="handle-1")
    attempt: ContextManager[Any] = both.processing(message, "messages")

    with attempt as watch:
        both.failed(watch, ValueError("no"))
    both.settled(message, "deleted")

    assert watch == "seen's attempt"  # the watching hook's own, not a tuple of one
    assert watching.points == [
        ("processing", "order 1"),
        ("failed in seen's attempt", ""),
        ("settled: deleted", "order 1"),
    ]
    assert counting.settled_messages == 1 and counting.failures == [(None, "no")]  # no watch of its own


def test_no_hooks_combine_to_the_hooks_that_do_nothing_and_one_to_itself() -> None:
    seen = Seen()

    assert combine() is NO_HOOKS and combine(NO_HOOKS, Hooks()) is NO_HOOKS
    assert combine(NO_HOOKS, seen) is seen
    assert combine(combine(seen, Seen()), Seen()).hooks[0] is seen  # type: ignore[attr-defined]


def test_tracing_off_is_left_out_and_a_list_that_watches_nothing_gives_the_one_empty_context() -> None:
    class Counting(Hooks):
        def attempted(self, message: Any, error: Optional[BaseException], step_s: float) -> None:
            pass

    counting = Counting()

    assert combine(NO_TRACING) is NO_HOOKS and combine(NO_TRACING, counting) is counting
    both = combine(NO_TRACING, counting, Counting())
    assert isinstance(both, HookList) and len(both.hooks) == 2
    assert both.processing(object(), "q") is UNWATCHED and both.settling("delete", "q", []) is UNWATCHED
