"""The writer's error vocabulary: every refusal and failure it answers with, and the one place
that decides each one's HTTP status.

Each class here carries the HTTP status and title it is answered with, and the `outcome` a
message it refuses counts under in `writer_messages_total`: whose fault it was. The SQS
interface's errors say only what happened; `SQS_ANSWERS` says what the writer answers for each.
`answer()` finds either, and `problem()` turns it into an RFC 9457 problem; answers.py renders
it for the error handlers and the admission limit, message.py for each entry of a batch.

    ServiceError                      500  (a bug of ours: never raised on purpose)
    ├── RequestRefused                400  the client's to change                  invalid
    │   ├── InvalidRequest            400  not what the spec describes             invalid
    │   │   ├── LengthRequired        411  a chunked upload                        invalid
    │   │   ├── RequestTooLarge       413  over MAX_REQUEST_BYTES                  invalid
    │   │   └── UnsupportedMediaType  415  not JSON, or not UTF-8                  invalid
    │   ├── InvalidMessage            400  a message SQS would refuse              invalid
    │   │   └── MessageTooLarge       413  over MAX_MESSAGE_BYTES in UTF-8         invalid
    │   ├── RequestIncomplete         408  the body did not arrive (BODY_TIMEOUT)
    │   ├── Unauthenticated           401  no X-API-Key, or not one of the keys
    │   ├── NotAReader                403  a key that may not read, or READ_KEYS unset
    │   ├── NotAToken                 400  a read route's token this writer never gave
    │   ├── KeyInProgress             409  Idempotency-Key: first request still sending
    │   └── KeyReused                 422  Idempotency-Key: used with another request
    ├── TryLater                      503  nothing wrong with the request: not now
    │   ├── WriterBusy                503  every handler thread is taken           busy
    │   ├── QueueBacklogged           503  the queue is over MAX_QUEUE_DEPTH       backlogged
    │   ├── PollsBusy                 503  READ_MAX_POLLS long polls already wait
    │   └── StoreUnavailable          503  IDEMPOTENCY_TABLE cannot be used        unavailable

    sqs.SqsError (SQS_ANSWERS)        503  an SQS call failed                      unavailable
    ├── QueueUnavailable              503  unreachable, throttling, failing        unavailable
    │   └── QueueNotFound             503  the queue does not exist                unavailable
    ├── NotAuthorized                 503  credentials or IAM policy               unavailable
    └── MessageRejected               400  SQS refused the request as invalid      invalid
        └── LeaseLapsed               410  a receipt handle SQS no longer takes

Every 503 is answered with Retry-After: the same request may succeed later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

from ..sqs import LeaseLapsed, MessageRejected, NotAuthorized, QueueNotFound, QueueUnavailable, SqsError

#: What the body of a problem response is: RFC 9457's members.
Problem = dict[str, Any]


class ServiceError(Exception):
    """Base of every error the writer answers with; the text is the problem's `detail`."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    #: The `writer_messages_total` outcome of a message refused with this error; None for
    #: refusals that are not about a message (an Idempotency-Key's state).
    outcome: ClassVar[Optional[str]] = None

    @property
    def retry_later(self) -> bool:
        """Whether the same request may succeed later (answered with Retry-After)."""
        return self.status == 503


class RequestRefused(ServiceError):
    """The request cannot be done as asked: the client has something to change."""

    status = 400
    title = "Bad request"
    outcome: ClassVar[Optional[str]] = "invalid"


class InvalidRequest(RequestRefused):
    """The request as a whole is not what the spec describes; refused before any of its messages
    is read. Raised by the request validators (and adapted from connexion's own)."""


class LengthRequired(InvalidRequest):
    status = 411
    title = "Length required"


class RequestTooLarge(InvalidRequest):
    status = 413
    title = "Request too large"


class UnsupportedMediaType(InvalidRequest):
    status = 415
    title = "Unsupported media type"


class InvalidMessage(RequestRefused):
    """A well-formed message that SQS would refuse."""

    title = "Invalid message"


