"""`CoroutineProcessing`: runs an `async def` processing step as coroutines on one event loop, up
to WORKER_CONCURRENCY attempts at once, instead of a thread each.

It takes the processor threads' place and keeps their word: units of work from the consumers in
order, a FIFO group's messages one after another, each attempt handed to the settler. Its
deadline is a cancellation: an attempt past PROCESSING_TIMEOUT is cancelled and settled as timed
out. Asked to stop, it starts nothing new and lets what runs finish; what has not finished when
the engine's grace runs out is cancelled and given back, visible again at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Optional

from ..hooks import NO_HOOKS, Hooks
from ..metrics import WorkerMetrics
from ..sqs import ReceivedMessage
from ..verdicts import TimedOut
from .in_flight import InFlight, Unit, WorkQueue
from .part import Part
from .settler import Settler
from .steps import Processor

log = logging.getLogger(__name__)

#: How long a cancelled attempt may take to end before it is left behind (a step that catches
#: CancelledError and carries on): its message is settled all the same.
CANCEL_WAIT_S = 1.0


class StepExited(Exception):
    """The step raised SystemExit or KeyboardInterrupt, which asyncio would let end the loop."""


class CoroutineProcessing(Part):
    """One thread, one event loop, `concurrency` slots taking units of work from `work`. A
    second thread (the feeder) waits on the work queue, which is a thread's queue, and hands
    each unit to the loop."""

    def __init__(
        self,
        *,
        work: WorkQueue,
        processor: Processor,
        in_flight: InFlight,
        settler: Settler,
        metrics: WorkerMetrics,
        concurrency: int,
        timeout_s: float,
        hooks: Hooks = NO_HOOKS,
        queue_name: str = "",
    ) -> None:
        super().__init__(name="coroutines")
        self.work, self.processor, self.in_flight, self.settler = work, processor, in_flight, settler
        self.metrics, self.concurrency, self.timeout_s = metrics, concurrency, timeout_s
        self.hooks, self.queue_name = hooks, queue_name
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._attempts: set[asyncio.Task[Any]] = set()
        self._giving_back = False  # the grace is over: cancelled attempts are given back
        self._left_behind = 0  # cancelled attempts that did not end: the step ignores cancellation

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        units: asyncio.Queue[Optional[Unit]] = asyncio.Queue()
        feeder = threading.Thread(target=self._feed, args=(units,), name="coroutine-feeder", daemon=True)
        feeder.start()
        await asyncio.gather(*(self._slot(units) for _ in range(self.concurrency)))

    def _feed(self, units: asyncio.Queue[Optional[Unit]]) -> None:
        """On the feeder thread: every unit into the loop, then a None for each slot."""
        assert self._loop is not None
        while (unit := self.work.get()) is not None:
            self._loop.call_soon_threadsafe(units.put_nowait, unit)
        for _ in range(self.concurrency):
            self._loop.call_soon_threadsafe(units.put_nowait, None)

    def _wake(self) -> None:
        self.work.wake()  # the feeder's get ends: each slot then finds its None

    async def _slot(self, units: asyncio.Queue[Optional[Unit]]) -> None:
        while (unit := await units.get()) is not None:
            for position, message in enumerate(unit):
                if self.stopping:
                    self.give_back(unit[position:])  # never started: back at once
                    break
                succeeded = await self._attempt(message)
                if succeeded is None:  # cancelled at the end of the grace: back at once
                    self.give_back(unit[position:])
                    break
                if not succeeded and position + 1 < len(unit):
                    self.give_back(unit[position + 1 :])  # FIFO: none may overtake the failed one
                    break

    async def _attempt(self, message: ReceivedMessage) -> Optional[bool]:
        """One attempt, within its deadline, handed to the settler: True when it succeeded,
        None when it was cancelled because the worker's grace ran out (not settled)."""
        started = time.monotonic()
        attempt = asyncio.ensure_future(self._call(message))
        self._attempts.add(attempt)
        try:
            done, _ = await asyncio.wait({attempt}, timeout=self.timeout_s)
        finally:
            self._attempts.discard(attempt)
        error: Optional[BaseException]
        if attempt in done:
            if attempt.cancelled():
                if self._giving_back:
                    return None
                error = asyncio.CancelledError("the step was cancelled")
            else:
                error = attempt.exception()
        else:
            self.metrics.add("timed_out")
            log.warning(
                "message %r: the step has run %.1f s, past PROCESSING_TIMEOUT=%g: cancelled, the "
                "attempt fails as timed out",
                message.id,
                time.monotonic() - started,
                self.timeout_s,
            )
            await self._cancel(attempt)
            error = TimedOut(self.timeout_s)
        self.settler.done(message, error, time.monotonic() - started)
        return error is None

    async def _call(self, message: ReceivedMessage) -> None:
        """The step, inside what the hooks watch it with (tracing's `process` span: its own spans join it)."""
        with self.hooks.processing(message, self.queue_name) as watching:
            try:
                await self.processor(message)
            except (SystemExit, KeyboardInterrupt) as exc:  # would end the event loop: a failure of this message
                self.hooks.failed(watching, exc)
                raise StepExited(f"the step raised {type(exc).__name__}({exc})") from exc
            except BaseException as exc:
                if not isinstance(exc, asyncio.CancelledError):
                    self.hooks.failed(watching, exc)
                raise

    async def _cancel(self, attempt: asyncio.Task[Any]) -> None:
        """Cancel an attempt and give it CANCEL_WAIT_S to end; one that does not is left behind."""
        attempt.cancel()
        done, _ = await asyncio.wait({attempt}, timeout=CANCEL_WAIT_S)
        if attempt not in done:
            self._left_behind += 1
            log.warning(
                "a cancelled step did not end within %g s (it catches CancelledError?): left running, its "
                "message settled without it (%d so far)",
                CANCEL_WAIT_S,
                self._left_behind,
            )
        elif not attempt.cancelled():
            attempt.exception()  # retrieved: no "never retrieved" warning

    def give_back(self, messages: list[ReceivedMessage]) -> None:
        """Messages this runner will not finish: their claims given back, visible again at once."""
        self.settler.give_back(messages)  # never raises

    def give_back_in_flight(self) -> None:
        """The grace is over: cancel every attempt still running; each one's message (and its
        unit's rest) is given back, visible at once, instead of waiting out its visibility."""
        if self._loop is None or self._loop.is_closed():
            return

        def cancel_all() -> None:
            self._giving_back = True
            for attempt in list(self._attempts):
                attempt.cancel()

        try:
            self._loop.call_soon_threadsafe(cancel_all)
        except RuntimeError:  # the loop has just closed: nothing runs
            pass
