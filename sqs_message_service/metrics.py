"""Measurement: the Prometheus metrics of the writer and the worker, and the helpers that read
them back for the live stats.

Each writer app and each worker keeps its metrics in a `CollectorRegistry` of its own instead of
prometheus_client's global one: tests build many apps in one process, and a registry holds
exactly what its /metrics serves. `/api/stats` and the worker's stats pane read the same
counters, so the numbers an operator sees in a terminal and in Prometheus cannot disagree.

Names follow Prometheus conventions: base units (seconds, messages), `_total` on counters (added
by prometheus_client), and a label only where summing over it means something.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from typing import Any, ClassVar, Deque, Iterable, Iterator, Optional, Protocol, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from .hooks import Hooks
from .verdicts import Reject

#: Request and processing latencies: from a millisecond (an in-memory SQS) to a minute.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Messages per SendMessageBatch call: SQS takes 1 to 10.
BATCH_SIZE_BUCKETS = tuple(range(1, 11))


class SqsMetrics:
    """SQS API calls and what SQS bills for them, by queue; `SqsQueue` counts into these, and a
    process's queues share one instance. Registered in no registry until `expose_in`: the
    writer's app or the worker that uses the queues adds them to its own."""

    def __init__(self) -> None:
        self.requests = Counter(
            "sqs_requests",
            "SQS API calls made, by queue and operation",
            ("queue", "operation"),
            registry=None,
        )
        self.billable_requests = Counter(
            "sqs_billable_requests",
            "SQS requests billed for those calls: one per call and one per further 64 KiB of payload",
            ("queue",),
            registry=None,
        )

    def expose_in(self, registry: CollectorRegistry) -> None:
        registry.register(self.requests)
        registry.register(self.billable_requests)


