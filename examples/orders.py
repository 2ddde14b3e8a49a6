"""An example processing step: each message is an order, as JSON, to ship.

    PROCESSOR=examples.orders:handle python worker.py

A processing step is a plain function of one message. Returning means success: the worker
deletes the message. Raising anything means failure of that message only: it comes back after a
backoff, and after MAX_RECEIVE_COUNT attempts goes to the dead-letter queue with the exception's
type and text as its reasons. A body that is not an order raises `NotAnOrder`, a `Reject`: no
retry can make it one, so it is dead-lettered on its first attempt, with the reason.

Delivery is at least once: a message can arrive twice (a worker killed between the step and
the delete, say). Shipping the same order twice must do no harm, so the orders already shipped
are remembered by order id, as a real step would with a unique key in its database.
"""

from __future__ import annotations

import json
import logging
import threading

from sqsinterface import ReceivedMessage, Reject

log = logging.getLogger(__name__)

#: What was shipped, (order id, quantity), in order: here in memory; in a real step, a table
#: whose unique key is the order id.
SHIPMENTS: list[tuple[str, int]] = []
_lock = threading.Lock()  # the worker calls the step from WORKER_CONCURRENCY threads at once


class NotAnOrder(Reject):
    """The body is not an order: no retry will make it one (dead-lettered at once)."""


def parse_order(body: str) -> tuple[str, int]:
    """(order id, quantity) of the order in `body`; NotAnOrder when it is not one."""
    try:
        order = json.loads(body)
    except json.JSONDecodeError as exc:
        raise NotAnOrder(f"not JSON: {exc}") from None
    if not isinstance(order, dict) or not isinstance(order.get("order_id"), str):
        raise NotAnOrder("an order is a JSON object with a string order_id")
    quantity = order.get("quantity", 1)
    if not isinstance(quantity, int) or quantity < 1:
        raise NotAnOrder(f"order {order['order_id']}: quantity must be a positive integer")
    return order["order_id"], quantity


def handle(message: ReceivedMessage) -> None:
    """Ship the order in `message`, once however many times it is delivered."""
    order_id, quantity = parse_order(message.body)
    with _lock:
        if any(shipped == order_id for shipped, _ in SHIPMENTS):
            log.info("order %s was shipped already: delivered again, nothing to do", order_id)
            return
        SHIPMENTS.append((order_id, quantity))
    log.info("order %s: %d item(s) shipped (attempt %d)", order_id, quantity, message.receive_count)
