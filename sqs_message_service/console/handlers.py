"""The console's API operations, named by console.yml's operationIds; what they work on is the
app's `Console` (app.py), in Flask's extensions."""

from __future__ import annotations

from typing import Any, Union

import flask

from ..sqs import SqsError
from .app import current_console
from .dead_letters import body
from .guard import problem

Answer = Union[dict[str, Any], tuple[dict[str, Any], int], flask.Response]


def _json(answer: dict[str, Any], status: int = 200) -> flask.Response:
    """An answer of an operation that may also answer a problem: its content type said, since
    connexion cannot choose between the two the spec lists."""
    response = flask.jsonify(answer)
    response.status_code = status
    return response


def health() -> Answer:
    feed = current_console().feed
    return {"status": "ok", "sqs_error": feed.sqs_error, "readings": 0 if feed.latest is None else feed.latest["seq"]}


def overview(since: int = 0) -> Answer:
    return current_console().overview(since)


def list_dead_letters(limit: int = 100, fresh: bool = False) -> Answer:
    console = current_console()
    try:
        return _json(console.dead_letters.listing(limit=limit, fresh=fresh))
    except PermissionError as exc:
        return problem(409, "Dead-letter queue not read", str(exc))
    except SqsError as exc:
        return problem(503, "SQS did not answer", str(exc))


def dead_letter_body(message_id: str) -> Answer:
    message = current_console().dead_letters.message(message_id)
    if message is None:
        return problem(404, "Not in the listing", f"no dead letter {message_id!r} in the last listing: read them again")
    return _json(body(message))


def redrive(body: dict[str, Any]) -> Answer:
    dead_letters = current_console().dead_letters
    ids: list[str] = body.get("ids") or []
    everything = bool(body.get("all", False))
    if bool(ids) == bool(everything):
        return problem(400, "Bad Request", "give either `ids` (the selected dead letters) or `all: true`")
    try:
        if everything:
            return _json(dead_letters.redrive_all(body.get("rate")).as_dict(), 202)
        return _json(dead_letters.redrive_selected(ids))
    except (RuntimeError, PermissionError) as exc:
        return problem(409, "Conflict", str(exc))
    except SqsError as exc:
        return problem(503, "SQS did not answer", str(exc))


def delete(body: dict[str, Any]) -> Answer:
    try:
        return _json(current_console().dead_letters.delete(body["ids"]))
    except PermissionError as exc:
        return problem(409, "Conflict", str(exc))
    except SqsError as exc:
        return problem(503, "SQS did not answer", str(exc))
