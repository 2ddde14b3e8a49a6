"""console/readings.py: rates and latency from the writers' and workers' real /metrics pages."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry

from doubles import MetricsPage
from harness import free_port
from sqs_message_service.console.readings import Scrape, parse_metrics
from sqs_message_service.metrics import WorkerMetrics, WriterMetrics


def test_rates_are_each_pages_increase_over_the_time_between_readings_summed(
    metrics_page: Callable[[], MetricsPage],
) -> None:
    # GIVEN a writer's page and a worker's, read once
    writer_page, worker_page = metrics_page(), metrics_page()
    writer, worker = WriterMetrics(writer_page.registry), WorkerMetrics(worker_page.registry)
    writer.messages.labels("accepted").inc(100)
    scrape = Scrape((writer_page.url, worker_page.url))
    first = scrape.read(now_s=1000.0)

    # WHEN in the next 2 s the writer accepts 10 and refuses 2, and the worker processes 8
    writer.messages.labels("accepted").inc(10)
    writer.messages.labels("invalid").inc(1)
    writer.messages.labels("busy").inc(1)
    worker.add("processed", 8)
    worker.add("failed", 1)
    worker.add("dead_lettered", 1)
    for _ in range(8):
        worker.end_to_end.observe(0.02)
    second = scrape.read(now_s=1002.0)

    # THEN the first reading has no rate yet, the second has each a second
    assert set(first.rates.values()) == {None} and first.p50_s is None
    assert second.rates == {"accepted": 5.0, "refused": 1.0, "processed": 4.0, "failed": 0.5, "dead_lettered": 0.5}
    assert second.p50_s is not None and 0.01 < second.p50_s <= 0.025  # the bucket holding 0.02
    assert [state.ok for state in second.sources] == [True, True]


def test_a_restarted_process_counts_from_zero_and_a_silent_page_is_left_out_and_said(
    metrics_page: Callable[[], MetricsPage],
) -> None:
    page = metrics_page()
    metrics = WriterMetrics(page.registry)
    metrics.messages.labels("accepted").inc(500)
    down = f"http://127.0.0.1:{free_port()}/metrics"
    scrape = Scrape((page.url, down))
    scrape.read(now_s=10.0)

    page.registry.unregister(metrics.messages)  # the process restarted: its counter starts again
    restarted = WriterMetrics(CollectorRegistry())
    page.registry.register(restarted.messages)
    restarted.messages.labels("accepted").inc(4)
    reading = scrape.read(now_s=12.0)

    assert reading.rates["accepted"] == 2.0  # 4 new in 2 s, not (4 - 500) / 2
    assert [(state.url, state.ok) for state in reading.sources] == [(page.url, True), (down, False)]
    assert "Connection" in (reading.sources[1].error or "")


def test_the_latency_covers_the_last_minute_only(metrics_page: Callable[[], MetricsPage]) -> None:
    page = metrics_page()
    worker = WorkerMetrics(page.registry)
    scrape = Scrape((page.url,))
    scrape.read(now_s=0.0)
    for _ in range(10):
        worker.end_to_end.observe(4.0)
    assert (scrape.read(now_s=10.0).p99_s or 0) > 2.5
    for _ in range(10):
        worker.end_to_end.observe(0.002)

    later = scrape.read(now_s=75.0)  # the slow ones were seen more than 60 s ago

    assert later.p99_s is not None and later.p99_s <= 0.0025


def test_parse_metrics_reads_only_what_the_console_charts() -> None:
    text = """# TYPE writer_messages_total counter
writer_messages_total{outcome="accepted"} 7.0
writer_messages_total{outcome="unavailable"} 2.0
worker_messages_processed_total 5.0
worker_messages_held_total 9.0
"""
    counters, latency = parse_metrics(text)

    assert counters == {"accepted": 7.0, "refused": 2.0, "processed": 5.0, "failed": 0.0, "dead_lettered": 0.0}
    assert latency == {}
