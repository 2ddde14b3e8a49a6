"""worker/processing.py: the simulated work fails the same way every run with a seed; a step of
one's own is loaded from module:function."""

from __future__ import annotations

import json

from sqs_message_service.sqs import ReceivedMessage
from sqs_message_service.worker.processing import SimulatedFailure, SimulatedWork
from sqs_message_service.worker.steps import load_step


def message(body: str, receive_count: int = 1) -> ReceivedMessage:
    return ReceivedMessage(id="id", body=body, receipt_handle="rh", receive_count=receive_count)


def test_seeded_simulated_work_fails_the_same_attempts_every_run() -> None:
    def failures(seed: int) -> list[bool]:
        work = SimulatedWork(process_time_s=0, failure_rate=0.3, seed=seed)
        outcomes = []
        for number in range(1000):
            try:
                work(message(f"m{number}"))
                outcomes.append(False)
            except SimulatedFailure:
                outcomes.append(True)
        return outcomes

    first = failures(seed=7)

    assert first == failures(seed=7)
    assert first != failures(seed=8)
    assert 250 < sum(first) < 350  # about 30 %


def test_load_step_imports_module_function() -> None:
    assert load_step("json:loads") is json.loads
