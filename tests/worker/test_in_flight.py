"""worker/in_flight.py: `InFlight` bounds what is received by what is in flight, and its waits end on
a stop; the work queue gives nothing out twice and takes nothing once closed."""

from __future__ import annotations

import threading
import time

from helpers import wait_until
from sqs_message_service.sqs import ReceivedMessage
from sqs_message_service.worker.in_flight import InFlight, WorkQueue


def test_in_flight_bounds_reservations_by_what_is_in_flight_and_frees_what_a_receive_did_not_fill() -> None:
    in_flight, stop = InFlight(capacity=12), threading.Event()
    first = [ReceivedMessage(id=f"m{n}", body="b", receipt_handle=f"rh{n}") for n in range(3)]

    assert in_flight.reserve(gather_s=0, stop=stop) == 10
    assert in_flight.reserve(gather_s=0, stop=stop) == 2  # 10 promised to the first receive
    in_flight.receive(10, first, deadline=100.0)  # it brought 3: 7 slots are free again
    in_flight.receive(2, [], deadline=100.0)

    assert len(in_flight) == 3 and in_flight.reserve(gather_s=0, stop=stop) == 9
    assert in_flight.due(before=101.0) == first and in_flight.due(before=99.0) == []
    in_flight.extended(first[:1], deadline=200.0)
    assert in_flight.due(before=101.0) == first[1:]


def test_in_flight_wakes_a_waiting_reservation_and_reports_when_it_empties() -> None:
    in_flight, stop = InFlight(capacity=1), threading.Event()
    held = [ReceivedMessage(id="m", body="b", receipt_handle="rh")]
    in_flight.receive(in_flight.reserve(gather_s=0, stop=stop), held, deadline=100.0)
    reserved: list[int] = []
    waiting = threading.Thread(target=lambda: reserved.append(in_flight.reserve(gather_s=0, stop=stop)))
    waiting.start()
    waiting.join(0.1)
    assert waiting.is_alive()  # waiting for room when the wake comes

    assert not in_flight.wait_empty(0.01)
    stop.set()  # the consumer stops: a reservation waiting for room gets none
    in_flight.wake()
    waiting.join(5)
    in_flight.finish(held)

    assert reserved == [0] and in_flight.wait_empty(0)


def test_a_reservation_outrun_by_another_receiver_waits_again_instead_of_giving_up() -> None:
    in_flight, stop = InFlight(capacity=2), threading.Event()
    held = [ReceivedMessage(id=f"m{n}", body="b", receipt_handle=f"rh{n}") for n in range(2)]
    in_flight.receive(in_flight.reserve(gather_s=0, stop=stop), held, deadline=100.0)
    reserved: list[int] = []
    receivers = [
        threading.Thread(target=lambda: reserved.append(in_flight.reserve(gather_s=0.05, stop=stop))) for _ in range(2)
    ]
    for receiver in receivers:
        receiver.start()

    in_flight.finish(held[:1])  # one slot frees: both receivers see it, one gets it
    wait_until(lambda: reserved == [1], timeout_s=5, what="one reservation of the one free slot")
    time.sleep(0.2)  # the other's gathering is long over: it must still be waiting, not return 0
    assert reserved == [1] and sum(receiver.is_alive() for receiver in receivers) == 1
    stop.set()
    in_flight.wake()
    for receiver in receivers:
        receiver.join(5)
    assert reserved == [1, 0]


def test_the_work_queue_ends_each_get_after_every_unit_queued_and_takes_none_once_closed() -> None:
    work = WorkQueue()
    units = [[ReceivedMessage(id=f"m{n}", body="b", receipt_handle=f"rh{n}")] for n in range(3)]
    for unit in units:
        assert work.put(unit)

    work.close()
    work.wake()
    work.wake()

    assert not work.put(units[0])  # closed: the consumer keeps it and gives it back
    assert [work.get() for _ in range(5)] == [*units, None, None]
