"""Load client for the writer: sends batches of POST /api/message, one malformed on purpose per
batch, and reports honestly what came back. Or sends a file, one message per line, in order.

Always bounded: `--count` requests or `--duration` seconds (1,000 requests when neither is given).
Exits 1 when any 5xx or connection error happened, unless `--allow-errors`.

`python client.py copy INPUT OUTPUT [--url URL]` copies a file through the API both ways: each
line written as a message, read back through the read routes and acknowledged once it is in
OUTPUT (sqs_message_service/file_copy.py).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import select
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, TextIO

from sqs_message_service.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from sqs_message_service.file_copy import CopyError, FileCopy
from sqs_message_service.metrics import LatencyWindow, milliseconds, percentile
from sqs_message_service.output import read_appended
from sqs_message_service.settings import ConfigError, Settings, configure_logging

DEFAULT_COUNT = 1000

#: Requests the writer must refuse with 400, in turn: one per batch, on purpose.
MALFORMED: list[tuple[str, bytes]] = [
    ("no body", b'{"text": "where the body should be"}'),
    ("body not a string", b'{"body": 42}'),
    ("invalid JSON", b'{"body": "unterminated'),
    ("empty body", b'{"body": ""}'),
    ("unknown field", b'{"body": "ok", "priority": "high"}'),
]


@dataclass(frozen=True)
class Job:
    """One request to send: its JSON body, as sent, and whether it is malformed on purpose."""

    number: int
    body: bytes
    malformed: bool


def _json(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def load_jobs(*, batch_size: int, malformed_per_batch: int, run_id: str) -> Iterator[Job]:
    """Endless batches of `batch_size` requests, the last `malformed_per_batch` of each malformed."""
    malformed_kinds = itertools.cycle(MALFORMED)
    for number in itertools.count():
        if number % batch_size >= batch_size - malformed_per_batch:
            yield Job(number, next(malformed_kinds)[1], malformed=True)
        else:
            yield Job(number, _json({"body": f"message {number} of run {run_id}"}), malformed=False)


def file_jobs(path: Path, *, group_id: Optional[str], run_id: str) -> Iterator[Job]:
    """One message per line of the file, in order. With a group id (FIFO queues), each line also
    gets a deduplication id of its own, so repeated lines are not dropped as duplicates."""
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            message: dict[str, Any] = {"body": line.rstrip("\n") or " "}
            if group_id:
                message.update(group_id=group_id, deduplication_id=f"{run_id}-{number}")
            yield Job(number, _json(message), malformed=False)


class ClientStats:
    """Outcome counters and latencies, shared by the sending threads."""

    #: "sent" counts messages, each once, with its final answer; "retry-after" counts the 503s
    #: with Retry-After that were waited out and sent again.
    COUNTERS = ("sent", "201", "400", "other 4xx", "5xx", "conn errors", "retry-after")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.counts = dict.fromkeys(self.COUNTERS, 0)
        self.unexpected = 0  # a malformed request accepted, or a valid one refused
        self.latencies = LatencyWindow()
        self._lock = threading.Lock()

    def record(self, job: Job, status: Optional[int], latency_s: float) -> None:
        if status is None:
            outcome = "conn errors"
        elif status in (201, 400):
            outcome = str(status)
        elif 400 <= status < 500:
            outcome = "other 4xx"
        else:
            outcome = "5xx"
        expected = 400 if job.malformed else 201
        with self._lock:
            self.counts["sent"] += 1
            self.counts[outcome] += 1
            self.unexpected += status is not None and status < 500 and status != expected
        if status is not None:
            self.latencies.observe(latency_s)

    def waited(self) -> None:
        with self._lock:
            self.counts["retry-after"] += 1

    @property
    def failed(self) -> bool:
        return bool(self.counts["5xx"] or self.counts["conn errors"])

    def render(self, title: str, *, per_second: float) -> str:
        with self._lock:
            counts = dict(self.counts)
        p50, p95, p99 = self.latencies.percentiles(0.50, 0.95, 0.99)
        lines = [f"{title}  up {time.monotonic() - self.started:.0f}s"]
        lines += [f"{name:<12} {value:>10}" for name, value in counts.items()]
        lines += [
            f"req/s        {per_second:>10.1f}",
            f"latency p50  {milliseconds(p50):>10}",
            f"latency p95  {milliseconds(p95):>10}",
            f"latency p99  {milliseconds(p99):>10}",
        ]
        if self.unexpected:
            lines.append(f"unexpected   {self.unexpected:>10}")
        return "\n".join(lines)


#: How long a run stopped by Ctrl-C waits for the answers of the requests in the air.
INTERRUPTED_WAIT_S = 5.0


class Client:
    """Sends `jobs` from `concurrency` threads until `count` requests or `duration_s` seconds."""

    def __init__(
        self,
        *,
        url: str,
        jobs: Iterator[Job],
        concurrency: int,
        count: Optional[int],
        duration_s: Optional[float],
        rate: Optional[float] = None,
        ids_out: Optional[TextIO] = None,
        timeout_s: float = 30.0,
        api_key: Optional[str] = None,
        max_retries: int = 10,
    ) -> None:
        self.url = urllib.parse.urlsplit(url.rstrip("/") + "/api/message")
        self.jobs = itertools.islice(jobs, count) if count is not None else jobs
        self.concurrency = concurrency
        self.duration_s = duration_s
        self.rate = rate
        self.ids_out = ids_out
        self.timeout_s = timeout_s
        self.headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
        self.max_retries = max_retries
        self.stats = ClientStats()
        self._jobs_lock = threading.Lock()
        self._ids_lock = threading.Lock()
        self._sent = 0
        self._interrupted = threading.Event()
        self.requested_at: dict[str, float] = {}  # accepted message id -> when it was first sent

    def _next_job(self) -> Optional[Job]:
        """The next job, or None when the bound is reached. With a rate, also when to send it."""
        with self._jobs_lock:
            elapsed = time.monotonic() - self.stats.started
            if self._interrupted.is_set() or (self.duration_s is not None and elapsed >= self.duration_s):
                return None
            send_at = self.stats.started + self._sent / self.rate if self.rate else 0.0
            if self.duration_s is not None and send_at - self.stats.started >= self.duration_s:
                return None  # its turn would come after the run's end: a sender would wait past it
            job = next(self.jobs, None)
            if job is None:
                return None
            self._sent += 1
        if send_at:
            time.sleep(max(0.0, send_at - time.monotonic()))
        return job

    def _send_loop(self) -> None:
        connection = _KeepAlive(self.url, timeout_s=self.timeout_s)  # one per thread
        try:
            while (job := self._next_job()) is not None:
                self._send(connection, job)
        finally:
            connection.close()

    def _send(self, connection: "_KeepAlive", job: Job) -> None:
        """Send one job and record its final answer. A 503 with Retry-After (SQS unavailable,
        the writer busy, the queue over MAX_QUEUE_DEPTH) is waited out as told and the job sent
        again, up to `max_retries` times and never past the duration."""
        first_sent = time.time()
        for attempt in itertools.count():
            started = time.monotonic()
            try:
                status, retry_after, body = connection.post(job.body, self.headers)
            except (OSError, http.client.HTTPException):
                connection.close()
                self.stats.record(job, None, time.monotonic() - started)
                return
            wait_s = _retry_after_s(status, retry_after)
            if wait_s is not None and attempt < self.max_retries and not self._ends_within(wait_s):
                self.stats.waited()
                time.sleep(wait_s)
                continue
            self.stats.record(job, status, time.monotonic() - started)
            if status == 201 and self.ids_out is not None:
                message_id = json.loads(body)["message_id"]
                with self._ids_lock:
                    self.ids_out.write(message_id + "\n")
                    self.requested_at[message_id] = first_sent
            return

    def _ends_within(self, seconds: float) -> bool:
        if self.duration_s is None:
            return False
        return time.monotonic() + seconds - self.stats.started >= self.duration_s

    def run(self, *, stats_out: Optional[TextIO] = None, stats_interval_s: float = 1.0) -> ClientStats:
        threads = [threading.Thread(target=self._send_loop, daemon=True) for _ in range(self.concurrency)]
        for thread in threads:
            thread.start()
        previous = (time.monotonic(), 0)
        try:
            while any(thread.is_alive() for thread in threads):
                time.sleep(min(0.05, stats_interval_s))
                if stats_out is not None and time.monotonic() - previous[0] >= stats_interval_s:
                    previous = self._report(stats_out, previous, "client")
        except KeyboardInterrupt:
            # Ctrl-C (./runall.sh stop sends it) ends the run as its duration would: no new
            # request, the answers of those in the air (for a few seconds), then the summary.
            self._interrupted.set()
            deadline = time.monotonic() + INTERRUPTED_WAIT_S
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        if stats_out is not None:
            elapsed = time.monotonic() - self.stats.started
            stats_out.write(self.stats.render("summary", per_second=self.stats.counts["sent"] / elapsed) + "\n")
            stats_out.flush()
        return self.stats

    def _report(self, out: TextIO, previous: tuple[float, int], title: str) -> tuple[float, int]:
        now, sent = time.monotonic(), self.stats.counts["sent"]
        per_second = (sent - previous[1]) / max(1e-9, now - previous[0])
        clear = "\x1b[H\x1b[2J" if out.isatty() else ""
        out.write(f"{clear}{self.stats.render(title, per_second=per_second)}\n\n")
        out.flush()
        return now, sent


def processing_latencies(requested_at: dict[str, float], processed: Path, *, quiet_s: float) -> list[float]:
    """Seconds from sending each accepted message (its first attempt) to its `processed_at` in
    the worker's --output file, once all are there or the file has not grown for `quiet_s`
    (dead letters never arrive). Sorted; only those found. Not from the 201: the worker can
    finish before the answer arrives."""
    found: dict[str, float] = {}
    offset, quiet_since = 0, time.monotonic()
    while True:
        grown_to, records = read_appended(processed, offset)
        for record in records:
            found.setdefault(record.id, record.processed_at.timestamp())
        if grown_to != offset:
            offset, quiet_since = grown_to, time.monotonic()
        if requested_at.keys() <= found.keys() or time.monotonic() - quiet_since >= quiet_s:
            return sorted(found[id_] - requested_at[id_] for id_ in requested_at if id_ in found)
        time.sleep(0.2)


class _KeepAlive:
    """One keep-alive HTTP connection to the writer, on `http.client`: a request costs a few
    hundred microseconds of CPU, where `requests` took about 1.5 ms, which on two cores was taken
    from the writer under test. Opened on first use and again after a failure or after the
    writer closed it while idle; a request is never sent twice."""

    def __init__(self, url: urllib.parse.SplitResult, *, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._connection: Optional[http.client.HTTPConnection] = None

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, Optional[str], bytes]:
        """(status, Retry-After header, body) of one POST."""
        connection = self._open()
        connection.request("POST", self.url.path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Retry-After"), response.read()

    def _open(self) -> http.client.HTTPConnection:
        if self._connection is not None and self._closed_by_peer(self._connection):
            self.close()
        if self._connection is None:
            kind = http.client.HTTPSConnection if self.url.scheme == "https" else http.client.HTTPConnection
            self._connection = kind(self.url.hostname or "127.0.0.1", self.url.port, timeout=self.timeout_s)
        return self._connection

    @staticmethod
    def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
        """Whether an idle connection became readable, which means the writer closed it
        (uvicorn does after 5 s idle): sending on it would fail for nothing."""
        if connection.sock is None:
            return False
        readable, _, _ = select.select([connection.sock], [], [], 0)
        return bool(readable)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _retry_after_s(status: int, retry_after: Optional[str]) -> Optional[float]:
    """Seconds to wait before sending again, for a 503 with a Retry-After in seconds."""
    if status != 503 or retry_after is None:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        return None


class WrongUrl(Exception):
    """Something answers at --url, but it is not the writer's base URL."""


