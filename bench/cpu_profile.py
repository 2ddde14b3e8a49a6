"""make profile: where the writer's CPU goes on POST /api/message, by part of the stack.

Starts the local endpoint and the writer (real SQS calls), drives it at saturation with the
benchmark's load generator while py-spy samples the writer's threads that hold the GIL, and
splits the samples among the parts of the request path: the server and event loop, connexion's
middlewares, validation, the Flask bridge, Flask, our handler, the group commit, logging and
metrics, boto3. A sample counts for the part of its innermost frame that belongs to one.

    python bench/cpu_profile.py [--seconds 15] [--keep FILE]   (py-spy must be installed)
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import load  # noqa: E402
from e2e import local_system  # noqa: E402
from otlp_receiver import OtlpReceiver  # noqa: E402

PKG = "sqs_message_service"
#: (part, prefixes of "path:Qualified.function" for it), tried in order for each frame of a sample,
#: innermost first; py-spy gives paths as imported (server.py, uvicorn/main.py, threading.py).
PARTS: list[tuple[str, tuple[str, ...]]] = [
    (
        "tracing (OpenTelemetry, its export)",
        ("opentelemetry/", "google/protobuf/", f"{PKG}/tracing.py", f"{PKG}/trace_header.py"),
    ),
    ("boto3 (the SQS calls)", ("botocore/", "boto3/", "urllib3/", "http/client.py", "ssl.py", "socket.py")),
    ("group commit", (f"{PKG}/batcher.py",)),
    (
        "logging and metrics",
        (
            "logging/",
            "prometheus_client/",
            f"{PKG}/metrics.py",
            f"{PKG}/logs.py",
            f"{PKG}/writer/stack.py:RequestObserver",
        ),
    ),
    (
        "validation",
        (
            "jsonschema/",
            "referencing/",
            "rpds/",
            "connexion/validators/",
            "connexion/json_schema.py",
            "connexion/uri_parsing.py",
            "connexion/middleware/request_validation.py",
            f"{PKG}/writer/spec.py",
            f"{PKG}/writer/checks.py",
            f"{PKG}/rules.py",
        ),
    ),
    (
        "our handler",
        (
            "message.py",
            f"{PKG}/writer/service.py",
            f"{PKG}/writer/idempotency.py",
            f"{PKG}/writer/errors.py",
            f"{PKG}/sqs.py",
            f"{PKG}/writer/answers.py",
            f"{PKG}/writer/stack.py:AdmissionLimit",
        ),
    ),
    (
        "Flask",
        (
            "flask/",
            "werkzeug/",
            "connexion/decorators/",
            "connexion/apps/flask.py",
            "connexion/frameworks/",
            "connexion/jsonifier.py",
            "asgiref/",
        ),
    ),
    (
        "Flask bridge (ASGI to WSGI)",
        (
            "a2wsgi/",
            "concurrent/futures/",
            "asyncio/futures.py:_chain_future",
            "asyncio/futures.py:_set_concurrent_future_state",
            "asyncio/tasks.py:run_coroutine_threadsafe",
            f"{PKG}/writer/bridge.py",
        ),
    ),
    ("connexion middlewares", ("connexion/", "starlette/", "server.py", f"{PKG}/writer/")),
    ("server and event loop", ("uvicorn/", "asyncio/", "httptools/", "h11/", "selectors.py")),
]
OTHER = "other"


def part_of(stack: list[str]) -> str:
    """The part a sampled stack (outermost frame first, each "path:function") counts for."""
    for frame in reversed(stack):
        for part, prefixes in PARTS:
            if frame.startswith(prefixes):
                return part
    return OTHER


def split(collapsed: str) -> dict[str, float]:
    """py-spy's raw (collapsed) output as the share of samples of each part."""
    counts: collections.Counter[str] = collections.Counter()
    for line in collapsed.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        frames = [_with_function(frame) for frame in stack_text.split(";")]
        counts[part_of(frames)] += int(count)
    total = sum(counts.values()) or 1
    return {part: counts[part] / total for part, _ in [*PARTS, (OTHER, ())] if counts[part]}


def _with_function(frame: str) -> str:
    """py-spy's frame "function (path:line)" as "path:function", the form PARTS matches."""
    function, _, where = frame.partition(" (")
    return f"{where.rsplit(':', 1)[0]}:{function}"


def profile(
    seconds: float, engine: str, keep: Optional[Path], stub: bool = False, traced: bool = False
) -> dict[str, float]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    receiver = OtlpReceiver(keep_spans=False) if traced else None
    with (
        tempfile.TemporaryDirectory(prefix="profile-") as work,
        local_system(Path(work), engine=engine, writer=False) as system,
    ):
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url} if receiver is not None else {}
        writer = system.start_writer(*(["--stub"] if stub else []), program="bench/writer.py", name="writer", env=env)
        load.drive(system.writer_url, "/api/message", connections=32, duration_s=1.0)  # warm-up
        raw = Path(work) / "writer.collapsed"
        recorder = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(writer.pid),
                "--gil",
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(raw),
                "--duration",
                str(int(seconds)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)  # py-spy attaches
        result = load.drive(system.writer_url, "/api/message", connections=32, duration_s=seconds)
        _, errors = recorder.communicate(timeout=60)
        if recorder.returncode != 0 or not raw.exists():
            raise RuntimeError(f"py-spy failed: {errors}")
        if keep is not None:
            shutil.copy(raw, keep)
        shares = split(raw.read_text())
        print(
            f"profile: {result.ok_per_second(201):.0f} msg/s over {seconds:g} s; "
            f"{sum(1 for _ in raw.read_text().splitlines())} distinct stacks"
        )
    if receiver is not None:
        receiver.stop()
    return shares


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to sample (default %(default)s)")
    parser.add_argument("--engine", choices=("fauxqs", "moto"), default="fauxqs", help="local SQS engine")
    parser.add_argument("--keep", type=Path, help="also keep py-spy's collapsed stacks in this file")
    parser.add_argument("--stub", action="store_true", help="the writer with SendMessageBatch answered in memory")
    parser.add_argument(
        "--traced",
        action="store_true",
        help="the writer with tracing on, exporting every span to a local OTLP/HTTP receiver",
    )
    args = parser.parse_args(argv)
    shares = profile(args.seconds, args.engine, args.keep, stub=args.stub, traced=args.traced)
    width = max(len(part) for part in shares)
    for part, share in sorted(shares.items(), key=lambda item: -item[1]):
        print(f"{part:<{width}}  {share:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
