"""Flask under ASGI with one hand-off each way, in place of the a2wsgi bridge connexion builds
(10 threads, four or more loop/thread hand-offs a request; connexion has no option for either:
spec-first/connexion#1979). `add_wsgi_middleware` keeps working: it wraps the bridge's `app`.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import queue
import threading
from typing import Any, Callable, Optional

from connexion import FlaskApp
from starlette.types import Receive, Scope, Send

from .checks import read_body
from .connexion_hooks import ROUTING_CONTEXT, build_environ, flask_asgi_app


class HandlerThreads:
    """Up to `threads` threads that run a function in the caller's context (connexion's context
    middleware passes the operation to Flask that way) and give its result back to the event
    loop: one hand-off each way. Threads start as they are needed, and stay."""

    def __init__(self, threads: int) -> None:
        self.max_threads = threads
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._started: list[threading.Thread] = []
        self._lock = threading.Lock()

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((loop, future, contextvars.copy_context(), function, args))
        if not self._idle.acquire(blocking=False):
            self._start_one()
        return await future

    def close(self) -> None:
        """Let the threads end once the jobs queued before have run."""
        with self._lock:
            for _ in self._started:
                self._jobs.put(None)

    def _start_one(self) -> None:
        with self._lock:
            if len(self._started) < self.max_threads:
                thread = threading.Thread(target=self._work, name=f"handler-{len(self._started)}", daemon=True)
                thread.start()
                self._started.append(thread)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, context, function, args = job
            result, error = None, None
            try:
                result = context.run(function, *args)
            except BaseException as exc:  # handed to the awaiting request, as it was raised
                error = exc
            self._idle.release()  # idle before the answer goes back: its next request finds this thread
            loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: Optional[BaseException]) -> None:
    if future.cancelled():  # the request went away; its handler ran to its end all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class FlaskBridge:
    """Flask under ASGI with one hand-off each way: the body, already read and bounded by the
    validator, is taken on the event loop; the WSGI call runs whole on a handler thread; the
    response is sent from the loop. a2wsgi instead reads and sends from the thread, a loop
    round trip for each. Flask's answers here are small JSON, so holding one whole is cheap.

    Only operations that take a body (`body_operations`) have theirs read: any other request's
    body is left unread, as Flask would leave it, so that no one can make the writer buffer it.
    """

    def __init__(self, app: Callable[..., Any], *, threads: int, body_operations: frozenset[str]) -> None:
        self.app = app  # the WSGI app: `app`, as a2wsgi names it, so add_wsgi_middleware wraps it
        self.threads = HandlerThreads(threads)
        self.body_operations = body_operations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # connexion answers the lifespan; there are no websockets
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        routing = scope.get("extensions", {}).get(ROUTING_CONTEXT, {})
        # RequestChecks has read and bounded the body of an operation that takes one.
        body = await read_body(receive) if routing.get("operation_id") in self.body_operations else b""
        environ = build_environ(scope, io.BytesIO(body))  # type: ignore[arg-type]  # any file-like body
        status, headers, content = await self.threads.run(self._call, environ)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _call(self, environ: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The whole WSGI call, on a handler thread: (status, headers, body)."""
        started: list[tuple[int, list[tuple[bytes, bytes]]]] = []
        written: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            encoded = [(name.lower().encode("latin1"), value.encode("latin1")) for name, value in headers]
            started[:] = [(int(status.split(" ", 1)[0]), encoded)]
            return written.append

        chunks = self.app(environ, start_response)
        try:
            written.extend(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        ((status, headers),) = started
        return status, headers, b"".join(written)


def use_bridge(app: FlaskApp, *, threads: int, body_operations: frozenset[str]) -> FlaskBridge:
    """Serve `app`'s Flask app through a FlaskBridge of `threads` handler threads, in place of the
    a2wsgi bridge connexion builds. The bridge takes over the WSGI app a2wsgi's held, with any
    WSGI middleware already added; `app.add_wsgi_middleware` goes on wrapping it afterwards."""
    flask_asgi = flask_asgi_app(app)
    bridge = FlaskBridge(flask_asgi.asgi_app.app, threads=threads, body_operations=body_operations)
    flask_asgi.asgi_app = bridge
    return bridge
