"""make bench's overload stage: the writer driven past its capacity by clients that retry at once.

The load generator keeps `connections` HTTP/1.1 keep-alive connections on one asyncio loop; each
sends its next `POST /api/message` as soon as the last one was answered, whatever the answer (a
503 too, as wrk and an impatient client do: it ignores Retry-After on purpose). A request not
answered within `patience_s` is counted as unanswered and its connection replaced; a connection
the server closes is opened again at once. It records the latency of every 201, and counts each
status and the 503s that came without Retry-After.

The stage finds the writer's best throughput over a few connection counts, then drives it at 8
times the connections of the best, and reports the 201s a second there against the best (the
goodput ratio), the p99 latency of the 201s, and the requests unanswered within 5 s.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import os
import time
from typing import Any, Optional

from sqs_message_service.metrics import percentile

#: The connection counts the best throughput is looked for among, and the overload's factor.
BEST_OF_CONNECTIONS = (16, 32)
OVERLOAD_FACTOR = 8
#: How long a request may go unanswered before it counts as such.
PATIENCE_S = 5.0


@dataclasses.dataclass
class Overload:
    """What one run of the generator saw."""

    connections: int
    seconds: float = 0.0
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    created_latencies_s: list[float] = dataclasses.field(default_factory=list)  # of the 201s
    unanswered: int = 0  # no answer within the patience
    closed: int = 0  # connections the server closed (or reset) while a request waited
    busy_without_retry_after: int = 0
    slowest_s: float = 0.0  # the longest wait for any answer
    cpu_s: float = 0.0  # the generator's own

    @property
    def created_per_s(self) -> float:
        return self.statuses[201] / self.seconds if self.seconds else 0.0

    @property
    def created_p99_s(self) -> float:
        return percentile(sorted(self.created_latencies_s), 0.99) or 0.0

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / (self.seconds * (os.cpu_count() or 1)) if self.seconds else 0.0


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool, bool]:
    """(status, whether it has Retry-After, whether the server will close the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length, retry_after, closing = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"retry-after":
            retry_after = True
        elif name == b"connection" and value.strip().lower() == b"close":
            closing = True
    if length:
        await reader.readexactly(length)
    return status, retry_after, closing


async def _overload(host: str, port: int, *, connections: int, duration_s: float, patience_s: float) -> Overload:
    seen = Overload(connections)
    numbers = itertools.count()
    head = f"POST /api/message HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n".encode()
    started = time.perf_counter()
    deadline = started + duration_s

    async def client() -> None:
        reader: Optional[asyncio.StreamReader] = None
        writer: Optional[asyncio.StreamWriter] = None
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), patience_s)
                assert reader is not None and writer is not None
                body = b'{"body": "overload message %d"}' % next(numbers)
                writer.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
                status, retry_after, closing = await asyncio.wait_for(_answer(reader), patience_s)
            except asyncio.TimeoutError:
                seen.unanswered += 1
                closing = True
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                seen.closed += 1
                closing = True
            else:
                waited = time.perf_counter() - sent
                seen.slowest_s = max(seen.slowest_s, waited)
                seen.statuses[status] += 1
                if status == 201:
                    seen.created_latencies_s.append(waited)
                elif status == 503 and not retry_after:
                    seen.busy_without_retry_after += 1
            if closing and writer is not None:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    cpu_started = time.process_time()
    await asyncio.gather(*(client() for _ in range(connections)))
    seen.seconds = time.perf_counter() - started
    seen.cpu_s = time.process_time() - cpu_started
    return seen


def overload(url: str, *, connections: int, duration_s: float, patience_s: float = PATIENCE_S) -> Overload:
    """Drive POST /api/message at `url` from `connections` clients that retry at once, for
    `duration_s` seconds (each request waits at most `patience_s`)."""
    host, _, port = url.removeprefix("http://").partition(":")
    runner: Any = asyncio.run
    try:  # the generator's own CPU is taken from the server's two cores: the cheaper the better
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        pass
    return runner(_overload(host, int(port), connections=connections, duration_s=duration_s, patience_s=patience_s))


def measure(
    url: str, *, seconds: float, levels: tuple[int, ...] = BEST_OF_CONNECTIONS, factor: int = OVERLOAD_FACTOR
) -> dict[str, Any]:
    """The best throughput among `levels` connections, then the goodput at `factor` times the
    best one's connections, as the overload stage's figures."""
    overload(url, connections=levels[-1], duration_s=1.0)  # warm-up: threads, connections, caches
    runs = [overload(url, connections=level, duration_s=seconds) for level in levels]
    best = max(runs, key=lambda run: run.created_per_s)
    over = overload(url, connections=factor * best.connections, duration_s=2 * seconds)
    figures: dict[str, Any] = {
        "overload_best_connections": best.connections,
        "overload_best_created_per_s": best.created_per_s,
        "overload_best_p99_ms": 1000 * best.created_p99_s,
        "overload_connections": over.connections,
        "overload_created_per_s": over.created_per_s,
        "overload_goodput_ratio": over.created_per_s / max(1e-9, best.created_per_s),
        "overload_created_p99_ms": 1000 * over.created_p99_s,
        "overload_busy_per_s": over.statuses[503] / over.seconds,
        "overload_busy_without_retry_after": over.busy_without_retry_after,
        "overload_other_statuses": sum(n for status, n in over.statuses.items() if status not in (201, 503)),
        "overload_unanswered_5s": over.unanswered + best.unanswered,
        "overload_closed": over.closed,
        "overload_slowest_answer_ms": 1000 * over.slowest_s,
        "overload_generator_core_share": over.cpu_share,
    }
    for run in runs:
        figures[f"overload_c{run.connections}_created_per_s"] = run.created_per_s
    return figures


def table_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The stage's lines in make bench's table."""
    return [
        (
            f"overload: best throughput ({r['overload_best_connections']} connections)",
            f"{r['overload_best_created_per_s']:.0f} x 201/s, p99 {r['overload_best_p99_ms']:.0f} ms",
        ),
        (
            f"overload: {r['overload_connections']} connections retrying at once",
            f"{r['overload_created_per_s']:.0f} x 201/s ({r['overload_goodput_ratio']:.2f} of best), "
            f"p99 {r['overload_created_p99_ms']:.0f} ms, {r['overload_busy_per_s']:.0f} x 503/s "
            f"({r['overload_busy_without_retry_after']} without Retry-After), "
            f"{r['overload_unanswered_5s']} unanswered within 5 s, slowest {r['overload_slowest_answer_ms']:.0f} ms",
        ),
    ]
