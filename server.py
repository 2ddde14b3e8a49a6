"""The queue-writer's app: `create_app()` assembles swagger.yml, the handlers in message.py, the
SQS queue, the writer's middleware and the error mapping; `python server.py` serves it with
uvicorn and the socket's limits (sqs_message_service/serving.py). The parts it puts together
live in sqs_message_service/writer/.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, AsyncContextManager, AsyncIterator, Callable, Mapping, Optional, Union

import connexion
from connexion.exceptions import ProblemException
from prometheus_client import CollectorRegistry

from sqs_message_service import cli
from sqs_message_service.aws import create_client
from sqs_message_service.hooks import NO_HOOKS, Hooks, combine
from sqs_message_service.metrics import WriterMetrics, all_processes
from sqs_message_service.serving import EARLY_REFUSAL, SocketLimits
from sqs_message_service.serving import serve as serve_with_limits
from sqs_message_service.settings import (
    DATA_DIR,
    Settings,
    comma_list,
    configure_logging,
    settings_for_command,
    with_address,
)
from sqs_message_service.sqs import SqsError, SqsQueue
from sqs_message_service.tracing import configure as configure_tracing
from sqs_message_service.writer import bridge, checks, stack, stopping
from sqs_message_service.writer.answers import ProblemAnswers
from sqs_message_service.writer.errors import ServiceError
from sqs_message_service.writer.idempotency import LEASE_MARGIN_S, KeyStore, SharedStore
from sqs_message_service.writer.reader import READER_EXTENSION, Reader
from sqs_message_service.writer.service import WRITER_EXTENSION, Writer, admission_limit
from sqs_message_service.writer.spec import ServedSpec, load_source, served_spec

log = logging.getLogger(__name__)


def create_app(
    settings: Optional[Settings] = None,
    queue: Optional[SqsQueue] = None,
    keys: Optional[KeyStore] = None,
    source: Optional[Union[Path, Mapping[str, Any]]] = None,
    tracing: Optional[Hooks] = None,
    hooks: Hooks = NO_HOOKS,
) -> connexion.FlaskApp:
    """Build the writer. `settings` default to the environment's; `queue` to the configured SQS
    queue on a new client (tests pass one on moto); `keys`, the store of Idempotency-Keys, to
    IDEMPOTENCY_TABLE's when it is set, else the writer's own memory; `source`, the spec before
    it is fitted to the queue, to swagger.yml (a path, or a document already loaded); `tracing`
    to what the OTEL_* variables ask (off unless they do). `hooks` watch each request and
    message after tracing does (hooks.py)."""
    settings = settings or Settings.from_env(role="writer")
    watching = combine(configure_tracing(settings, "writer") if tracing is None else tracing, hooks)
    injected = queue is not None
    if queue is None:
        queue = SqsQueue(settings.queue_name, create_client(settings), hooks=watching)
    else:
        queue = queue.watched_by(watching)  # with tracing, a span for each SendMessageBatch
    metrics = _metrics(settings, queue)
    writer_hooks = combine(watching, metrics)  # the writer's metrics count each request, as hooks
    api_keys, read_keys = settings.load_api_keys(), frozenset(comma_list(settings.read_keys))
    spec = _served_spec(settings, queue, source, writer_hooks, keys_required=bool(api_keys), read_keys=bool(read_keys))
    dead_letter_queue = SqsQueue(settings.dlq_name, queue.client, queue.metrics)
    keys = _key_store(settings, keys)
    writer = Writer(settings, queue, dead_letter_queue, metrics, keys, writer_hooks, spec.entry_problem)
    reader = None
    if read_keys:
        reader = Reader(
            settings, _read_queue(settings, queue, injected), dead_letter_queue, metrics, hooks=writer_hooks
        )
    routes = _routes(spec)
    answer = ProblemAnswers(writer, retry_after_s=settings.retry_after_s, body_operations=spec.message_operations)
    admission = _admission(settings, spec, routes, metrics, answer)
    flask_bridge: list[bridge.FlaskBridge] = []  # made once the app is: the lifespan closes its threads
    app = connexion.FlaskApp(
        __name__,
        specification_dir=DATA_DIR,
        middlewares=stack.middlewares(
            api_keys=bool(api_keys or read_keys),
            # outside connexion's error handling: it answers scrapes first, and sees every final status
            observer=functools.partial(stack.RequestObserver, metrics=metrics, routes=routes, hooks=writer_hooks),
            # after routing and the key check, before the body is read
            admission=functools.partial(stack.AdmissionLimit, admission=admission),
            checks=functools.partial(checks.RequestChecks, spec=spec, max_request_bytes=settings.max_request_bytes),
        ),
        jsonifier=stack.COMPACT_JSON,
        lifespan=_lifespan(writer, reader, admission, lambda: flask_bridge[0].threads, writer_hooks),
    )
    app.add_api(spec.document, security_map={"apiKey": stack.api_key_handler(api_keys, read_keys=read_keys)})
    flask_bridge.append(bridge.use_bridge(app, threads=settings.handler_threads, body_operations=spec.body_operations))
    _attach(app, writer, reader, answer)
    return app


def _metrics(settings: Settings, queue: SqsQueue) -> WriterMetrics:
    """The writer's metrics and its SQS calls', in a registry of their own. One process serves
    its own registry; one of several serves the sum of all of theirs."""
    registry = CollectorRegistry()
    metrics = WriterMetrics(registry, view=all_processes() if settings.writer_processes > 1 else None)
    queue.metrics.expose_in(registry)
    return metrics


def _attach(app: connexion.FlaskApp, writer: Writer, reader: Optional[Reader], answer: ProblemAnswers) -> None:
    """The services where the handlers find them, and the problem answers for their errors."""
    app.app.extensions[WRITER_EXTENSION] = writer
    if reader is not None:
        app.app.extensions[READER_EXTENSION] = reader
    app.add_error_handler(ServiceError, answer.handle)
    app.add_error_handler(SqsError, answer.handle)
    app.add_error_handler(ProblemException, answer.handle_connexion)


def _routes(spec: ServedSpec) -> dict[str, str]:
    """Each operation's path in the spec, by its operationId."""
    return {
        operation["operationId"]: path
        for path, operations in spec.document["paths"].items()
        for operation in operations.values()
    }


