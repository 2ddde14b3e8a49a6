"""The processing steps of make bench's steps stage (PROCESSOR=bench.step_kinds:...): the same
200 ms wait as an async step, which the worker runs as coroutines, and as a plain one, which it
runs on a thread each."""

from __future__ import annotations

import asyncio
import time

from sqsinterface import ReceivedMessage

WAIT_S = 0.2


async def wait_async(message: ReceivedMessage) -> None:
    await asyncio.sleep(WAIT_S)


def wait_on_thread(message: ReceivedMessage) -> None:
    time.sleep(WAIT_S)
