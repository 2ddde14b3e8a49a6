"""The socket's protocol (sqs_message_service/serving.py) in process, on a transport that records
what it is asked: what reaches the app, what is written, when a connection is closed."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest
import uvicorn
from uvicorn.server import ServerState

from sqs_message_service.serving import EARLY_REFUSAL, GuardedHttp, SocketLimits

LIMITS = SocketLimits(
    header_timeout_s=10, body_timeout_s=30, max_header_bytes=1024, max_connections=2, keep_alive_s=5, retry_after_s=1
)
MESSAGE = (
    b"POST /api/message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b'Content-Length: 15\r\n\r\n{"body": "hi"}\n'
)


class Transport:
    """What the protocol writes, and whether it paused, half-closed or closed."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = self.eof = self.paused = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5000) if name in ("sockname", "peername") else default


class Full:
    """An app's EarlyRefusal whose limit is reached; it notes each refusal it is told of."""

    limit, in_progress = 1, 1
    exempt_paths = frozenset({"/api/health"})
    response = b"HTTP/1.1 503 Writer busy\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n"

    def __init__(self) -> None:
        self.refusals: list[tuple[str, str]] = []

    def refused(self, method: str, path: str) -> None:
        self.refusals.append((method, path))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # what uvicorn's parts ask for, where they ask
    yield loop
    pending = asyncio.all_tasks(loop)  # an app's call the test did not run
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending))
    asyncio.set_event_loop(None)
    loop.close()


def connection(
    loop: asyncio.AbstractEventLoop, app_state: dict[str, Any], state: ServerState | None = None
) -> tuple[GuardedHttp, Transport, list[str]]:
    """A protocol on a new Transport, and the paths its app was called for."""
    called: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope["path"])

    config = uvicorn.Config(app, log_config=None)
    config.load()
    protocol = GuardedHttp(
        config=config, server_state=state or ServerState(), app_state=app_state, _loop=loop, limits=LIMITS
    )
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport, called


def test_past_the_limit_a_request_is_answered_by_the_socket_and_its_connection_rests(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # GIVEN a connection to an app whose admission limit is reached
    full = Full()
    protocol, transport, called = connection(loop, {EARLY_REFUSAL: full})

    # WHEN a message comes
    protocol.data_received(MESSAGE)

    # THEN the prebuilt answer goes at once, the app never runs, the refusal is counted once,
    # and the connection stays open but unread for a while
    assert transport.written == Full.response
    assert called == [] and full.refusals == [("POST", "/api/message")]
    assert transport.paused and not transport.closed


def test_a_path_the_app_never_refuses_reaches_it_however_full(loop: asyncio.AbstractEventLoop) -> None:
    full = Full()
    protocol, _, called = connection(loop, {EARLY_REFUSAL: full})

    protocol.data_received(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    loop.run_until_complete(asyncio.sleep(0))  # the app's task runs

    assert called == ["/api/health"] and full.refusals == []


@pytest.mark.parametrize("pieces", [1, 40])
def test_headers_over_the_cap_are_431_and_reach_nothing(loop: asyncio.AbstractEventLoop, pieces: int) -> None:
    protocol, transport, called = connection(loop, {})
    request = MESSAGE.replace(b"Host: x\r\n", b"Host: x\r\nX-Padding: " + b"a" * 2048 + b"\r\n")
    size = -(-len(request) // pieces)

    for start in range(0, len(request), size):
        protocol.data_received(request[start : start + size])
    loop.run_until_complete(asyncio.sleep(0))

    assert transport.written.startswith(b"HTTP/1.1 431 ") and transport.eof
    assert called == []


def test_past_the_connection_cap_a_new_connection_is_503_with_retry_after(loop: asyncio.AbstractEventLoop) -> None:
    state = ServerState()
    kept = [connection(loop, {}, state) for _ in range(LIMITS.max_connections)]

    _, transport, _ = connection(loop, {}, state)

    assert transport.written.startswith(b"HTTP/1.1 503 ") and b"\r\nretry-after: 1\r\n" in transport.written
    assert transport.eof
    assert not any(kept_transport.written for _, kept_transport, _ in kept)
