"""README.md's IAM policies: each part, run against moto, makes only SQS calls its policy allows,
and its policy allows nothing it does not call."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import threading
from typing import Any, Iterator

import pytest

import sqs_setup
from config import Settings
from conftest import ROOT
from metrics import WorkerStats
from server import create_app
from sqsinterface import OutgoingMessage, SqsQueue
from worker import SimulatedWork, StatsPane, Worker
from worker_output import OutputWriter

Grant = tuple[str, str]  # (IAM action, queue name)


def readme_policies() -> dict[str, dict[str, Any]]:
    """The JSON policy under each '#### Part' heading of the README's IAM section, by part."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### AWS permissions (IAM)", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^#### (\w+)\n.*?```json\n(.*?)```", section, re.M | re.S)
    return {part.lower(): json.loads(policy) for part, policy in found}


def grants(policy: dict[str, Any]) -> set[Grant]:
    allowed = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in resources:
            assert re.match(r"^arn:aws:sqs:[a-z0-9-]+:\d{12}:[\w.-]+$", resource), resource
            allowed |= {(action, resource.rsplit(":", 1)[1]) for action in actions}
    return allowed


class CallRecorder:
    """Every SQS call made on a client, as the IAM actions and queues it needs."""

    def __init__(self, client: Any) -> None:
        self.needed: set[Grant] = set()
        self._lock = threading.Lock()
        client.meta.events.register("before-parameter-build.sqs", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        queue = params.get("QueueName") or params["QueueUrl"].rsplit("/", 1)[1]
        # A batch call is authorised by its single-message action.
        actions = {"sqs:" + model.name.removesuffix("Batch")}
        if model.name == "CreateQueue" and params.get("tags"):
            actions.add("sqs:TagQueue")  # tagging at creation needs both
        with self._lock:
            self.needed |= {(action, queue) for action in actions}

    def take(self) -> set[Grant]:
        with self._lock:
            needed, self.needed = self.needed, set()
        return needed


@pytest.fixture
def recorder(sqs: Any) -> Iterator[CallRecorder]:
    yield CallRecorder(sqs)


def test_the_readme_has_a_policy_for_the_writer_the_worker_and_setup() -> None:
    assert set(readme_policies()) == {"writer", "worker", "setup"}


def test_setup_needs_exactly_its_policy(sqs: Any, recorder: CallRecorder) -> None:
    settings = Settings()
    sqs_setup.set_up(settings, sqs)  # creates both, tagged
    sqs_setup.set_up(dataclasses.replace(settings, visibility_timeout_s=60), sqs)  # updates the queue
    needed = recorder.take()
    sqs.set_queue_attributes(  # someone shortened the dead letters' retention: setup restores it
        QueueUrl=sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"],
        Attributes={"MessageRetentionPeriod": "60"},
    )
    recorder.take()  # those calls were the test's
    sqs_setup.set_up(settings, sqs)
    needed |= recorder.take()

    assert needed == grants(readme_policies()["setup"])


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

    assert recorder.take() == grants(readme_policies()["writer"])


def test_the_worker_needs_exactly_its_policy(sqs: Any, recorder: CallRecorder) -> None:
    settings = Settings(receive_wait_s=1, stats_interval_s=60, retry_backoff_base_s=0, max_receive_count=2)
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
    )
    stats = WorkerStats(worker.metrics, (worker.queue, worker.dead_letter_queue))

    with StatsPane(worker, stats, out=None, interval_s=settings.stats_interval_s):  # as worker.main runs it
        assert worker.run(burst=True) == 0
    assert stats.snapshot()[0]["dead_lettered"] > 0 and stats.snapshot()[0]["retried"] > 0
    assert recorder.take() == grants(readme_policies()["worker"])
