"""How the writer and the console are served: uvicorn with its httptools protocol, and the limits
at the socket it lacks (a deadline for a request's headers and one for its body, a cap on header
size and on open connections), and an early "busy" answer that costs the process next to nothing.

uvicorn has the keep-alive idle time (`timeout_keep_alive`), and nothing else of these: a client
that sends half a request's headers holds its connection for ever, a 64 KiB header is taken, and
any number of connections stay open (its `limit_concurrency` answers 503 without Retry-After to
every request once the connections alone reach it). `GuardedHttp` is its httptools protocol with
the missing limits; `serve()` is the one way both apps are served.

An app may put an `EarlyRefusal` in uvicorn's lifespan state (`yield {EARLY_REFUSAL: ...}` from
its lifespan): then a request that its admission limit would refuse is answered by the protocol,
once its headers are in, with a response built at start, before a task, a scope or any
middleware exists for it, and that connection is read again only REFUSED_READ_PAUSE_S later.
Turning a request away there costs about 30 microseconds of CPU, system calls included, where
the app's own refusal cost about 0.2 ms, a quarter of serving one; under overload, with clients
that retry at once, that difference is the goodput (docs/performance.md).

An answer that ends a connection (408, 431, the connection cap's 503) is followed by a lingering
close: the connection is half-closed and what the client still sends is dropped, so that it
reads the answer rather than a reset.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from typing import Any, Callable, Optional, Protocol, Union

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .logs import ThrottledLog
from .settings import Settings

log = logging.getLogger(__name__)

#: How long the socket leaves a connection unread after turning one of its requests away. The
#: answer goes at once; a client that honours Retry-After loses nothing, and one that retries at
#: once has its retry read this much later, so that it costs the process a few refusals a second
#: rather than thousands: at 8 times the connections the writer can serve, refusals at full
#: speed took a fifth to a half of its core from the requests it was serving (docs/performance.md).
REFUSED_READ_PAUSE_S = 0.25

#: How long a connection ended with an answer (408, 431, 503) may go on sending before it is
#: closed regardless.
LINGER_S = 2.0

#: The key in uvicorn's lifespan state under which an app offers its EarlyRefusal.
EARLY_REFUSAL = "sqs_message_service.early_refusal"


@dataclasses.dataclass(frozen=True)
class SocketLimits:
    """The limits each connection is held to, per process (see docs/operations.md)."""

    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_connections: int
    keep_alive_s: float
    retry_after_s: int = 1

    @classmethod
    def of(cls, settings: Settings) -> "SocketLimits":
        return cls(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_header_bytes=settings.max_header_bytes,
            max_connections=settings.max_connections,
            keep_alive_s=settings.keep_alive_s,
            retry_after_s=settings.retry_after_s,
        )


class EarlyRefusal(Protocol):
    """What an app offers the protocol: its admission limit and the count against it, the paths
    it never refuses, the whole response that refuses, and a count of each request refused so
    (its method, its path). The socket counts a request it lets through (marking its scope with
    ADMITTED) from that moment to the end of the app's call, so that a burst of requests read in
    one pass of the event loop cannot all slip under the limit before any of them has started."""

    limit: int
    in_progress: int
    exempt_paths: frozenset[str]
    response: bytes

    def refused(self, method: str, path: str) -> None: ...


#: The scope key of a request the socket admitted and counts (serving.GuardedHttp).
ADMITTED = "sqs_message_service.admitted"


def plain_response(
    status: int, reason: str, detail: str, *, retry_after_s: Optional[int] = None, close: bool = True
) -> bytes:
    """A whole HTTP/1.1 response with a problem+json body, built once and written as it is."""
    body = json.dumps(
        {"type": "about:blank", "title": reason, "status": status, "detail": detail}, separators=(",", ":")
    ).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/problem+json", f"content-length: {len(body)}"]
    if retry_after_s is not None:
        head.append(f"retry-after: {retry_after_s}")
    if close:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _HeadTooLarge(Exception):
    """Raised from a parser callback: the request's headers passed the cap."""


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits it lacks:

    - a new connection, and each request from its first byte, has `header_timeout_s` to complete
      its headers: then 408 (or a plain close, if nothing of a request came) and the connection
      closes; between requests the keep-alive idle time applies, as uvicorn has it;
    - once its headers are in, a request has `body_timeout_s` to deliver its whole body: then 408
      (or a close, if the response has started) and the connection is dropped;
    - headers past `max_header_bytes` (request line included) are answered 431 and closed, before
      the app sees anything of the request;
    - past `max_connections` open connections in the process, a new one is answered 503 with
      Retry-After and closed at once;
    - with an app's EarlyRefusal, a request past its admission limit is answered 503 with
      Retry-After once its headers are in, and its connection read again after a pause.
    """

    def __init__(self, *args: Any, limits: SocketLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._deadline_at: Optional[float] = None  # loop time of the running deadline, if one runs
        self._on_deadline: Callable[[], None] = self._head_timed_out  # what then
        self._idle = False  # the running deadline is the keep-alive wait after a refusal
        self._lingering = False  # answered and half-closed: what still comes is dropped
        self._head_open = True  # a request's headers are expected (or being read)
        self._head_bytes = 0  # bytes received while they were
        self._begun = False  # something of the current request came
        self._head_sized = 0  # its request line and headers, as parsed
        self._refusing = False  # the current request was answered early: its body is dropped
        self._early: Optional[EarlyRefusal] = self.app_state.get(EARLY_REFUSAL)
        if self._early is not None:
            self.app = _counted(self.app, self._early)
        self._throttled = ThrottledLog(log)

    # The connection

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if getattr(self.server_state, _SWEEP, None) is None:
            _sweep(self.loop, self.server_state, self.connections, _sweep_interval_s(self.limits))
        if len(self.connections) > self.limits.max_connections:
            self._throttled.warning(
                TooManyConnections(
                    f"{len(self.connections) - 1} connections open, MAX_CONNECTIONS={self.limits.max_connections}: "
                    "new connections are answered 503 and closed"
                )
            )
            self._close_with(_too_many_connections(self.limits.retry_after_s))
            return
        self._arm(self.limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        self._unset_keepalive_if_required()
        if self._idle:
            self._idle = False
            self._disarm()
        if self._head_open:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._close_with(_HEAD_TOO_LARGE)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # Headers still incomplete past the cap: a client that sends them slowly, or one line
        # that httptools buffers whole before its callback.
        if self._head_open and self._head_bytes > self.limits.max_header_bytes and not self.transport.is_closing():
            self._close_with(_HEAD_TOO_LARGE)

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun = True
        self._head_sized = 0
        if self._deadline_at is None:  # a request after a keep-alive wait: its headers' clock starts
            self._arm(self.limits.header_timeout_s, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._arm(self.limits.body_timeout_s, self._body_timed_out)
        early, prior = self._early, self.cycle
        # Only a request that would start at once: a pipelined one waits behind another's answer.
        if early is None or not (prior is None or prior.response_complete):
            super().on_headers_complete()
            return
        path = self.url.partition(b"?")[0].decode("latin-1")
        if path in early.exempt_paths:
            super().on_headers_complete()
            return
        if early.in_progress >= early.limit:
            self._refusing = True
            early.refused(self.parser.get_method().decode("ascii"), path)
            if self.parser.should_keep_alive():
                self.transport.write(early.response)
            else:
                self._close_with(early.response)
            return
        early.in_progress += 1
        self.scope[ADMITTED] = True  # type: ignore[literal-required]
        super().on_headers_complete()
        if self.cycle is prior:  # no request started (an upgrade): nothing to count
            early.in_progress -= 1

    def on_body(self, body: bytes) -> None:
        if not self._refusing:  # a refused request's body is read and dropped
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._lingering:  # answered and closing: its deadline is the linger's
            return
        self._disarm()
        self._head_open, self._head_bytes, self._begun = True, 0, False
        if self._refusing:
            self._refusing = False
            if not self.transport.is_closing():  # its next request is read after a pause
                self.flow.pause_reading()
                self.loop.call_later(REFUSED_READ_PAUSE_S, self._resume)
            return
        super().on_message_complete()

    def _resume(self) -> None:
        """The pause after a refusal is over: read the connection's next request, and wait for it
        as long as for any after an answer (the keep-alive idle time)."""
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        self._arm(self.timeout_keep_alive, self.timeout_keep_alive_handler)
        self._idle = True

    # The deadlines

    def _count_head(self, size: int) -> None:
        self._head_sized += size
        if self._head_sized > self.limits.max_header_bytes:
            raise _HeadTooLarge()

    def _arm(self, delay_s: float, handler: Callable[[], None]) -> None:
        """Run `handler` once `delay_s` have passed, unless disarmed or armed anew before. A
        deadline is a number the sweep reads (`_sweep`), not a timer of the event loop's: a
        request sets and clears two or three of them, and a timer each would cost a refused
        request a third of its CPU."""
        self._deadline_at = self.loop.time() + delay_s
        self._on_deadline = handler

    def _disarm(self) -> None:
        self._deadline_at = None

    def _head_timed_out(self) -> None:
        if self.transport.is_closing():
            return
        if self._begun:
            self._close_with(_HEAD_TIMED_OUT)
        else:
            self.transport.close()

    def _body_timed_out(self) -> None:
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started and not self._refusing:
            cycle.disconnected = True  # the app's next receive() is a disconnect; its answer goes nowhere
            cycle.message_event.set()
            self._close_with(_BODY_TIMED_OUT)
        else:
            self.transport.close()

    def _close_with(self, response: bytes) -> None:
        """Answer and end the connection, the way nginx's lingering close does: half-close, drop
        what the client still sends, close once it has closed its side or after LINGER_S. A
        plain close with its data unread would make the kernel reset the connection, and the
        client could lose the answer that says why."""
        self._disarm()
        self.transport.write(response)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = True
        self._arm(LINGER_S, self.transport.close)


#: The attribute of uvicorn's ServerState that holds the sweep's next timer.
_SWEEP = "sqs_message_service_deadline_sweep"


def _sweep_interval_s(limits: SocketLimits) -> float:
    """How often the deadlines are read: a tenth of the shortest, at most half a second, so a
    deadline is kept to within a tenth of itself, or half a second."""
    return min(0.5, max(0.01, min(limits.header_timeout_s, limits.body_timeout_s, limits.keep_alive_s) / 10))


def _sweep(loop: Any, server_state: Any, connections: set[Any], interval_s: float) -> None:
    """Run the handler of every connection's deadline that has passed; again in `interval_s`.
    One timer per process, whatever the connections; a sweep of a thousand takes a fraction of
    a millisecond."""
    now = loop.time()
    for connection in list(connections):
        at = getattr(connection, "_deadline_at", None)
        if at is not None and now >= at:
            connection._deadline_at = None
            connection._on_deadline()
    setattr(server_state, _SWEEP, loop.call_later(interval_s, _sweep, loop, server_state, connections, interval_s))


def _counted(app: Any, early: EarlyRefusal) -> Any:
    """`app`, ending the count of each request the socket admitted when the app's call ends."""

    async def run(scope: Any, receive: Any, send: Any) -> None:
        if ADMITTED not in scope:
            await app(scope, receive, send)
            return
        try:
            await app(scope, receive, send)
        finally:
            early.in_progress -= 1

    return run


class TooManyConnections(Exception):
    """Logged (throttled) when the connection cap turns connections away."""


_HEAD_TIMED_OUT = plain_response(408, "Request Timeout", "the request's headers did not arrive in time")
_BODY_TIMED_OUT = plain_response(408, "Request Timeout", "the request's body did not arrive in time")
_HEAD_TOO_LARGE = plain_response(
    431, "Request Header Fields Too Large", "the request's headers are larger than the server takes"
)


@functools.lru_cache(maxsize=None)
def _too_many_connections(retry_after_s: int) -> bytes:
    return plain_response(
        503, "Service Unavailable", "too many connections are open; retry later", retry_after_s=retry_after_s
    )


def serve(app: Union[Any, str], limits: SocketLimits, *, host: str, port: int, processes: int = 1) -> None:
    """Serve `app` (or, for several processes, the "module:factory" each of them calls) with
    uvicorn and `limits`, until SIGINT or SIGTERM."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=processes,
        factory=isinstance(app, str),
        http=functools.partial(GuardedHttp, limits=limits),  # type: ignore[arg-type]
        timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]  # a float works: loop.call_later
        access_log=False,
        log_config=None,
    )