class WriterMetrics(Hooks):
    """The queue-writer's metrics. `view` is what /metrics and /api/stats read: `registry`
    itself, or with several writer processes all of theirs (`all_processes`). Each request they
    count and time as a hook (hooks.py), beside tracing's."""

    def __init__(self, registry: CollectorRegistry, view: Optional[Collector] = None) -> None:
        self.view = view if view is not None else registry
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # labelled children, found once
        self.requests = Counter(
            "writer_requests",
            "HTTP requests answered, by method, route (the spec's path) and status",
            ("method", "route", "status"),
            registry=registry,
        )
        self.request_duration = Histogram(
            "writer_request_duration_seconds",
            "Time to answer an HTTP request, by method and route",
            ("method", "route"),
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.messages = Counter(
            "writer_messages",
            "Messages by outcome: accepted by SQS, invalid (4xx), unavailable (SQS failed), "
            "busy (refused by the admission limit), backlogged (refused by MAX_QUEUE_DEPTH)",
            ("outcome",),
            registry=registry,
        )
        self.batch_size = Histogram(
            "writer_send_batch_messages",
            "Messages per SendMessageBatch call made by the group commit",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.reads = Counter(
            "writer_read_messages",
            "Messages through the read routes, by outcome: received, acknowledged, given_back, dead_lettered "
            "(given back on the last allowed receive), extended, lapsed (a token whose lease had run out)",
            ("outcome",),
            registry=registry,
        )
        self.long_polls = Gauge(
            "writer_long_polls",
            "Long polls of the read routes waiting now (at most READ_MAX_POLLS a process)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.group_commit_wait = Histogram(
            "writer_group_commit_wait_seconds",
            "Time a message waited in the group commit before its SendMessageBatch call started",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )

    def answered(self, watch: Any, method: str, route: str, status: int, duration_s: float) -> None:
        """Count and time the request, by its method, route and status."""
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.requests.labels(method, route, str(status)),
                self.request_duration.labels(method, route),
            )
        series[0].inc()
        series[1].observe(duration_s)

    def observe_batch(self, waits_s: Sequence[float]) -> None:
        self.batch_size.observe(len(waits_s))
        for wait_s in waits_s:
            self.group_commit_wait.observe(wait_s)


def all_processes() -> CollectorRegistry:
    """The sum of every writer process's metrics, read from the files prometheus_client's
    multiprocess mode keeps in PROMETHEUS_MULTIPROC_DIR (which `server.main` sets before it
    starts WRITER_PROCESSES processes)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


class LedgerMetrics:
    """The processed ledger's DynamoDB calls and failed calls; `ProcessedLedger` counts into
    these from when it is built. Registered in no registry until `expose_in`: the worker that
    uses the ledger adds them to its own (`WorkerMetrics`)."""

    def __init__(self) -> None:
        self.dynamodb_requests = Counter(
            "dynamodb_requests",
            "DynamoDB calls made for the processed ledger, by table and operation",
            ("table", "operation"),
            registry=None,
        )
        self.ledger_errors = Counter(
            "worker_ledger_errors",
            "Processed-ledger calls that failed: the table unreachable or refusing",
            registry=None,
        )

    def expose_in(self, registry: CollectorRegistry) -> None:
        registry.register(self.dynamodb_requests)
        registry.register(self.ledger_errors)


class WorkerMetrics(Hooks):
    """The queue-reader's metrics, served on METRICS_PORT and read by its stats pane; with the
    processed ledger's `ledger` metrics among them (at 0 without one). What they count of each
    message's life (its attempts, retries, dead-lettering, deletion or giving back) they count
    as hooks (hooks.py), which the worker's parts call as they call tracing's."""

    COUNTERS = (
        "received",
        "processed",
        "failed",
        "retried",
        "dead_lettered",
        "deleted",
        "released",
        "duplicates",
        "held",
        "timed_out",
        "rejected",
    )
    _HELP: ClassVar[dict[str, str]] = {
        "received": "Messages received from SQS",
        "processed": "Messages whose processing succeeded",
        "failed": "Processing attempts that failed (retried plus dead-lettered)",
        "retried": "Failed messages left to come back after a backoff",
        "dead_lettered": "Failed messages at MAX_RECEIVE_COUNT, sent to the dead-letter queue "
        "(or left to SQS's redrive when that send failed): an estimate of the DLQ's arrivals",
        "deleted": "Processed messages deleted from the queue (SQS confirmed the delete)",
        "released": "Messages received but not started (shutdown), made visible again at once",
        "duplicates": "Messages the processed ledger (PROCESSED_TABLE) knew as done: deleted without processing",
        "held": "Messages whose key another worker's live claim held (PROCESSED_TABLE): left to come back",
        "timed_out": "Attempts that outlived PROCESSING_TIMEOUT (counted in failed too)",
        "rejected": "Messages the step rejected (Reject, or an HTTP step's 422): dead-lettered on that attempt",
    }

    def __init__(self, registry: CollectorRegistry, ledger: Optional[LedgerMetrics] = None) -> None:
        self.counters = {
            name: Counter(f"worker_messages_{name}", self._HELP[name], registry=registry) for name in self.COUNTERS
        }
        self.processing_duration = Histogram(
            "worker_processing_duration_seconds",
            "Time the processing step took, failures included",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.end_to_end = Histogram(
            "worker_end_to_end_latency_seconds",
            "From SQS accepting a message (its SentTimestamp) to its processing succeeding",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.in_flight = Gauge(
            "worker_messages_in_flight",
            "Messages received and not yet finished (processing or prefetched)",
            registry=registry,
        )
        self.stuck_threads = Gauge(
            "worker_stuck_threads",
            "Threads of a plain step still running past PROCESSING_TIMEOUT (replaced up to "
            "MAX_STUCK_THREADS; at that bound /health answers 503)",
            registry=registry,
        )
        self.ledger = ledger if ledger is not None else LedgerMetrics()
        self.ledger.expose_in(registry)
        self.dynamodb_requests, self.ledger_errors = self.ledger.dynamodb_requests, self.ledger.ledger_errors
        self.queue_messages = Gauge(
            "sqs_queue_messages",
            "Messages in a queue at the last poll, by state (visible, in_flight, delayed)",
            ("queue", "state"),
            registry=registry,
        )

    def add(self, counter: str, amount: int = 1) -> None:
        self.counters[counter].inc(amount)

    # The hooks

    def attempted(self, message: Any, error: Optional[BaseException], step_s: float) -> None:
        self.processing_duration.observe(step_s)
        if error is not None:
            self.counters["failed"].inc()
            return
        self.counters["processed"].inc()
        if message.sent_at_s is not None:  # SQS's clock against ours: skew shows here too
            self.end_to_end.observe(max(0.0, time.time() - message.sent_at_s))

    def retried(self, message: Any, error: BaseException, delay_s: float) -> None:
        self.counters["retried"].inc()

    def dead_lettered(self, message: Any, error: BaseException) -> None:
        self.counters["dead_lettered"].inc()
        if isinstance(error, Reject):
            self.counters["rejected"].inc()

    def settled(self, message: Any, how: str) -> None:
        if how == "deleted":
            self.counters["deleted"].inc()
        elif how == "given back":
            self.counters["released"].inc()

    def count(self, counter: str) -> int:
        return int(total(self.counters[counter], f"worker_messages_{counter}_total"))


class CountedQueue(Protocol):
    """What the stats read of a queue: its SQS calls and what SQS bills for them."""

    @property
    def calls(self) -> dict[str, int]: ...

    @property
    def billable_requests(self) -> int: ...


Buckets = list[tuple[float, float]]  # a histogram's cumulative buckets: (upper bound, count)


@dataclasses.dataclass(frozen=True)
class StatsMark:
    """Where one stats report stood, so that the next shows the rate and the latency
    percentiles of the interval between them rather than since start."""

    at: float
    processed: int
    processing: Buckets
    end_to_end: Buckets


class WorkerStats:
    """The worker's counters and latencies, read back from its metrics: what its stats pane,
    its summary file and the tests see, so that they cannot disagree with what Prometheus
    scrapes. A view: it reads, never counts."""

    def __init__(self, metrics: WorkerMetrics, queues: Sequence[CountedQueue]) -> None:
        self.metrics = metrics
        self.queues = queues
        self.started = time.monotonic()

    def snapshot(self, since: Optional[StatsMark] = None) -> tuple[dict[str, Any], StatsMark]:
        """The counters since start, with latency percentiles estimated from the histograms over
        the observations since `since` (or since start); and the mark for the next snapshot."""
        now = time.monotonic()
        counts = {name: self.metrics.count(name) for name in WorkerMetrics.COUNTERS}
        mark = StatsMark(
            now,
            counts["processed"],
            buckets(self.metrics.processing_duration, "worker_processing_duration_seconds"),
            buckets(self.metrics.end_to_end, "worker_end_to_end_latency_seconds"),
        )
        processing = _since(mark.processing, since.processing if since else None)
        end_to_end = _since(mark.end_to_end, since.end_to_end if since else None)
        interval_s = now - (since.at if since else self.started)
        snapshot = {
            **counts,
            "uptime_s": now - self.started,
            "processed_per_s": (counts["processed"] - (since.processed if since else 0)) / max(1e-9, interval_s),
            "latency_p50_s": quantile(processing, 0.50),
            "latency_p99_s": quantile(processing, 0.99),
            "end_to_end_p50_s": quantile(end_to_end, 0.50),
            "end_to_end_p99_s": quantile(end_to_end, 0.99),
        }
        return snapshot, mark

    @property
    def billable_requests(self) -> int:
        """What SQS bills this worker: every queue it uses, depth polls included."""
        return sum(queue.billable_requests for queue in self.queues)

    def summary(self) -> dict[str, Any]:
        """The counters and the SQS calls by operation, for programs (make e2e, make bench)."""
        calls: collections.Counter[str] = collections.Counter()
        for queue in self.queues:
            calls.update(queue.calls)
        snapshot, _ = self.snapshot()
        return {
            **snapshot,
            "sqs_calls": dict(calls),
            "sqs_billable_requests": self.billable_requests,
            "dynamodb_calls": self.dynamodb_calls,
            "ledger_errors": self.ledger_errors,
        }

    @property
    def dynamodb_calls(self) -> dict[str, int]:
        """The processed ledger's DynamoDB calls since start, by operation (none without it)."""
        return by_label(self.metrics.dynamodb_requests, "dynamodb_requests_total", "operation")

    @property
    def ledger_errors(self) -> int:
        return int(total(self.metrics.ledger_errors, "worker_ledger_errors_total"))


def _since(current: Buckets, earlier: Optional[Buckets]) -> Buckets:
    if earlier is None:
        return current
    return [(bound, count - before) for (bound, count), (_, before) in zip(current, earlier, strict=True)]


def _matching(source: Collector, sample_name: str, labels: dict[str, str]) -> Iterator[Sample]:
    for family in source.collect():
        for sample in family.samples:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                yield sample


def total(source: Collector, sample_name: str, **labels: str) -> float:
    """Sum of the samples named `sample_name` (`x_total`, `x_count`, `x_sum`) whose labels
    match `labels`, in a metric or a whole registry."""
    return sum(sample.value for sample in _matching(source, sample_name, labels))


def by_label(source: Collector, sample_name: str, label: str, **labels: str) -> dict[str, int]:
    """Like `total`, keyed by the value of one label."""
    values: collections.Counter[str] = collections.Counter()
    for sample in _matching(source, sample_name, labels):
        values[sample.labels[label]] += int(sample.value)
    return dict(values)


def buckets(source: Collector, histogram_name: str) -> Buckets:
    """A histogram's cumulative buckets, as (upper bound, observations up to it)."""
    return [(float(s.labels["le"]), s.value) for s in _matching(source, histogram_name + "_bucket", {})]


def quantile(cumulative: Iterable[tuple[float, float]], fraction: float) -> Optional[float]:
    """Estimate a quantile from cumulative buckets the way PromQL's histogram_quantile does:
    linear within the bucket that holds it. None for no observations; the largest finite bound
    when it falls in the +Inf bucket."""
    bounds = list(cumulative)
    if not bounds or bounds[-1][1] <= 0:
        return None
    rank = fraction * bounds[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in bounds:
        if count >= rank:
            if math.isinf(upper):
                return lower
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, count
    return lower


def percentile(sorted_values: Sequence[float], fraction: float) -> Optional[float]:
    """Nearest-rank percentile of already sorted values; None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class LatencyWindow:
    """The most recent `size` latencies, thread-safe, for percentiles that follow the load."""

    def __init__(self, size: int = 10_000) -> None:
        self._values: Deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)

    def percentiles(self, *fractions: float) -> list[Optional[float]]:
        with self._lock:
            ordered = sorted(self._values)
        return [percentile(ordered, fraction) for fraction in fractions]


def milliseconds(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"
