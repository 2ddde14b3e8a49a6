"""writer/bridge.py: the handler threads run in the caller's context and start only as needed; the
bridge reads no body for an operation that takes none."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any, MutableMapping

import pytest

from sqs_message_service.writer import bridge as bridges


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_handler_threads_run_in_the_callers_context_and_hand_back_the_result_or_error() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    threads = bridges.HandlerThreads(4)

    async def calls() -> tuple[Any, Any]:
        request_id.set("r-1")
        seen = await threads.run(lambda: (request_id.get(), threading.current_thread().name))
        with pytest.raises(KeyError, match="missing"):
            await threads.run(lambda: {"present": 1}["missing"])
        return seen

    seen_id, thread_name = run(calls())
    threads.close()

    assert seen_id == "r-1" and thread_name.startswith("handler-")


def test_handler_threads_start_only_as_many_as_run_at_once() -> None:
    threads = bridges.HandlerThreads(8)
    release = threading.Event()

    async def calls() -> None:
        for _ in range(5):  # one after another: one thread serves them all
            await threads.run(lambda: None)
        assert len(threads._started) == 1
        blocked = [asyncio.ensure_future(threads.run(release.wait, 10)) for _ in range(3)]
        deadline = time.monotonic() + 10
        while len(threads._started) < 3:  # three at once need three
            assert time.monotonic() < deadline, f"{len(threads._started)} threads for 3 calls at once"
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*blocked)

    run(calls())
    threads.close()
    assert len(threads._started) == 3


def test_the_bridge_reads_no_body_for_an_operation_that_takes_none() -> None:
    # GIVEN a request to a route without a body, sending one all the same
    calls: list[str] = []

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    bridge = bridges.FlaskBridge(wsgi_app, threads=1, body_operations=frozenset({"message.post_message"}))
    received: list[bool] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        received.append(True)
        return {"type": "http.request", "body": b"x" * 1_000_000, "more_body": True}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/health",
        "query_string": b"",
        "headers": [],
        "http_version": "1.1",
        "extensions": {"connexion_routing": {"operation_id": "message.health"}},
    }

    # WHEN the bridge serves it
    run(bridge(scope, receive, send))
    bridge.threads.close()

    # THEN the handler ran and answered, and not a byte of the body was read
    assert calls == [b""] and received == []
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"{}"
