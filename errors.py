"""The service's error vocabulary: every refusal and failure the writer answers with is a class here.

Each class carries the HTTP status and title it is answered with, and the `outcome` a message it
refuses counts under in `writer_messages_total`: whose fault it was. `problem()` is the one
function that turns any of them into an RFC 9457 problem; server.py renders it for the error
handlers and the admission limit, message.py for each entry of a batch.

    ServiceError                      500  (a bug of ours: never raised on purpose)
    ├── RequestRefused                400  the client's to change                  invalid
    │   ├── InvalidRequest            400  not what the spec describes             invalid
    │   │   ├── LengthRequired        411  a chunked upload                        invalid
    │   │   ├── RequestTooLarge       413  over MAX_REQUEST_BYTES                  invalid
    │   │   └── UnsupportedMediaType  415  not JSON, or not UTF-8                  invalid
    │   ├── InvalidMessage            400  a message SQS would refuse              invalid
    │   │   └── MessageTooLarge       413  over MAX_MESSAGE_BYTES in UTF-8         invalid
    │   ├── Unauthenticated           401  no X-API-Key, or not one of the keys
    │   ├── KeyInProgress             409  Idempotency-Key: first request still sending
    │   └── KeyReused                 422  Idempotency-Key: used with another request
    ├── TryLater                      503  nothing wrong with the request: not now
    │   ├── WriterBusy                503  every handler thread is taken           busy
    │   ├── QueueBacklogged           503  the queue is over MAX_QUEUE_DEPTH       backlogged
    │   └── StoreUnavailable          503  IDEMPOTENCY_TABLE cannot be used        unavailable
    └── SqsError                      503  an SQS call failed (sqsinterface.py)    unavailable
        ├── QueueUnavailable          503  unreachable, throttling, failing        unavailable
        │   └── QueueNotFound         503  the queue does not exist                unavailable
        ├── NotAuthorized             503  credentials or IAM policy               unavailable
        └── MessageRejected           400  SQS refused the request as invalid      invalid

Every 503 is answered with Retry-After: the same request may succeed later.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

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


class Unauthenticated(RequestRefused):
    """No X-API-Key, or not one of the writer's keys (connexion's security check, adapted)."""

    status = 401
    title = "Unauthorized"
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
    outcome = "unavailable"


class WriterBusy(TryLater):
    """Every handler thread is taken: refused before waiting for one."""

    title = "Writer busy"
    outcome = "busy"


class QueueBacklogged(TryLater):
    """The queue holds more than MAX_QUEUE_DEPTH messages: refused until the workers catch up."""

    title = "Queue backlogged"
    outcome = "backlogged"


class StoreUnavailable(TryLater):
    """The idempotency table (IDEMPOTENCY_TABLE) cannot be reached, or refused the call: a
    request with an Idempotency-Key is refused rather than sent without its key kept."""

    title = "Idempotency store unavailable"


class SqsError(ServiceError):
    """An SQS call failed; sqsinterface.py raises these instead of botocore's many errors."""

    status = 503
    title = "SQS error"
    outcome = "unavailable"


class QueueUnavailable(SqsError):
    """SQS cannot be reached, is throttling, or failed on its side: the same call may work later."""

    title = "Queue unavailable"


class QueueNotFound(QueueUnavailable):
    """The queue does not exist (yet): `sqs_setup.py` creates it."""

    title = "Queue not found"


class NotAuthorized(SqsError):
    """Credentials are missing or invalid, or lack the right for this call: the operator's to
    fix, never the client's."""

    title = "Not authorized for the queue"


class MessageRejected(SqsError):
    """SQS refused the request itself as invalid; sending it again will not help."""

    status = 400
    title = "Rejected by SQS"
    outcome = "invalid"


def problem(error: ServiceError) -> Problem:
    """The problem+json body that answers `error`. A 503's response also carries Retry-After
    (`error.retry_later`), which the renderer adds from the RETRY_AFTER setting."""
    return {"type": "about:blank", "title": error.title, "status": error.status, "detail": str(error)}
