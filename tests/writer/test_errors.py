"""writer/errors.py: one vocabulary, the one place that decides each error's status, and the same
SQS error answered the same way on both endpoints."""

from __future__ import annotations

import inspect
from typing import Any, Iterator

import boto3
import botocore.config
import pytest
from botocore.stub import Stubber

from helpers import metric, metric_samples
from server import create_app
from sqs_message_service.settings import Settings
from sqs_message_service.sqs import SqsError
from sqs_message_service.writer import errors
from sqs_message_service.writer.errors import SQS_ANSWERS, Answerable, ServiceError, answer, problem
from sqs_message_service.writer.service import WRITER_EXTENSION
from sqsinterface import SqsQueue

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/messages"
SEED = {"body": "This is a test message to enqueue"}
OUTCOMES = ("accepted", "invalid", "unavailable", "busy", "backlogged")

ERROR_CLASSES: list[type[Answerable]] = [
    *(cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, ServiceError)),
    *SQS_ANSWERS,
]


@pytest.mark.parametrize("error_class", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_has_a_status_a_title_and_its_problem(error_class: type[Answerable]) -> None:
    error = error_class("what to change")
    answered = answer(error)

    body = problem(error)

    assert body == {
        "type": "about:blank",
        "title": answered.title,
        "status": answered.status,
        "detail": "what to change",
    }
    assert 400 <= answered.status <= 599 and answered.title
    assert answered.retry_later == (answered.status == 503)
    assert answered.outcome in (None, *OUTCOMES)


def test_only_the_clients_faults_count_as_invalid() -> None:
    invalid = {cls.__name__ for cls in ERROR_CLASSES if answer(cls("")).outcome == "invalid"}

    assert invalid == {
        "RequestRefused",
        "InvalidRequest",
        "LengthRequired",
        "RequestTooLarge",
        "UnsupportedMediaType",
        "InvalidMessage",
        "MessageTooLarge",
        "MessageRejected",
    }
    assert answer(errors.NotAuthorized("")).outcome == answer(errors.QueueNotFound("")).outcome == "unavailable"


def test_the_sqs_interface_says_what_happened_and_the_writer_alone_decides_the_status() -> None:
    # a kind of SQS error the table does not name gets its nearest kind's answer
    class QueueGone(errors.QueueNotFound):
        pass

    assert not any(hasattr(SqsError, name) for name in ("status", "title", "outcome"))
    assert answer(QueueGone("gone")) == SQS_ANSWERS[errors.QueueNotFound]
    assert answer(errors.MessageRejected("no")).status == 400


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    """An SQS client whose answers the test gives, in order (botocore's Stubber): no network."""
    client = boto3.client(
        "sqs",
        region_name="us-east-1",
        config=botocore.config.Config(retries={"mode": "standard", "max_attempts": 1}),
    )
    with Stubber(client) as stubber:
        stubber.add_response("get_queue_url", {"QueueUrl": QUEUE_URL})
        yield client, stubber
        stubber.assert_no_pending_responses()


def writer_on(client: Any) -> Any:
    app = create_app(Settings(), queue=SqsQueue("messages", client))
    return app


def send_failing(stubber: Stubber, code: str, http_status: int) -> None:
    stubber.add_client_error(
        "send_message_batch",
        service_error_code=code,
        service_message=f"{code} from SQS",
        http_status_code=http_status,
    )


def send_entries_failing(stubber: Stubber, code: str, sender_fault: bool, entries: int) -> None:
    failed = [
        {"Id": str(i), "SenderFault": sender_fault, "Code": code, "Message": f"{code} from SQS"} for i in range(entries)
    ]
    stubber.add_response("send_message_batch", {"Successful": [], "Failed": failed})


def outcomes(app: Any) -> dict[str, float]:
    samples = metric_samples(app.test_client().get("/metrics").text)
    return {outcome: metric(samples, "writer_messages_total", outcome=outcome) for outcome in OUTCOMES}


#: (how SQS fails, the error the writer answers with): every class of SQS error, raised by the
#: call as a whole and reported for an entry of the batch.
SQS_FAILURES = [
    (("call", "AccessDenied", 403), errors.NotAuthorized),
    (("call", "InvalidClientTokenId", 403), errors.NotAuthorized),
    (("call", "AWS.SimpleQueueService.NonExistentQueue", 400), errors.QueueNotFound),
    (("call", "ServiceUnavailable", 503), errors.QueueUnavailable),
    (("call", "ThrottlingException", 400), errors.QueueUnavailable),
    (("call", "InvalidParameterValue", 400), errors.MessageRejected),
    (("entry", "InternalError", False), errors.QueueUnavailable),
    (("entry", "InvalidMessageContents", True), errors.MessageRejected),
    # LocalStack marks it SenderFault: false; it is final all the same
    (("entry", "InvalidMessageContents", False), errors.MessageRejected),
]


def fail_sends(stubber: Stubber, how: tuple[str, str, Any], entries: int) -> None:
    kind, code, detail = how
    if kind == "call":
        send_failing(stubber, code, detail)
    else:
        send_entries_failing(stubber, code, detail, entries)


@pytest.mark.parametrize(("how", "error_class"), SQS_FAILURES, ids=[f"{h[0]}-{h[1]}-{h[2]}" for h, _ in SQS_FAILURES])
def test_an_sqs_error_is_answered_alike_on_both_endpoints(
    stubbed: tuple[Any, Stubber], how: tuple[str, str, Any], error_class: type[SqsError]
) -> None:
    client, stubber = stubbed
    app = writer_on(client)
    code = how[1]
    expected = SQS_ANSWERS[error_class]
    fail_sends(stubber, how, entries=1)
    fail_sends(stubber, how, entries=2)

    # WHEN one message, then a batch of two, meet the same SQS error
    before = outcomes(app)
    single = app.test_client().post("/api/message", json=SEED)
    batch = app.test_client().post("/api/messages", json={"messages": [SEED, {"body": "second"}]})
    after = outcomes(app)
    app.app.extensions[WRITER_EXTENSION].close()

    # THEN POST /api/message answers the error's own status, title and detail
    assert single.status_code == expected.status
    assert single.headers["content-type"] == "application/problem+json"
    assert single.json()["title"] == expected.title
    assert code in single.json()["detail"]
    assert ("retry-after" in single.headers) == (expected.status == 503)

    # AND POST /api/messages the same: as a whole when SQS's side took none of them (503),
    # otherwise each entry with the status it would have had alone
    if expected.status == 503:
        assert batch.status_code == 503 and batch.json() == {**single.json(), "detail": batch.json()["detail"]}
        assert code in batch.json()["detail"] and "retry-after" in batch.headers
    else:
        assert batch.status_code == 200
        entries = [(r["status"], r["title"]) for r in batch.json()["results"]]
        assert entries == [(expected.status, expected.title)] * 2
        assert all(code in r["detail"] for r in batch.json()["results"])

    # AND the three messages count under the error's outcome, and only there: never "invalid"
    # for SQS's own failures
    moved = {outcome: after[outcome] - before[outcome] for outcome in OUTCOMES}
    assert moved == {outcome: 3.0 if outcome == expected.outcome else 0.0 for outcome in OUTCOMES}


def test_a_batch_with_sqs_failing_and_an_invalid_entry_still_answers_503(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    app = writer_on(client)
    send_failing(stubber, "AccessDenied", 403)

    response = app.test_client().post("/api/messages", json={"messages": [SEED, {"body": "nul \u0000"}]})
    counted = outcomes(app)
    app.app.extensions[WRITER_EXTENSION].close()

    assert response.status_code == 503
    assert response.json()["title"] == SQS_ANSWERS[errors.NotAuthorized].title
    assert (counted["unavailable"], counted["invalid"]) == (1, 1)


def test_a_batch_partly_taken_answers_200_with_each_entrys_problem(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    app = writer_on(client)
    stubber.add_response(
        "send_message_batch",
        {
            "Successful": [{"Id": "0", "MessageId": "m-0", "MD5OfMessageBody": "x"}],
            "Failed": [{"Id": "1", "SenderFault": False, "Code": "AccessDenied", "Message": "no"}],
        },
    )

    response = app.test_client().post("/api/messages", json={"messages": [SEED, SEED]})
    app.app.extensions[WRITER_EXTENSION].close()

    assert response.status_code == 200
    first, second = response.json()["results"]
    assert first == {"index": 0, "status": 201, "message_id": "m-0"}
    assert (second["status"], second["title"]) == (503, SQS_ANSWERS[errors.QueueUnavailable].title)
