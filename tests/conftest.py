"""Shared fixtures: moto in process for SQS, the real app, a live server on loopback.

No test reaches AWS: credentials are fake, instance metadata is off, and every endpoint is
either moto in process or a process of ours on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import uvicorn
from moto import mock_aws
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import sqs_setup
from harness import ROOT, Process, accepts_connections, free_port
from server import create_app
from sqs_message_service.console.app import create_app as create_console
from sqs_message_service.console.readings import Scrape
from sqs_message_service.settings import ENV_NAMES, Settings
from sqs_message_service.writer.service import WRITER_EXTENSION
from sqsinterface import SqsQueue, create_client

#: The console scripts pyproject.toml declares, as the editable install `make` made reports them
#: (importlib.metadata, not tomllib, which Python 3.10 lacks).
CONSOLE_SCRIPTS = {
    entry_point.name: entry_point.value
    for entry_point in importlib.metadata.entry_points(group="console_scripts")
    if entry_point.dist is not None and entry_point.dist.name == "sqs-message-service"
}
BIN = Path(sys.executable).parent
#: The local SQS engine for whole-system tests: SQS_LOCAL when set, else fauxqs when make
#: installed it, moto without Node.
LOCAL_ENGINE = os.environ.get("SQS_LOCAL") or (
    "fauxqs"
    if shutil.which("node") is not None and (ROOT / "local/sqs/node_modules/fauxqs").is_dir()
    else "moto"
)


#: Fixtures that start a process or a server: a test using one is an integration test.
STARTS_PROCESSES_OR_SERVERS = frozenset({"live_server", "moto_server", "start"})


#: The worker in a thread, for the engine's and the steps' tests: the `start_worker` fixture.
pytest_plugins = ["worker_doubles"]

def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `integration` every test that starts a process or a server through a fixture, so
    that `pytest -m "not integration"` is the fast tier without anyone having to remember."""
    for item in items:
        if STARTS_PROCESSES_OR_SERVERS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def offline_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fake credentials and no AWS config files or metadata service, for every test; and no
    worker metrics port that two tests could both want."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name in ENV_NAMES.values():
            monkeypatch.delenv(name)
    empty = tmp_path_factory.mktemp("aws") / "none"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("METRICS_PORT", "0")  # workers started by tests serve no metrics unless asked


