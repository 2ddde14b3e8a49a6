"""Logging the writer's and the worker's parts share: a throttle for errors that repeat, and the
formatter that joins a log line to its trace.

Logging itself is configured only by the entry points, from log.conf (config.configure_logging).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional


class ThrottledLog:
    """Log a repeated error once per `interval_s` per kind, so an outage is not a log flood; and
    once more when what kept failing works again."""

    def __init__(
        self, logger: logging.Logger, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}  # kind -> when it was last logged
        self._failing: Optional[str] = None  # what is failing, for `recovered`

    def warning(self, error: BaseException, what: str = "") -> None:
        kind = type(error).__name__
        self._failing = what or kind
        now = self._clock()
        if now - self._last.get(kind, -self.interval_s) >= self.interval_s:
            self._last[kind] = now
            if what:
                self.logger.warning("%s failed (%s: %s); retrying with backoff", what, kind, error)
            else:
                self.logger.warning("%s: %s", kind, error)

    def recovered(self) -> None:
        """What failed works again: say so once, and log its next failure at once."""
        if self._failing is not None:
            self.logger.info("%s works again", self._failing)
            self._failing = None
            self._last.clear()


#: With tracing on, what gives the current span's (trace id, span id) as hex, or None outside a
#: span; set by tracing.py. Off, nothing is looked up.
_trace_ids: Optional[Callable[[], Optional[tuple[str, str]]]] = None


def set_trace_ids(lookup: Optional[Callable[[], Optional[tuple[str, str]]]]) -> None:
    global _trace_ids
    _trace_ids = lookup


class TraceFormatter(logging.Formatter):
    """log.conf's formatter: `%(trace)s` is ` trace=<32 hex> span=<16 hex>` for a line written
    inside a span with tracing on, and empty otherwise, so that a log line leads to its trace."""

    def format(self, record: logging.LogRecord) -> str:
        ids = _trace_ids() if _trace_ids is not None else None
        record.trace = f" trace={ids[0]} span={ids[1]}" if ids else ""
        return super().format(record)
