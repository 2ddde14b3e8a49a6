"""The SQS interface, as a processing step or a tool of one's own imports it: queues by name,
the messages that go in and come out, each entry's outcome, the few errors that say what went
wrong, and what a processing step can say of a message (`Reject`, `RetryLater`).

The entry point to sqs_message_service/sqs.py, the one module that talks to SQS, and to
sqs_message_service/aws.py, which makes every AWS client with its own timeouts.
"""

from sqs_message_service.aws import create_client
from sqs_message_service.rules import MAX_ATTRIBUTES, payload_bytes
from sqs_message_service.sqs import (
    BATCH_MAX_BYTES,
    BATCH_MAX_ENTRIES,
    EntryOutcome,
    MessageRejected,
    NotAuthorized,
    OutgoingMessage,
    QueueNotFound,
    QueueUnavailable,
    ReceivedMessage,
    SendResult,
    SqsError,
    SqsQueue,
    plan_batches,
)
from sqs_message_service.verdicts import Reject, RetryLater

__all__ = [
    "BATCH_MAX_BYTES",
    "BATCH_MAX_ENTRIES",
    "MAX_ATTRIBUTES",
    "EntryOutcome",
    "MessageRejected",
    "NotAuthorized",
    "OutgoingMessage",
    "QueueNotFound",
    "QueueUnavailable",
    "ReceivedMessage",
    "Reject",
    "RetryLater",
    "SendResult",
    "SqsError",
    "SqsQueue",
    "create_client",
    "payload_bytes",
    "plan_batches",
]
