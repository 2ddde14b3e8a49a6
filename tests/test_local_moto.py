"""scripts/local_moto.py: moto's server with DynamoDB's requests one at a time, so that a
conditional write is atomic as on AWS, and SQS's requests as concurrent as moto makes them."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

import botocore.exceptions
import pytest

from config import Settings
from idempotency import ensure_table
from local_moto import OneDynamoDBRequestAtATime
from sqsinterface import create_client

DYNAMODB = {"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.PutItem"}
SQS = {"HTTP_X_AMZ_TARGET": "AmazonSQS.ReceiveMessage"}


class Overlap:
    """A WSGI app that counts how many of its calls run at once. Each call waits, up to
    `wait_s`, for `expected` calls to be inside together."""

    def __init__(self, expected: int, wait_s: float) -> None:
        self.expected, self.wait_s = expected, wait_s
        self.inside = self.most = 0
        self._lock = threading.Lock()
        self._all_inside = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
            if self.inside == self.expected:
                self._all_inside.set()
        self._all_inside.wait(self.wait_s)
        with self._lock:
            self.inside -= 1
        start_response("200 OK", [])
        return [b"{}"]


def call_at_once(app: Callable[..., Iterable[bytes]], environ: dict[str, Any], count: int) -> list[bytes]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: b"".join(app(dict(environ), lambda *_: None)), range(count)))


def test_dynamodb_requests_run_one_at_a_time() -> None:
    app = Overlap(expected=4, wait_s=0.1)

    answers = call_at_once(OneDynamoDBRequestAtATime(app), DYNAMODB, count=4)

    assert answers == [b"{}"] * 4
    assert app.most == 1


def test_other_requests_run_together_as_moto_runs_them() -> None:
    app = Overlap(expected=4, wait_s=5)

    call_at_once(OneDynamoDBRequestAtATime(app), SQS, count=4)

    assert app.most == 4  # a long poll does not hold the others up


def test_a_dynamodb_answer_is_made_inside_the_lock_and_closed() -> None:
    made_while_locked: list[bool] = []
    closed: list[bool] = []

    def lazy_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [])
        try:
            for chunk in (b'{"Item"', b": {}}"):
                made_while_locked.append(middleware._tables.locked())
                yield chunk
        finally:
            closed.append(True)

    middleware = OneDynamoDBRequestAtATime(lazy_app)

    answer = middleware(dict(DYNAMODB), lambda *_: None)

    assert list(answer) == [b'{"Item": {}}']
    assert made_while_locked == [True, True] and closed == [True]


@pytest.mark.integration
def test_on_the_server_one_conditional_put_of_many_at_once_wins(moto_server: str) -> None:
    settings = Settings(sqs_endpoint_url=moto_server, dynamodb_endpoint_url=moto_server)
    tables = create_client(settings, service="dynamodb")
    ensure_table(tables, "claims")

    def claim(key: str) -> bool:
        try:
            tables.put_item(TableName="claims", Item={"key": {"S": key}, "owner": {"S": uuid.uuid4().hex}},
                            ConditionExpression="attribute_not_exists(#key)", ExpressionAttributeNames={"#key": "key"})
            return True
        except botocore.exceptions.ClientError as exc:
            assert exc.response["Error"]["Code"] == "ConditionalCheckFailedException"
            return False

    with ThreadPoolExecutor(16) as pool:
        winners = [sum(pool.map(claim, [f"key-{round_number}"] * 16)) for round_number in range(10)]

    assert winners == [1] * 10
    sqs = create_client(settings)  # and SQS is served beside it
    url = sqs.create_queue(QueueName=f"beside-{int(time.time())}")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hello")
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]] == ["hello"]
