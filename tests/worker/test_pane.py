"""worker/pane.py: the stats fit a narrow tmux pane."""

from __future__ import annotations

from typing import Any

from sqs_message_service.worker.pane import render_stats


def test_render_stats_fits_a_narrow_pane() -> None:
    counters = ("received", "processed", "failed", "retried", "dead_lettered", "deleted")
    snapshot: dict[str, Any] = dict.fromkeys(counters, 123456)
    snapshot.update(
        uptime_s=12.3, latency_p50_s=0.0052, latency_p99_s=0.0123, end_to_end_p50_s=0.25, end_to_end_p99_s=None
    )

    text = render_stats(
        "worker",
        snapshot,
        in_flight=10,
        per_second=1234.5,
        depths={"queue": {"visible": 5, "in_flight": 2, "delayed": 1}, "dlq": None},
        sqs_requests=40_000,
    )

    assert max(len(line) for line in text.splitlines()) <= 28
    assert "latency p99     12.3 ms" in text and "1234.5" in text and "(unavailable)" in text
    assert "e2e p50        250.0 ms" in text and "e2e p99               -" in text
    assert "sqs requests      40000" in text and "sqs req/msg        0.32" in text  # 40,000 / 123,456


def test_with_the_processed_ledger_the_pane_shows_duplicates_and_ledger_errors() -> None:
    snapshot: dict[str, Any] = dict.fromkeys(
        ("received", "processed", "failed", "retried", "dead_lettered", "deleted", "duplicates", "held"), 7
    )
    snapshot.update(uptime_s=1, latency_p50_s=None, latency_p99_s=None, end_to_end_p50_s=None, end_to_end_p99_s=None)
    depths: dict[str, Any] = {"queue": None}

    without = render_stats("worker", snapshot, in_flight=0, per_second=0, depths=depths)
    with_ledger = render_stats("worker", snapshot, in_flight=0, per_second=0, depths=depths, ledger_errors=3)

    assert "duplicates" not in without and "ledger errors" not in without
    assert "duplicates            7" in with_ledger and "ledger errors         3" in with_ledger
    assert max(len(line) for line in with_ledger.splitlines()) <= 28


def test_before_the_first_message_requests_per_message_is_not_a_number() -> None:
    counters = ("received", "processed", "failed", "retried", "dead_lettered", "deleted")
    snapshot: dict[str, Any] = dict.fromkeys(counters, 0)
    snapshot.update(uptime_s=1, latency_p50_s=None, latency_p99_s=None, end_to_end_p50_s=None, end_to_end_p99_s=None)

    text = render_stats("worker", snapshot, in_flight=0, per_second=0, depths={}, sqs_requests=16)

    assert "sqs requests         16" in text and "sqs req/msg           -" in text
