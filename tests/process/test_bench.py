"""bench: `make bench` runs every stage and writes every figure it names.

Run with --quick (a second or so a stage): this checks that the benchmark works and that its
figures are coherent, not how fast anything is; speed is the benchmark's own report. The stages
run in a few groups, one test each, so that several cores share them (`--stage`, as a user
benching one part would); each group checks the figures of its own stages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from harness import ROOT
from helpers import LOCAL_ENGINE

sys.path.insert(0, str(ROOT / "bench"))
from bench import STAGES, TARGETS

#: The figures the benchmark's targets read, named here so that none goes missing from it unseen.
NAMED = [
    "writer_vs_bare_connexion",
    "writer_cpu_ms_per_request",
    "write_ratio",
    "sqs_calls_per_msg_write",
    "sqs_calls_per_msg_worker",
    "worker_c16_ratio",
    "worker_c64_ratio",
    "worker_once_c16_ratio",
    "worker_async_c256_ratio",
    "worker_http_c16_ratio",
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
#: The stages run together in one test; write, batch and cost together for their joint figures.
GROUPS = [
    ("worker",),
    ("raw", "write", "batch", "cost"),
    ("steps", "once"),
    ("tracing", "console"),
    ("overload", "read", "e2e"),
]

Results = dict[str, Any]


def check_write(results: Results, stdout: str, tmp_path: Path) -> None:
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
    # tracing: the traced writer's spans reached the receiver
    assert results["write_traced_msgs_per_s"] > 0 and results["write_traced_traces_exported"] > 0
    assert results["writer_tracing_cpu_ratio"] > 0


def check_batch(results: Results, stdout: str, tmp_path: Path) -> None:
    assert results["batch_endpoint_msgs_per_s"] > 0
    assert "x single)" in stdout  # against the write stage's single messages, run beside it


def check_cost(results: Results, stdout: str, tmp_path: Path) -> None:
    assert results["worker_receives_per_msg"] > 0 and results["worker_deletes_per_msg"] > 0
    assert results["sqs_requests_per_million_msgs"] > 0  # with the write stage's calls


def check_worker(results: Results, stdout: str, tmp_path: Path) -> None:
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
    lines = stdout.splitlines()
    assert any(line.startswith("workers, 2 processes at concurrency 32") for line in lines)
    assert any(line.startswith("worker, concurrency 64, 20 ms work, on own CPU") for line in lines)
    assert results["worker_drains"] == 2 and sum(" in 2 drains)" in line for line in lines) == 7
    # and each drain was one of its own, with its own output
    assert all((tmp_path / f"worker-c64-{drain}.jsonl").stat().st_size > 0 for drain in range(2))


def check_steps(results: Results, stdout: str, tmp_path: Path) -> None:
    # the kinds of step: an async step, the same wait on threads, an HTTP step behind its server
    for prefix in ("worker_async_c256", "worker_threads_c256", "worker_http_c16"):
        assert 0 < results[f"{prefix}_ratio"] <= 1.05 and results[f"{prefix}_peak_mib"] > 10, prefix
    assert all((tmp_path / f"worker-http-c16-{drain}.jsonl").stat().st_size > 0 for drain in range(2))


def check_once(results: Results, stdout: str, tmp_path: Path) -> None:
    # the processed ledger's stage: on and off drained in turns, its calls counted beside SQS's
    assert 0 < results["worker_once_c16_ratio"] <= 1.05 and 0 < results["worker_once_off_c16_ratio"] <= 1.05
    assert 0 < results["dynamodb_calls_per_msg"] <= 1 and results["worker_once_sqs_calls_per_msg"] > 0
    assert results["worker_once_cpu_ms_per_msg"] > 0 and results["worker_once_duplicates"] == 0
    assert all(
        (tmp_path / f"worker-once-{mode}-{drain}.jsonl").stat().st_size > 0
        for mode in ("on", "off")
        for drain in range(2)
    )


def check_tracing(results: Results, stdout: str, tmp_path: Path) -> None:
    # each traced message's trace held the writer's and the worker's spans
    assert 0 < results["worker_tracing_c16_ratio"] <= 1.05
    assert results["worker_tracing_traces"] > 0
    assert results["traced_e2e_accepted"] == 100 and results["traced_e2e_lost"] == 0
    assert results["traced_fraction"] == 1.0


def check_console(results: Results, stdout: str, tmp_path: Path) -> None:
    # its readings were counted, and listing consumed none of the dead letters
    assert results["console_readings"] >= 1 and results["console_sqs_calls_per_min"] > 0
    assert results["console_list_left_visible"] == results["console_dead_letters"]


def check_overload(results: Results, stdout: str, tmp_path: Path) -> None:
    # the writer was driven past its limit, and every 503 said when to come back
    assert results["overload_created_per_s"] > 0 and results["overload_busy_per_s"] > 0
    assert results["overload_busy_without_retry_after"] == 0


def check_read(results: Results, stdout: str, tmp_path: Path) -> None:
    assert results["read_vs_raw"] > 0 and results["read_two_requests_vs_raw"] > 0


def check_e2e(results: Results, stdout: str, tmp_path: Path) -> None:
    assert results["e2e_100_lost"] == results["e2e_300_lost"] == 0
    assert results["e2e_100_client_exit"] == results["e2e_300_client_exit"] == 0
    assert results["e2e_300_accepted"] == 300


CHECKS: dict[str, Callable[[Results, str, Path], None]] = {
    "raw": lambda results, stdout, tmp_path: None,  # its one figure is checked as every figure is
    "write": check_write,
    "batch": check_batch,
    "cost": check_cost,
    "worker": check_worker,
    "steps": check_steps,
    "once": check_once,
    "tracing": check_tracing,
    "console": check_console,
    "overload": check_overload,
    "read": check_read,
    "e2e": check_e2e,
}


def test_the_groups_run_every_stage_once_and_each_stage_and_named_figure_is_checked() -> None:
    ran = [stage for group in GROUPS for stage in group]
    assert sorted(ran) == sorted(STAGES) == sorted(CHECKS)
    assert sorted(target.figure for target in TARGETS) == sorted(NAMED)
    assert {target.stage for target in TARGETS} <= set(STAGES)


@pytest.mark.parametrize("stages", GROUPS, ids=["+".join(group) for group in GROUPS])
def test_a_quick_benchmark_writes_every_named_figure_and_checks_each_target(
    stages: tuple[str, ...], tmp_path: Path
) -> None:
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
            *(f"--stage={stage}" for stage in stages),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(output.read_text())
    assert (results["engine"], results["cores"], results["stages"]) == (
        LOCAL_ENGINE,
        os.cpu_count(),
        [stage for stage in STAGES if stage in stages],
    )
    lines = run.stdout.splitlines()
    for target in TARGETS:
        printed = [line for line in lines if line.startswith(target.figure + " ")]
        if target.stage in stages:
            assert isinstance(results[target.figure], (int, float)), target.figure
            assert len(printed) == 1 and ("met" in printed[0] or "MISSED" in printed[0]), target.figure
        else:
            assert target.figure not in results, target.figure
            assert len(printed) == 1 and printed[0].endswith(f"not run (stage {target.stage})"), target.figure
    for stage in stages:
        CHECKS[stage](results, run.stdout, tmp_path)