class MessageTooLarge(InvalidMessage):
    status = 413
    title = "Message too large"


class RequestIncomplete(RequestRefused):
    """The connection ended before the request's body did: the socket's BODY_TIMEOUT dropped it
    (and answered 408 itself), or the client went away. Counted as no message's outcome."""

    status = 408
    title = "Request timeout"
    outcome = None


class Unauthenticated(RequestRefused):
    """No X-API-Key, or not one of the writer's keys (connexion's security check, adapted)."""

    status = 401
    title = "Unauthorized"
    outcome = None


class NotAReader(RequestRefused):
    """A read route asked with a key that may not read (one of API_KEYS), or on a writer with no
    READ_KEYS, where reading is off."""

    status = 403
    title = "Forbidden"
    outcome = None


class NotAToken(RequestRefused):
    """A read route's token that this writer's queue never gave: refused before any SQS call."""

    title = "Not a token"
    outcome = None


class KeyInProgress(RequestRefused):
    status = 409
    title = "A request with this Idempotency-Key is in progress"
    outcome = None


class KeyReused(RequestRefused):
    status = 422
    title = "Idempotency-Key already used"
    outcome = None


class TryLater(ServiceError):
    """Nothing is wrong with the request; the writer cannot take it now."""

    status = 503
    title = "Service unavailable"
    outcome: ClassVar[Optional[str]] = "unavailable"


class WriterBusy(TryLater):
    """Every handler thread is taken: refused before waiting for one."""

    title = "Writer busy"
    outcome = "busy"


class QueueBacklogged(TryLater):
    """The queue holds more than MAX_QUEUE_DEPTH messages: refused until the workers catch up."""

    title = "Queue backlogged"
    outcome = "backlogged"


class PollsBusy(TryLater):
    """READ_MAX_POLLS long polls already wait in this process: another would take a handler
    thread that writes need."""

    title = "Too many long polls"
    outcome = None


class StoreUnavailable(TryLater):
    """The idempotency table (IDEMPOTENCY_TABLE) cannot be reached, or refused the call: a
    request with an Idempotency-Key is refused rather than sent without its key kept."""

    title = "Idempotency store unavailable"


@dataclass(frozen=True)
class Answer:
    """What the writer answers for an error: its status and title, and the outcome a message it
    refuses counts under (None: an answer that is no message's outcome)."""

    status: int
    title: str
    outcome: Optional[str]

    @property
    def retry_later(self) -> bool:
        """Whether the same request may succeed later (answered with Retry-After)."""
        return self.status == 503


#: What the writer answers for each of the SQS interface's errors, most particular first.
SQS_ANSWERS: dict[type[SqsError], Answer] = {
    QueueNotFound: Answer(503, "Queue not found", "unavailable"),
    QueueUnavailable: Answer(503, "Queue unavailable", "unavailable"),
    NotAuthorized: Answer(503, "Not authorized for the queue", "unavailable"),
    LeaseLapsed: Answer(410, "Lease lapsed", None),
    MessageRejected: Answer(400, "Rejected by SQS", "invalid"),
    SqsError: Answer(503, "SQS error", "unavailable"),
}

#: Any error the writer answers: one of its own, or one of the SQS interface's.
Answerable = Union[ServiceError, SqsError]


def answer(error: Answerable) -> Answer:
    """What the writer answers for `error`: its class's, or the nearest SQS kind's."""
    if isinstance(error, ServiceError):
        return Answer(error.status, error.title, error.outcome)
    for kind in type(error).__mro__:
        if kind in SQS_ANSWERS:
            return SQS_ANSWERS[kind]
    raise TypeError(f"no answer for {type(error).__name__}")  # unreachable: SqsError is in the table


def problem(error: Answerable) -> Problem:
    """The problem+json body that answers `error`. A 503's response also carries Retry-After
    (`answer(error).retry_later`), which the renderer adds from the RETRY_AFTER setting."""
    answered = answer(error)
    return {"type": "about:blank", "title": answered.title, "status": answered.status, "detail": str(error)}
