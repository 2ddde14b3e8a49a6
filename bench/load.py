"""A small HTTP/1.1 load generator for the benchmark: keep-alive connections on one asyncio loop,
requests built ahead as bytes, responses read by status line and Content-Length.

Why not client.py: its threads and `requests` cost about a millisecond of CPU a request, and on
two cores that CPU is taken from the server being measured. This one costs a few tens of
microseconds a request, and `LoadResult.cpu_share` says how much it took, so a reader can check
that the server was not starved.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from sqs_message_service.metrics import percentile

#: Builds the body of request number n (bytes of JSON).
BodyFactory = Callable[[int], bytes]


@dataclass
class LoadResult:
    requests: int  # responses received
    seconds: float  # from the first request to the last response
    statuses: collections.Counter = field(default_factory=collections.Counter)
    latencies_s: list[float] = field(default_factory=list)
    cpu_s: float = 0.0  # this process's CPU time while it ran
    errors: int = 0  # connections that failed

    def add(self, other: "LoadResult") -> None:
        """Count `other`'s run in with this one's, as one run of both lengths."""
        self.requests += other.requests
        self.seconds += other.seconds
        self.statuses.update(other.statuses)
        self.latencies_s += other.latencies_s
        self.cpu_s += other.cpu_s
        self.errors += other.errors

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def ok_per_second(self, status: int) -> float:
        return self.statuses[status] / self.seconds if self.seconds else 0.0

    @property
    def cpu_share(self) -> float:
        """The generator's CPU as a share of the machine's cores over the run."""
        return self.cpu_s / (self.seconds * (os.cpu_count() or 1)) if self.seconds else 0.0

    def latencies(self, *fractions: float) -> list[Optional[float]]:
        """Latency percentiles, e.g. `latencies(0.5, 0.99)`: one sort for all."""
        ordered = sorted(self.latencies_s)
        return [percentile(ordered, fraction) for fraction in fractions]


def message_body(number: int) -> bytes:
    return b'{"body": "benchmark message %d"}' % number


def batch_body(size: int) -> BodyFactory:
    """Bodies for POST /api/messages: `size` messages each."""

    def build(number: int) -> bytes:
        first = number * size
        return json.dumps({"messages": [{"body": f"benchmark message {first + i}"} for i in range(size)]}).encode()

    return build


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _drive(
    url_host: str,
    port: int,
    path: str,
    body: BodyFactory,
    *,
    connections: int,
    count: Optional[int],
    duration_s: Optional[float],
) -> LoadResult:
    numbers = iter(range(count)) if count is not None else itertools.count()  # shared: the bound
    bodies = itertools.count()
    result = LoadResult(requests=0, seconds=0.0)
    started = time.perf_counter()
    deadline = started + duration_s if duration_s is not None else float("inf")
    # What every request shares, built once: only the length and the body change.
    head = f"POST {path} HTTP/1.1\r\nHost: {url_host}:{port}\r\nContent-Type: application/json\r\n".encode()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(url_host, port)
        try:
            for _ in numbers:
                if time.perf_counter() >= deadline:
                    return
                sent = time.perf_counter()
                payload = body(next(bodies))
                writer.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(payload), payload))
                status = await _read_response(reader)
                result.latencies_s.append(time.perf_counter() - sent)
                result.statuses[status] += 1
                result.requests += 1
        except (OSError, asyncio.IncompleteReadError):
            result.errors += 1
        finally:
            writer.close()

    cpu_started = time.process_time()
    await asyncio.gather(*(connection() for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    result.cpu_s = time.process_time() - cpu_started
    return result


def drive(
    url: str,
    path: str,
    body: BodyFactory = message_body,
    *,
    connections: int,
    count: Optional[int] = None,
    duration_s: Optional[float] = None,
) -> LoadResult:
    """POST `body(n)` to `url` + `path` on `connections` keep-alive connections, each sending its
    next request once the last was answered, until `count` requests or `duration_s` seconds."""
    if (count is None) == (duration_s is None):
        raise ValueError("give count or duration_s")
    host, _, port = url.removeprefix("http://").partition(":")
    return asyncio.run(_drive(host, int(port), path, body, connections=connections, count=count, duration_s=duration_s))
