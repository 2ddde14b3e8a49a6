"""The writer as a user runs it: moto_server, `python sqs_setup.py`, `python server.py`."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any, Callable

import boto3
import requests

from harness import ROOT
from helpers import metric, metric_samples, wait_until


def run_setup(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "sqs_setup.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_seed_example_against_moto_server(moto_server: str, start_writer: Callable[..., Any]) -> None:
    import os

    env = {**os.environ, "SQS_ENDPOINT_URL": moto_server}

    first, second = run_setup(env), run_setup(env)
    assert first.returncode == 0, first.stderr
    assert "queue 'messages': created" in first.stdout
    assert second.returncode == 0 and "nothing to change" in second.stdout

    writer, base = start_writer({"SQS_ENDPOINT_URL": moto_server})

    # The seed's minimal example, unchanged.
    response = requests.post(f"{base}/api/message", json={"body": "This is a test message to enqueue"})
    print(response.status_code)

    assert response.status_code == 201
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName="messages")["QueueUrl"]
    (message,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"]
    assert message["Body"] == "This is a test message to enqueue"
    assert message["MessageId"] == response.json()["message_id"]
    assert requests.get(f"{base}/api/ready").json()["status"] == "ready"

    # SIGTERM: uvicorn finishes, closes the app, then re-raises the signal (its convention).
    assert writer.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in writer.output
    assert '"POST /api/message" 201' in writer.output
    assert "This is a test message" not in writer.output  # bodies stay out of the log


def test_several_writer_processes_share_a_port_and_report_one_sum(
    moto_server: str, start_writer: Callable[..., Any]
) -> None:
    import os
    from concurrent.futures import ThreadPoolExecutor

    assert run_setup({**os.environ, "SQS_ENDPOINT_URL": moto_server}).returncode == 0
    writer, base = start_writer({"SQS_ENDPOINT_URL": moto_server}, processes=2)

    def post(number: int) -> int:  # a new connection each: the kernel spreads them over the processes
        return requests.post(f"{base}/api/message", json={"body": f"m{number}"}, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert list(pool.map(post, range(60))) == [201] * 60

    def accepted_in_metrics() -> float:
        samples = metric_samples(requests.get(f"{base}/metrics", timeout=5).text)
        return metric(samples, "writer_messages_total", outcome="accepted")

    # Each scrape or stats request reaches either process; each reports both processes' sum.
    wait_until(lambda: accepted_in_metrics() == 60, timeout_s=5, what="all 60 counted")
    for _ in range(6):
        assert accepted_in_metrics() == 60
        assert requests.get(f"{base}/api/stats", timeout=5).json()["messages"]["accepted"] == 60
    assert writer.stop() in (0, -signal.SIGTERM)
