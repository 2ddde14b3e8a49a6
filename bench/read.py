"""make bench's read stage: messages read and acknowledged through the read routes by one writer
process, as a reader's loop makes them (POST /api/messages/receive, 10 at a time, each receive
acknowledging the batch before) and with two requests a batch (receive, then
/api/messages/acknowledge), beside raw boto3 ReceiveMessage + DeleteMessageBatch of 10 on the same
engine, in the same run, from the same number of threads. Each drains a queue filled beforehand
with the same messages."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import http.client
import json
import threading
import time
from typing import Any

from e2e import LocalSystem
from harness import cpu_seconds, free_port
from sqs_message_service.sqs import BATCH_MAX_ENTRIES, OutgoingMessage, SqsQueue

#: Threads draining each queue, raw and through the writer.
THREADS = 8
#: Messages per second of the raw floor's seconds: 20,000 at the full benchmark's 4 s.
MESSAGES_PER_RAW_SECOND = 5_000
READ_KEY = "bench-reader"


def filled_queue(system: LocalSystem, name: str, count: int) -> tuple[SqsQueue, dict[str, str]]:
    """A fresh queue `bench-NAME` holding `count` messages, and the environment that selects it."""
    settings = dataclasses.replace(system.settings, queue_name=f"bench-{name}", dlq_name="")
    system.set_up_queues(settings)
    queue = system.queue(settings.queue_name)
    batch = [OutgoingMessage(body=f"benchmark message {i} " + "x" * 100) for i in range(BATCH_MAX_ENTRIES)]
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda _: queue.send(batch), range(-(-count // BATCH_MAX_ENTRIES))))
    return queue, {"QUEUE_NAME": settings.queue_name, "DLQ_NAME": settings.dlq_name}


def drain(count: int, take_ten: Any) -> float:
    """Seconds for THREADS threads calling `take_ten()` (messages read and acknowledged) until
    `count` are done."""
    done, lock = [0], threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if done[0] >= count:
                    return
            taken = take_ten()
            with lock:
                done[0] += taken

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(work) for _ in range(THREADS)]:
            future.result()
    return time.perf_counter() - started


def raw(queue: SqsQueue, count: int) -> float:
    def take_ten() -> int:
        messages = queue.receive(max_messages=BATCH_MAX_ENTRIES, wait_s=1, visibility_timeout_s=30)
        if messages:
            queue.delete_messages([message.receipt_handle for message in messages])
        return len(messages)

    return drain(count, take_ten)


def through_the_writer(url: str, count: int, *, one_request: bool) -> float:
    local = threading.local()
    headers = {"Content-Type": "application/json", "X-API-Key": READ_KEY}

    def post(path: str, body: dict[str, Any]) -> Any:
        if not hasattr(local, "connection"):
            host, port = url.removeprefix("http://").split(":")
            local.connection = http.client.HTTPConnection(host, int(port), timeout=60)
        local.connection.request("POST", path, body=json.dumps(body), headers=headers)
        response = local.connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}: {answer}")
        return answer

    receive = {"max_messages": 10, "wait_seconds": 1, "lease_seconds": 30}

    def take_ten() -> int:
        """Receive, then acknowledge: two requests a batch."""
        messages = post("/api/messages/receive", receive)
        tokens = [message["token"] for message in messages["messages"]]
        if tokens:
            post("/api/messages/acknowledge", {"tokens": tokens})
        return len(tokens)

    def acknowledge_with_the_next_receive() -> int:
        """One request a batch: each receive acknowledges the batch before (what it returns)."""
        answer = post("/api/messages/receive", {**receive, "acknowledge": getattr(local, "tokens", [])})
        local.tokens = [message["token"] for message in answer["messages"]]
        return int(answer["acknowledged"]["done"])

    return drain(count, acknowledge_with_the_next_receive if one_request else take_ten)


def read_path(system: LocalSystem, raw_seconds: float) -> dict[str, Any]:
    """The read stage's figures: both rates, their ratio, the writer's CPU a message."""
    count = int(raw_seconds * MESSAGES_PER_RAW_SECOND)
    queue, _ = filled_queue(system, "read-raw", count)
    raw_s = raw(queue, count)
    _, env = filled_queue(system, "read-http", count)
    _, env_two = filled_queue(system, "read-http-two", count)
    port, port_two = free_port(), free_port()
    writer = system.start_writer(env={**env, "PORT": str(port), "READ_KEYS": READ_KEY}, name="writer-read")
    writer_two = system.start_writer(
        env={**env_two, "PORT": str(port_two), "READ_KEYS": READ_KEY}, name="writer-read-two"
    )
    try:
        cpu_before = cpu_seconds(writer.pid)
        http_s = through_the_writer(f"http://127.0.0.1:{port}", count, one_request=True)
        cpu_s = cpu_seconds(writer.pid) - cpu_before
        two_s = through_the_writer(f"http://127.0.0.1:{port_two}", count, one_request=False)
    finally:
        system.stop_process(writer)
        system.stop_process(writer_two)
    return {
        "read_messages": count,
        "read_raw_msgs_per_s": count / raw_s,
        "read_http_msgs_per_s": count / http_s,
        "read_vs_raw": raw_s / http_s,
        "read_two_requests_msgs_per_s": count / two_s,
        "read_two_requests_vs_raw": raw_s / two_s,
        "read_writer_cpu_ms_per_msg": 1000 * cpu_s / count,
        "read_writer_cores": cpu_s / http_s,
    }
