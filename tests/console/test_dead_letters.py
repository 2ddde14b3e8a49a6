"""console/dead_letters.py: a sampled page read without changing anything, and the actions."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from sqs_message_service.console.dead_letters import LISTING_FRESH_S, LISTING_MIN_S, DeadLetters, RedriveJob
from sqs_message_service.dlq import SOURCE_ID, earlier_attribute, failure_attributes
from sqsinterface import OutgoingMessage, ReceivedMessage, SqsError, SqsQueue

AT = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def dead_letter(body: str, *, minutes: int = 0, **own: str) -> OutgoingMessage:
    """A dead letter as the worker leaves it, its last failure `minutes` after AT."""
    failed = ReceivedMessage(id=f"src-{body}", body=body, receipt_handle="r", receive_count=3)
    reasons = failure_attributes(failed, ValueError(f"bad {body}"), worker_id="w:1", at=AT + timedelta(minutes=minutes))
    earlier = earlier_attribute([[1, AT.isoformat(), "KeyError", "first"], [2, AT.isoformat(), "ValueError", "2nd"]])
    return OutgoingMessage(body=body, attributes={**own, **reasons, **earlier})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_listing_is_newest_failure_first_with_each_attempts_reason_and_gives_every_message_back(
    queues: tuple[SqsQueue, SqsQueue],
) -> None:
    queue, dead_letter_queue = queues
    dead_letter_queue.send(
        [dead_letter("old", minutes=1), dead_letter("new", minutes=9, tenant="a"), dead_letter("mid", minutes=5)]
    )
    dead_letter_queue.send([OutgoingMessage(body="moved by sqs")])  # no reasons: SQS's redrive policy moved it

    listing = DeadLetters(dead_letter_queue, queue).listing(limit=100)

    assert listing["read"] == 4
    recorded = [item for item in listing["items"] if item["recorded"]]
    assert [item["source_id"] for item in recorded] == ["src-new", "src-mid", "src-old"]
    newest = recorded[0]
    assert [(f["attempt"], f["error"]) for f in newest["failures"]] == [(1, "first"), (2, "2nd"), (3, "bad new")]
    assert newest["receive_count"] == 3 and newest["attributes"] == ["tenant"]
    assert newest["first_failure_at"] == AT.isoformat()
    assert "body" not in newest and newest["body_bytes"] == 3
    (unrecorded,) = [item for item in listing["items"] if not item["recorded"]]
    assert unrecorded["failures"] == [] and unrecorded["dead_lettered_at"] is not None  # sorted by when it was sent
    assert dead_letter_queue.depth() == {"visible": 4, "in_flight": 0, "delayed": 0}  # nothing consumed


def test_one_listing_serves_every_page_for_a_while_then_sqs_is_read_again(queues: tuple[SqsQueue, SqsQueue]) -> None:
    queue, dead_letter_queue = queues
    dead_letter_queue.send([dead_letter("a")])
    clock = Clock()
    dead_letters = DeadLetters(dead_letter_queue, queue, clock=clock)

    dead_letters.listing(limit=100)
    receives = dead_letter_queue.calls["ReceiveMessage"]
    for _ in range(10):
        dead_letters.listing(limit=100)
    assert dead_letter_queue.calls["ReceiveMessage"] == receives

    dead_letters.listing(limit=100, fresh=True)  # "Read again" at once: not more often than LISTING_MIN_S
    assert dead_letter_queue.calls["ReceiveMessage"] == receives
    clock.now += LISTING_MIN_S
    dead_letters.listing(limit=100, fresh=True)
    assert dead_letter_queue.calls["ReceiveMessage"] > receives
    receives = dead_letter_queue.calls["ReceiveMessage"]
    clock.now += LISTING_FRESH_S
    dead_letters.listing(limit=100)
    assert dead_letter_queue.calls["ReceiveMessage"] > receives


def test_a_dead_letter_queue_with_its_own_redrive_policy_is_not_read(queues: tuple[SqsQueue, SqsQueue]) -> None:
    queue, dead_letter_queue = queues
    dead_letter_queue.set_attributes(
        {"RedrivePolicy": json.dumps({"deadLetterTargetArn": queue.arn, "maxReceiveCount": "5"})}
    )
    dead_letter_queue.send([dead_letter("a")])

    with pytest.raises(PermissionError, match="redrive policy of its own"):
        DeadLetters(dead_letter_queue, queue).listing(limit=100)
    assert dead_letter_queue.calls.get("ReceiveMessage", 0) == 0


def test_redriving_selected_ones_sends_them_back_without_their_reasons_and_leaves_the_rest(
    queues: tuple[SqsQueue, SqsQueue],
) -> None:
    queue, dead_letter_queue = queues
    dead_letter_queue.send([dead_letter(f"order {n}", tenant="a") for n in range(5)])
    dead_letters = DeadLetters(dead_letter_queue, queue)
    items = dead_letters.listing(limit=100)["items"]
    chosen = [item["id"] for item in items[:2]]

    result = dead_letters.redrive_selected([*chosen, "not-a-dead-letter"])

    assert sorted(result["done"]) == sorted(chosen) and result["missing"] == ["not-a-dead-letter"]
    assert result["failed"] == {}
    back = queue.receive(max_messages=10, wait_s=0)
    assert sorted(message.body for message in back) == sorted(i["source_id"][4:] for i in items[:2])
    assert all(message.attributes == {"tenant": "a"} for message in back)  # no dead_letter.*
    assert dead_letter_queue.depth() == {"visible": 3, "in_flight": 0, "delayed": 0}
    assert SOURCE_ID not in back[0].attributes


def test_deleting_selected_ones_deletes_those_and_only_those(queues: tuple[SqsQueue, SqsQueue]) -> None:
    queue, dead_letter_queue = queues
    dead_letter_queue.send([dead_letter(f"order {n}") for n in range(4)])
    dead_letters = DeadLetters(dead_letter_queue, queue)
    items = dead_letters.listing(limit=100)["items"]

    result = dead_letters.delete([items[0]["id"]])

    assert result == {"done": [items[0]["id"]], "missing": [], "failed": {}}
    left = dead_letters.listing(limit=100, fresh=True)["items"]
    assert sorted(item["id"] for item in left) == sorted(item["id"] for item in items[1:])
    assert sum(queue.depth().values()) == 0


def test_redriving_all_runs_as_a_job_and_says_how_it_moved_them(
    queues: tuple[SqsQueue, SqsQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, dead_letter_queue = queues

    def no_move_tasks(**_: object) -> str:  # moto in process raises NotImplementedError; fauxqs answers this
        raise SqsError("StartMessageMoveTask: InvalidAction")

    monkeypatch.setattr(dead_letter_queue, "start_move_task", no_move_tasks)
    dead_letter_queue.send([dead_letter(f"order {n}") for n in range(7)])
    dead_letters = DeadLetters(dead_letter_queue, queue)

    job = dead_letters.redrive_all(rate=None)
    job.join(30)

    assert job.as_dict()["state"] == "done" and job.moved == 7
    assert any("StartMessageMoveTask is not available" in note for note in job.notes)  # moto has none
    assert queue.depth()["visible"] == 7 and sum(dead_letter_queue.depth().values()) == 0


def test_a_second_redrive_of_all_is_refused_while_one_runs(queues: tuple[SqsQueue, SqsQueue]) -> None:
    queue, dead_letter_queue = queues
    dead_letters = DeadLetters(dead_letter_queue, queue)
    dead_letters.job = RedriveJob(dead_letter_queue, queue, rate=None)  # running, as far as anyone can tell

    with pytest.raises(RuntimeError, match="already running"):
        dead_letters.redrive_all(rate=5)


def test_nothing_is_read_while_a_redrive_of_all_runs(queues: tuple[SqsQueue, SqsQueue]) -> None:
    queue, dead_letter_queue = queues
    dead_letter_queue.send([dead_letter("a")])
    dead_letters = DeadLetters(dead_letter_queue, queue)
    dead_letters.job = RedriveJob(dead_letter_queue, queue, rate=None)  # running

    for action in (
        lambda: dead_letters.listing(limit=10),
        lambda: dead_letters.delete(["x"]),
        lambda: dead_letters.redrive_selected(["x"]),
    ):
        with pytest.raises(RuntimeError, match="redrive of every dead letter is running"):
            action()
    assert dead_letter_queue.calls.get("ReceiveMessage", 0) == 0


def test_a_senders_own_dead_letter_attributes_never_break_a_listing(queues: tuple[SqsQueue, SqsQueue]) -> None:
    queue, dead_letter_queue = queues
    forged = {SOURCE_ID: "x", "dead_letter.attempts": "\u00b2", "dead_letter.earlier": "[[1e999, 1, 2, 3], 5, [1]]"}
    dead_letter_queue.send([OutgoingMessage(body="odd", attributes=forged), dead_letter("fine")])

    items = DeadLetters(dead_letter_queue, queue).listing(limit=10)["items"]

    odd = next(item for item in items if item["source_id"] == "x")
    assert odd["receive_count"] is None and [f["attempt"] for f in odd["failures"]] == [None, None]
    assert len(items) == 2


def test_an_action_that_fails_midway_gives_back_what_it_held(
    queues: tuple[SqsQueue, SqsQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, dead_letter_queue = queues
    dead_letter_queue.send([dead_letter(f"order {n}") for n in range(3)])
    dead_letters = DeadLetters(dead_letter_queue, queue)
    ids = [item["id"] for item in dead_letters.listing(limit=10)["items"]]

    def source_down(_: object) -> None:
        raise SqsError("SendMessageBatch: the source queue does not answer")

    monkeypatch.setattr(queue, "send", source_down)
    with pytest.raises(SqsError):
        dead_letters.redrive_selected(ids[:2])

    assert dead_letter_queue.depth() == {"visible": 3, "in_flight": 0, "delayed": 0}  # not hidden for HOLD_S
