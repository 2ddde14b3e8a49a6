"""The one way every thread of the worker stops: `stop()` asks and wakes it wherever it waits;
`join(timeout)` waits for it to end. `Worker.stop` calls them in the order that keeps the
guarantees (engine.py)."""

from __future__ import annotations

import threading


class Part(threading.Thread):
    """A thread of the worker. `stop()` only flips its flag and wakes it (`_wake`, which each
    part fills in with whatever it may be waiting on); the thread sees the flag and ends."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._stop_asked = threading.Event()

    @property
    def stopping(self) -> bool:
        return self._stop_asked.is_set()

    def stop(self) -> None:
        """Ask the thread to end; returns at once, from any thread."""
        self._stop_asked.set()
        self._wake()

    def pause(self, seconds: float) -> bool:
        """Wait `seconds`, or less when asked to stop meanwhile: True when stopping."""
        return self._stop_asked.wait(seconds)

    def _wake(self) -> None:
        """Cut short whatever the thread waits on, so that it sees the stop now."""