def _key_store(settings: Settings, keys: Optional[KeyStore]) -> Optional[KeyStore]:
    """The store of Idempotency-Keys: the one given, else IDEMPOTENCY_TABLE's when it is set,
    else None (the writer keeps them in its own memory)."""
    if keys is None and settings.idempotency_table:
        keys = SharedStore(
            settings.idempotency_table,
            create_client(settings, service="dynamodb"),
            window_s=settings.idempotency_window_s,
            lease_s=settings.send_timeout_s + LEASE_MARGIN_S,
        )
    return keys


def _served_spec(
    settings: Settings,
    queue: SqsQueue,
    source: Optional[Union[Path, Mapping[str, Any]]],
    hooks: Hooks,
    *,
    keys_required: bool,
    read_keys: bool,
) -> ServedSpec:
    """The spec the writer serves: `source` (swagger.yml by default) fitted to the queue, the
    keys, the read routes' bounds and the attribute the hooks add to each message."""
    if source is None or isinstance(source, Path):
        source = load_source() if source is None else load_source(source)
    return served_spec(
        source,
        fifo=queue.is_fifo,
        content_based_deduplication=_content_based_deduplication(queue),
        keys_required=keys_required,
        reserved_attribute=hooks.context_attribute,
        read_keys=read_keys,
        max_lease_s=settings.read_max_lease_s,
        max_wait_s=settings.read_max_wait_s,
    )


def _admission(
    settings: Settings,
    spec: ServedSpec,
    routes: dict[str, str],
    metrics: WriterMetrics,
    answer: ProblemAnswers,
) -> stack.Admission:
    """The writer's admission limit, with the paths it never turns away and the counter of what
    the socket turns away before the app sees it."""
    base_path = spec.document["servers"][0]["url"].rstrip("/")
    route_paths = frozenset(base_path + path for path in routes.values())
    return stack.Admission(
        limit=admission_limit(settings),
        render=answer.refusal,
        retry_after_s=settings.retry_after_s,
        exempt_paths=frozenset({"/metrics", *(base_path + routes[op] for op in stack.AdmissionLimit.UNLIMITED)}),
        counted=stack.early_refusals(metrics, route_paths, answer.turned_away),
    )


