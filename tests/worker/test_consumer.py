"""worker/consumer.py: how many receives a worker keeps in flight."""

from __future__ import annotations

import pytest

from sqs_message_service.worker.consumer import receivers_for


@pytest.mark.parametrize(("concurrency", "receivers"), [(1, 1), (10, 1), (39, 1), (40, 2), (64, 3), (500, 4)])
def test_one_receive_in_flight_per_two_receives_worth_of_processors_up_to_a_cap(
    concurrency: int, receivers: int
) -> None:
    assert receivers_for(concurrency) == receivers