@pytest.fixture
def closed_endpoint() -> str:
    """A loopback URL where nothing listens: SQS 'unreachable', answered at once."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def sqs(settings: Settings) -> Iterator[Any]:
    """A boto3 SQS client on moto, in process."""
    with mock_aws():
        yield create_client(settings)


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


@pytest.fixture
def dynamodb(sqs: Any, settings: Settings) -> Any:
    """A boto3 DynamoDB client on the same moto as `sqs` (IDEMPOTENCY_TABLE, PROCESSED_TABLE),
    its calls one at a time as on the local moto server."""
    return OneCallAtATime(create_client(settings, service="dynamodb"))


@pytest.fixture
def queues(sqs: Any, settings: Settings) -> tuple[SqsQueue, SqsQueue]:
    """The queue and its dead-letter queue, made by sqs_setup as a user would."""
    sqs_setup.set_up(settings, sqs)
    return SqsQueue(settings.queue_name, sqs), SqsQueue(settings.dlq_name, sqs)


@pytest.fixture
def queue(queues: tuple[SqsQueue, SqsQueue]) -> SqsQueue:
    return queues[0]


@pytest.fixture
def app(settings: Settings, queue: SqsQueue) -> Iterator[Any]:
    application = create_app(settings, queue=queue)
    yield application
    application.app.extensions[WRITER_EXTENSION].close()


@pytest.fixture
def console_app(settings: Settings, sqs: Any, queues: tuple[SqsQueue, SqsQueue]) -> Callable[..., Any]:
    """A console on moto (`queue-console`'s app) with the given settings' changes, its readings
    taken by the test (`feed.read_once()`), its rates from no page at all. Its test client asks
    for http://testserver, the CONSOLE_ORIGIN it is given unless a change says otherwise."""

    def create(**changes: Any) -> Any:
        changed = dataclasses.replace(settings, **{"console_origin": "http://testserver", **changes})
        return create_console(changed, client=sqs, source=Scrape(()), start_feed=False)

    return create


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


@pytest.fixture
def metrics_page() -> Iterator[Callable[[], MetricsPage]]:
    """Serve a new /metrics page on loopback each call; all are closed at the end of the test."""
    pages: list[MetricsPage] = []

    def serve() -> MetricsPage:
        pages.append(MetricsPage())
        return pages[-1]

    yield serve
    for page in pages:
        page.close()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def sqs_calls(sqs: Any) -> dict[str, int]:
    """Counts the SQS API calls made on the moto client from now on, by operation."""
    counts: dict[str, int] = {}

    def count(model: Any, **_: Any) -> None:
        counts[model.name] = counts.get(model.name, 0) + 1

    sqs.meta.events.register("before-call.sqs", count)
    return counts


@pytest.fixture
def drain(sqs: Any) -> Callable[[SqsQueue], list[dict]]:
    """Receive every message now in a queue (hidden for 10 minutes), with its attributes."""

    def receive_all(queue: SqsQueue) -> list[dict]:
        messages: list[dict] = []
        while True:
            batch = sqs.receive_message(
                QueueUrl=queue.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,  # the queue itself long-polls for 20 s
                VisibilityTimeout=600,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                return messages
            messages.extend(batch)

    return receive_all


@pytest.fixture
def live_server(app: Any) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port, in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        assert thread.is_alive(), "uvicorn stopped while starting"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def wait_until(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Poll `condition` every 50 ms; fail the test naming `what` if it is not true in time."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.05)


#: A /metrics page as Prometheus parses it: (sample name, its labels) -> value.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metric_samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when it is not there (a labelled series not yet started)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def start_moto_server(log_path: Path, port: int = 0) -> tuple[Process, str]:
    """moto's server (SQS, DynamoDB, any service) as a process on loopback, on `port` or a free
    one, once it listens: the process and its endpoint URL. It is scripts/local_moto.py, where
    DynamoDB's conditional writes are atomic as on AWS."""
    port = port or free_port()
    process = Process([sys.executable, ROOT / "scripts" / "local_moto.py", "-H", "127.0.0.1", "-p", str(port)],
                      env=os.environ, log_path=log_path)
    try:
        wait_until(lambda: accepts_connections(port), timeout_s=20, what="moto_server listening")
    except BaseException:
        process.stop()
        raise
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture
def moto_server(tmp_path: Path) -> Iterator[str]:
    """moto's server as a process on a free loopback port; yields its endpoint URL."""
    process, url = start_moto_server(tmp_path / "moto_server.log")
    try:
        yield url
    finally:
        process.stop()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start `python SCRIPT ARGS...` from the project root with extra environment; every process
    started is stopped at the end of the test."""
    started: list[Process] = []

    def start_script(script: str, *args: str, env: dict[str, str] | None = None) -> Process:
        process = Process(
            [sys.executable, script, *args],
            env={**os.environ, **(env or {})},
            log_path=tmp_path / f"{Path(script).stem}-{len(started)}.log",
        )
        started.append(process)
        return process

    yield start_script
    for process in started:
        process.stop(signal.SIGKILL)


@pytest.fixture
def start_writer(start: Callable[..., Process]) -> Callable[..., tuple[Process, str]]:
    """Start a writer (`server.py` with `env`, `processes` uvicorn processes on one free port)
    and return it with its URL once every process has started and the port takes connections
    (one process logs its start before it binds)."""

    def start_one(env: dict[str, str], *, processes: int = 1) -> tuple[Process, str]:
        port = free_port()
        writer = start("server.py", "--port", str(port), env={**env, "WRITER_PROCESSES": str(processes)})
        wait_until(
            lambda: writer.output.count("Application startup complete") == processes and accepts_connections(port),
            timeout_s=60, what=f"a writer of {processes} process(es) listening",
        )
        return writer, f"http://127.0.0.1:{port}"

    return start_one


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
    async def _forward(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request_sent: asyncio.Event
    ) -> None:
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


@pytest.fixture
def clock() -> Clock:
    return Clock()

