"""The moment a stop begins: uvicorn waits for every request in progress before the app's
lifespan ends, so a long poll would hold a stop for up to its 20 s. `on_stop_signal` calls back
as SIGINT or SIGTERM arrives, before uvicorn's own handler, which still does what it did."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_stop_signal(callback: Callable[[], None]) -> bool:
    """Call `callback` on SIGINT or SIGTERM, then the handler installed before (uvicorn's, which
    it restores when it exits). Only the main thread may set handlers: elsewhere (an app served
    from a thread, in tests) nothing is installed, and False says so."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for number in STOP_SIGNALS:
        previous = signal.getsignal(number)

        def chained(signum: int, frame: Any, previous: Any = previous) -> None:
            try:
                callback()
            except Exception:  # never in the way of the stop itself
                log.error("stop callback failed", exc_info=True)
            if callable(previous):
                previous(signum, frame)
            else:  # SIG_DFL or SIG_IGN: as it was, then again
                signal.signal(signum, previous)
                signal.raise_signal(signum)

        signal.signal(number, chained)
    return True
