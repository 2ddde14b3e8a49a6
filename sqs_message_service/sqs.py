"""The one place that talks to SQS: queues by name, batch helpers that report each entry's own
outcome, and a few errors of our own instead of botocore's many. The errors say what happened
(unreachable, not found, not authorized, refused); each caller decides what that means to it:
the writer an HTTP status (writer/errors.py), the worker a retry.

The client it is handed is made by `aws.create_client`.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Sequence

import botocore.exceptions

from .aws import NOT_AUTHORIZED_CODES, THROTTLED_CODES
from .hooks import NO_HOOKS, Hooks
from .metrics import SqsMetrics, by_label, total
from .rules import STRING, payload_bytes
from .trace_header import idempotency_key

log = logging.getLogger(__name__)


class SqsError(Exception):
    """An SQS call failed. Its kinds say how; the text names the call and SQS's own words."""


class QueueUnavailable(SqsError):
    """SQS cannot be reached, is throttling, or failed on its side: the same call may work later."""


class QueueNotFound(QueueUnavailable):
    """The queue does not exist (yet): `sqs_setup.py` creates it."""


class NotAuthorized(SqsError):
    """Credentials are missing or invalid, or lack the right for this call: the operator's to
    fix, never the client's."""


class MessageRejected(SqsError):
    """SQS refused the request itself as invalid; sending it again will not help."""


class LeaseLapsed(MessageRejected):
    """SQS no longer takes a receipt handle: the message's visibility timeout ran out and it
    was received again (or deleted), or the handle was never one."""


#: SQS accepts at most this many entries in one batch call.
BATCH_MAX_ENTRIES = 10
#: Sum of the payloads in one SendMessageBatch. SQS raised it to 1 MiB in 2025; we keep the older
#: 256 KiB so that every endpoint (and older emulators) accepts our batches. A single message
#: larger than this still travels, alone in its batch.
BATCH_MAX_BYTES = 262_144
#: SQS bills a request per started 64 KiB of payload in a call.
BILLING_CHUNK_BYTES = 65_536

_NOT_FOUND = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


@dataclass(frozen=True)
class OutgoingMessage:
    """One message as SQS will receive it. The writer builds it with `writer.service.to_outgoing`,
    which checks it against `rules`."""

    body: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    delay_s: Optional[int] = None
    group_id: Optional[str] = None
    deduplication_id: Optional[str] = None
    trace_header: Optional[str] = None  # the AWSTraceHeader system attribute (trace_header.py)

    @property
    def size_bytes(self) -> int:
        return payload_bytes(self.body, self.attributes)


