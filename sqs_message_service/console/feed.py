"""The console's live picture: one thread reads SQS and the metrics every CONSOLE_REFRESH seconds
and keeps the last 15 minutes of readings; every open page is answered from them.

So ten pages cost what one does: one GetQueueAttributes per queue and one scrape per URL (or a
few Prometheus queries) a refresh period, whether anyone is looking or not, and a page asks the
console only for the readings it has not yet seen (`since`).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, Optional

from ..sqs import SqsError, SqsQueue
from .readings import RATES, Figures, Source, SourceState

log = logging.getLogger(__name__)

#: How much history the console keeps and charts.
HISTORY_S = 15 * 60


class Feed:
    """The readings, oldest first, each a flat dict (`seq`, `at`, the rates, `p50_ms`, `p99_ms`,
    the queue's `visible`, `in_flight`, `delayed` and the dead-letter queue's `dead_letters`);
    a figure nobody could read is None. `run` reads every `refresh_s` on a thread of its own."""

    def __init__(
        self,
        *,
        queue: SqsQueue,
        dead_letter_queue: SqsQueue,
        source: Source,
        refresh_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.dead_letter_queue = dead_letter_queue
        self.source = source
        self.refresh_s = refresh_s
        self.clock = clock
        self._points: Deque[dict[str, Any]] = collections.deque(maxlen=max(2, int(HISTORY_S / refresh_s) + 1))
        self._lock = threading.Lock()
        self._seq = 0
        self.sources: tuple[dict[str, Any], ...] = ()
        self.sqs_error: Optional[str] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="console-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.read_once()
            except Exception:  # a bug of ours: the page shows stale figures, the next reading may do better
                log.exception("console: a reading failed")
            self._stop.wait(max(0.0, self.refresh_s - (time.monotonic() - started)))

    def read_once(self) -> dict[str, Any]:
        """Read SQS and the metrics once and keep the reading; returns it."""
        now = self.clock()
        point: dict[str, Any] = {"at": round(now, 3)}
        errors = []
        for queue, names in ((self.queue, ("visible", "in_flight", "delayed")), (self.dead_letter_queue, None)):
            try:
                depth = queue.depth()
            except SqsError as exc:
                errors.append(f"{queue.name}: {exc}")
                depth = None
            if names is None:  # a dead letter being read or redriven is in flight: still a dead letter
                point["dead_letters"] = None if depth is None else sum(depth.values())
            else:
                point.update({name: None if depth is None else depth[name] for name in names})
        try:
            figures: Figures = self.source.read(now)
        except Exception as exc:  # a page or an answer not as expected: the SQS figures still count
            log.warning("console: the rates could not be read (%s: %s)", type(exc).__name__, exc)
            figures = Figures(dict.fromkeys(RATES), None, None, (SourceState("rates", ok=False, error=str(exc)[:200]),))
        point.update({rate: _rounded(figures.rates.get(rate)) for rate in RATES})
        point["p50_ms"] = _milliseconds(figures.p50_s)
        point["p99_ms"] = _milliseconds(figures.p99_s)
        with self._lock:
            self._seq += 1
            point["seq"] = self._seq
            self._points.append(point)
            self.sources = tuple({"url": s.url, "ok": s.ok, "error": s.error} for s in figures.sources)
            self.sqs_error = "; ".join(errors) or None
        return point

    def since(self, seq: int) -> list[dict[str, Any]]:
        """The readings after `seq` (0: all that are kept)."""
        with self._lock:
            return [point for point in self._points if point["seq"] > seq]

    @property
    def latest(self) -> Optional[dict[str, Any]]:
        with self._lock:
            return self._points[-1] if self._points else None


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


def _milliseconds(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds * 1000, 2)
