"""worker/ledger.py: the ledger bounds what is received by what is in flight, and its waits end on
a stop; the work queue hands back nothing twice and takes nothing once closed."""

from __future__ import annotations

import threading
import time

from conftest import wait_until
from sqs_message_service.sqs import ReceivedMessage
from sqs_message_service.worker.ledger import InFlight, WorkQueue


def test_the_ledger_bounds_claims_by_what_is_in_flight_and_frees_what_a_receive_did_not_fill() -> None:
    ledger, stop = InFlight(capacity=12), threading.Event()
    first = [ReceivedMessage(id=f"m{n}", body="b", receipt_handle=f"rh{n}") for n in range(3)]

    assert ledger.claim(gather_s=0, stop=stop) == 10
    assert ledger.claim(gather_s=0, stop=stop) == 2  # 10 promised to the first receive
    ledger.receive(10, first, deadline=100.0)  # it brought 3: 7 slots are free again
    ledger.receive(2, [], deadline=100.0)

    assert len(ledger) == 3 and ledger.claim(gather_s=0, stop=stop) == 9
    assert ledger.due(before=101.0) == first and ledger.due(before=99.0) == []
    ledger.extended(first[:1], deadline=200.0)
    assert ledger.due(before=101.0) == first[1:]


def test_the_ledger_wakes_a_waiting_claim_and_reports_when_it_empties() -> None:
    ledger, stop = InFlight(capacity=1), threading.Event()
    held = [ReceivedMessage(id="m", body="b", receipt_handle="rh")]
    ledger.receive(ledger.claim(gather_s=0, stop=stop), held, deadline=100.0)
    claims: list[int] = []
    waiting = threading.Thread(target=lambda: claims.append(ledger.claim(gather_s=0, stop=stop)))
    waiting.start()
    waiting.join(0.1)
    assert waiting.is_alive()  # waiting for room when the wake comes

    assert not ledger.wait_empty(0.01)
    stop.set()  # the consumer stops: a claim waiting for room gets none
    ledger.wake()
    waiting.join(5)
    ledger.finish(held)

    assert claims == [0] and ledger.wait_empty(0)


def test_a_claim_outrun_by_another_receiver_waits_again_instead_of_giving_up() -> None:
    ledger, stop = InFlight(capacity=2), threading.Event()
    held = [ReceivedMessage(id=f"m{n}", body="b", receipt_handle=f"rh{n}") for n in range(2)]
    ledger.receive(ledger.claim(gather_s=0, stop=stop), held, deadline=100.0)
    claims: list[int] = []
    receivers = [
        threading.Thread(target=lambda: claims.append(ledger.claim(gather_s=0.05, stop=stop))) for _ in range(2)
    ]
    for receiver in receivers:
        receiver.start()

    ledger.finish(held[:1])  # one slot frees: both receivers see it, one gets it
    wait_until(lambda: claims == [1], timeout_s=5, what="one claim of the one free slot")
    time.sleep(0.2)  # the other's gathering is long over: it must still be waiting, not return 0
    assert claims == [1] and sum(receiver.is_alive() for receiver in receivers) == 1
    stop.set()
    ledger.wake()
    for receiver in receivers:
        receiver.join(5)
    assert claims == [1, 0]


def test_the_work_queue_ends_each_get_after_every_unit_queued_and_takes_none_once_closed() -> None:
    work = WorkQueue()
    units = [[ReceivedMessage(id=f"m{n}", body="b", receipt_handle=f"rh{n}")] for n in range(3)]
    for unit in units:
        assert work.put(unit)

    work.close()
    work.wake()
    work.wake()

    assert not work.put(units[0])  # closed: the consumer keeps it and hands it back
    assert [work.get() for _ in range(5)] == [*units, None, None]
