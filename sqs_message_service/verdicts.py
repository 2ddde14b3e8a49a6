"""What a processing step can say of a message besides "done" (returning) and "failed" (raising
anything else): `Reject` (never retry it) and `RetryLater` (try it again after this long); and
`TimedOut`, which the worker says of an attempt that outlived PROCESSING_TIMEOUT.

A step imports them from `sqsinterface`; an HTTP step says the same with its status codes
(docs/worker.md). The settler turns each into what becomes of the message (worker/settler.py).
"""

from __future__ import annotations

import math

#: SQS's longest visibility timeout: the longest a message can be put off (12 hours).
MAX_DELAY_S = 43_200


class Reject(Exception):
    """No retry can help this message: the worker dead-letters it on this attempt, with `reason`
    as the dead letter's error. On a FIFO queue the rest of its group waits until it is gone."""

    def __init__(self, reason: str = "rejected by the processing step") -> None:
        super().__init__(reason)
        self.reason = reason


class RetryLater(Exception):
    """Try the message again after `seconds` (whole seconds, 0 to 12 hours), instead of after
    the worker's backoff: what a rate-limited API's Retry-After asks. It still counts as a
    failed attempt, so a message told this on its MAX_RECEIVE_COUNT-th receive is dead-lettered
    (SQS counts every receive; only a new message would start again)."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or math.isnan(seconds):
            raise TypeError(f"RetryLater takes a number of seconds, not {seconds!r}")
        self.seconds = min(MAX_DELAY_S, max(0, math.ceil(seconds)))
        self.reason = reason or f"retry later, in {self.seconds} s"
        super().__init__(self.reason)


class TimedOut(Exception):
    """The attempt outlived PROCESSING_TIMEOUT: a failure like any other, with this reason."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"timed out after {timeout_s:g} s")
        self.timeout_s = timeout_s
