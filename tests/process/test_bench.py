"""bench: `make bench` runs every stage and writes every figure it names.

Run with --quick (a second or so a stage): this checks that the benchmark works and that its
figures are coherent, not how fast anything is; speed is the benchmark's own report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness import ROOT
from helpers import LOCAL_ENGINE

NAMED = [
    "writer_vs_bare_connexion",
    "writer_cpu_ms_per_request",
    "write_ratio",
    "sqs_calls_per_msg_write",
    "sqs_calls_per_msg_worker",
    "worker_c16_ratio",
    "worker_c64_ratio",
    "worker_once_c16_ratio",
    "dynamodb_calls_per_msg",
    "writer_tracing_cpu_ratio",
    "worker_tracing_c16_ratio",
    "traced_fraction",
    "console_get_queue_attributes_per_queue_per_refresh",
    "console_list_100_ms",
    "overload_goodput_ratio",
    "overload_created_p99_ms",
    "overload_unanswered_5s",
    "e2e_1000_seconds",
    "e2e_10000_lost",
    "read_vs_raw",
]


def test_a_quick_benchmark_writes_every_named_figure_and_checks_each_target(tmp_path: Path) -> None:
    output = tmp_path / "results.json"

    run = subprocess.run(
        [
            sys.executable,
            "bench/bench.py",
            "--quick",
            "--engine",
            LOCAL_ENGINE,
            "--workdir",
            str(tmp_path),
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(output.read_text())
    for name in NAMED:
        assert isinstance(results[name], (int, float)), name
        lines = run.stdout.splitlines()
        assert any(line.startswith(name) and ("met" in line or "MISSED" in line) for line in lines), name
    assert (results["engine"], results["cores"]) == (LOCAL_ENGINE, os.cpu_count())
    # every request of the write stages was answered 201, so the rates compare like with like
    assert results["write_real_refused"] == results["write_stub_refused"] == results["write_bare_refused"] == 0
    assert results["write_real_msgs_per_s"] > 0 and results["write_stub_msgs_per_s"] > 0
    assert results["write_bare_msgs_per_s"] > 0
    # each server's CPU a request was measured, and is what its rate and cores say it is
    for name in ("real", "stub", "bare"):
        cpu_ms = results[f"write_{name}_cpu_ms_per_request"]
        implied_ms = 1000 * results[f"write_{name}_writer_cores"] / results[f"write_{name}_msgs_per_s"]
        assert 0 < cpu_ms and abs(cpu_ms - implied_ms) < 0.25 * implied_ms, name
    assert results["writer_cpu_ms_per_request"] == results["write_real_cpu_ms_per_request"]
    # group commit: never more than one call a message, and the stub really replaced the calls
    assert 0 < results["sqs_calls_per_msg_write"] <= 1
    assert results["batch_endpoint_msgs_per_s"] > 0
    # the overload stage drove the writer past its limit, and every 503 said when to come back
    assert results["overload_created_per_s"] > 0 and results["overload_busy_per_s"] > 0
    assert results["overload_busy_without_retry_after"] == 0
    # the console: its readings were counted, and listing consumed none of the dead letters
    assert results["console_readings"] >= 1 and results["console_sqs_calls_per_min"] > 0
    assert results["console_list_left_visible"] == results["console_dead_letters"]
    for prefix in (
        "worker_c1",
        "worker_c4",
        "worker_c16",
        "worker_c64",
        "worker_2proc_c32",
        "worker_c64_pinned",
        "worker_2proc_c32_pinned",
    ):
        assert 0 < results[f"{prefix}_ratio"] <= 1.05, prefix
        # the median of its drains, which took turns with the other runs'
        assert results[f"{prefix}_ratio_min"] <= results[f"{prefix}_ratio"] <= results[f"{prefix}_ratio_max"], prefix
        assert results[f"{prefix}_cores"] > 0, prefix
    # two processes at 32 each were measured against the ideal of both together
    assert results["worker_2proc_c32_ideal_msgs_per_s"] == results["worker_c64_ideal_msgs_per_s"]
    assert any(line.startswith("workers, 2 processes at concurrency 32") for line in run.stdout.splitlines())
    assert any(line.startswith("worker, concurrency 64, 20 ms work, on own CPU") for line in run.stdout.splitlines())
    assert results["worker_drains"] == 2 and sum(" in 2 drains)" in line for line in run.stdout.splitlines()) == 7
    # and each drain was one of its own, with its own output
    assert all((tmp_path / f"worker-c64-{drain}.jsonl").stat().st_size > 0 for drain in range(2))
    assert results["worker_receives_per_msg"] > 0 and results["worker_deletes_per_msg"] > 0
    # the kinds of step: an async step, the same wait on threads, an HTTP step behind its server
    for prefix in ("worker_async_c256", "worker_threads_c256", "worker_http_c16"):
        assert 0 < results[f"{prefix}_ratio"] <= 1.05 and results[f"{prefix}_peak_mib"] > 10, prefix
    assert all((tmp_path / f"worker-http-c16-{drain}.jsonl").stat().st_size > 0 for drain in range(2))
    # the processed ledger's stage: on and off drained in turns, its calls counted beside SQS's
    assert 0 < results["worker_once_c16_ratio"] <= 1.05 and 0 < results["worker_once_off_c16_ratio"] <= 1.05
    assert 0 < results["dynamodb_calls_per_msg"] <= 1 and results["worker_once_sqs_calls_per_msg"] > 0
    assert results["worker_once_cpu_ms_per_msg"] > 0 and results["worker_once_duplicates"] == 0
    assert all(
        (tmp_path / f"worker-once-{mode}-{drain}.jsonl").stat().st_size > 0
        for mode in ("on", "off")
        for drain in range(2)
    )
    # tracing: the traced writer's spans reached the receiver, and each traced message's trace
    # held the writer's and the worker's spans
    assert results["write_traced_msgs_per_s"] > 0 and results["write_traced_traces_exported"] > 0
    assert results["writer_tracing_cpu_ratio"] > 0 and 0 < results["worker_tracing_c16_ratio"] <= 1.05
    assert results["worker_tracing_traces"] > 0
    assert results["traced_e2e_accepted"] == 100 and results["traced_e2e_lost"] == 0
    assert results["traced_fraction"] == 1.0
    assert results["e2e_100_lost"] == results["e2e_300_lost"] == 0
    assert results["e2e_100_client_exit"] == results["e2e_300_client_exit"] == 0
    assert results["e2e_300_accepted"] == 300
