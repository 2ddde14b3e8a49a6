"""worker/heartbeat.py: the visibility extensions keep their beat whatever the processed ledger's
table does."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqs_message_service.worker.heartbeat import Heartbeat
from sqs_message_service.worker.in_flight import InFlight
from sqsinterface import ReceivedMessage


class Extensions:
    """A queue that counts its visibility extensions."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def change_visibility(self, changes: list[tuple[str, int]]) -> list[None]:
        self.calls.append(time.monotonic())
        return [None] * len(changes)


class StalledTable:
    """A processed ledger whose lease extensions hang, as a table that takes connections and
    never answers would, until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.extensions = 0

    def extend(self, messages: Any, *, lease_until: float) -> None:
        self.extensions += 1
        self.release.wait(10)


def test_a_stalled_table_never_holds_back_the_visibility_extensions() -> None:
    queue, table, in_flight = Extensions(), StalledTable(), InFlight(capacity=1)
    assert in_flight.reserve(gather_s=0, stop=threading.Event()) == 1
    in_flight.receive(1, [ReceivedMessage(id="m", body="b", receipt_handle="h")], deadline=time.monotonic() + 1)
    heartbeat = Heartbeat(queue=queue, in_flight=in_flight, visibility_timeout_s=1, processed=table)  # type: ignore[arg-type]
    heartbeat.start()
    try:
        time.sleep(1.6)  # about five beats of 0.33 s
    finally:
        heartbeat.stop()
        table.release.set()
        heartbeat.join(5)

    assert len(queue.calls) >= 3  # a beat each third of the visibility timeout, the table stalled or not
    assert table.extensions == 1  # the stalled extension was not piled up behind itself
