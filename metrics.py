"""Small measurement helpers shared by the worker's and the client's live stats."""

from __future__ import annotations

import collections
import math
import threading
from typing import Deque, Optional, Sequence


def percentile(sorted_values: Sequence[float], fraction: float) -> Optional[float]:
    """Nearest-rank percentile of already sorted values; None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class LatencyWindow:
    """The most recent `size` latencies, thread-safe, for percentiles that follow the load."""

    def __init__(self, size: int = 10_000) -> None:
        self._values: Deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)

    def percentiles(self, *fractions: float) -> list[Optional[float]]:
        with self._lock:
            ordered = sorted(self._values)
        return [percentile(ordered, fraction) for fraction in fractions]


def milliseconds(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"
