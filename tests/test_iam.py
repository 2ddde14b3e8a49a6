"""deploy/iam's policies: each part, run against moto, makes only AWS calls its policy allows, and
its policy allows nothing it does not call; with IDEMPOTENCY_TABLE, the writer and setup need
their -idempotency policies too, with READ_KEYS the writer its -read one, with PROCESSED_TABLE
the worker and setup their -processed ones, and the console its -actions one for redrive and
delete."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import threading
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import pytest

import sqs_setup
from doubles import PartlyFailingClient
from harness import ROOT
from server import create_app
from sqs_message_service import dlq
from sqs_message_service.dlq import failure_attributes
from sqs_message_service.metrics import WorkerStats
from sqs_message_service.output import OutputWriter
from sqs_message_service.settings import Settings
from sqs_message_service.tables import ensure_table
from sqs_message_service.worker.engine import Worker
from sqs_message_service.worker.pane import StatsPane
from sqs_message_service.worker.processed import ProcessedLedger
from sqs_message_service.worker.processing import SimulatedWork
from sqs_message_service.writer.idempotency import SharedStore
from sqsinterface import OutgoingMessage, ReceivedMessage, SqsQueue

Grant = tuple[str, str]  # (IAM action, queue name)


POLICIES = ROOT / "deploy" / "iam"
#: The tables deploy/iam's -idempotency and -processed policies name.
TABLE = "writer-idempotency-keys"
PROCESSED_TABLE = "worker-processed-messages"


def policies() -> dict[str, dict[str, Any]]:
    """Each policy file of deploy/iam, by its name."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(POLICIES.glob("*.json"))}