@dataclass(frozen=True)
class SendResult:
    """The outcome of one entry: a message id when SQS accepted it, otherwise the error."""

    message_id: Optional[str] = None
    sequence_number: Optional[str] = None
    error: Optional[SqsError] = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the worker sees it. `receive_count` counts this delivery (1 = first)."""

    id: str
    body: str
    receipt_handle: str
    receive_count: int = 1
    sent_at_s: Optional[float] = None  # SQS's SentTimestamp, in epoch seconds
    attributes: Mapping[str, str] = field(default_factory=dict)
    group_id: Optional[str] = None  # FIFO queues: messages of one group must stay in order
    deduplication_id: Optional[str] = None  # FIFO queues: given by the sender, or the body's hash
    trace_header: Optional[str] = None  # the AWSTraceHeader system attribute, when it was sent one

    @classmethod
    def from_sqs(cls, raw: Mapping[str, Any]) -> "ReceivedMessage":
        system = raw.get("Attributes", {})
        sent_ms = system.get("SentTimestamp")
        return cls(
            id=raw["MessageId"],
            body=raw.get("Body", ""),
            receipt_handle=raw["ReceiptHandle"],
            receive_count=int(system.get("ApproximateReceiveCount", 1)),
            sent_at_s=int(sent_ms) / 1000 if sent_ms else None,
            attributes={name: value.get("StringValue", "") for name, value in raw.get("MessageAttributes", {}).items()},
            group_id=system.get("MessageGroupId"),
            deduplication_id=system.get("MessageDeduplicationId"),
            trace_header=system.get("AWSTraceHeader"),
        )

    @functools.cached_property
    def processing_key(self) -> str:
        """What makes two deliveries the same message to the worker's processed ledger
        (PROCESSED_TABLE): on a FIFO queue the deduplication id its sender gave; on a standard
        queue the writer's Idempotency-Key when it was sent with one (hashed, scoped per API
        key, carried in AWSTraceHeader); otherwise its message id, which every redelivery
        keeps. A deduplication id SQS made from the body (content-based deduplication) is not
        a key: SQS holds it for five minutes only, and two orders with the same text a day
        apart are two orders."""
        if self.deduplication_id and self.deduplication_id != hashlib.sha256(self.body.encode("utf-8")).hexdigest():
            return f"dedup:{self.deduplication_id}"
        key = idempotency_key(self.trace_header)
        if key is not None:
            return f"idempotency:{key}"
        return f"id:{self.id}"


#: The outcome of one entry of a delete or visibility batch: None when SQS did it.
EntryOutcome = Optional[SqsError]


def billable_requests(payload_bytes: int) -> int:
    """What SQS bills for one call carrying `payload_bytes`: a request per started 64 KiB,
    and at least one."""
    return max(1, -(-payload_bytes // BILLING_CHUNK_BYTES))


def plan_batches(
    sizes_bytes: Sequence[int],
    *,
    max_entries: int = BATCH_MAX_ENTRIES,
    max_bytes: int = BATCH_MAX_BYTES,
) -> list[range]:
    """Split entries, in order, into consecutive batches of at most `max_entries` entries and
    `max_bytes` payload; an entry larger than `max_bytes` goes alone."""
    batches: list[range] = []
    start, total = 0, 0
    for index, size in enumerate(sizes_bytes):
        if index > start and (index - start == max_entries or total + size > max_bytes):
            batches.append(range(start, index))
            start, total = index, 0
        total += size
    if len(sizes_bytes) > start:
        batches.append(range(start, len(sizes_bytes)))
    return batches


def _client_error(exc: botocore.exceptions.ClientError) -> SqsError:
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    text = f"{code}: {error.get('Message', '')}".rstrip(": ")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in _NOT_FOUND:
        return QueueNotFound(text)
    if code in NOT_AUTHORIZED_CODES:
        return NotAuthorized(text)
    if code in THROTTLED_CODES or status >= 500:
        return QueueUnavailable(text)
    return MessageRejected(text)


@contextmanager
def translated_errors(operation: str) -> Iterator[None]:
    """Turn botocore's exceptions into ours, naming the operation that failed."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        error = _client_error(exc)
        raise type(error)(f"{operation}: {error}") from exc
    except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError) as exc:
        raise NotAuthorized(
            f"{operation}: no AWS credentials found ({exc}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or SQS_ENDPOINT_URL for a local endpoint"
        ) from exc
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
        raise QueueUnavailable(f"{operation}: SQS unreachable: {exc}") from exc


