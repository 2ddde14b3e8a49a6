"""Shared fixtures: moto in process for SQS, the real app, a live server on loopback.

No test reaches AWS: credentials are fake, instance metadata is off, and every endpoint is
either moto in process or a process of ours on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import uvicorn
from moto import mock_aws

import sqs_setup
from doubles import Clock, MetricsPage, OneCallAtATime
from harness import Process, accepts_connections, free_port
from helpers import start_moto_server, wait_until
from server import create_app
from sqs_message_service.console.app import create_app as create_console
from sqs_message_service.console.readings import Scrape
from sqs_message_service.settings import ENV_NAMES, Settings
from sqs_message_service.writer.service import WRITER_EXTENSION
from sqsinterface import SqsQueue, create_client

#: Fixtures that start a process or a server: a test using one is an integration test.
STARTS_PROCESSES_OR_SERVERS = frozenset({"live_server", "moto_server", "start"})


#: The worker in a thread, for the engine's and the steps' tests: the `start_worker` fixture.
pytest_plugins = ["worker_doubles"]

#: Where the tests that start processes live, each file of them: all of them are integration tests.
PROCESS_TESTS = Path(__file__).parent / "process"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `integration` every test under tests/process/, and every other test that starts a
    process or a server through a fixture, so that `pytest -m "not integration"` is the fast
    tier without anyone having to remember."""
    for item in items:
        if item.path.is_relative_to(PROCESS_TESTS) or STARTS_PROCESSES_OR_SERVERS & set(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.integration)
    # The process tests first: on several cores (make test) the long ones start at once and the
    # many short ones fill in around them, instead of one core running the longest alone at the end.
    items.sort(key=lambda item: not item.path.is_relative_to(PROCESS_TESTS))


@pytest.fixture(autouse=True)
def root_logging_as_it_was() -> Iterator[None]:
    """An entry point's main() run in a test applies log.conf, whose handler writes to that test's
    captured stderr, closed once the test ends: a later test's log line would meet a closed
    stream ("--- Logging error ---"). Each test takes away the stream handlers it added to the
    root logger, and its level."""
    root = logging.getLogger()
    handlers, level = set(root.handlers), root.level
    yield
    for handler in root.handlers[:]:  # pytest's own capture handlers come and go by themselves
        if type(handler) is logging.StreamHandler and handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


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
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
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
            timeout_s=60,
            what=f"a writer of {processes} process(es) listening",
        )
        return writer, f"http://127.0.0.1:{port}"

    return start_one


@pytest.fixture
def clock() -> Clock:
    return Clock()
