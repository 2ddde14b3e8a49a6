"""Queue-reader: the worker's entry point (`python worker.py`, `queue-worker`). It long-polls the
queue, processes messages concurrently, deletes what succeeded, lets failures come back after a
backoff, and leaves poison messages to the dead-letter queue.

The engine is sqs_message_service/worker/ (engine.py wires its parts and orders their stop);
this module is what the operator sees and controls: the options, the processing step, the stats
pane, the summary file, the metrics server and the signals. The first SIGINT or SIGTERM stops
gracefully (an idle worker exits at once, without waiting for its long poll); the second exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, Callable, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from sqs_message_service.aws import create_client
from sqs_message_service.cli import EXIT_FAILED, EXIT_USAGE
from sqs_message_service.leases import TableUnavailable
from sqs_message_service.metrics import SqsMetrics, WorkerStats
from sqs_message_service.output import OutputWriter
from sqs_message_service.settings import Settings, add_option, parse_options, settings_for_command
from sqs_message_service.sqs import SqsError, SqsQueue
from sqs_message_service.tracing import NoTracing
from sqs_message_service.tracing import configure as configure_tracing
from sqs_message_service.worker.engine import Worker
from sqs_message_service.worker.http_step import HttpStep
from sqs_message_service.worker.pane import StatsPane
from sqs_message_service.worker.processed import ProcessedLedger
from sqs_message_service.worker.processing import SimulatedWork
from sqs_message_service.worker.steps import Processor, StepNotLoadable, load_step

log = logging.getLogger(__name__)


def pin_to_cpu(cpu: int) -> None:
    """Run this thread, and every thread it starts from now on, on `cpu` only (WORKER_CPU).

    A worker's threads take turns at one GIL. Handed over between two cores, it takes waking a
    thread on the other core, which on a virtual machine costs several times a switch on one
    core; a busy worker does it thousands of times a second (docs/performance.md). Raises
    OSError where the CPU is not this process's to use, or the platform cannot pin."""
    if not hasattr(os, "sched_setaffinity"):
        raise OSError("this platform cannot pin a process to a CPU")
    allowed = os.sched_getaffinity(0)
    if cpu not in allowed:
        raise OSError(f"CPU {cpu} is not among this process's CPUs {sorted(allowed)}")
    os.sched_setaffinity(0, {cpu})


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Queue-reader: long-polls QUEUE_NAME, processes messages concurrently, deletes "
        "what succeeded, lets failures come back after a backoff, and leaves messages that failed "
        "MAX_RECEIVE_COUNT times to the dead-letter queue. Every option also comes from the "
        "environment variable named in its help.",
    )
    add_option(parser, "--concurrency", "worker_concurrency", settings)
    add_option(parser, "--cpu", "worker_cpu", settings)
    add_option(parser, "--process-time", "process_time_s", settings)
    add_option(parser, "--failure-rate", "failure_rate", settings)
    add_option(parser, "--seed", "failure_seed", settings)
    add_option(parser, "--processor", "processor", settings, metavar="MODULE:FUNCTION")
    add_option(parser, "--output", "worker_output", settings, metavar="FILE")
    add_option(parser, "--stats-interval", "stats_interval_s", settings)
    add_option(parser, "--exit-when-idle", "exit_when_idle_s", settings, metavar="SECONDS")
    add_option(parser, "--grace", "shutdown_grace_s", settings)
    parser.add_argument(
        "--summary-json",
        type=Path,
        metavar="FILE",
        help="on exit, write the counters and the SQS calls by operation to FILE as JSON",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the worker until SIGINT, SIGTERM or, with --exit-when-idle, an empty queue. Exits 0
    when everything in flight was settled within SHUTDOWN_GRACE, 1 when it failed (the processed
    table or the metrics port at start, or a stop past its grace), 2 when started wrongly
    (sqs_message_service/cli.py)."""
    settings = settings_for_command("worker", role="worker")
    if settings is None:
        return EXIT_USAGE
    settings, args = parse_options(build_parser(settings), settings, argv)
    if settings.worker_cpu is not None:  # before any thread starts: they all inherit it
        try:
            pin_to_cpu(settings.worker_cpu)
        except OSError as exc:
            print(f"worker: WORKER_CPU={settings.worker_cpu}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    tracing = configure_tracing(settings, "worker")  # off unless the OTEL_* variables ask for it
    try:
        processor = processing_step(settings, tracing)
    except StepNotLoadable as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # A long poll holds the connection for up to RECEIVE_WAIT_SECONDS: the read timeout covers it.
    client = create_client(settings, read_timeout_s=settings.receive_wait_s + settings.sqs_read_timeout_s)
    sqs_metrics = SqsMetrics()
    with contextlib.ExitStack() as cleanup:
        output = None
        if settings.worker_output is not None:
            output = OutputWriter(cleanup.enter_context(open(settings.worker_output, "a", encoding="utf-8")))
        queue = SqsQueue(settings.queue_name, client, sqs_metrics)
        try:
            processed = processed_ledger(settings, queue)
        except (TableUnavailable, SqsError) as exc:
            print(f"worker: PROCESSED_TABLE={settings.processed_table}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        cleanup.callback(tracing.shutdown)  # the spans still to export leave before the process ends
        worker = Worker(
            queue=queue,
            dead_letter_queue=SqsQueue(settings.dlq_name, client, sqs_metrics),
            processor=processor,
            settings=settings,
            output=output,
            processed=processed,
            tracing=tracing,
        )
        if not _metrics_served(settings, worker, cleanup):
            return EXIT_FAILED
        _install_signal_handlers(worker)
        log_start(worker, settings)
        stats = WorkerStats(worker.metrics, (worker.queue, worker.dead_letter_queue))
        with StatsPane(worker, stats, sys.stdout, settings.stats_interval_s):
            exit_code = worker.run()
        if args.summary_json is not None:
            args.summary_json.write_text(json.dumps(stats.summary(), indent=1) + "\n", encoding="utf-8")
        return exit_code


def _metrics_served(settings: Settings, worker: Worker, cleanup: contextlib.ExitStack) -> bool:
    """/metrics and /health on METRICS_PORT (none when it is 0) until the worker ends; False,
    once said why, when the port cannot be had."""
    try:
        metrics_server = serve_metrics(settings, worker.registry, healthy=lambda: worker.healthy)
    except OSError as exc:
        print(
            f"worker: cannot serve metrics on {settings.host}:{settings.metrics_port} (METRICS_PORT): {exc}",
            file=sys.stderr,
        )
        return False
    if metrics_server is not None:
        cleanup.callback(metrics_server.shutdown)
    return True


def log_start(worker: Worker, settings: Settings) -> None:
    log.info(
        "worker %s on queue %r (%s), concurrency %d%s; step %s (%s), PROCESSING_TIMEOUT %g s",
        worker.worker_id,
        settings.queue_name,
        settings.sqs_endpoint_url or f"AWS {settings.aws_region}",
        settings.worker_concurrency,
        "" if settings.worker_cpu is None else f", on CPU {settings.worker_cpu}",
        settings.processor or "simulated work",
        "coroutines" if worker.coroutines is not None else "threads",
        settings.processing_timeout_s,
    )


def processing_step(settings: Settings, tracing: NoTracing) -> Processor:
    """The step PROCESSOR names: a URL is an HTTP step, 'module:function' the user's own
    function; unset, the simulated work. Raises StepNotLoadable, in one line, when it cannot be
    found."""
    if not settings.processor:
        return SimulatedWork(
            process_time_s=settings.process_time_s, failure_rate=settings.failure_rate, seed=settings.failure_seed
        )
    if settings.processor.startswith(("http://", "https://")):
        return HttpStep(
            settings.processor,
            timeout_s=settings.processing_timeout_s,
            concurrency=settings.worker_concurrency,
            tracing=tracing,
        )
    return load_step(settings.processor)


def processed_ledger(settings: Settings, queue: SqsQueue) -> Optional[ProcessedLedger]:
    """The processed ledger of PROCESSED_TABLE (None when unset), its table found. Its window is
    PROCESSED_WINDOW, or the queue's retention period: no redelivery outlives that. Raises
    TableUnavailable when the table does not exist or cannot be reached, SqsError when the
    queue's retention cannot be read."""
    if not settings.processed_table:
        return None
    window_s = settings.processed_window_s
    if window_s is None:
        window_s = int(queue.attributes(["MessageRetentionPeriod"])["MessageRetentionPeriod"])
    ledger = ProcessedLedger(
        settings.processed_table,
        create_client(settings, service="dynamodb"),
        queue_name=queue.name,
        window_s=window_s,
    )
    ledger.check()
    log.info("processed ledger %r: each key processed once within %d s", settings.processed_table, window_s)
    return ledger


def serve_metrics(
    settings: Settings, registry: CollectorRegistry, *, healthy: Callable[[], bool] = lambda: True
) -> Optional[WSGIServer]:
    """Serve `registry` for Prometheus on HOST:METRICS_PORT, and /health for an orchestrator's
    probe, from a thread of its own (none when METRICS_PORT is 0). Raises OSError when the port
    is taken: better than running unwatched."""
    if not settings.metrics_port:
        return None
    server = make_server(
        settings.host,
        settings.metrics_port,
        health_and_metrics(registry, healthy),
        server_class=_server_class(settings.host),
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics, health on /health", settings.host, settings.metrics_port)
    return server


def health_and_metrics(registry: CollectorRegistry, healthy: Callable[[], bool]) -> Any:
    """A WSGI app: /health answers 200, or 503 once the worker can no longer run its step (its
    threads stuck past PROCESSING_TIMEOUT up to MAX_STUCK_THREADS); every other path, the metrics."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != "/health":
            return metrics(environ, start_response)
        ok = healthy()
        body = json.dumps(
            {"status": "ok"}
            if ok
            else {
                "status": "unhealthy",
                "reason": "processing threads stuck past PROCESSING_TIMEOUT (MAX_STUCK_THREADS)",
            }
        ).encode()
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        pass


def _server_class(host: str) -> type[WSGIServer]:
    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return Server


def _install_signal_handlers(worker: Worker) -> None:
    """First SIGINT/SIGTERM: graceful stop. Second: exit at once (what was in flight comes back
    after its visibility timeout)."""

    def graceful(signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGINT, at_once)
        signal.signal(signal.SIGTERM, at_once)
        worker.request_stop()  # run() then stops every part, in order

    def at_once(signum: int, _frame: Any) -> None:
        log.warning("second signal: exiting now")
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, graceful)
    signal.signal(signal.SIGTERM, graceful)


if __name__ == "__main__":
    sys.exit(main())