def _lifespan(
    writer: Writer,
    reader: Optional[Reader],
    admission: stack.Admission,
    handler_threads: Callable[[], Any],
    hooks: Hooks,
) -> Callable[[Any], AsyncContextManager[dict[str, Any]]]:
    """What the app does as the server starts and stops: on a stop signal, the read routes' long
    polls answer; once the server stopped taking requests, pending sends finish, the handler
    threads end and what the hooks hold leaves."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[dict[str, Any]]:
        if reader is not None:
            stopping.on_stop_signal(reader.stop)  # a long poll answers at once, not when its wait is over
        yield {EARLY_REFUSAL: admission}  # uvicorn's state: the socket turns away what this would
        if reader is not None:
            reader.close()
        writer.close()  # the server stopped taking requests: let pending sends finish
        handler_threads().close()
        hooks.shutdown()  # the spans still to export leave

    return lifespan


def _read_queue(settings: Settings, queue: SqsQueue, injected: bool) -> SqsQueue:
    """The queue the read routes receive from: on a client of its own whose read timeout covers a
    20 s long poll and whose pool holds READ_MAX_POLLS of them (the writer's would cut a long poll
    at SQS_READ_TIMEOUT); the injected queue's own client in tests. Watched by the queue's hooks:
    with tracing, a receive span linked to each message's creation."""
    if injected:
        return queue
    client = create_client(settings, read_timeout_s=20 + settings.sqs_read_timeout_s, pool=settings.read_max_polls + 10)
    return SqsQueue(settings.queue_name, client, queue.metrics, hooks=queue.hooks)


def _content_based_deduplication(queue: SqsQueue) -> bool:
    """Whether a FIFO queue deduplicates by content, for the served spec. Unknown while SQS does
    not answer: then the spec leaves deduplication_id optional, and the handler checks it."""
    try:
        return queue.content_based_deduplication
    except SqsError as exc:
        log.warning(
            "cannot read the queue's ContentBasedDeduplication (%s): the served spec "
            "leaves deduplication_id optional; the writer still refuses a message without one",
            exc,
        )
        return True


def main(argv: list[str] | None = None) -> int:
    """Serve the writer with uvicorn until SIGINT or SIGTERM: requests in flight complete, then
    uvicorn re-raises the signal, so the process ends as killed by it (its convention). Exits 2
    when started wrongly, 1 when it cannot serve (a port taken: uvicorn's own exit), as every
    entry point does (sqs_message_service/cli.py).

    The one entry point of `make run`, `queue-writer` and the container. With WRITER_PROCESSES
    above 1, uvicorn runs that many processes on the one socket, each with its own app (see
    docs/operations.md, "Scaling out", for what is per process)."""
    settings = settings_for_command("server", role="writer")
    if settings is None:
        return cli.EXIT_USAGE
    settings = with_address(
        settings, argv, description="Queue-writer: POST /api/message enqueues JSON messages on SQS.", port="port"
    )
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
        serve(create_app(settings), settings)
        return cli.EXIT_OK
    if not settings.idempotency_table:
        log.warning(
            "Idempotency-Keys hold per process: each of the %d writer processes keeps its own; "
            "set IDEMPOTENCY_TABLE to share them",
            settings.writer_processes,
        )
    with tempfile.TemporaryDirectory(prefix="writer-metrics-") as metrics_dir:
        # prometheus_client reads this variable when each process imports it: their counters
        # then live in files there, which every process's /metrics and /api/stats sum up.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        serve("server:create_app_in_worker_process", settings, processes=settings.writer_processes)
    return cli.EXIT_OK


def create_app_in_worker_process() -> connexion.FlaskApp:
    """The app of one of WRITER_PROCESSES processes: uvicorn starts each with a fresh
    interpreter, which configures its logging and reads the settings anew."""
    settings = Settings.from_env(role="writer")
    configure_logging(settings)
    return create_app(settings)


def serve(app: Union[connexion.FlaskApp, str], settings: Settings, *, processes: int = 1) -> None:
    """Serve until SIGINT or SIGTERM on HOST:PORT, with the socket's limits (serving.py): the one
    serving configuration, for the writer and for the benchmark's writer with a stubbed queue.
    `app` is the app, or for several processes the "module:factory" each of them calls to build
    its own."""
    serve_with_limits(app, SocketLimits.of(settings), host=settings.host, port=settings.port, processes=processes)


if __name__ == "__main__":
    sys.exit(main())
