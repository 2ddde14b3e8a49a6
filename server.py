"""The queue-writer's app: `create_app()` assembles swagger.yml, the handlers in message.py, the
SQS queue and the error mapping; `python server.py` serves it with uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import sys
import tempfile
import time
from typing import Any, AsyncIterator, Callable, Optional, Union

import connexion
import uvicorn
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.middleware.abstract import ROUTING_CONTEXT
from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

import webstack
from config import DATA_DIR, ConfigError, Settings, add_option, configure_logging, settings_for_command, with_options
from errors import (
    InvalidRequest,
    ServiceError,
    SqsError,
    Unauthenticated,
    UnsupportedMediaType,
    WriterBusy,
    problem,
)
from idempotency import LEASE_MARGIN_S, KeyStore, SharedStore
from logs import ThrottledLog
from message import WRITER_EXTENSION, Writer
from metrics import WriterMetrics, all_processes
from spec import load_source, served_spec
from sqsinterface import SqsQueue, create_client

log = logging.getLogger(__name__)
access_log = logging.getLogger("access")

PROBLEM = "application/problem+json"


class RequestObserver:
    """Counts and times every request, error responses included, into the writer's metrics, and
    logs one access line for it: client, method, path, status, duration. Answers `GET /metrics`
    itself, first of all and uncounted, so that a saturated writer still answers its scrapes.

    Requests are labelled by the spec's route (`/api/message`), never by the raw path, so that
    probing random URLs cannot grow the metrics without bound: whatever is not an operation of
    the spec is `other`.
    """

    def __init__(self, app: ASGIApp, *, metrics: WriterMetrics, routes: dict[str, str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # operationId -> path in the spec
        self.metrics_app = make_asgi_app(metrics.view)
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # labelled children, found once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/metrics":
            await self.metrics_app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # connexion's routing notes the operation in scope["extensions"] of a shallow copy of
        # the scope: an extensions dict that exists already is shared, and shows it here too.
        scope.setdefault("extensions", {})
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            duration_s = time.perf_counter() - started
            requests, duration = self._children(scope, status)
            requests.inc()
            duration.observe(duration_s)
            client = scope.get("client") or ("-", 0)
            access_log.info(
                '%s "%s %s" %d %.1fms', client[0], scope["method"], scope["path"], status, duration_s * 1000
            )

    def _children(self, scope: Scope, status: int) -> tuple[Any, Any]:
        """The request counter's and duration histogram's series for this request."""
        routing = scope["extensions"].get(ROUTING_CONTEXT, {})
        key = (scope["method"], routing.get("operation_id") or "", status)
        series = self._series.get(key)
        if series is None:
            path = self.routes.get(key[1])
            route = "other" if path is None else routing.get("api_base_path", "") + path
            series = (
                self.metrics.requests.labels(scope["method"], route, str(status)),
                self.metrics.request_duration.labels(scope["method"], route),
            )
            self._series[key] = series
        return series


class AdmissionLimit:
    """Answer 503 at once, before reading the body, to a request that would wait for a handler
    thread. This bounds the queue of waiting requests, and with it memory and latency, when SQS
    slows down. Counts requests in progress, without locks (one event loop).

    Health checks are never limited: one thread is kept for them, so a saturated writer still
    answers its liveness probe instead of being restarted.
    """

    UNLIMITED = frozenset({"message.health"})

    def __init__(self, app: ASGIApp, *, limit: int, render: Callable[[ServiceError], Response]) -> None:
        self.app = app
        self.limit = limit
        self.render = render  # counts the refusal, logs it (throttled), and answers it
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        routing = scope.get("extensions", {}).get(ROUTING_CONTEXT, {})
        if scope["type"] != "http" or routing.get("operation_id") in self.UNLIMITED:
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.limit:
            busy = WriterBusy(f"{self.in_progress} requests already in progress; retry later")
            await self.render(busy)(scope, receive, send)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1


def create_app(
    settings: Optional[Settings] = None, queue: Optional[SqsQueue] = None, keys: Optional[KeyStore] = None
) -> connexion.FlaskApp:
    """Build the writer. `settings` default to the environment's; `queue` to the configured SQS
    queue on a new client (tests pass one on moto); `keys`, the store of Idempotency-Keys, to
    IDEMPOTENCY_TABLE's when it is set, else the writer's own memory."""
    settings = settings or Settings.from_env()
    if queue is None:
        queue = SqsQueue(settings.queue_name, create_client(settings))
    registry = CollectorRegistry()  # the writer's metrics and its SQS calls
    # One process serves its own registry; one of several serves the sum of all of theirs.
    metrics = WriterMetrics(registry, view=all_processes() if settings.writer_processes > 1 else None)
    queue.metrics.expose_in(registry)
    if keys is None and settings.idempotency_table:
        keys = SharedStore(
            settings.idempotency_table, create_client(settings, service="dynamodb"),
            window_s=settings.idempotency_window_s, lease_s=settings.send_timeout_s + LEASE_MARGIN_S,
        )
    writer = Writer(
        settings, queue, SqsQueue(settings.dlq_name, queue.client, queue.metrics), metrics, idempotency=keys
    )

    api_keys = settings.load_api_keys()
    spec = served_spec(
        load_source(),
        fifo=queue.is_fifo,
        content_based_deduplication=_content_based_deduplication(queue),
        keys_required=bool(api_keys),
    )
    bridge: list[webstack.FlaskBridge] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        writer.close()  # the server stopped taking requests: let pending sends finish
        bridge[0].threads.close()

    routes = {
        operation["operationId"]: path
        for path, operations in spec.document["paths"].items()
        for operation in operations.values()
    }
    answer = ProblemAnswers(writer, retry_after_s=settings.retry_after_s, body_operations=spec.body_operations)
    stack = webstack.middlewares(
        api_keys=bool(api_keys),
        # outside connexion's error handling: it answers scrapes first, and sees every final status
        observer=functools.partial(RequestObserver, metrics=metrics, routes=routes),
        # after routing and the key check, before the body is read
        admission=functools.partial(
            AdmissionLimit, limit=max(1, settings.handler_threads - 1), render=answer.refusal
        ),
        checks=functools.partial(webstack.RequestChecks, spec=spec, max_request_bytes=settings.max_request_bytes),
    )
    app = connexion.FlaskApp(
        __name__, specification_dir=DATA_DIR, lifespan=lifespan, middlewares=stack, jsonifier=webstack.COMPACT_JSON,
    )
    app.add_api(spec.document, security_map={"apiKey": webstack.api_key_handler(api_keys)})
    bridge.append(webstack.use_bridge(app, threads=settings.handler_threads, body_operations=spec.body_operations))
    app.app.extensions[WRITER_EXTENSION] = writer
    app.add_error_handler(ServiceError, answer.handle)
    app.add_error_handler(ProblemException, answer.handle_connexion)
    return app


def _content_based_deduplication(queue: SqsQueue) -> bool:
    """Whether a FIFO queue deduplicates by content, for the served spec. Unknown while SQS does
    not answer: then the spec leaves deduplication_id optional, and the handler checks it."""
    try:
        return queue.content_based_deduplication
    except SqsError as exc:
        log.warning("cannot read the queue's ContentBasedDeduplication (%s): the served spec "
                    "leaves deduplication_id optional; the writer still refuses a message without one", exc)
        return True


class ProblemAnswers:
    """The one way the writer answers an error: its problem (errors.problem), with Retry-After
    for a 503, counted under its outcome where no one counted it before, and logged once per
    10 s per kind when it is SQS's or the writer's side (an outage is not a log flood).

    The writer counts the refusals it decides; these count the rest: a request the spec or the
    admission limit refused before any of its messages was read, as one message."""

    def __init__(self, writer: Writer, *, retry_after_s: int, body_operations: frozenset[str]) -> None:
        self.writer = writer
        self.retry_after = str(retry_after_s)
        self.body_operations = body_operations
        self._throttled = ThrottledLog(log)

    def _answer(self, error: ServiceError) -> tuple[bytes, dict[str, str]]:
        """The body and headers that answer `error`."""
        if error.status >= 500:
            self._throttled.warning(error)
        headers = {"Retry-After": self.retry_after} if error.retry_later else {}
        return json.dumps(problem(error)).encode("utf-8"), headers

    def refusal(self, error: ServiceError) -> Response:
        """A request refused before any of its messages was read: one message, counted."""
        body, headers = self._answer(self.writer.refused(error))
        return Response(body, status_code=error.status, headers=headers, media_type=PROBLEM)

    async def handle(self, request: ConnexionRequest, error: ServiceError) -> ConnexionResponse:
        """connexion's error handler for every ServiceError (async: no thread hand-off)."""
        routing = request.scope.get("extensions", {}).get(ROUTING_CONTEXT, {})
        if isinstance(error, InvalidRequest) and routing.get("operation_id") in self.body_operations:
            self.writer.refused(error)
        body, headers = self._answer(error)
        return ConnexionResponse(status_code=error.status, mimetype=PROBLEM, body=body, headers=headers)

    async def handle_connexion(self, request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
        """connexion's own refusals in the writer's vocabulary: a missing or unknown API key (401).
        Its 400 and 415 come from the request validation webstack.RequestChecks replaces, so they
        are mapped only in case one of its layers still raises them; any other keeps its words."""
        adapted = {400: InvalidRequest, 401: Unauthenticated, 415: UnsupportedMediaType}.get(exc.status)
        if adapted is None:
            return exc.to_problem()
        return await self.handle(request, adapted(exc.detail or exc.title or ""))


def main(argv: Optional[list[str]] = None) -> int:
    """Serve the writer with uvicorn until SIGINT or SIGTERM: requests in flight complete, then
    uvicorn re-raises the signal, so the process ends as killed by it (its convention).

    The one entry point of `make run`, `queue-writer` and the container. With WRITER_PROCESSES
    above 1, uvicorn runs that many processes on the one socket, each with its own app (see
    docs/operations.md, "Scaling out", for what is per process)."""
    settings = settings_for_command("server")
    if settings is None:
        return 2
    parser = argparse.ArgumentParser(
        description="Queue-writer: POST /api/message enqueues JSON messages on SQS. "
        "Every setting comes from the environment (see docs/configuration.md); these flags override two."
    )
    add_option(parser, "--host", "host", settings)
    add_option(parser, "--port", "port", settings)
    try:
        settings = with_options(settings, parser.parse_args(argv))
    except ConfigError as exc:
        parser.error(str(exc))
    log.info(
        "queue %r on %s; serving on http://%s:%d/api (Swagger UI at /api/ui), %d process%s",
        settings.queue_name,
        settings.sqs_endpoint_url or f"AWS {settings.aws_region}",
        settings.host,
        settings.port,
        settings.writer_processes,
        "" if settings.writer_processes == 1 else "es",
    )
    if settings.writer_processes == 1:
        serve(create_app(settings), host=settings.host, port=settings.port)
        return 0
    if not settings.idempotency_table:
        log.warning("Idempotency-Keys hold per process: each of the %d writer processes keeps its own; "
                    "set IDEMPOTENCY_TABLE to share them", settings.writer_processes)
    with tempfile.TemporaryDirectory(prefix="writer-metrics-") as metrics_dir:
        # prometheus_client reads this variable when each process imports it: their counters
        # then live in files there, which every process's /metrics and /api/stats sum up.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        serve("server:create_app_in_worker_process", host=settings.host, port=settings.port,
              processes=settings.writer_processes)
    return 0


def create_app_in_worker_process() -> connexion.FlaskApp:
    """The app of one of WRITER_PROCESSES processes: uvicorn starts each with a fresh
    interpreter, which configures its logging and reads the settings anew."""
    settings = Settings.from_env()
    configure_logging(settings)
    return create_app(settings)


def serve(app: Union[connexion.FlaskApp, str], *, host: str, port: int, processes: int = 1) -> None:
    """Serve until SIGINT or SIGTERM: the one serving configuration, for the writer and for the
    benchmark's writer with a stubbed queue. `app` is the app, or for several processes the
    "module:factory" each of them calls to build its own."""
    uvicorn.run(
        app, host=host, port=port, workers=processes, factory=isinstance(app, str),
        access_log=False, log_config=None,
    )


if __name__ == "__main__":
    sys.exit(main())
