"""A processing step for worker processes started by the tests (PROCESSOR=steps:record, with
PYTHONPATH=tests): it writes each attempt to the file STEP_LOG names, so that a test counts how
many times each message reached the step, across workers and kills.

A body `slow:S` sleeps S seconds on its first receive only, so that a test can kill or race a
worker mid-step and its redelivery runs quickly; a body that starts with `fail` fails every time;
one that starts with `broken` fails while the file STEP_BROKEN names exists (a cause an operator
fixes before a redrive); one that starts with `hang` never returns (a call with no timeout).
`record_async` is the same step as an `async def`."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from sqsinterface import ReceivedMessage


def _log(event: str, message: ReceivedMessage) -> None:
    line = json.dumps(
        {
            "event": event,
            "id": message.id,
            "body": message.body,
            "key": message.processing_key,
            "receive_count": message.receive_count,
            "pid": os.getpid(),
            "at": time.time(),
        }
    )
    with open(os.environ["STEP_LOG"], "a", encoding="utf-8") as log:  # one write a line: whole lines
        log.write(line + "\n")


def record(message: ReceivedMessage) -> None:
    _log("start", message)
    if message.body.startswith("slow:") and message.receive_count == 1:
        time.sleep(float(message.body.split(":", 1)[1]))
    if message.body.startswith("hang"):
        threading.Event().wait()  # forever
    if message.body.startswith("fail"):
        _log("failed", message)
        raise ValueError("refused on purpose by the test's step")
    if message.body.startswith("broken") and Path(os.environ.get("STEP_BROKEN", "/nonexistent")).exists():
        _log("failed", message)
        raise ValueError(f"broken on attempt {message.receive_count}: the test's cause is not fixed")
    _log("end", message)


async def record_async(message: ReceivedMessage) -> None:
    _log("start", message)
    if message.body.startswith("slow:") and message.receive_count == 1:
        await asyncio.sleep(float(message.body.split(":", 1)[1]))
    if message.body.startswith("hang"):
        await asyncio.Event().wait()  # forever, until cancelled
    if message.body.startswith("fail"):
        _log("failed", message)
        raise ValueError("refused on purpose by the test's step")
    _log("end", message)


def attempts(path: Path) -> list[dict[str, Any]]:
    """What a STEP_LOG holds: one dict per event, in the order written."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
