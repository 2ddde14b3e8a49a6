"""file_copy: a copy read back through the read routes, against the app served on loopback."""

from __future__ import annotations

import io
from typing import Any

import pytest

from sqs_message_service.file_copy import FileCopy
from sqs_message_service.settings import Settings
from sqsinterface import SqsQueue


@pytest.fixture
def settings() -> Settings:
    return Settings(api_keys="writer-1", read_keys="reader-1")


def test_a_copy_stopped_between_receives_acknowledges_the_lines_it_wrote(live_server: str, queue: SqsQueue) -> None:
    # GIVEN three lines sent, and a copy of four whose second receive is interrupted (Ctrl-C)
    copier = FileCopy(live_server, api_key="writer-1", read_key="reader-1", wait_s=0, lease_s=60)
    copier.send(["one", "two", "three"], fifo=False)
    receive, calls = copier._receive, []

    def interrupted_second_time(**kwargs: Any) -> Any:
        calls.append(kwargs)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return receive(**kwargs)

    copier._receive = interrupted_second_time  # type: ignore[method-assign]
    out = io.BytesIO()

    # WHEN it reads them back and is stopped before its next receive could acknowledge them
    try:
        with pytest.raises(KeyboardInterrupt):
            copier.receive(4, out, fifo=False)  # a fourth that never comes: it receives again
    finally:
        copier.api.close()

    # THEN what it wrote is acknowledged all the same: gone from the queue, not leased
    lines_written = {b"one": 1, b"onetwo": 2, b"onetwothree": 3}[out.getvalue()]
    depth = queue.depth()
    assert depth["in_flight"] == 0, depth  # none written is left leased
    assert depth["visible"] == 3 - lines_written, depth