class SqsQueue:
    """One SQS queue, found by name, on a client made by `create_client` (one per process, shared
    by its queues; tests pass one under moto). The URL and FIFO settings are looked up on first
    use, so a process can start before its queue exists and report that through readiness.
    `hooks` watch each send and receive (tracing's spans, say)."""

    def __init__(
        self, name: str, client: Any, metrics: Optional[SqsMetrics] = None, *, hooks: Hooks = NO_HOOKS
    ) -> None:
        self.name = name
        self.client = client
        self.is_fifo = name.endswith(".fifo")
        # Shared by a process's queues, so that its /metrics shows all of them; a queue made
        # alone (tools, tests) counts into a registry of its own.
        self.metrics = metrics if metrics is not None else SqsMetrics()
        self.hooks = hooks
        self._url: Optional[str] = None
        self._arn: Optional[str] = None
        self._content_based_dedup: Optional[bool] = None

    def watched_by(self, hooks: Hooks) -> SqsQueue:
        """This queue watched by `hooks`: itself when those are its hooks already, else a copy
        that shares its client, its metrics and what it has looked up, for a part handed a queue
        built without them (the worker's, say)."""
        if hooks is self.hooks:
            return self
        watched = copy.copy(self)
        watched.hooks = hooks
        return watched

    def _call(self, operation: str, *, payload_bytes: int = 0, **kwargs: Any) -> dict:
        """Call SQS; `payload_bytes` is what the call sends, for the bill."""
        self.metrics.requests.labels(self.name, operation).inc()
        self.metrics.billable_requests.labels(self.name).inc(billable_requests(payload_bytes))
        method = getattr(self.client, _snake_case(operation))
        with translated_errors(f"{operation} {self.name!r}"):
            return method(**kwargs)

    def _bill_received(self, payload_bytes: int) -> None:
        """A receive is billed by what it brought back too: the requests beyond its first."""
        self.metrics.billable_requests.labels(self.name).inc(billable_requests(payload_bytes) - 1)

    @property
    def calls(self) -> dict[str, int]:
        """SQS API calls made through this queue since start, by operation."""
        return by_label(self.metrics.requests, "sqs_requests_total", "operation", queue=self.name)

    @property
    def billable_requests(self) -> int:
        """What SQS bills for those calls: one request per call and per further 64 KiB."""
        return int(total(self.metrics.billable_requests, "sqs_billable_requests_total", queue=self.name))

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self._call("GetQueueUrl", QueueName=self.name)["QueueUrl"]
        return self._url

    def exists(self) -> bool:
        try:
            return bool(self.url)
        except QueueNotFound:
            return False

    def attributes(self, names: Sequence[str] = ("All",)) -> dict[str, str]:
        # SQS leaves out "Attributes" when the queue has none of those asked (a RedrivePolicy, say).
        return self._call("GetQueueAttributes", QueueUrl=self.url, AttributeNames=list(names)).get("Attributes", {})

    def depth(self) -> dict[str, int]:
        """SQS's approximate counts: waiting, in flight (received, not yet deleted), delayed."""
        attrs = self.attributes(
            [
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ]
        )
        return {
            "visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            "delayed": int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
        }

    @property
    def content_based_deduplication(self) -> bool:
        """Whether a FIFO queue derives deduplication ids from the body (looked up once)."""
        if not self.is_fifo:
            return False
        if self._content_based_dedup is None:
            value = self.attributes(["ContentBasedDeduplication"]).get("ContentBasedDeduplication")
            self._content_based_dedup = str(value).lower() == "true"
        return self._content_based_dedup

    @property
    def arn(self) -> str:
        if self._arn is None:
            self._arn = self.attributes(["QueueArn"])["QueueArn"]
        return self._arn

    def start_move_task(self, *, destination_arn: str, max_per_second: Optional[int] = None) -> str:
        """Ask SQS to move every message of this queue (a dead-letter queue) to `destination_arn`
        (StartMessageMoveTask); returns the task's handle."""
        extra = {} if max_per_second is None else {"MaxNumberOfMessagesPerSecond": max_per_second}
        return self._call("StartMessageMoveTask", SourceArn=self.arn, DestinationArn=destination_arn, **extra)[
            "TaskHandle"
        ]

    def move_task(self, handle: str) -> dict[str, Any]:
        """The move task's state (ListMessageMoveTasks): Status, ApproximateNumberOfMessagesMoved,
        ApproximateNumberOfMessagesToMove, FailureReason."""
        tasks = self._call("ListMessageMoveTasks", SourceArn=self.arn, MaxResults=10)["Results"]
        for task in tasks:
            if task.get("TaskHandle") == handle:
                return task
        return tasks[0] if tasks else {"Status": "UNKNOWN"}  # finished tasks lose their handle

    def create(self, attributes: Mapping[str, str], tags: Optional[Mapping[str, str]] = None) -> str:
        """Create the queue; `tags` are set in the same call (which then needs sqs:TagQueue)."""
        extra: dict[str, Any] = {"tags": dict(tags)} if tags else {}
        self._url = self._call("CreateQueue", QueueName=self.name, Attributes=dict(attributes), **extra)["QueueUrl"]
        return self._url

    def set_attributes(self, attributes: Mapping[str, str]) -> None:
        self._call("SetQueueAttributes", QueueUrl=self.url, Attributes=dict(attributes))

    def delete_queue(self) -> None:
        self._call("DeleteQueue", QueueUrl=self.url)
        self._url = None

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send messages in as few SendMessageBatch calls as SQS's limits allow. Returns one
        result per message, in order; a failed call fails only the entries it carried."""
        results: list[SendResult] = []
        for batch in plan_batches([m.size_bytes for m in messages]):
            results.extend(self._send_batch([messages[i] for i in batch]))
        return results

    def _send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        with self.hooks.sending(self.name, messages) as watch:
            results = self._send_batch_call(messages)
            failure = next((result.error for result in results if result.error is not None), None)
            if failure is not None:
                self.hooks.failed(watch, failure)
            return results

    def _send_batch_call(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        entries = [_entry(str(index), message) for index, message in enumerate(messages)]
        try:
            response = self._call(
                "SendMessageBatch",
                QueueUrl=self.url,
                Entries=entries,
                payload_bytes=sum(message.size_bytes for message in messages),
            )
        except (QueueUnavailable, MessageRejected, NotAuthorized) as exc:
            return [SendResult(error=exc) for _ in messages]
        results: list[SendResult] = [
            SendResult(error=QueueUnavailable("SendMessageBatch: SQS reported no outcome"))
        ] * len(messages)
        for ok in response.get("Successful", []):
            results[int(ok["Id"])] = SendResult(message_id=ok["MessageId"], sequence_number=ok.get("SequenceNumber"))
        for failed in response.get("Failed", []):
            results[int(failed["Id"])] = SendResult(error=_entry_error("SendMessageBatch", failed))
        return results

    def receive(
        self, *, max_messages: int, wait_s: int, visibility_timeout_s: Optional[int] = None
    ) -> list[ReceivedMessage]:
        """Long-poll for up to `max_messages` (1 to 10) messages, with their receive count,
        sent time and string attributes; hidden for the queue's visibility timeout, or
        `visibility_timeout_s`."""
        with self.hooks.receiving(self.name) as watch:
            try:
                received = self._receive_call(max_messages, wait_s, visibility_timeout_s)
            except SqsError as exc:
                self.hooks.failed(watch, exc)
                raise
            self.hooks.received(watch, received)
            return received

    def _receive_call(
        self, max_messages: int, wait_s: int, visibility_timeout_s: Optional[int]
    ) -> list[ReceivedMessage]:
        extra = {} if visibility_timeout_s is None else {"VisibilityTimeout": visibility_timeout_s}
        response = self._call(
            "ReceiveMessage",
            QueueUrl=self.url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_s,
            MessageSystemAttributeNames=[
                "ApproximateReceiveCount",
                "SentTimestamp",
                "MessageGroupId",
                "MessageDeduplicationId",
                "AWSTraceHeader",
            ],
            MessageAttributeNames=["All"],
            **extra,
        )
        received = [ReceivedMessage.from_sqs(raw) for raw in response.get("Messages", [])]
        self._bill_received(sum(payload_bytes(message.body, message.attributes) for message in received))
        return received

    def delete_messages(self, receipt_handles: Sequence[str]) -> list[EntryOutcome]:
        """Delete messages with DeleteMessageBatch, ten at a time; one outcome per handle."""
        entries = [{"ReceiptHandle": handle} for handle in receipt_handles]
        return self._batched("DeleteMessageBatch", entries)

    def change_visibility(self, changes: Sequence[tuple[str, int]]) -> list[EntryOutcome]:
        """Set each (receipt handle, seconds) pair's visibility timeout: 0 makes a message
        visible at once. ChangeMessageVisibilityBatch, ten at a time; one outcome per pair."""
        entries = [{"ReceiptHandle": handle, "VisibilityTimeout": seconds} for handle, seconds in changes]
        return self._batched("ChangeMessageVisibilityBatch", entries)

    def _batched(self, operation: str, entries: list[dict[str, Any]]) -> list[EntryOutcome]:
        outcomes: list[EntryOutcome] = []
        for start in range(0, len(entries), BATCH_MAX_ENTRIES):
            chunk = entries[start : start + BATCH_MAX_ENTRIES]
            try:
                response = self._call(
                    operation,
                    QueueUrl=self.url,
                    Entries=[{"Id": str(i), **entry} for i, entry in enumerate(chunk)],
                )
            except SqsError as exc:
                cause = exc.__cause__
                if isinstance(cause, botocore.exceptions.ClientError):
                    error = cause.response.get("Error", {})
                    if _lapsed_handle(operation, str(error.get("Code", "")), str(error.get("Message", ""))):
                        exc = LeaseLapsed(str(exc))
                outcomes.extend([exc] * len(chunk))
                continue
            chunk_outcomes: list[EntryOutcome] = [None] * len(chunk)
            for failed in response.get("Failed", []):
                chunk_outcomes[int(failed["Id"])] = _entry_error(operation, failed)
            outcomes.extend(chunk_outcomes)
        return outcomes


#: Codes of a batch entry that sending or settling again cannot change, whatever the entry's
#: `SenderFault` says: LocalStack marks some of them `SenderFault: false`.
FINAL_ENTRY_CODES = frozenset(
    {
        "InvalidMessageContents",
        "InvalidParameterValue",
        "InvalidAttributeName",
        "InvalidAttributeValue",
        "MissingParameter",
        "ReceiptHandleIsInvalid",
        "MessageNotInflight",
    }
)


#: Codes that say a receipt handle is no longer (or never was) good, whichever engine says them:
#: SQS, LocalStack and fauxqs (ReceiptHandleIsInvalid, MessageNotInflight), moto; SQS says
#: InvalidParameterValue of a handle it cannot read.
LAPSED_HANDLE_CODES = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidReceiptHandle"})
#: The operations that take receipt handles.
HANDLE_OPERATIONS = frozenset({"DeleteMessageBatch", "ChangeMessageVisibilityBatch"})


def _lapsed_handle(operation: str, code: str, message: str) -> bool:
    """Whether an error of `operation` says its receipt handle is no longer good."""
    if operation not in HANDLE_OPERATIONS:
        return False
    code = code.rsplit(".", 1)[-1]
    return code in LAPSED_HANDLE_CODES or (code == "InvalidParameterValue" and "receipt" in message.lower())


def _entry_error(operation: str, failed: Mapping[str, Any]) -> SqsError:
    """The error for one entry of a batch's `Failed` list: the sender's fault, or a code no
    retry can change, is final; anything else may pass. A receipt handle no longer good is
    LeaseLapsed."""
    code = str(failed.get("Code", ""))
    final = failed.get("SenderFault") or code.rsplit(".", 1)[-1] in FINAL_ENTRY_CODES
    error_type = MessageRejected if final else QueueUnavailable
    if _lapsed_handle(operation, code, str(failed.get("Message", ""))):
        error_type = LeaseLapsed
    text = f"{code}: {failed.get('Message', '')}".rstrip(": ")
    return error_type(f"{operation}: {text}")


def _entry(entry_id: str, message: OutgoingMessage) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message.body}
    if message.attributes:
        entry["MessageAttributes"] = {
            name: {"DataType": STRING, "StringValue": value} for name, value in message.attributes.items()
        }
    if message.delay_s is not None:
        entry["DelaySeconds"] = message.delay_s
    if message.group_id is not None:
        entry["MessageGroupId"] = message.group_id
    if message.deduplication_id is not None:
        entry["MessageDeduplicationId"] = message.deduplication_id
    if message.trace_header is not None:
        entry["MessageSystemAttributes"] = {"AWSTraceHeader": {"DataType": STRING, "StringValue": message.trace_header}}
    return entry


def _snake_case(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
