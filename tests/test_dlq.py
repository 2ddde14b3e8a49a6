"""dlq.py: listing dead letters consumes none; redrive moves each back exactly once."""

from __future__ import annotations

import io
from datetime import datetime, timezone
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from sqs_message_service import dlq
from sqs_message_service.dlq import earlier_attribute, failure_attributes
from sqsinterface import OutgoingMessage, ReceivedMessage, SqsQueue

AT = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def dead_letter(body: str, *, reasons: bool = True, **own: str) -> OutgoingMessage:
    """A dead letter as the worker leaves it (with reasons), or as SQS's redrive does (without)."""
    attributes = dict(own)
    if reasons:
        failed = ReceivedMessage(id=f"id-of-{body}", body=body, receipt_handle="r", receive_count=3)
        attributes.update(failure_attributes(failed, ValueError(f"bad {body}"), worker_id="host:7", at=AT))
    return OutgoingMessage(body=body, attributes=attributes)


def test_list_shows_each_reason_and_consumes_nothing(queues: tuple[SqsQueue, SqsQueue]) -> None:
    _, dead_letter_queue = queues
    dead_letter_queue.send([dead_letter("order 1"), dead_letter("order 2", reasons=False)])
    out = io.StringIO()

    shown = dlq.list_dead_letters(dead_letter_queue, max_messages=100, bodies=False, out=out)

    text = out.getvalue()
    assert shown == 2
    assert "id-of-order 1  3 attempts, 2026-11-22T12:00:00.000+00:00, host:7: ValueError: bad order 1" in text
    assert "no reason recorded" in text
    assert "order 2" not in text  # bodies only with --bodies
    assert dead_letter_queue.depth()["visible"] == 2  # all visible again: nothing consumed


def test_list_shows_every_attempt_the_worker_saw_and_counts_in_words(queues: tuple[SqsQueue, SqsQueue]) -> None:
    # GIVEN one dead letter that failed twice before its last attempt
    _, dead_letter_queue = queues
    letter = dead_letter("order 3")
    earlier = earlier_attribute(
        [
            [1, "2026-11-22T11:58:00.000+00:00", "TimeoutError", "slow"],
            [2, "2026-11-22T11:59:00.000+00:00", "KeyError", "'sku'"],
        ]
    )
    dead_letter_queue.send([OutgoingMessage(body=letter.body, attributes={**letter.attributes, **earlier})])
    out = io.StringIO()

    # WHEN it is listed
    dlq.list_dead_letters(dead_letter_queue, max_messages=100, bodies=False, out=out)

    # THEN every attempt's reason shows, in order, and one is "1 dead letter"
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("id-of-order 3  3 attempts, 2026-11-22T12:00:00.000+00:00")
    assert lines[1:3] == [
        "    attempt 1, 2026-11-22T11:58:00.000+00:00: TimeoutError: slow",
        "    attempt 2, 2026-11-22T11:59:00.000+00:00: KeyError: 'sku'",
    ]
    assert lines[3] == "1 dead letter shown ('messages-dlq')"


def test_redrive_moves_every_dead_letter_back_exactly_once(queues: tuple[SqsQueue, SqsQueue], drain: Any) -> None:
    queue, dead_letter_queue = queues
    bodies = [f"order {n}" for n in range(25)]
    dead_letter_queue.send([dead_letter(body, reasons=n % 2 == 0, kind="order") for n, body in enumerate(bodies)])

    moved = dlq.redrive(dead_letter_queue, queue, method="receive")

    back = drain(queue)
    assert moved == 25
    assert sorted(message["Body"] for message in back) == sorted(bodies)
    for message in back:  # as first sent: their own attributes, not the reasons
        assert {name: value["StringValue"] for name, value in message["MessageAttributes"].items()} == {"kind": "order"}
    assert sum(dead_letter_queue.depth().values()) == 0


def test_redrive_max_moves_that_many_and_leaves_the_rest(queues: tuple[SqsQueue, SqsQueue]) -> None:
    queue, dead_letter_queue = queues
    dead_letter_queue.send([dead_letter(f"order {n}") for n in range(12)])
    dead_letter_queue.send([dead_letter(f"order {n}") for n in range(12, 18)])

    moved = dlq.redrive(dead_letter_queue, queue, max_messages=7)  # auto: --max means by hand

    assert moved == 7
    assert queue.depth()["visible"] == 7
    assert dead_letter_queue.depth()["visible"] == 11


def test_the_command_line_lists_then_redrives(
    queues: tuple[SqsQueue, SqsQueue], capsys: pytest.CaptureFixture[str]
) -> None:
    queue, dead_letter_queue = queues
    dead_letter_queue.send([dead_letter("order 1")])

    assert dlq.main(["list", "--bodies"]) == 0
    assert "ValueError: bad order 1" in capsys.readouterr().out
    assert dlq.main(["redrive", "--method", "receive"]) == 0
    assert "1 messages moved from 'messages-dlq' back to 'messages'" in capsys.readouterr().out
    assert queue.depth()["visible"] == 1


