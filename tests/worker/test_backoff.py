"""worker/backoff.py: backoff doubles with a cap and jitter, for retries and for outages alike."""

from __future__ import annotations

import pytest

from sqs_message_service.worker.backoff import backoff_s, compute_backoff


@pytest.mark.parametrize(
    ("receive_count", "rng", "expected"),
    [
        (1, 0.0, 1),  # half of 2 s
        (1, 1.0, 2),
        (2, 1.0, 4),
        (3, 0.0, 4),
        (10, 1.0, 60),  # capped
        (10, 0.0, 30),  # capped, then jittered down to half
    ],
)
def test_backoff_doubles_per_receive_with_jitter_and_a_cap(receive_count: int, rng: float, expected: int) -> None:
    assert compute_backoff(receive_count, base_s=2, max_s=60, rng=lambda: rng) == expected


def test_backoff_of_zero_base_is_immediate() -> None:
    assert compute_backoff(5, base_s=0, max_s=60) == 0


@pytest.mark.parametrize(("attempt", "rng", "expected"), [(1, 1.0, 0.5), (2, 0.0, 0.5), (3, 1.0, 2.0), (99, 1.0, 30.0)])
def test_the_outage_pause_is_the_same_backoff_in_fractions_of_a_second(
    attempt: int, rng: float, expected: float
) -> None:
    assert backoff_s(attempt, base_s=0.5, max_s=30, rng=lambda: rng) == expected
