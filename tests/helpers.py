"""What many tests share besides fixtures: the local engine to use, the console scripts, waiting
for a condition, reading a /metrics page, and moto's server as a process."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from prometheus_client.parser import text_string_to_metric_families

from harness import ROOT, Process, accepts_connections, free_port

#: The console scripts pyproject.toml declares, as the editable install `make` made reports them
#: (importlib.metadata, not tomllib, which Python 3.10 lacks).
CONSOLE_SCRIPTS = {
    entry_point.name: entry_point.value
    for entry_point in importlib.metadata.entry_points(group="console_scripts")
    if entry_point.dist is not None and entry_point.dist.name == "sqs-message-service"
}


BIN = Path(sys.executable).parent


#: The local SQS engine for whole-system tests: SQS_LOCAL when set, else fauxqs when make
#: installed it, moto without Node.
LOCAL_ENGINE = os.environ.get("SQS_LOCAL") or (
    "fauxqs" if shutil.which("node") is not None and (ROOT / "local/sqs/node_modules/fauxqs").is_dir() else "moto"
)


def wait_until(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Poll `condition` every 50 ms; fail the test naming `what` if it is not true in time."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.05)


#: A /metrics page as Prometheus parses it: (sample name, its labels) -> value.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metric_samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when it is not there (a labelled series not yet started)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def start_moto_server(log_path: Path, port: int = 0) -> tuple[Process, str]:
    """moto's server (SQS, DynamoDB, any service) as a process on loopback, on `port` or a free
    one, once it listens: the process and its endpoint URL. It is scripts/local_moto.py, where
    DynamoDB's conditional writes are atomic as on AWS."""
    port = port or free_port()
    process = Process(
        [sys.executable, ROOT / "scripts" / "local_moto.py", "-H", "127.0.0.1", "-p", str(port)],
        env=os.environ,
        log_path=log_path,
    )
    try:
        wait_until(lambda: accepts_connections(port), timeout_s=20, what="moto_server listening")
    except BaseException:
        process.stop()
        raise
    return process, f"http://127.0.0.1:{port}"
