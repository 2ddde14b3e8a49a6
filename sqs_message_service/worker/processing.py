"""The processing step and the threads that run it: the default step (simulated work that fails on
purpose), loading the user's own (PROCESSOR), and `ProcessorThread`, which runs it."""

from __future__ import annotations

import importlib
import random
import time
from typing import Callable, Optional

from ..sqs import ReceivedMessage
from ..tracing import NO_TRACING, NoTracing
from .ledger import InFlight, WorkQueue
from .part import Part
from .settler import Settler

#: The processing step: a plain function of one message. Returning means success (the message
#: is deleted); raising anything means failure (the message comes back after a backoff).
Processor = Callable[[ReceivedMessage], None]


class SimulatedFailure(Exception):
    """The simulated work failed on purpose (FAILURE_RATE)."""


class SimulatedWork:
    """The default processing step: sleeps `process_time_s` and fails with probability
    `failure_rate`. With a seed, whether an attempt fails depends only on (seed, body, receive
    count), so the same input fails the same way in every run whatever the thread timing."""

    def __init__(self, *, process_time_s: float, failure_rate: float, seed: Optional[int] = None) -> None:
        self.process_time_s = process_time_s
        self.failure_rate = failure_rate
        self.seed = seed

    def __call__(self, message: ReceivedMessage) -> None:
        if self.seed is None:
            draw = random.random()
        else:
            draw = random.Random(f"{self.seed}|{message.body}|{message.receive_count}").random()
        time.sleep(self.process_time_s)
        if draw < self.failure_rate:
            raise SimulatedFailure(f"simulated failure (FAILURE_RATE={self.failure_rate:g})")


def load_processor(spec: str) -> Processor:
    """Import the user's processing step from 'module:function'."""
    module_name, _, function_name = spec.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    if not callable(function):
        raise TypeError(f"{spec} is not callable")
    return function


class ProcessorThread(Part):
    """Runs the processing step on units of work, and hands each message to the settler; never
    receives. Asked to stop, it finishes the message it is on and hands back, visible at once,
    every unit it gets after that, until the work queue gives it None."""

    def __init__(
        self, number: int, *, work: WorkQueue, processor: Processor, ledger: InFlight, settler: Settler,
        tracing: NoTracing = NO_TRACING, queue_name: str = "",
    ) -> None:
        super().__init__(name=f"processor-{number}")
        self.work, self.processor, self.ledger, self.settler = work, processor, ledger, settler
        self.tracing, self.queue_name = tracing, queue_name  # with tracing on, a process span per attempt

    def run(self) -> None:
        while (unit := self.work.get()) is not None:
            for position, message in enumerate(unit):
                if self.stopping:
                    self._release(unit[position:])  # never started: back at once
                    break
                if not self._handle(message) and position + 1 < len(unit):
                    self._release(unit[position + 1 :])  # FIFO: none may overtake the failed one
                    break

    def _wake(self) -> None:
        self.work.wake()

    def _handle(self, message: ReceivedMessage) -> bool:
        """Run the step on one message and hand it to the settler; True when it succeeded."""
        started = time.monotonic()
        error: Optional[Exception] = None
        if not self.tracing.enabled:
            try:
                self.processor(message)
            except Exception as exc:  # whatever the step raises is a failure of this message only
                error = exc
        else:
            with self.tracing.processing(message, self.queue_name) as span:  # the step's own spans join it
                try:
                    self.processor(message)
                except Exception as exc:
                    error = exc
                    self.tracing.failed(span, exc)
        self.settler.done(message, error, time.monotonic() - started)
        return error is None

    def _release(self, messages: list[ReceivedMessage]) -> None:
        self.settler.hand_back(messages)  # never raises
        self.ledger.finish(messages)
