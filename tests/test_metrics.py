"""metrics.py: the names Prometheus sees, and the helpers that read the metrics back for stats."""

from __future__ import annotations

import math
import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sqs_message_service.metrics import (
    SqsMetrics,
    WorkerMetrics,
    WriterMetrics,
    buckets,
    by_label,
    percentile,
    quantile,
    total,
)

#: Prometheus' naming rules: snake_case; counters end in _total; a unit, when there is one, is
#: a base unit and comes last (before _total).
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_NON_BASE_UNITS = ("_milliseconds", "_ms", "_bytes_kb", "_minutes", "_percent")


def exposed(registry: CollectorRegistry) -> dict[str, str]:
    """Metric family name -> type, as a scraper parses them from the text format; without the
    `_created` timestamps prometheus_client adds beside each unlabelled counter and histogram."""
    text = generate_latest(registry).decode()
    families = text_string_to_metric_families(text)
    return {family.name: family.type for family in families if not family.name.endswith("_created")}


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    WriterMetrics(registry)
    WorkerMetrics(registry)
    SqsMetrics().expose_in(registry)
    return registry


def test_every_name_follows_prometheus_conventions(registry: CollectorRegistry) -> None:
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        assert _NAME.match(family.name), family.name
        assert not family.name.endswith(_NON_BASE_UNITS), family.name
        if family.type == "counter":  # the parser strips _total: the text must carry it
            assert f"# TYPE {family.name}_total counter" in text or f"{family.name}_total" in text
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_messages")), family.name


def test_the_documented_metrics_are_exposed_with_their_types(registry: CollectorRegistry) -> None:
    assert exposed(registry) == {
        "writer_requests": "counter",
        "writer_request_duration_seconds": "histogram",
        "writer_messages": "counter",
        "writer_read_messages": "counter",
        "writer_long_polls": "gauge",
        "writer_send_batch_messages": "histogram",
        "writer_group_commit_wait_seconds": "histogram",
        "worker_messages_received": "counter",
        "worker_messages_processed": "counter",
        "worker_messages_failed": "counter",
        "worker_messages_retried": "counter",
        "worker_messages_dead_lettered": "counter",
        "worker_messages_deleted": "counter",
        "worker_messages_released": "counter",
        "worker_messages_duplicates": "counter",
        "worker_messages_held": "counter",
        "worker_messages_timed_out": "counter",
        "worker_messages_rejected": "counter",
        "worker_stuck_threads": "gauge",
        "worker_ledger_errors": "counter",
        "dynamodb_requests": "counter",
        "worker_processing_duration_seconds": "histogram",
        "worker_end_to_end_latency_seconds": "histogram",
        "worker_messages_in_flight": "gauge",
        "sqs_queue_messages": "gauge",
        "sqs_requests": "counter",
        "sqs_billable_requests": "counter",
    }


def test_one_sqs_metrics_can_be_exposed_by_several_registries() -> None:
    sqs = SqsMetrics()
    first, second = CollectorRegistry(), CollectorRegistry()
    sqs.expose_in(first)
    sqs.expose_in(second)
    sqs.requests.labels("messages", "SendMessageBatch").inc()

    for registry in (first, second):
        assert (
            registry.get_sample_value("sqs_requests_total", {"queue": "messages", "operation": "SendMessageBatch"}) == 1
        )


def test_total_and_by_label_sum_the_matching_samples_of_a_metric_or_a_registry() -> None:
    registry = CollectorRegistry()
    counter = Counter("calls", "test", ("queue", "operation"), registry=registry)
    counter.labels("a", "Send").inc(3)
    counter.labels("a", "Receive").inc(2)
    counter.labels("b", "Send").inc(7)

    for source in (counter, registry):
        assert total(source, "calls_total") == 12
        assert total(source, "calls_total", queue="a") == 5
        assert total(source, "calls_total", queue="c") == 0
        assert total(source, "calls_created") > 0 and total(source, "other_total") == 0
        assert by_label(source, "calls_total", "operation", queue="a") == {"Send": 3, "Receive": 2}
        assert by_label(source, "calls_total", "queue") == {"a": 5, "b": 7}


def test_a_histograms_count_sum_and_buckets() -> None:
    histogram = Histogram("sizes", "test", buckets=(1, 5, 10), registry=None)
    for value in (1, 3, 10):
        histogram.observe(value)

    assert total(histogram, "sizes_count") == 3
    assert total(histogram, "sizes_sum") == 14
    assert buckets(histogram, "sizes") == [(1.0, 1), (5.0, 2), (10.0, 3), (math.inf, 3)]


def test_quantile_interpolates_within_the_bucket_like_histogram_quantile() -> None:
    cumulative = [(0.1, 50.0), (0.2, 100.0), (math.inf, 100.0)]

    assert quantile(cumulative, 0.5) == pytest.approx(0.1)
    assert quantile(cumulative, 0.75) == pytest.approx(0.15)
    assert quantile(cumulative, 0.25) == pytest.approx(0.05)  # from 0 to the first bound


def test_quantile_of_nothing_is_none_and_beyond_the_last_bound_is_that_bound() -> None:
    assert quantile([(0.1, 0.0), (math.inf, 0.0)], 0.5) is None
    assert quantile([], 0.5) is None
    assert quantile([(0.1, 1.0), (1.0, 1.0), (math.inf, 10.0)], 0.99) == 1.0


def test_percentile_is_nearest_rank() -> None:
    values = sorted(float(v) for v in range(1, 101))

    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1.0)) == (50, 99, 100)
    assert percentile([], 0.5) is None
