"""worker/consumer.py: how many receives a worker keeps in flight."""

from __future__ import annotations

import pytest

from sqs_message_service.worker.consumer import Backlog, Consumer, receivers_for
from sqs_message_service.worker.in_flight import InFlight, WorkQueue


@pytest.mark.parametrize(("concurrency", "receivers"), [(1, 1), (10, 1), (39, 1), (40, 2), (64, 3), (500, 4)])
def test_one_receive_in_flight_per_two_receives_worth_of_processors_up_to_a_cap(
    concurrency: int, receivers: int
) -> None:
    assert receivers_for(concurrency) == receivers


class DepthReadings:
    """A queue whose depth reads as given, one reading a call: the last one repeats."""

    is_fifo = False

    def __init__(self, *readings: dict[str, int]) -> None:
        self.readings = list(readings)
        self.read = 0

    def depth(self) -> dict[str, int]:
        self.read += 1
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def burst_consumer(queue: DepthReadings) -> Consumer:
    return Consumer(
        queue=queue,  # type: ignore[arg-type]
        in_flight=InFlight(10),
        work=WorkQueue(),
        settler=None,  # type: ignore[arg-type]
        metrics=None,  # type: ignore[arg-type]
        visibility_timeout_s=30,
        wait_s=1,
        stop_worker=lambda: None,
        backlog=Backlog(),
        idle_s=0,
    )


def test_a_burst_worker_does_not_stop_on_a_reading_that_missed_a_message_coming_back() -> None:
    # moto counts "visible" and "not visible" at different instants: a message whose visibility
    # ends between the two is in neither, and the queue reads empty once while it is not.
    queue = DepthReadings({"visible": 0, "in_flight": 0, "delayed": 0}, {"visible": 1, "in_flight": 0, "delayed": 0})

    assert burst_consumer(queue)._idle_for_long_enough() is False


def test_a_burst_worker_stops_when_the_queue_reads_empty_twice() -> None:
    queue = DepthReadings({"visible": 0, "in_flight": 0, "delayed": 0})

    assert burst_consumer(queue)._idle_for_long_enough() is True
    assert queue.read == 2
