"""make e2e: the whole pipeline, headless, on a local SQS endpoint, and proof that nothing was lost.

Starts the local endpoint, the writer and the worker on free loopback ports, sends a bounded load
with the client (which writes every accepted id), lets the worker drain the queue, and checks that
every accepted message was processed or is in the dead-letter queue. Exit 0 only if none is lost.

Then it runs the check again with the worker's processed ledger (PROCESSED_TABLE, on a moto server
for DynamoDB) while SQS refuses the worker's deletes at first, and checks that each accepted
message was processed once, though SQS delivered many again.

With `--endpoint URL` it starts no endpoint: it runs the same check against one it did not start
(LocalStack, ElasticMQ, moto's server; `--endpoint aws` for real SQS in AWS_REGION, with the
environment's credentials), on queues of its own (`e2e-<run>` and its dead-letter queue), which
it deletes afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from harness import ROOT, ApiProxy, Process, environment, free_port, wait_for_port

sys.path.insert(0, str(ROOT))

import sqs_setup
from sqs_message_service.aws import create_client
from sqs_message_service.dlq import SOURCE_ID
from sqs_message_service.metrics import milliseconds, percentile
from sqs_message_service.output import read_records
from sqs_message_service.settings import Settings
from sqs_message_service.sqs import SqsQueue


@dataclass(frozen=True)
class E2EResult:
    accepted: int
    processed: int  # distinct accepted messages the worker processed
    redelivered: int  # extra processings of the same message (at-least-once)
    dead_lettered: int
    lost: int
    in_both: int  # processed and also dead-lettered: should not happen
    client_exit: int
    seconds: float  # from the client's first request to the last message processed
    latency_p50_s: Optional[float] = None  # SQS accepted (SentTimestamp) to processed
    latency_p99_s: Optional[float] = None
    writer_sqs_requests: int = 0  # billable: a request per call and per further 64 KiB
    worker_sqs_requests: int = 0
    worker_sqs_calls: Mapping[str, int] = field(default_factory=dict)  # by operation
    client_summary: str = ""  # the client's own summary, its sent-to-processed latency included

    @classmethod
    def of(cls, accepted: set[str], processed_ids: list[str], dead: set[str], **rest: Any) -> E2EResult:
        """The counts of a run: the ids the writer accepted, those the worker processed (each time
        it did) and those in the dead-letter queue."""
        processed = set(processed_ids)
        return cls(
            accepted=len(accepted),
            processed=len(accepted & processed),
            redelivered=len(processed_ids) - len(processed),
            dead_lettered=len(accepted & dead),
            lost=len(accepted - processed - dead),
            in_both=len(processed & dead),
            **rest,
        )

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.in_both == 0 and self.client_exit == 0

    def report(self) -> str:
        rate = self.accepted / self.seconds if self.seconds else 0.0
        return (
            f"accepted {self.accepted}, processed {self.processed}, dead-lettered "
            f"{self.dead_lettered}, lost {self.lost}, in both {self.in_both}, redelivered "
            f"{self.redelivered}; {self.seconds:.2f} s from first request to last processed "
            f"({rate:.0f} messages/s); accepted to processed p50 {milliseconds(self.latency_p50_s)}, "
            f"p99 {milliseconds(self.latency_p99_s)}; billable SQS requests per message: writer "
            f"{self.writer_sqs_requests / max(1, self.accepted):.3f}, worker "
            f"{self.worker_sqs_requests / max(1, self.accepted):.3f}"
        )


def ids_in(queue: SqsQueue) -> set[str]:
    """The ids of every message now in `queue`, each hidden for 10 minutes so that it is read
    once. A worker's dead letter gives the id it had in the source queue (SQS's redrive keeps
    the id anyway)."""
    ids: set[str] = set()
    while batch := queue.receive(max_messages=10, wait_s=0):
        ids.update(message.attributes.get(SOURCE_ID, message.id) for message in batch)
        queue.change_visibility([(message.receipt_handle, 600) for message in batch])
    return ids


class LocalSystem:
    """A local SQS endpoint with the queues, and the writer, on free loopback ports."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.writer_url = f"http://127.0.0.1:{env['PORT']}"
        self.sqs_port = int(env.get("LOCAL_SQS_PORT") or 0)  # 0: an endpoint this did not start
        self.settings = Settings.from_env(env)
        self.processes: dict[str, Process] = {}  # by name, the latest of each
        self._running: list[Process] = []

    def start(self, name: str, *args: str, env: Optional[Mapping[str, str]] = None) -> Process:
        """Start a program (logs in workdir/NAME.log, environment plus `env`); stopped with the
        system."""
        process = Process(args, env={**self.env, **(env or {})}, log_path=self.workdir / f"{name}.log")
        self.processes[name] = process
        self._running.append(process)
        return process

    def log(self, name: str) -> str:
        return self.processes[name].output

    def stop(self) -> None:
        """Ctrl-C to each, once, the last started first, waiting for each: the worker finishes
        what it holds while the writer and SQS still answer. Whatever lingers is killed, with
        everything it started. (A second Ctrl-C would make the worker and uvicorn exit at once.)"""
        for process in reversed(self._running):
            self.stop_process(process)

    @staticmethod
    def stop_process(process: Process) -> None:
        """Stop one of the system's programs before the rest, as `stop` does."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.stop(signal.SIGINT)

    def python(self, name: str, *args: str, env: Optional[Mapping[str, str]] = None) -> Process:
        return self.start(name, sys.executable, *args, env=env)

    def start_sqs(self) -> Process:
        """The local endpoint (again, after a stop: in memory, so without queues or messages)."""
        process = self.start("sqs", str(ROOT / "local/sqs/serve.sh"))
        wait_for_port(self.sqs_port, 30)
        return process

    def start_writer(
        self, *args: str, env: Optional[Mapping[str, str]] = None, program: str = "server.py", name: str = "writer"
    ) -> Process:
        """The writer (or `program`, another that serves it, such as the benchmark's), once it
        listens on PORT (the system's, or one in `env`)."""
        process = self.python(name, program, *args, env=env)
        wait_for_port(int({**self.env, **(env or {})}["PORT"]), 30)
        return process

    def writer_stats(self, url: Optional[str] = None) -> dict:
        """/api/stats of the system's writer, or of the one at `url`."""
        return json.loads(urllib.request.urlopen(f"{url or self.writer_url}/api/stats", timeout=30).read())

    def set_up_queues(self, settings: Optional[Settings] = None) -> None:
        """The queues of `settings` (default: the system's own) and their dead-letter queues, and
        the DynamoDB tables the settings name."""
        settings = settings or self.settings
        tables = create_client(settings, service="dynamodb") if settings.processed_table else None
        sqs_setup.set_up(settings, create_client(settings), tables)

    def tear_down_queues(self) -> None:
        """Delete the system's queues: those a run made on an endpoint it did not start."""
        sqs_setup.tear_down(self.settings, create_client(self.settings))

    def client(self, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "client.py", "--url", self.writer_url, "--stats-interval", "5", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def queue(self, name: str) -> SqsQueue:
        return SqsQueue(name, create_client(self.settings))


#: What `--endpoint` takes to mean real SQS, in AWS_REGION.
REAL_SQS = "aws"


@contextlib.contextmanager
def local_system(
    workdir: Path, *, engine: str, writer: bool = True, endpoint: Optional[str] = None, **settings: str
) -> Iterator[LocalSystem]:
    """Start the local endpoint (`engine`: fauxqs or moto), create the queues, start the writer
    (unless `writer` is False); `settings` are extra environment variables
    (QUEUE_NAME="lines.fifo", say). All stop on exit.

    With `endpoint` (a URL, or REAL_SQS), no endpoint is started: the queues are made there,
    named for this run unless `settings` name them, with the environment's credentials where it
    has some, and deleted on exit."""
    writer_port, metrics_port = free_port(), free_port()
    real_sqs = endpoint == REAL_SQS
    if endpoint is None:
        sqs_port = free_port()
        where = {
            "SQS_LOCAL": engine,
            "LOCAL_SQS_PORT": str(sqs_port),
            "SQS_ENDPOINT_URL": f"http://127.0.0.1:{sqs_port}",
        }
    else:
        where = {
            "SQS_ENDPOINT_URL": "" if real_sqs else endpoint,
            "LOCAL_SQS_PORT": "",
            "QUEUE_NAME": f"e2e-{uuid.uuid4().hex[:8]}",
            "DLQ_NAME": "",
        }
    # Any local endpoint takes any credentials, and never gets real ones; real SQS gets the
    # environment's as they are (keys, profile, instance or task role) and its region.
    aws = (
        {}
        if real_sqs
        else {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    local = {
        **where,
        **aws,
        "PORT": str(writer_port),
        "METRICS_PORT": str(metrics_port),  # the worker's; not the default, which `make run` may hold
        "RECEIVE_WAIT_SECONDS": "1",
        "VENV_BIN": str(Path(sys.executable).parent),
        **settings,
    }
    env = {name: value for name, value in os.environ.items() if real_sqs or name != "AWS_PROFILE"}
    env.update(local)
    system = LocalSystem(workdir, env)
    with environment(local), contextlib.ExitStack() as stop_all:
        if endpoint is None:
            stop_all.callback(system.stop)
            system.start_sqs()
        else:
            stop_all.callback(system.tear_down_queues)  # after the processes below have stopped
            stop_all.callback(system.stop)
        system.set_up_queues()
        if writer:
            system.start_writer()
        yield system


def draining_worker(
    system: LocalSystem, output: Path, summary: Path, env: Optional[Mapping[str, str]] = None
) -> Process:
    """The worker of a check: it records what it processed in `output`, exits once the queue has
    been empty for 3 s, and writes its summary to `summary`."""
    args = ("--output", str(output), "--exit-when-idle", "3", "--stats-interval", "5", "--summary-json", str(summary))
    return system.python("worker", "worker.py", *args, env=env)


def run_e2e(
    *,
    count: int,
    workdir: Path,
    engine: str = "fauxqs",
    concurrency: int = 16,
    failure_rate: float = 0.1,
    retry_backoff_base_s: float = 1.0,
    timeout_s: float = 600,
    log: Optional[Callable[[str], None]] = print,
    endpoint: Optional[str] = None,
    env: Optional[dict[str, str]] = None,
) -> E2EResult:
    say = log or (lambda *_: None)
    ids_path, output_path = workdir / "accepted-ids.txt", workdir / "processed.jsonl"
    summary_path = workdir / "worker-summary.json"
    for stale in (ids_path, output_path, summary_path):  # the worker appends to its output
        stale.unlink(missing_ok=True)
    with local_system(
        workdir,
        engine=engine,
        endpoint=endpoint,
        FAILURE_RATE=str(failure_rate),
        RETRY_BACKOFF_BASE=str(retry_backoff_base_s),
        **(env or {}),  # type: ignore[arg-type]  # all strings
    ) as system:
        worker = draining_worker(system, output_path, summary_path)
        where = system.settings.sqs_endpoint_url or f"real SQS in {system.settings.aws_region}"
        say(
            f"e2e: {engine if endpoint is None else 'queue ' + repr(system.settings.queue_name)} at {where}, "
            f"writer at {system.writer_url}; sending {count} messages"
        )
        started = time.time()
        load = system.client(
            "--count",
            str(count),
            "--malformed-per-batch",
            "0",
            "--concurrency",
            str(concurrency),
            "--ids-out",
            str(ids_path),
            "--processed",
            str(output_path),
            timeout_s=timeout_s,
        )
        client_summary = load.stdout.rsplit("summary", 1)[-1].rstrip()
        say(client_summary)
        worker.wait(timeout=timeout_s)
        writer_stats = system.writer_stats()
        worker_summary = json.loads(summary_path.read_text())
        accepted = set(ids_path.read_text().split())
        records = read_records(output_path)
        processed_ids = [record.id for record in records]
        dead = ids_in(system.queue(system.settings.dlq_name))
    last = max((record.processed_at.timestamp() for record in records), default=started)
    latencies = sorted(
        (record.processed_at - record.sent_at).total_seconds() for record in records if record.sent_at is not None
    )
    return E2EResult.of(
        accepted,
        processed_ids,
        dead,
        client_exit=load.returncode,
        seconds=last - started,
        latency_p50_s=percentile(latencies, 0.50),
        latency_p99_s=percentile(latencies, 0.99),
        writer_sqs_requests=writer_stats["sqs_billable_requests"],
        client_summary=client_summary,
        worker_sqs_requests=worker_summary["sqs_billable_requests"],
        worker_sqs_calls=worker_summary["sqs_calls"],
    )


@dataclass(frozen=True)
class LedgerResult:
    """The run with PROCESSED_TABLE while the worker's deletes are refused at first."""

    e2e: E2EResult
    deletes_refused: int  # DeleteMessageBatch calls SQS refused the worker
    duplicates: int  # redeliveries the ledger knew as done, deleted without the step

    @property
    def ok(self) -> bool:
        # each accepted message processed (or dead-lettered) once, though redeliveries came
        return self.e2e.ok and self.e2e.redelivered == 0 and self.deletes_refused > 0 and self.duplicates > 0

    def report(self) -> str:
        return (
            f"accepted {self.e2e.accepted}, processed {self.e2e.processed}, dead-lettered "
            f"{self.e2e.dead_lettered}, lost {self.e2e.lost}, processed twice {self.e2e.redelivered}; "
            f"deletes refused {self.deletes_refused}, redeliveries skipped as duplicates {self.duplicates}"
        )


#: The ledger run: SQS refuses the worker's deletes this long after its first message is done.
REFUSE_DELETES_S = 8.0


def run_ledger_e2e(
    *,
    count: int,
    workdir: Path,
    engine: str = "fauxqs",
    timeout_s: float = 600,
    log: Optional[Callable[[str], None]] = print,
) -> LedgerResult:
    """The end-to-end check with the worker's processed ledger on (PROCESSED_TABLE, on a moto
    server of its own for DynamoDB), with a 2 s visibility timeout and SQS refusing the
    worker's deletes for REFUSE_DELETES_S: every message comes back after its step returned,
    and still each accepted message is processed once."""
    say = log or (lambda *_: None)
    workdir.mkdir(parents=True, exist_ok=True)
    ids_path, output_path = workdir / "accepted-ids.txt", workdir / "processed.jsonl"
    summary_path = workdir / "worker-summary.json"
    for stale in (ids_path, output_path, summary_path):
        stale.unlink(missing_ok=True)
    dynamodb_port = free_port()
    dynamodb = Process(
        [sys.executable, ROOT / "scripts" / "local_moto.py", "-H", "127.0.0.1", "-p", str(dynamodb_port)],
        env=os.environ,
        log_path=workdir / "dynamodb.log",
    )
    try:
        wait_for_port(dynamodb_port, 30)
        with local_system(
            workdir,
            engine=engine,
            FAILURE_RATE="0.1",
            RETRY_BACKOFF_BASE="0",
            VISIBILITY_TIMEOUT="2",
            MAX_RECEIVE_COUNT="10",
            PROCESSED_TABLE="e2e-processed",
            DYNAMODB_ENDPOINT_URL=f"http://127.0.0.1:{dynamodb_port}",
        ) as system:
            proxy = ApiProxy(system.settings.sqs_endpoint_url or "")
            proxy.refusing = {"AmazonSQS.DeleteMessageBatch"}
            try:
                worker = draining_worker(system, output_path, summary_path, env={"SQS_ENDPOINT_URL": proxy.url})
                say(
                    f"e2e with PROCESSED_TABLE: {engine}, DynamoDB on moto's server; sending {count} messages; "
                    f"the worker's deletes refused for the first {REFUSE_DELETES_S:g} s"
                )
                started = time.time()
                load = system.client(
                    "--count", str(count), "--malformed-per-batch", "0", "--ids-out", str(ids_path), timeout_s=timeout_s
                )
                while time.time() - started < REFUSE_DELETES_S:
                    time.sleep(0.1)
                proxy.refusing = set()
                worker.wait(timeout=timeout_s)
            finally:
                proxy.stop()
            worker_summary = json.loads(summary_path.read_text())
            accepted = set(ids_path.read_text().split())
            processed_ids = [record.id for record in read_records(output_path)]
            dead = ids_in(system.queue(system.settings.dlq_name))
    finally:
        dynamodb.stop()
    return LedgerResult(
        e2e=E2EResult.of(
            accepted,
            processed_ids,
            dead,
            client_exit=load.returncode,
            seconds=time.time() - started,
        ),
        deletes_refused=proxy.refused["AmazonSQS.DeleteMessageBatch"],
        duplicates=int(worker_summary["duplicates"]),
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="messages to send (default %(default)s)")
    parser.add_argument(
        "--engine",
        choices=("fauxqs", "moto"),
        default=os.environ.get("SQS_LOCAL", "fauxqs"),
        help="local SQS engine (SQS_LOCAL, default fauxqs; moto when Node is missing)",
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / ".e2e", help="logs and outputs (default %(default)s)")
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="an SQS endpoint this does not start (LocalStack, ElasticMQ, moto's server), or 'aws' for "
        "real SQS in AWS_REGION with the environment's credentials: the check runs on queues of its own, "
        "deleted afterwards (default: start the local engine)",
    )
    parser.add_argument(
        "--ledger-count",
        type=int,
        default=1000,
        help="messages for the second run, with the worker's processed ledger (PROCESSED_TABLE) while its "
        "deletes are refused at first; 0 leaves it out (default %(default)s; left out with --endpoint)",
    )
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = run_e2e(count=args.count, workdir=args.workdir, engine=args.engine, endpoint=args.endpoint)
    print(f"e2e: {result.report()}")
    print(f"e2e: {'OK, nothing lost' if result.ok else 'FAILED'} (logs in {args.workdir})")
    if args.endpoint is not None or args.ledger_count == 0:
        print("e2e: the run with PROCESSED_TABLE is left out (it needs the local engines and a DynamoDB of its own)")
        return 0 if result.ok else 1
    ledger = run_ledger_e2e(count=args.ledger_count, workdir=args.workdir / "processed-table", engine=args.engine)
    print(f"e2e with PROCESSED_TABLE: {ledger.report()}")
    print(f"e2e with PROCESSED_TABLE: {'OK, each message processed once' if ledger.ok else 'FAILED'}")
    return 0 if result.ok and ledger.ok else 1


if __name__ == "__main__":
    sys.exit(main())
