"""A processing step over HTTP (PROCESSOR=http://host:port/path): each message is POSTed to a
service of the user's, in any language, as Elastic Beanstalk's worker tier and Dapr's bindings
deliver theirs. What its answer means (docs/worker.md):

| answer                                   | the attempt                                        |
|------------------------------------------|----------------------------------------------------|
| 2xx                                      | succeeded: the message is deleted                  |
| 422                                      | `Reject`: dead-lettered now, with the answer as reason |
| 429 or 503 with Retry-After              | `RetryLater`: back after that many seconds         |
| any other, a refused connection, no answer within PROCESSING_TIMEOUT | failed: back after its backoff |
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Optional

import urllib3

from ..sqs import ReceivedMessage
from ..tracing import NO_TRACING, NoTracing
from ..verdicts import MAX_DELAY_S, Reject, RetryLater

#: How much of an answer's body becomes the failure's reason.
ANSWER_CHARS = 200
#: The longest a connection to the step's server may take to open (capped by the timeout).
CONNECT_TIMEOUT_S = 5.0
#: The status an HTTP step answers to reject a message: no retry can help it.
REJECT_STATUS = 422
#: The statuses whose Retry-After brings the message back after that long.
RETRY_LATER_STATUSES = (429, 503)

#: The headers each request carries, beside the body (the message's body, UTF-8).
MESSAGE_ID = "X-Message-Id"
RECEIVE_COUNT = "X-Receive-Count"
SENT_AT = "X-Sent-At"  # epoch seconds, SQS's SentTimestamp
GROUP_ID = "X-Group-Id"  # FIFO queues only
PROCESSING_KEY = "X-Processing-Key"  # what redeliveries of one message share: deduplicate on it
ATTRIBUTES = "X-Message-Attributes"  # the string attributes, as a JSON object in ASCII
TIMEOUT = "X-Processing-Timeout"  # seconds the worker waits for the answer
TRACEPARENT = "traceparent"  # W3C: the process span's, or the message's creation context


class HttpStepFailed(Exception):
    """The step's server answered something other than success, or could not be reached."""


class HttpStep:
    """POSTs each message to `url` on pooled keep-alive connections (one per thread at most),
    and turns the answer into the step's outcome. Runs on the worker's threads, like a plain
    step: the deadline watch stands behind its own timeout."""

    def __init__(self, url: str, *, timeout_s: float, concurrency: int, tracing: NoTracing = NO_TRACING) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.tracing = tracing
        self._pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=concurrency,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(total=timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
        )
        self.__name__ = url  # how the worker's log names the step

    def __call__(self, message: ReceivedMessage) -> None:
        try:
            response = self._pool.request(
                "POST",
                self.url,
                body=message.body.encode("utf-8"),
                headers=self.headers(message),
                redirect=False,
                preload_content=False,
            )
        except urllib3.exceptions.NewConnectionError as exc:  # before TimeoutError: urllib3 makes it one
            raise HttpStepFailed(f"POST {self.url}: {_reason(exc)}") from None
        except urllib3.exceptions.TimeoutError:
            raise HttpStepFailed(f"no answer from {self.url} within {self.timeout_s:g} s") from None
        except urllib3.exceptions.HTTPError as exc:
            raise HttpStepFailed(f"POST {self.url}: {_reason(exc)}") from None
        try:
            if 200 <= response.status < 300:
                return
            answer = response.read(ANSWER_CHARS * 4, decode_content=True).decode("utf-8", "replace")[:ANSWER_CHARS]
        except urllib3.exceptions.HTTPError as exc:
            raise HttpStepFailed(f"POST {self.url}: {response.status}, then {_reason(exc)}") from None
        finally:
            response.drain_conn()
            response.release_conn()
        summary = f"{response.status} {response.reason or ''}".strip()
        if answer.strip():
            summary += f": {answer.strip()}"
        if response.status == REJECT_STATUS:
            raise Reject(summary)
        if response.status in RETRY_LATER_STATUSES:
            seconds = retry_after_s(response.headers.get("Retry-After"))
            if seconds is not None:
                raise RetryLater(seconds, summary)
        raise HttpStepFailed(summary)

    def headers(self, message: ReceivedMessage) -> dict[str, str]:
        """What the request says of the message besides its body: all ASCII, whatever the message."""
        headers = {
            "Content-Type": "text/plain; charset=utf-8",
            MESSAGE_ID: message.id,
            RECEIVE_COUNT: str(message.receive_count),
            PROCESSING_KEY: message.processing_key,
            ATTRIBUTES: json.dumps(dict(message.attributes), ensure_ascii=True, separators=(",", ":")),
            TIMEOUT: f"{self.timeout_s:g}",
        }
        if message.sent_at_s is not None:
            headers[SENT_AT] = f"{message.sent_at_s:.3f}"
        if message.group_id is not None:
            headers[GROUP_ID] = message.group_id
        traceparent = self.tracing.traceparent(message)
        if traceparent is not None:
            headers[TRACEPARENT] = traceparent
        return headers

    def close(self) -> None:
        self._pool.clear()


def retry_after_s(value: Optional[str], now_s: Optional[float] = None) -> Optional[float]:
    """Retry-After's seconds (a number of seconds, or an HTTP date), from now, within SQS's 12
    hours; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return min(MAX_DELAY_S, int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return min(MAX_DELAY_S, max(0.0, when.timestamp() - (time.time() if now_s is None else now_s)))


def _reason(error: Exception) -> str:
    """What went wrong with a request, without urllib3's pool and object addresses."""
    reason = getattr(error, "reason", None) or error
    text = str(reason)
    if "Connection refused" in text:
        return "connection refused"
    return text.split(": ", 1)[-1] if "object at 0x" in text else text
