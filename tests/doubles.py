"""Test doubles: stand-ins for what a test cannot or should not use for real (a client whose
calls run one at a time, an SQS that refuses some entries or answers slowly, a clock moved by
hand, a /metrics page of its own)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from harness import free_port


class OneCallAtATime:
    """A client whose calls run one at a time, as scripts/local_moto.py serves DynamoDB: moto in
    process copies a table for a transaction while another thread may write to it ("dictionary
    changed size during iteration"), which DynamoDB itself never shows a caller."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith("_") or name in ("get_waiter", "get_paginator"):
            return attribute

        def one_at_a_time(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return one_at_a_time


class MetricsPage:
    """A registry served on a loopback port by prometheus_client, as a writer or worker serves
    its /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.port = free_port()
        self.server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self.url = f"http://127.0.0.1:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PartlyFailingClient:
    """Passes SendMessageBatch to moto except entries whose body is 'reject' or 'throttle',
    which it reports as SQS does in `Failed`."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:
        kept = [e for e in Entries if e["MessageBody"] not in ("reject", "throttle")]
        response = self._client.send_message_batch(QueueUrl=QueueUrl, Entries=kept) if kept else {}
        failed = [
            {
                "Id": e["Id"],
                "SenderFault": e["MessageBody"] == "reject",
                "Code": "InvalidParameterValue" if e["MessageBody"] == "reject" else "InternalError",
                "Message": "refused by the test",
            }
            for e in Entries
            if e not in kept
        ]
        return {"Successful": response.get("Successful", []), "Failed": failed}


class SlowProxy:
    """A TCP proxy on loopback that holds each answer coming back from `upstream_port` for
    `delay_s` (which a test may change at any time): an SQS that answers, slowly. The delay is
    taken once per exchange (before the first chunk that follows a request), not per chunk, so
    an answer's time does not depend on how the engine splits it. Runs its own event loop in a
    thread."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._connections: set[asyncio.Task] = set()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._started.wait(10), "proxy did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a connection is served in a task of its own
        self._connections.add(task)
        writers = [client_writer]
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            writers.append(upstream_writer)
            request_sent = asyncio.Event()
            await asyncio.gather(
                self._forward(client_reader, upstream_writer, request_sent),
                self._answer(upstream_reader, client_writer, request_sent),
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for writer in writers:
                writer.close()
            await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
            self._connections.discard(task)

    @staticmethod
    async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request_sent: asyncio.Event) -> None:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
            request_sent.set()
        writer.close()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request_sent: asyncio.Event
    ) -> None:
        while chunk := await reader.read(65536):
            if request_sent.is_set():
                request_sent.clear()
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
            writer.write(chunk)
            await writer.drain()
        writer.close()

    async def _shut_down(self) -> None:
        self._server.close()
        for connection in list(self._connections):
            connection.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shut_down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class Clock:
    """A clock a test moves by hand (`clock.now += 30`), for what keeps time in epoch seconds."""

    START = 1_700_000_000.0

    def __init__(self) -> None:
        self.now = self.START

    def __call__(self) -> float:
        return self.now
