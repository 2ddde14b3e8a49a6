"""An example async processing step: each order is confirmed with a (simulated) call to another
service, awaited, so that hundreds of orders wait on their calls at once on one event loop.

    PROCESSOR=examples.async_orders:handle python worker.py --concurrency 200

An `async def` step runs as coroutines, up to WORKER_CONCURRENCY at once, on the worker's one
event loop: never block it (no `time.sleep`, no blocking socket): a blocking call holds every
attempt. Past PROCESSING_TIMEOUT an attempt is cancelled (CancelledError at its `await`) and
comes back after its backoff. `Reject` dead-letters a message now; `RetryLater` brings it back
after the seconds a rate-limited service asked for.
"""

from __future__ import annotations

import asyncio
import logging

from examples.orders import parse_order
from sqsinterface import ReceivedMessage, RetryLater

log = logging.getLogger(__name__)

#: Orders confirmed, by order id (in a real step, a table keyed by order id). One event loop
#: runs every attempt, so no lock is needed between two awaits.
CONFIRMED: dict[str, int] = {}
#: The simulated service's round trip, and the order ids it answers "busy, come back in 30 s".
CALL_S = 0.2
BUSY: set[str] = set()


async def confirm(order_id: str, quantity: int) -> None:
    """The call to the other service (an HTTP call with httpx or aiohttp, in a real step)."""
    await asyncio.sleep(CALL_S)
    if order_id in BUSY:
        raise RetryLater(30, f"order service busy for {order_id}")


async def handle(message: ReceivedMessage) -> None:
    """Confirm the order in `message`, once however many times it is delivered. A body that is
    not an order raises NotAnOrder, a `Reject`: dead-lettered at once."""
    order_id, quantity = parse_order(message.body)
    if order_id in CONFIRMED:
        log.info("order %s was confirmed already: delivered again, nothing to do", order_id)
        return
    await confirm(order_id, quantity)
    CONFIRMED[order_id] = quantity
