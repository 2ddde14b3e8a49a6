"""make soak: steady load at half the measured capacity, showing that the writer's and the worker's
memory and the queue's depth stay flat.

On a local endpoint with free loopback ports: writer and worker start, a short burst measures how
many messages per second the writer accepts while the worker consumes, then the client sends at
half that rate for --duration seconds while RSS and depth are sampled. Exit 1 if memory or depth
grew in the second half of the run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from e2e import LocalSystem, local_system  # noqa: E402
from harness import rss_mib  # noqa: E402

#: Memory may grow this much from the middle of the run to its end and still count as flat.
FLAT_RSS_MIB = 10.0


def measure_capacity(system: LocalSystem, workdir: Path, count: int) -> float:
    """Messages per second the writer accepts with 16 clients at full speed, worker running."""
    ids = workdir / "capacity-ids.txt"
    started = time.monotonic()
    load = system.client(
        "--count", str(count), "--concurrency", "16", "--malformed-per-batch", "0", "--ids-out", str(ids)
    )
    seconds = time.monotonic() - started
    if load.returncode != 0:
        raise RuntimeError(f"the capacity run failed:\n{load.stdout[-2000:]}{load.stderr[-2000:]}")
    return len(ids.read_text().split()) / seconds


def drained(system: LocalSystem, timeout_s: float) -> bool:
    queue = system.queue(system.settings.queue_name)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(queue.depth().values()) == 0:
            return True
        time.sleep(0.5)
    return False


def soak(*, duration_s: float, sample_s: float, workdir: Path, engine: str) -> int:
    with local_system(workdir, engine=engine) as system:
        worker = system.python("worker", "worker.py", "--stats-interval", "10")
        writer = system.processes["writer"]
        capacity = measure_capacity(system, workdir, count=3000)
        rate = max(1, int(capacity / 2))
        if not drained(system, timeout_s=60):
            print("soak: the queue did not drain after the capacity run", file=sys.stderr)
            return 1
        print(f"soak: {engine}; capacity {capacity:.0f} messages/s, soaking at {rate}/s for {duration_s:g} s")
        queue = system.queue(system.settings.queue_name)
        load = system.python(
            "client",
            "client.py",
            "--url",
            system.writer_url,
            "--rate",
            str(rate),
            "--duration",
            str(duration_s),
            "--malformed-per-batch",
            "0",
            "--concurrency",
            "8",
            "--stats-interval",
            "10",
        )
        samples: list[tuple[float, float, float, int]] = []  # seconds, writer MiB, worker MiB, depth
        started = time.monotonic()
        print(f"{'s':>5} {'writer MiB':>11} {'worker MiB':>11} {'depth':>6}")
        while load.poll() is None:
            depth = sum(queue.depth().values())
            sample = (time.monotonic() - started, rss_mib(writer.pid), rss_mib(worker.pid), depth)
            samples.append(sample)
            print(f"{sample[0]:>5.0f} {sample[1]:>11.1f} {sample[2]:>11.1f} {sample[3]:>6}", flush=True)
            time.sleep(sample_s)
        if load.wait() != 0:
            print(f"soak: the client reported errors:\n{system.log('client')[-2000:]}", file=sys.stderr)
            return 1
    return verdict(samples, rate)


def verdict(samples: list[tuple[float, float, float, int]], rate: int) -> int:
    """Flat: RSS at the end within FLAT_RSS_MIB of the middle, and the mean depth of the last
    quarter no more than a second's worth of messages above that of the second quarter."""
    if len(samples) < 8:
        print("soak: too few samples for a verdict; run longer", file=sys.stderr)
        return 1
    middle, end = samples[len(samples) // 2], samples[-1]
    quarter = len(samples) // 4
    depth_early = statistics.mean(s[3] for s in samples[quarter : 2 * quarter])
    depth_late = statistics.mean(s[3] for s in samples[-quarter:])
    writer_growth, worker_growth = end[1] - middle[1], end[2] - middle[2]
    print(
        f"soak: writer RSS {samples[0][1]:.1f} -> {middle[1]:.1f} -> {end[1]:.1f} MiB (start, middle, end); "
        f"worker RSS {samples[0][2]:.1f} -> {middle[2]:.1f} -> {end[2]:.1f} MiB; "
        f"queue depth mean {depth_early:.1f} in the second quarter, {depth_late:.1f} in the last, "
        f"max {max(s[3] for s in samples)}"
    )
    flat = writer_growth <= FLAT_RSS_MIB and worker_growth <= FLAT_RSS_MIB and depth_late <= depth_early + rate
    print(f"soak: {'OK, memory and depth flat' if flat else 'FAILED: growth in the second half'}")
    return 0 if flat else 1


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120, help="seconds of steady load (default %(default)s)")
    parser.add_argument("--sample", type=float, default=5, help="seconds between samples (default %(default)s)")
    parser.add_argument("--engine", choices=("fauxqs", "moto"), default="fauxqs", help="local SQS engine")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".soak", help="logs (default %(default)s)")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        return soak(duration_s=args.duration, sample_s=args.sample, workdir=args.workdir, engine=args.engine)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
