"""The queue-writer's HTTP handlers, bound by `operationId` in swagger.yml: each takes what the
served spec has already checked (types, fields, ranges, characters) and hands it to the app's
Writer (sqs_message_service/writer/service.py), which checks what a schema cannot say and sends,
or for the read routes to its Reader (sqs_message_service/writer/reader.py).
"""

from __future__ import annotations

from typing import Any, Optional, Union

import flask

from sqs_message_service.sqs import OutgoingMessage, SendResult, SqsError
from sqs_message_service.writer.errors import (
    Answerable,
    InvalidMessage,
    InvalidRequest,
    NotAReader,
    answer,
    problem,
)
from sqs_message_service.writer.reader import READER_EXTENSION, Reader, Settled
from sqs_message_service.writer.service import WRITER_EXTENSION, Writer, accepted


def current_writer() -> Writer:
    """The Writer of the app serving this request (server.create_app puts it there)."""
    return flask.current_app.extensions[WRITER_EXTENSION]


# Handlers, bound by operationId in swagger.yml. Each names its Content-Type because the spec
# lists two per operation (application/json, and application/problem+json for errors).

JsonResponse = tuple[dict[str, Any], int, dict[str, str]]
_JSON = {"Content-Type": "application/json"}


def post_message(body: dict[str, Any]) -> JsonResponse:
    writer = current_writer()
    key = _idempotency_key(flask.request.headers.get("Idempotency-Key"))
    message = writer.prepare(body, idempotency_key=key)
    if key is None:
        return accepted(writer.send_one(message)), 201, _JSON
    client = flask.request.headers.get("X-API-Key", "")
    answer, replayed = writer.send_once(key, client, body, message)
    return answer, 201, {**_JSON, "Idempotent-Replayed": "true" if replayed else "false"}


def _idempotency_key(key: Optional[str]) -> Optional[str]:
    """The Idempotency-Key header's key, without the quotes of the IETF draft's form ("key");
    the spec has checked its length and characters."""
    if key is None:
        return None
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    return key or None


def post_messages(body: dict[str, Any]) -> JsonResponse:
    """Each entry is checked and sent on its own merit; the answer reports each one, in order,
    with the status and problem it would have had alone.

    200 even when some entries failed (as SQS's own batch API does), unless SQS took none of the
    entries it was sent, each for a reason of its own side (unreachable, missing queue, no
    permission): then that 503, so that a client retries the whole request.
    """
    writer = current_writer()
    if "Idempotency-Key" in flask.request.headers:
        raise InvalidRequest(
            "POST /api/messages takes no Idempotency-Key (its entries are not replayed): "
            "send keyed messages one by one to POST /api/message"
        )
    prepared: list[Union[OutgoingMessage, InvalidMessage]] = []
    for fields in body["messages"]:
        try:
            prepared.append(writer.prepare_entry(fields))
        except InvalidMessage as exc:
            prepared.append(exc)
    to_send = [entry for entry in prepared if isinstance(entry, OutgoingMessage)]
    sent = iter(writer.send_many(to_send) if to_send else [])
    outcomes: list[Union[SendResult, Answerable]] = [
        entry if isinstance(entry, InvalidMessage) else next(sent) for entry in prepared
    ]
    failures = [outcome.error for outcome in outcomes if isinstance(outcome, SendResult) and outcome.error]
    if to_send and len(failures) == len(to_send) and all(answer(error).retry_later for error in failures):
        raise failures[0]  # counted by send_many already, answered by the error handler
    results = [{"index": index, **_entry_outcome(outcome)} for index, outcome in enumerate(outcomes)]
    accepted = sum(result["status"] == 201 for result in results)
    return {"accepted": accepted, "failed": len(results) - accepted, "results": results}, 200, _JSON


def _entry_outcome(outcome: Union[SendResult, Answerable]) -> dict[str, Any]:
    """One entry of a batch's answer: 201 and its ids, or its problem's status, title, detail."""
    if isinstance(outcome, SendResult):
        if outcome.error is None:
            return {"status": 201, **accepted(outcome)}
        outcome = outcome.error
    body = problem(outcome)
    return {"status": body["status"], "title": body["title"], "detail": body["detail"]}


# The read routes


def current_reader() -> Reader:
    """The Reader of the app serving this request; refuses when reading is off (no READ_KEYS)."""
    reader: Optional[Reader] = flask.current_app.extensions.get(READER_EXTENSION)
    if reader is None:
        raise NotAReader(
            "reading is off on this writer: set READ_KEYS (comma-separated keys, sent in X-API-Key) "
            "to turn the read routes on"
        )
    return reader


def receive_messages(body: dict[str, Any]) -> JsonResponse:
    """The tokens in `acknowledge` first (as POST /messages/acknowledge; their outcomes come in
    the answer, whatever they are), then the receive: a reader's loop makes one request a batch."""
    reader = current_reader()
    reader.refuse_if_stopping()  # a 503 before any acknowledgement, where it can be
    acknowledged = reader.acknowledge(body["acknowledge"]) if "acknowledge" in body else None
    messages = reader.receive(
        max_messages=body.get("max_messages", 10),
        wait_s=body.get("wait_seconds", 0),
        lease_s=body.get("lease_seconds"),
    )
    answer: dict[str, Any] = {"messages": messages}
    if acknowledged is not None:
        answer["acknowledged"] = _outcomes(acknowledged)
    return answer, 200, _JSON


def acknowledge(body: dict[str, Any]) -> JsonResponse:
    return _settled(current_reader().acknowledge(body["tokens"]))


def give_back(body: dict[str, Any]) -> JsonResponse:
    return _settled(
        current_reader().give_back(body["tokens"], delay_s=body.get("delay_seconds", 0), reason=body.get("reason"))
    )


def extend_leases(body: dict[str, Any]) -> JsonResponse:
    return _settled(current_reader().extend(body["tokens"], lease_s=body["lease_seconds"]))


def _settled(outcomes: list[Settled]) -> JsonResponse:
    """200 with each token's outcome, in order, when any succeeded; otherwise the first one's
    problem (400 not a token, 410 lapsed, 503 SQS), as a lone token's answer would be."""
    if all(outcome.error is not None for outcome in outcomes):
        raise outcomes[0].error  # type: ignore[misc]  # all are errors
    return _outcomes(outcomes), 200, _JSON


def _outcomes(outcomes: list[Settled]) -> dict[str, Any]:
    """Each token's outcome, in order, with how many were done and how many failed."""
    results: list[dict[str, Any]] = []
    for index, outcome in enumerate(outcomes):
        entry: dict[str, Any] = {"index": index, "status": 200}
        if outcome.error is not None:
            error = problem(outcome.error)
            entry = {"index": index, "status": error["status"], "title": error["title"], "detail": error["detail"]}
        if outcome.dead_lettered:
            entry["dead_lettered"] = True
        results.append(entry)
    done = sum(result["status"] == 200 for result in results)
    return {"done": done, "failed": len(results) - done, "results": results}


def health() -> JsonResponse:
    """Liveness: the process answers. No SQS call, so an SQS outage does not restart writers."""
    return {"status": "ok"}, 200, _JSON


def ready() -> JsonResponse:
    """Readiness: the queue exists and answers (one GetQueueAttributes call)."""
    writer = current_writer()
    (depth,) = writer.depths(writer.queue)
    if isinstance(depth, SqsError):
        raise depth  # QueueNotFound / QueueUnavailable / NotAuthorized -> 503
    return {"status": "ready", "queue": writer.queue.name}, 200, _JSON


def stats() -> JsonResponse:
    return current_writer().stats(), 200, _JSON