def stubbed_queues() -> tuple[SqsQueue, SqsQueue, Stubber]:
    """Both queues on a client whose every answer the test gives (botocore's Stubber)."""
    client = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    for name in ("messages", "messages-dlq"):
        url = f"https://sqs.us-east-1.amazonaws.com/123456789012/{name}"
        stubber.add_response("get_queue_url", {"QueueUrl": url}, {"QueueName": name})
        stubber.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": f"arn:aws:sqs:us-east-1:123456789012:{name}"}},
            {"QueueUrl": url, "AttributeNames": ["QueueArn"]},
        )
    return SqsQueue("messages", client), SqsQueue("messages-dlq", client), stubber


def test_where_sqs_has_move_tasks_redrive_uses_one_and_follows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlq, "MOVE_TASK_POLL_S", 0)
    source, dead_letter_queue, stubber = stubbed_queues()
    stubber.add_response(
        "start_message_move_task",
        {"TaskHandle": "task-1"},
        {
            "SourceArn": "arn:aws:sqs:us-east-1:123456789012:messages-dlq",
            "DestinationArn": "arn:aws:sqs:us-east-1:123456789012:messages",
            "MaxNumberOfMessagesPerSecond": 50,
        },
    )
    running = {"TaskHandle": "task-1", "Status": "RUNNING", "ApproximateNumberOfMessagesMoved": 40}
    completed = {"Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": 120}  # SQS drops the handle
    for task in (running, completed):
        task = {**task, "ApproximateNumberOfMessagesToMove": 120}
        stubber.add_response("list_message_move_tasks", {"Results": [task]})
    seen: list[tuple[int, Any]] = []

    with stubber:
        moved = dlq.redrive(dead_letter_queue, source, rate=50, progress=lambda m, t: seen.append((m, t)))

    assert moved == 120
    assert seen == [(40, 120), (120, 120)]
    stubber.assert_no_pending_responses()


def test_where_sqs_has_no_move_tasks_redrive_says_so_and_moves_by_hand() -> None:
    source, dead_letter_queue, stubber = stubbed_queues()
    stubber.add_client_error("start_message_move_task", "UnsupportedOperation", "not here", 400)
    stubber.add_response("receive_message", {"Messages": []})
    said: list[str] = []

    with stubber:
        moved = dlq.redrive(dead_letter_queue, source, say=said.append)

    assert moved == 0
    assert "StartMessageMoveTask is not available here" in said[0]
    stubber.assert_no_pending_responses()


# Each attempt's error, for the console


def test_the_history_keeps_each_failed_attempt_until_the_message_is_dead_lettered_or_succeeds() -> None:
    history = dlq.FailureHistory(max_messages=2)
    first = ReceivedMessage(id="m-1", body="b", receipt_handle="r", receive_count=1)
    second = ReceivedMessage(id="m-1", body="b", receipt_handle="r2", receive_count=2)

    history.failed(first, ValueError("no stock\nat all"), AT)
    history.failed(second, KeyError("sku"), AT)

    assert history.forget("m-1") == [
        [1, "2026-11-22T12:00:00.000+00:00", "ValueError", "no stock at all"],
        [2, "2026-11-22T12:00:00.000+00:00", "KeyError", "'sku'"],
    ]
    assert history.forget("m-1") == []  # forgotten once read
    for n in range(3):  # bounded: the oldest message goes first
        history.failed(ReceivedMessage(id=f"x-{n}", body="b", receipt_handle="r"), ValueError("v"), AT)
    assert len(history) == 2 and history.forget("x-0") == []


def test_reasons_read_back_each_attempt_first_and_last_failure_and_the_source_id() -> None:
    failed = ReceivedMessage(id="src-1", body="b", receipt_handle="r", receive_count=3)
    later = datetime(2026, 11, 22, 12, 5, tzinfo=timezone.utc)
    attributes = {
        **failure_attributes(failed, ValueError("third"), worker_id="host:7", at=later),
        **dlq.earlier_attribute([[1, AT.isoformat(), "ValueError", "first"], [2, AT.isoformat(), "KeyError", "2nd"]]),
    }

    why = dlq.reasons(ReceivedMessage(id="dlq-1", body="b", receipt_handle="r", attributes=attributes))

    assert why["source_id"] == "src-1" and why["attempts"] == 3 and why["recorded"]
    assert [(f["attempt"], f["error_type"], f["error"]) for f in why["failures"]] == [
        (1, "ValueError", "first"),
        (2, "KeyError", "2nd"),
        (3, "ValueError", "third"),
    ]
    assert why["first_failure_at"] == AT.isoformat()
    assert why["last_failure_at"] == later.isoformat(timespec="milliseconds")
    moved_by_sqs = dlq.reasons(ReceivedMessage(id="dlq-2", body="b", receipt_handle="r", attributes={"own": "x"}))
    assert not moved_by_sqs["recorded"] and moved_by_sqs["failures"] == []


def test_a_sample_gives_back_what_it_read_and_reads_a_page_not_the_queue(queues: tuple[SqsQueue, SqsQueue]) -> None:
    _, dead_letter_queue = queues
    for start in range(0, 60, 10):
        dead_letter_queue.send([dead_letter(f"order {n}") for n in range(start, start + 10)])
    before = dict(dead_letter_queue.calls)

    held = dlq.sample(dead_letter_queue, max_messages=25)

    assert len(held) == len({message.id for message in held}) == 25
    receives = dead_letter_queue.calls["ReceiveMessage"] - before.get("ReceiveMessage", 0)
    assert receives == 3  # 10 + 10 + 5, not the 60 the queue holds
    assert dead_letter_queue.depth()["visible"] == 60  # every one given back
