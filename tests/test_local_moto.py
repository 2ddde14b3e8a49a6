"""scripts/local_moto.py: moto's server with DynamoDB's requests one at a time, so that a
conditional write is atomic as on AWS, and SQS's requests as concurrent as moto makes them."""

from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

import botocore.exceptions
import pytest

import local_moto
from local_moto import OneDynamoDBRequestAtATime
from sqs_message_service.settings import Settings
from sqs_message_service.tables import ensure_table
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


class LazyAnswer:
    """A WSGI answer made as it is read, that notes whether the middleware's lock was held for
    each chunk and whether it was closed."""

    def __init__(self, is_locked: Callable[[], bool]) -> None:
        self.is_locked = is_locked
        self.made_while_locked: list[bool] = []
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in (b'{"Item"', b": {}}"):
            self.made_while_locked.append(self.is_locked())
            yield chunk

    def close(self) -> None:
        self.closed = True


def test_a_dynamodb_answer_is_made_inside_the_lock_and_closed() -> None:
    answers: list[LazyAnswer] = []

    def lazy_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [])
        answers.append(LazyAnswer(middleware._tables.locked))
        return answers[-1]

    middleware = OneDynamoDBRequestAtATime(lazy_app)

    answer = middleware(dict(DYNAMODB), lambda *_: None)

    assert list(answer) == [b'{"Item": {}}']
    assert answers[0].made_while_locked == [True, True] and answers[0].closed


def test_a_dynamodb_request_that_fails_leaves_the_next_one_served() -> None:
    calls: list[int] = []

    def failing_once(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("a bug in the engine")
        start_response("200 OK", [])
        return [b"{}"]

    middleware = OneDynamoDBRequestAtATime(failing_once)
    with pytest.raises(RuntimeError):
        middleware(dict(DYNAMODB), lambda *_: None)

    answer: list[bytes] = []
    served = threading.Thread(target=lambda: answer.extend(middleware(dict(DYNAMODB), lambda *_: None)), daemon=True)
    served.start()  # on another thread: were the lock still held, it would wait for good
    served.join(timeout=5)

    assert answer == [b"{}"] and calls == [0, 1]


def test_main_serves_moto_behind_the_middleware_as_moto_server_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler

    served: dict[str, Any] = {}
    monkeypatch.setattr(local_moto, "run_simple", lambda *args, **kwargs: served.update(args=args, **kwargs))
    monkeypatch.setattr(local_moto.signal, "signal", lambda *_: None)  # not pytest's own SIGTERM
    monkeypatch.delenv("MOTO_PORT", raising=False)
    installed: list[Any] = []
    monkeypatch.setattr(local_moto.TransactionSnapshots, "install", lambda self: installed.append(self))

    local_moto.main(["-p", "4599"])

    host, port, app = served["args"]
    assert (host, port) == ("127.0.0.1", 4599) and os.environ["MOTO_PORT"] == "4599"
    assert isinstance(app, OneDynamoDBRequestAtATime) and isinstance(app.app, DomainDispatcherApplication)
    assert served["threaded"] is True and served["request_handler"] is MotoRequestHandler
    assert len(installed) == 1  # and its transactions copy what they touch, not the table


@pytest.fixture
def snapshots(dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> local_moto.TransactionSnapshots:
    """moto in process with local_moto's transaction snapshots, undone after the test."""
    installed = local_moto.TransactionSnapshots()
    installed.install(monkeypatch.setattr)
    ensure_table(dynamodb, "ledger")
    dynamodb.batch_write_item(
        RequestItems={
            "ledger": [{"PutRequest": {"Item": {"key": {"S": f"old-{n}"}, "state": {"S": "done"}}}} for n in range(25)]
        }
    )
    for name in ("a", "b", "d"):
        dynamodb.put_item(TableName="ledger", Item={"key": {"S": name}, "state": {"S": "processing"}})
    return installed


def records(dynamodb: Any) -> dict[str, str]:
    return {item["key"]["S"]: item["state"]["S"] for item in dynamodb.scan(TableName="ledger")["Items"]}


def a_transaction(*, d_condition: str) -> list[dict[str, Any]]:
    """Update a in place, put c, delete b, and put d on `d_condition`."""
    return [
        {
            "Update": {
                "TableName": "ledger",
                "Key": {"key": {"S": "a"}},
                "UpdateExpression": "SET #s = :s",
                "ExpressionAttributeNames": {"#s": "state"},
                "ExpressionAttributeValues": {":s": {"S": "changed"}},
            }
        },
        {"Put": {"TableName": "ledger", "Item": {"key": {"S": "c"}, "state": {"S": "new"}}}},
        {"Delete": {"TableName": "ledger", "Key": {"key": {"S": "b"}}}},
        {
            "Put": {
                "TableName": "ledger",
                "Item": {"key": {"S": "d"}, "state": {"S": "done"}},
                "ConditionExpression": d_condition,
                "ExpressionAttributeNames": {"#k": "key"},
            }
        },
    ]


def test_a_cancelled_transaction_leaves_the_table_as_it_was_having_copied_only_what_it_names(
    dynamodb: Any, snapshots: local_moto.TransactionSnapshots
) -> None:
    before = records(dynamodb)

    with pytest.raises(botocore.exceptions.ClientError, match="TransactionCanceled"):
        dynamodb.transact_write_items(TransactItems=a_transaction(d_condition="attribute_not_exists(#k)"))

    assert records(dynamodb) == before  # a's change, c's put and b's delete all rolled back
    assert snapshots.copied_records == 3  # a, b and d: c had no record; not the 25 others


def test_a_transaction_that_goes_through_changes_what_it_names(
    dynamodb: Any, snapshots: local_moto.TransactionSnapshots
) -> None:
    dynamodb.transact_write_items(TransactItems=a_transaction(d_condition="attribute_exists(#k)"))

    after = records(dynamodb)
    assert (after["a"], after["c"], after["d"], "b" in after) == ("changed", "new", "done", False)
    assert len(after) == 25 + 3


@pytest.mark.integration
def test_on_the_server_one_conditional_put_of_many_at_once_wins(moto_server: str) -> None:
    settings = Settings(sqs_endpoint_url=moto_server, dynamodb_endpoint_url=moto_server)
    tables = create_client(settings, service="dynamodb")
    ensure_table(tables, "claims")

    def claim(key: str) -> bool:
        try:
            tables.put_item(
                TableName="claims",
                Item={"key": {"S": key}, "owner": {"S": uuid.uuid4().hex}},
                ConditionExpression="attribute_not_exists(#key)",
                ExpressionAttributeNames={"#key": "key"},
            )
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
