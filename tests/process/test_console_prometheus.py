"""console/readings.py with PROMETHEUS_URL: the same figures asked of a real Prometheus (Debian's,
unpacked by `make prometheus`), scraping a writer's and a worker's metrics pages on loopback."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from doubles import MetricsPage
from harness import ROOT, Process, accepts_connections, free_port
from helpers import wait_until
from sqs_message_service.console.app import source_for
from sqs_message_service.console.readings import Prometheus
from sqs_message_service.metrics import WorkerMetrics, WriterMetrics
from sqs_message_service.settings import Settings

BINARY = ROOT / ".cache" / "prometheus" / "usr" / "bin" / "prometheus"


@pytest.fixture
def prometheus(
    tmp_path: Path, metrics_page: Callable[[], MetricsPage]
) -> Iterator[tuple[str, WriterMetrics, WorkerMetrics]]:
    """A writer's and a worker's metrics pages on loopback, and a Prometheus scraping both every
    second; its URL and the two metrics."""
    assert BINARY.exists(), "the real Prometheus is missing: run `make prometheus` (make test does)"
    pages = [metrics_page(), metrics_page()]
    writer, worker = WriterMetrics(pages[0].registry), WorkerMetrics(pages[1].registry)
    config = tmp_path / "prometheus.yml"
    targets = ", ".join(f"'127.0.0.1:{page.port}'" for page in pages)
    config.write_text(
        f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: parts\n"
        f"    static_configs:\n      - targets: [{targets}]\n"
    )
    port = free_port()
    process = Process(
        [
            BINARY,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
        ],
        env={},
        log_path=tmp_path / "prometheus.log",
    )
    try:
        wait_until(lambda: accepts_connections(port), timeout_s=30, what="Prometheus listening")
        yield f"http://127.0.0.1:{port}", writer, worker
    finally:
        process.stop()


def test_the_rates_and_latency_come_from_prometheus_queries(
    prometheus: tuple[str, WriterMetrics, WorkerMetrics],
) -> None:
    url, writer, worker = prometheus
    stop = threading.Event()

    def traffic() -> None:  # 20 accepted and about 2 refused a second; 20 processed, each in 20 ms
        while not stop.is_set():
            writer.messages.labels("accepted").inc(2)
            if int(time.monotonic() * 10) % 10 == 0:
                writer.messages.labels("invalid").inc(2)
            worker.add("processed", 2)
            worker.end_to_end.observe(0.02)
            worker.end_to_end.observe(0.02)
            stop.wait(0.1)

    running = threading.Thread(target=traffic)
    running.start()
    try:
        source = source_for(Settings(prometheus_url=url))
        assert isinstance(source, Prometheus)
        wait_until(
            lambda: (source.read(time.time()).rates["accepted"] or 0) > 5,
            timeout_s=30,
            what="Prometheus answering a rate",
        )
        figures = source.read(time.time())
    finally:
        stop.set()
        running.join()

    # PromQL's rate over [1m] of a series a few seconds old reads low (it is divided over the
    # window): the rates are Prometheus's, so their proportions are what can be held to.
    assert figures.sources[0].ok and figures.sources[0].url == url
    accepted, processed, refused = (figures.rates[name] or 0 for name in ("accepted", "processed", "refused"))
    assert accepted > 5 and 0.7 < processed / accepted < 1.3
    assert 0.03 < refused / accepted < 0.3
    assert figures.rates["failed"] == 0.0  # a series that exists at 0: a rate of 0, not "unknown"
    assert figures.p50_s is not None and 0.01 < figures.p50_s <= 0.025


def test_a_prometheus_that_does_not_answer_is_said_and_leaves_the_figures_unknown() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    figures = Prometheus(url).read(time.time())

    assert not figures.sources[0].ok and "Connection" in (figures.sources[0].error or "")
    assert set(figures.rates.values()) == {None}