def wait_until_ready(url: str, timeout_s: float) -> bool:
    """Wait for the writer's /api/health, so a client started beside it does not count its
    start-up as connection errors. Raises WrongUrl at once when the server there answers 404:
    no writer will appear at that path however long one waits."""
    health = url.rstrip("/") + "/api/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health, timeout=1) as response:
                if response.status == 200:
                    return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and base_url(url) != url.rstrip("/"):
                raise WrongUrl(
                    f"{health} answered 404: --url is the writer's base URL, without /api (here, --url {base_url(url)})"
                ) from None
            if exc.code == 404:  # the URL is right, so what answers there is not the writer
                netloc = urllib.parse.urlsplit(url).netloc
                raise WrongUrl(
                    f"{health} answered 404: what listens on {netloc} is not the writer; another program "
                    "holds that port? Stop it, or start the writer on another (PORT) and give that --url"
                ) from None
        except (OSError, http.client.HTTPException):
            pass  # not listening yet: urllib.error.URLError is an OSError
        time.sleep(0.2)
    return False


def base_url(url: str) -> str:
    """The writer's base URL in `url`: what comes before its /api path, or its scheme and host."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.split("/api", 1)[0] if "/api" in parts.path else ""
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path.rstrip("/"), "", ""))


def writer_settings() -> Settings:
    """The writer's settings as the client reads them: its PORT, so that a client run beside a
    writer started on another port finds it, and LOG_CONFIG. The defaults (PORT 5000) when they
    are not valid: the client needs none of them, and the writer would not start either, and
    says why."""
    try:
        return Settings.from_env(role="writer")
    except ConfigError:
        return Settings()


def build_parser(port: int = 5000) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Load client for the queue-writer. Sends batches of POST /api/message, "
        "exactly --malformed-per-batch of each malformed on purpose (the writer must answer "
        "them 400), or a file line by line with --file. Bounded by --count or --duration "
        f"({DEFAULT_COUNT} requests when neither is given). Exits 1 on any 5xx or connection "
        "error unless --allow-errors. `client.py copy INPUT OUTPUT` copies a file through the API both "
        "ways (see `client.py copy --help`)."
    )
    add = parser.add_argument
    add("--url", default=f"http://127.0.0.1:{port}", help="the writer (default %(default)s, on the writer's PORT)")
    add("--batch-size", type=int, default=10, help="requests per batch (default %(default)s)")
    add(
        "--malformed-per-batch",
        type=int,
        default=1,
        help="malformed requests in each batch, 0 to switch off (default %(default)s)",
    )
    add(
        "--concurrency",
        type=int,
        default=8,
        help="sending threads, each with a keep-alive session (default %(default)s)",
    )
    add("--rate", type=float, help="at most this many requests per second in all (default: as fast as answered)")
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--count", type=int, help=f"send this many requests (default {DEFAULT_COUNT})")
    bound.add_argument("--duration", type=float, help="send for this many seconds")
    add("--file", type=Path, help="send this file, one message per line, in order (one thread, nothing malformed)")
    add("--group-id", help="with --file on a FIFO queue: the message group of every line")
    add("--ids-out", type=Path, help="write the id of every accepted message to this file, one per line")
    add("--stats-interval", type=float, default=1.0, help="seconds between live stats (default %(default)s)")
    add("--wait-ready", type=float, default=30.0, help="seconds to wait for the writer to answer (default %(default)s)")
    add("--api-key", help="sent as X-API-Key, for a writer with API_KEYS")
    add(
        "--processed",
        type=Path,
        metavar="FILE",
        help="the worker's --output file: with --ids-out, wait for the accepted messages to "
        "appear in it and add the latency from sending to processed to the summary",
    )
    add(
        "--wait-processed",
        type=float,
        default=5.0,
        help="with --processed, stop waiting once the file has not grown for this many seconds (default %(default)s)",
    )
    add(
        "--max-retries",
        type=int,
        default=10,
        help="times one message is sent again after a 503 with Retry-After (default %(default)s)",
    )
    add("--allow-errors", action="store_true", help="exit 0 even after 5xx or connection errors")
    return parser


def build_copy_parser(port: int = 5000) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="client.py copy",
        description="Copy INPUT to OUTPUT through the writer: every line is sent as a message (POST "
        "/api/messages, in batches), read back through POST /api/messages/receive, written to OUTPUT, and "
        "only then acknowledged. Ends when every line is back: OUTPUT is then byte-identical to INPUT (on a "
        "standard queue, put back in order by the line number each message carries). Needs a writer with "
        "READ_KEYS. Exits 1 when a line cannot be sent or does not come back.",
    )
    add = parser.add_argument
    add("input", type=Path, metavar="INPUT", help="the file to send, one message per line (UTF-8)")
    add("output", type=Path, metavar="OUTPUT", help="where the lines read back are written")
    add("--url", default=f"http://127.0.0.1:{port}", help="the writer (default %(default)s, on PORT)")
    add("--api-key", help="sent as X-API-Key with the writes, for a writer with API_KEYS")
    add("--read-key", help="sent as X-API-Key with the reads: one of READ_KEYS (default: --api-key)")
    add("--lease", type=int, default=60, help="seconds each message is leased while read (default %(default)s)")
    add(
        "--idle-timeout",
        type=float,
        default=60.0,
        help="give up when no line has come back for this many seconds (default %(default)s)",
    )
    add("--wait-ready", type=float, default=30.0, help="seconds to wait for the writer to answer (default %(default)s)")
    return parser


def copy_main(argv: list[str], settings: Settings) -> int:
    """`client.py copy`: 0 when every line came back, 1 when one could not be sent or did not
    come back, 2 when started wrongly (a --url that is not the writer's)."""
    args = build_copy_parser(settings.port).parse_args(argv)
    try:
        if args.wait_ready and not wait_until_ready(args.url, args.wait_ready):
            print(f"copy: {args.url} did not answer within {args.wait_ready:g} s", file=sys.stderr)
            return EXIT_FAILED
        copier = FileCopy(
            args.url,
            api_key=args.api_key,
            read_key=args.read_key,
            lease_s=args.lease,
            idle_timeout_s=args.idle_timeout,
            say=print,
        )
        result = copier.copy(args.input, args.output)
    except WrongUrl as exc:
        print(f"copy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CopyError, OSError) as exc:
        print(f"copy: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"copy: {result.lines} lines back in {args.output} in {result.seconds:.1f} s "
        f"({result.received} deliveries, {'FIFO' if result.fifo else 'standard'} queue)"
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Send the load (or with `copy`, a file both ways). Exits 0 when done, 1 on a 5xx or a
    connection error (unless --allow-errors) or a writer that never answered, 2 when started
    wrongly, as every entry point does (sqs_message_service/cli.py). The settings are the
    writer's, read leniently (`writer_settings`): the client only takes its defaults from them."""
    settings = writer_settings()
    configure_logging(settings)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["copy"]:
        return copy_main(argv[1:], settings)
    parser = build_parser(settings.port)
    args = parser.parse_args(argv)
    if args.batch_size < 1 or not 0 <= args.malformed_per_batch <= args.batch_size:
        parser.error("--malformed-per-batch must be from 0 to --batch-size, which must be at least 1")
    if args.concurrency < 1 or (args.rate is not None and args.rate <= 0):
        parser.error("--concurrency and --rate must be positive")
    try:
        if args.wait_ready and not wait_until_ready(args.url, args.wait_ready):
            print(f"client: {args.url} did not answer within {args.wait_ready:g} s", file=sys.stderr)
            return EXIT_FAILED
    except WrongUrl as exc:
        print(f"client: {exc}", file=sys.stderr)
        return EXIT_USAGE
    run_id = uuid.uuid4().hex[:8]
    if args.file:
        jobs = file_jobs(args.file, group_id=args.group_id, run_id=run_id)
        concurrency, count = 1, args.count  # in order: one request at a time
    else:
        jobs = load_jobs(batch_size=args.batch_size, malformed_per_batch=args.malformed_per_batch, run_id=run_id)
        concurrency = args.concurrency
        count = args.count if args.count is not None or args.duration is not None else DEFAULT_COUNT
    ids_out = open(args.ids_out, "w", encoding="utf-8") if args.ids_out else None
    try:
        client = Client(
            url=args.url,
            jobs=jobs,
            concurrency=concurrency,
            count=count,
            duration_s=args.duration,
            rate=args.rate,
            ids_out=ids_out,
            api_key=args.api_key,
            max_retries=args.max_retries,
        )
        stats = client.run(stats_out=sys.stdout, stats_interval_s=args.stats_interval)
    finally:
        if ids_out is not None:
            ids_out.close()
    if args.processed and ids_out is not None:
        latencies = processing_latencies(client.requested_at, args.processed, quiet_s=args.wait_processed)
        print(
            f"processed    {len(latencies):>5}/{len(client.requested_at)}\n"
            f"e2e p50      {milliseconds(percentile(latencies, 0.50)):>10}\n"
            f"e2e p99      {milliseconds(percentile(latencies, 0.99)):>10}"
        )
    return EXIT_FAILED if stats.failed and not args.allow_errors else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
