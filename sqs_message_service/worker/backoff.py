"""Backoff, as pure functions: how long a failed message waits before its next attempt, and how
long a consumer pauses while SQS keeps failing."""

from __future__ import annotations

import math
import random
from typing import Callable

#: SQS's longest visibility timeout: the longest a retry can be put off.
MAX_VISIBILITY_TIMEOUT_S = 43_200


def backoff_s(attempt: int, *, base_s: float, max_s: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before attempt `attempt + 1`: `base_s` doubling with each attempt, capped
    at `max_s`, with jitter (between half and all of it) so that what failed together does not
    come back together."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    return ceiling * (0.5 + rng() / 2)


def compute_backoff(
    receive_count: int, *, base_s: float, max_s: float, rng: Callable[[], float] = random.random
) -> int:
    """Seconds a failed message stays invisible before its next attempt: `backoff_s` in the
    whole seconds SQS takes."""
    return min(MAX_VISIBILITY_TIMEOUT_S, math.ceil(backoff_s(receive_count, base_s=base_s, max_s=max_s, rng=rng)))
