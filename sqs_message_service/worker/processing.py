"""The default processing step (simulated work that fails on purpose), and `ProcessorThread`, which
runs a plain step on a thread of its own, each attempt under the deadline watch."""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from typing import Any, Awaitable, Optional

from ..hooks import NO_HOOKS, Hooks
from ..sqs import ReceivedMessage
from .deadlines import DeadlineWatch, Late
from .in_flight import InFlight, WorkQueue
from .part import Part
from .settler import Settler
from .steps import Processor


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


class ProcessorThread(Part):
    """Runs a plain processing step on units of work, and hands each message to the settler;
    never receives. Asked to stop, it finishes the message it is on and gives back, visible at
    once, every unit it gets after that, until the work queue gives it None.

    Each attempt is bracketed by the deadline `watch`: one that outlives PROCESSING_TIMEOUT is
    settled without this thread, which on its return drops the outcome (and ends, when it was
    replaced meanwhile). A step that returns an awaitable (a plain function returning a
    coroutine) has it run to its end here, on this thread's own event loop: an attempt counts as
    done only once the step's code has run."""

    def __init__(
        self,
        number: int,
        *,
        work: WorkQueue,
        processor: Processor,
        in_flight: InFlight,
        settler: Settler,
        watch: Optional[DeadlineWatch] = None,
        hooks: Hooks = NO_HOOKS,
        queue_name: str = "",
    ) -> None:
        super().__init__(name=f"processor-{number}")
        self.work, self.processor, self.in_flight, self.settler = work, processor, in_flight, settler
        self.watch = watch
        self.hooks, self.queue_name = hooks, queue_name  # they watch each attempt (tracing: a process span)
        self._loop: Optional[asyncio.Runner] = None  # for awaitables a plain step returns
        self._late = Late.NO  # what the watch said of the last attempt

    def run(self) -> None:
        try:
            while (unit := self.work.get()) is not None:
                for position, message in enumerate(unit):
                    if self.stopping:
                        self.give_back(unit[position:])  # never started: back at once
                        break
                    succeeded = self._handle(message, unit[position + 1 :])
                    if succeeded is None:  # timed out: the watch gave back the rest of the unit
                        if self._late is Late.END:
                            return  # replaced: the new thread takes the next unit
                        break
                    if not succeeded and position + 1 < len(unit):
                        self.give_back(unit[position + 1 :])  # FIFO: none may overtake the failed one
                        break
        finally:
            if self._loop is not None:
                self._loop.close()

    def _wake(self) -> None:
        self.work.wake()

    def _handle(self, message: ReceivedMessage, rest: list[ReceivedMessage]) -> Optional[bool]:
        """Run the step on one message and hand it to the settler; True when it succeeded, None
        when it outlived its deadline (the watch settled it)."""
        started = self.watch.begin(self, message, rest) if self.watch is not None else time.monotonic()
        with self.hooks.processing(message, self.queue_name) as watching:  # the step's own spans join it
            error = self._call(message)
            if error is not None:
                self.hooks.failed(watching, error)
        if self.watch is not None:
            self._late = self.watch.end(self)
            if self._late is not Late.NO:
                return None
        self.settler.done(message, error, time.monotonic() - started)
        return error is None

    def _call(self, message: ReceivedMessage) -> Optional[BaseException]:
        """The step on `message`: None when it returned, or what it raised. Whatever it raises is
        a failure of this message only: SystemExit too, which would otherwise end this thread
        with the message held."""
        try:
            result = self.processor(message)
            if result is not None and inspect.isawaitable(result):
                if self._loop is None:
                    self._loop = asyncio.Runner()
                self._loop.run(_awaited(result))
        except BaseException as exc:
            return exc
        return None

    def give_back(self, messages: list[ReceivedMessage]) -> None:
        """Messages this thread will not start: their claims given back, visible again at once."""
        self.settler.give_back(messages)  # never raises


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
