"""make e2e's check on a smaller load, in the test suite: nothing accepted is lost."""

from __future__ import annotations

from pathlib import Path

from e2e import LocalSystem, local_system, run_e2e, run_ledger_e2e
from helpers import LOCAL_ENGINE, wait_until
from sqs_message_service.aws import create_client
from sqs_message_service.output import read_records
from sqs_message_service.settings import Settings


def test_every_accepted_message_is_processed_or_dead_lettered(tmp_path: Path) -> None:
    result = run_e2e(
        count=400, workdir=tmp_path, engine=LOCAL_ENGINE, failure_rate=0.3, retry_backoff_base_s=0, log=None
    )

    print(result.report())
    assert result.client_exit == 0
    assert result.accepted == 400
    assert result.lost == 0 and result.in_both == 0
    assert result.processed + result.dead_lettered == result.accepted
    assert result.dead_lettered > 0  # 0.3 ** 3 of 400: the dead-letter path was exercised
    assert result.latency_p50_s is not None and result.latency_p99_s is not None
    assert 0 < result.latency_p50_s <= result.latency_p99_s < 60
    # client.py --processed saw each processed message, and gave up on the dead letters
    assert f"processed    {result.processed:>5}/400" in result.client_summary


def test_with_the_processed_ledger_each_message_is_processed_once_while_deletes_are_refused(tmp_path: Path) -> None:
    result = run_ledger_e2e(count=150, workdir=tmp_path, engine=LOCAL_ENGINE, log=None)

    print(result.report())
    assert result.e2e.accepted == 150 and result.e2e.lost == 0
    assert result.deletes_refused > 0 and result.duplicates > 0  # SQS delivered again what was done
    assert result.e2e.redelivered == 0  # and none of it reached the step twice
    assert result.ok


def test_a_file_through_a_fifo_queue_comes_out_in_order_despite_retries(tmp_path: Path) -> None:
    lines = [f"line {n:03d}" for n in range(60)] + ["line 007"]  # a repeat, not a duplicate
    source = tmp_path / "input.txt"
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "processed.jsonl"

    with local_system(
        tmp_path, engine=LOCAL_ENGINE, QUEUE_NAME="lines.fifo", MAX_RECEIVE_COUNT="10", RETRY_BACKOFF_BASE="0"
    ) as system:
        sent = system.client("--file", str(source), "--group-id", "one-group")
        worker = system.python(
            "worker",
            "worker.py",
            "--output",
            str(output),
            "--failure-rate",
            "0.2",
            "--seed",
            "1",
            "--exit-when-idle",
            "2",
        )
        assert worker.wait(timeout=120) == 0
        log = (tmp_path / "worker.log").read_text()

    assert sent.returncode == 0, sent.stdout + sent.stderr
    processed = read_records(output)
    assert [p.body for p in processed] == lines, log[-2000:]
    assert max(p.receive_count for p in processed) > 1  # some failed and were retried in place


#: A program that, on Ctrl-C, says so (with when), takes 0.3 s to finish, says when it ends.
FINISHES_ON_CTRL_C = """
import signal, sys, time
got = []
def on_ctrl_c(*_):
    got.append(1)
    print("SIGINT", time.monotonic(), flush=True)
signal.signal(signal.SIGINT, on_ctrl_c)
print("ready", flush=True)
while not got:
    time.sleep(0.01)
time.sleep(0.3)
print("exit", time.monotonic(), flush=True)
"""


def test_stopping_the_system_sends_one_ctrl_c_to_each_the_last_started_first(tmp_path: Path) -> None:
    system = LocalSystem(tmp_path, {"PORT": "1", "LOCAL_SQS_PORT": "2"})
    names = ("sqs", "writer", "worker")  # in the order make e2e starts them
    for name in names:
        system.python(name, "-c", FINISHES_ON_CTRL_C)
    wait_until(lambda: all("ready" in system.log(name) for name in names), timeout_s=10, what="all ready")

    system.stop()

    def when(name: str, event: str) -> list[float]:
        return [float(line.split()[1]) for line in system.log(name).splitlines() if line.startswith(event)]

    for name in names:
        assert len(when(name, "SIGINT")) == 1, system.log(name)  # a second one means: exit now
    # each finishes before the one started before it is asked to: SQS answers the worker's deletes
    assert when("worker", "exit")[0] < when("writer", "SIGINT")[0]
    assert when("writer", "exit")[0] < when("sqs", "SIGINT")[0]


def test_the_check_runs_against_an_endpoint_it_did_not_start_and_leaves_no_queue_behind(
    moto_server: str, tmp_path: Path
) -> None:
    # GIVEN an SQS endpoint someone else runs, with a queue of its own that must stay untouched
    owner = create_client(Settings(sqs_endpoint_url=moto_server))
    owner.create_queue(QueueName="theirs")

    # WHEN make e2e's check is pointed at it
    result = run_e2e(
        count=60, workdir=tmp_path, endpoint=moto_server, failure_rate=0.3, retry_backoff_base_s=0, log=None
    )

    # THEN nothing was lost, and only the queue that was there before is left
    assert result.ok and result.accepted == 60 and result.lost == 0
    assert result.processed + result.dead_lettered == 60
    left = [url.rsplit("/", 1)[-1] for url in owner.list_queues().get("QueueUrls", [])]
    assert left == ["theirs"]