def grants(*names: str) -> set[Grant]:
    """What the named policies allow together, as (action, queue or table name)."""
    allowed = set()
    for name in names:
        for statement in policies()[name]["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for resource in resources:
                match = re.match(r"^arn:aws:(sqs|dynamodb):[a-z0-9-]+:\d{12}:(?:table/)?([\w.-]+)$", resource)
                assert match, resource
                allowed |= {(action, match.group(2)) for action in actions}
    return allowed


class CallRecorder:
    """Every AWS call made on the clients it watches, as the IAM actions and resources it needs."""

    def __init__(self, *clients: Any) -> None:
        self.needed: set[Grant] = set()
        self._lock = threading.Lock()
        for client in clients:
            self.watch(client)

    def watch(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.sqs", self._record_sqs)
        client.meta.events.register("before-parameter-build.dynamodb", self._record_dynamodb)

    def _record_sqs(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        # A queue by name, by URL, or (a move task) by its ARN.
        queue = params.get("QueueName") or (params.get("QueueUrl") or params.get("SourceArn", "")).rsplit("/", 1)[-1]
        queue = queue.rsplit(":", 1)[-1]
        # A batch call is authorised by its single-message action.
        actions = {"sqs:" + model.name.removesuffix("Batch")}
        if model.name == "CreateQueue" and params.get("tags"):
            actions.add("sqs:TagQueue")  # tagging at creation needs both
        self._add(actions, queue)

    def _record_dynamodb(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "TransactWriteItems":  # authorised item by item, by each item's own action
            for item in params["TransactItems"]:
                ((kind, request),) = item.items()
                self._add({f"dynamodb:{kind}Item"}, request["TableName"])
            return
        if model.name == "BatchWriteItem":
            for table in params["RequestItems"]:
                self._add({"dynamodb:BatchWriteItem"}, table)
            return
        actions = {"dynamodb:" + model.name}
        if model.name == "CreateTable" and params.get("Tags"):
            actions.add("dynamodb:TagResource")  # tagging at creation needs both
        self._add(actions, params["TableName"])

    def _add(self, actions: set[str], resource: str) -> None:
        with self._lock:
            self.needed |= {(action, resource) for action in actions}

    def take(self) -> set[Grant]:
        with self._lock:
            needed, self.needed = self.needed, set()
        return needed


@pytest.fixture
def recorder(sqs: Any) -> Iterator[CallRecorder]:
    yield CallRecorder(sqs)


def test_deploy_has_a_policy_for_each_part_and_for_the_idempotency_table() -> None:
    assert set(policies()) == {
        "writer",
        "worker",
        "setup",
        "writer-idempotency",
        "setup-idempotency",
        "worker-processed",
        "setup-processed",
        "console",
        "console-actions",
        "writer-read",
    }


def setup_calls(settings: Settings, sqs: Any, recorder: CallRecorder, tables: Any = None) -> set[Grant]:
    """What sqs_setup needs to create everything, then to bring each queue back to its settings."""
    sqs_setup.set_up(settings, sqs, tables)  # creates both queues (and the table), tagged
    sqs_setup.set_up(dataclasses.replace(settings, visibility_timeout_s=60), sqs, tables)  # updates the queue
    needed = recorder.take()
    sqs.set_queue_attributes(  # someone shortened the dead letters' retention: setup restores it
        QueueUrl=sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"],
        Attributes={"MessageRetentionPeriod": "60"},
    )
    recorder.take()  # those calls were the test's
    sqs_setup.set_up(settings, sqs, tables)
    return needed | recorder.take()


def test_setup_needs_exactly_its_policy(sqs: Any, recorder: CallRecorder) -> None:
    assert setup_calls(Settings(), sqs, recorder) == grants("setup")


def test_the_writer_needs_exactly_its_policy(
    settings: Settings, queues: tuple[SqsQueue, SqsQueue], recorder: CallRecorder
) -> None:
    queue, _ = queues
    recorder.take()  # the queues' creation
    app = create_app(settings, queue=SqsQueue(queue.name, queue.client))
    client = app.test_client()
    try:
        assert client.post("/api/message", json={"body": "hello"}).status_code == 201
        assert client.get("/api/ready").status_code == 200
        assert client.get("/api/stats").status_code == 200
    finally:
        app.app.extensions["queue_writer"].close()

    assert recorder.take() == grants("writer")


def test_a_writer_that_serves_reads_needs_exactly_both_writer_policies(
    queues: tuple[SqsQueue, SqsQueue], recorder: CallRecorder
) -> None:
    queue, _ = queues
    recorder.take()  # the queues' creation
    settings = Settings(read_keys="r", max_receive_count=2)
    app = create_app(settings, queue=SqsQueue(queue.name, queue.client))
    client = app.test_client()
    read = {"X-API-Key": "r"}

    def receive() -> list[str]:
        answer = client.post("/api/messages/receive", json={"wait_seconds": 1}, headers=read)
        return [message["token"] for message in answer.json()["messages"]]

    try:
        assert client.post("/api/messages", json={"messages": [{"body": "a"}, {"body": "b"}]}).status_code == 200
        first, second = receive()
        assert (
            client.post("/api/messages/extend", json={"tokens": [first], "lease_seconds": 30}, headers=read).status_code
            == 200
        )
        assert client.post("/api/messages/acknowledge", json={"tokens": [first]}, headers=read).status_code == 200
        assert client.post("/api/messages/give-back", json={"tokens": [second]}, headers=read).status_code == 200
        (last,) = receive()  # its last allowed receive: given back, it is dead-lettered
        outcome = client.post("/api/messages/give-back", json={"tokens": [last], "reason": "no"}, headers=read)
        assert outcome.json()["results"][0]["dead_lettered"] is True
        assert client.get("/api/ready").status_code == 200
        assert client.get("/api/stats").status_code == 200
    finally:
        app.app.extensions["queue_writer"].close()

    assert recorder.take() == grants("writer", "writer-read")


def run_a_worker(settings: Settings, sqs: Any, recorder: CallRecorder, processed: Any = None) -> None:
    """A worker through retries and dead letters, as worker.main runs it, with the calls of
    setting it up taken out of `recorder`."""
    sqs_setup.set_up(settings, sqs)
    queue = SqsQueue(settings.queue_name, sqs)
    queue.send([OutgoingMessage(body=f"message {n}") for n in range(20)])
    recorder.take()  # setup's and the sender's
    worker = Worker(
        queue=SqsQueue(settings.queue_name, sqs),
        dead_letter_queue=SqsQueue(settings.dlq_name, sqs),
        processor=SimulatedWork(process_time_s=0, failure_rate=0.5, seed=4),  # retries and dead letters
        settings=settings,
        output=OutputWriter(io.StringIO()),
        processed=processed,
    )
    stats = WorkerStats(worker.metrics, (worker.queue, worker.dead_letter_queue))

    with StatsPane(worker, stats, out=None, interval_s=settings.stats_interval_s):
        assert worker.run(burst=True) == 0
    assert stats.snapshot()[0]["dead_lettered"] > 0 and stats.snapshot()[0]["retried"] > 0


WORKER_SETTINGS: dict[str, Any] = dict(
    receive_wait_s=1,
    stats_interval_s=60,
    retry_backoff_base_s=0,
    max_receive_count=2,
)


def test_the_worker_needs_exactly_its_policy(sqs: Any, recorder: CallRecorder) -> None:
    run_a_worker(Settings(**WORKER_SETTINGS), sqs, recorder)

    assert recorder.take() == grants("worker")


def test_the_worker_with_the_processed_ledger_needs_exactly_both_worker_policies(
    sqs: Any, dynamodb: Any, recorder: CallRecorder
) -> None:
    ensure_table(dynamodb, PROCESSED_TABLE)
    recorder.watch(dynamodb)
    ledger = ProcessedLedger(PROCESSED_TABLE, dynamodb, queue_name="messages", window_s=3600)

    run_a_worker(Settings(**WORKER_SETTINGS), sqs, recorder, processed=ledger)
    ledger.check()  # as worker.main does at start, and the consumer while the table is down
    ledger.extend([ReceivedMessage(id="m", body="b", receipt_handle="h")], lease_until=0)  # as the heartbeat does

    assert recorder.take() == grants("worker", "worker-processed")


@pytest.mark.parametrize(
    ("table", "policy"),
    [
        ({"idempotency_table": TABLE}, "setup-idempotency"),
        ({"processed_table": PROCESSED_TABLE}, "setup-processed"),
    ],
    ids=["idempotency-table", "processed-table"],
)
def test_setup_with_a_table_needs_exactly_its_policy_beside_setups(
    sqs: Any, dynamodb: Any, recorder: CallRecorder, table: dict[str, Any], policy: str
) -> None:
    recorder.watch(dynamodb)
    needed = setup_calls(Settings(**table), sqs, recorder, dynamodb)

    assert needed == grants("setup", policy)


def test_the_writer_with_the_table_needs_exactly_both_writer_policies(
    queues: tuple[SqsQueue, SqsQueue], dynamodb: Any, recorder: CallRecorder
) -> None:
    queue, _ = queues
    settings = Settings(idempotency_table=TABLE)
    ensure_table(dynamodb, TABLE)
    recorder.watch(dynamodb)
    recorder.take()  # the queues' and the table's creation
    keys = SharedStore(TABLE, dynamodb, window_s=300, lease_s=12)
    failing_sends = SqsQueue(queue.name, PartlyFailingClient(queue.client))
    app = create_app(settings, queue=failing_sends, keys=keys)
    client = app.test_client()
    try:
        first = client.post("/api/message", json={"body": "hello"}, headers={"Idempotency-Key": "k-1"})
        repeat = client.post("/api/message", json={"body": "hello"}, headers={"Idempotency-Key": "k-1"})
        failed = client.post("/api/message", json={"body": "throttle"}, headers={"Idempotency-Key": "k-2"})
        assert (first.status_code, repeat.status_code, failed.status_code) == (201, 201, 503)
        assert client.get("/api/ready").status_code == 200
        assert client.get("/api/stats").status_code == 200
    finally:
        app.app.extensions["queue_writer"].close()

    assert recorder.take() == grants("writer", "writer-idempotency")


def dead_letters(queues: tuple[SqsQueue, SqsQueue], count: int) -> None:
    failed = ReceivedMessage(id="src", body="b", receipt_handle="r", receive_count=3)
    reasons = failure_attributes(failed, ValueError("no"), worker_id="w", at=datetime.now(timezone.utc))
    queues[1].send([OutgoingMessage(body=f"dead {n}", attributes=reasons) for n in range(count)])


def test_a_read_only_console_needs_exactly_its_policy(
    console_app: Callable[..., Any], queues: tuple[SqsQueue, SqsQueue], recorder: CallRecorder
) -> None:
    dead_letters(queues, 3)
    recorder.take()
    app = console_app()
    page = app.test_client()

    app.app.extensions["console"].feed.read_once()
    listed = page.get("/api/dead-letters").json()["items"]
    assert page.get(f"/api/dead-letters/{listed[0]['id']}/body").status_code == 200

    assert recorder.take() == grants("console")


def test_a_console_that_redrives_and_deletes_needs_both_console_policies(
    console_app: Callable[..., Any], queues: tuple[SqsQueue, SqsQueue], recorder: CallRecorder
) -> None:
    dead_letters(queues, 4)
    recorder.take()
    app = console_app(console_keys="k")
    page = app.test_client()
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.get("/").text).group(1)  # type: ignore[union-attr]
    headers = {"X-Console-Key": "k", "Origin": "http://testserver", "X-CSRF-Token": token}
    app.app.extensions["console"].feed.read_once()
    ids = [item["id"] for item in page.get("/api/dead-letters").json()["items"]]

    assert page.post("/api/dead-letters/redrive", json={"ids": ids[:1]}, headers=headers).json()["done"] == ids[:1]
    assert page.post("/api/dead-letters/delete", json={"ids": ids[1:2]}, headers=headers).json()["done"] == ids[1:2]
    # Redrive of all: SQS's move task first (moto in process has none, so its two calls are made
    # here as dlq.redrive makes them), then by hand.
    dead_letter_queue = app.app.extensions["console"].dead_letters.queue
    with contextlib.suppress(NotImplementedError):
        dead_letter_queue.start_move_task(destination_arn=queues[0].arn)
    with contextlib.suppress(NotImplementedError):
        dead_letter_queue.move_task("handle")
    job = dlq.redrive_by_hand(
        dead_letter_queue,
        SqsQueue(queues[0].name, queues[0].client),
        max_messages=None,
        rate=None,
        progress=lambda moved, total: None,
    )
    assert job == 2

    assert recorder.take() == grants("console", "console-actions")
