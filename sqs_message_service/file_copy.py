"""A file copied through the writer's HTTP API, both ways (`python client.py copy INPUT OUTPUT`):
each line sent as a message (POST /api/messages, in batches), read back through the read routes,
written to OUTPUT and only then acknowledged (by the next receive: one request a batch). On a
FIFO queue the lines come back in order and OUTPUT is written as they come; on a standard queue
they are put back in order by the line number each message carries. Either way OUTPUT ends
byte-identical to INPUT.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

#: The attributes each line's message carries: the copy it belongs to, and its line number.
RUN_ATTRIBUTE = "copy.run"
LINE_ATTRIBUTE = "copy.line"
#: At most this many entries and bytes of JSON in one POST /api/messages (the writer's limits are
#: 100 entries and MAX_REQUEST_BYTES, 2 MiB by default).
MAX_ENTRIES = 100
MAX_REQUEST_BYTES = 1_000_000


class CopyError(Exception):
    """The copy cannot finish: the text says which line, and why."""


@dataclass(frozen=True)
class CopyResult:
    lines: int
    fifo: bool
    received: int  # deliveries, duplicates included
    seconds: float


class Api:
    """JSON over one keep-alive connection to the writer; opened again after a failure."""

    def __init__(self, url: str, *, timeout_s: float = 60.0) -> None:
        self.url = urllib.parse.urlsplit(url.rstrip("/"))
        self.timeout_s = timeout_s
        self._connection: Optional[http.client.HTTPConnection] = None

    def call(self, method: str, path: str, body: Any = None, key: Optional[str] = None) -> tuple[int, Any, dict]:
        """(status, JSON answer, headers); one attempt again on a dropped keep-alive connection."""
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        if key:
            headers["X-API-Key"] = key
        for attempt in range(2):
            if self._connection is None:
                kind = http.client.HTTPSConnection if self.url.scheme == "https" else http.client.HTTPConnection
                self._connection = kind(self.url.hostname or "127.0.0.1", self.url.port, timeout=self.timeout_s)
            try:
                self._connection.request(method, self.url.path + path, body=payload, headers=headers)
                response = self._connection.getresponse()
                content = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
                continue
            answer = json.loads(content) if content else None
            return response.status, answer, {name.lower(): value for name, value in response.getheaders()}
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def read_lines(source: Path) -> list[str]:
    """INPUT's lines, each with its newline (the last may have none), as text: SQS carries text."""
    data = source.read_bytes()
    parts = data.split(b"\n")
    raw = [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    lines = []
    for number, line in enumerate(raw, start=1):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise CopyError(f"line {number} is not UTF-8 ({exc}): SQS carries text only") from None
    return lines


def _retry_after_s(headers: dict) -> float:
    try:
        return max(0.1, float(headers.get("retry-after", 1)))
    except ValueError:
        return 1.0


class FileCopy:
    """One copy of INPUT to OUTPUT through the writer at `url`."""

    def __init__(
        self,
        url: str,
        *,
        api_key: Optional[str] = None,
        read_key: Optional[str] = None,
        lease_s: int = 60,
        wait_s: int = 2,
        idle_timeout_s: float = 60.0,
        say: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.api = Api(url)
        self.api_key = api_key
        self.read_key = read_key or api_key
        self.lease_s = lease_s
        self.wait_s = wait_s
        self.idle_timeout_s = idle_timeout_s
        self.say = say
        self.run_id = uuid.uuid4().hex[:12]

    def fifo(self) -> bool:
        """Whether the writer's queue is FIFO: its served spec then requires a group_id."""
        status, spec, _ = self.api.call("GET", "/api/openapi.json", key=self.api_key)
        if status != 200:
            raise CopyError(f"GET /api/openapi.json answered {status}")
        return "group_id" in spec["components"]["schemas"]["MessageFields"].get("required", [])

    def copy(self, source: Path, destination: Path) -> CopyResult:
        started = time.monotonic()
        lines = read_lines(source)
        fifo = self.fifo()
        self.send(lines, fifo=fifo)
        self.say(f"copy: {len(lines)} lines sent ({'FIFO' if fifo else 'standard'} queue); reading them back")
        with open(destination, "wb") as out:
            received = self.receive(len(lines), out, fifo=fifo)
        return CopyResult(lines=len(lines), fifo=fifo, received=received, seconds=time.monotonic() - started)

    def entry(self, number: int, line: str, *, fifo: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"body": line, "attributes": {RUN_ATTRIBUTE: self.run_id, LINE_ATTRIBUTE: str(number)}}
        if fifo:  # one group keeps the order; a deduplication id per line keeps repeated lines
            entry.update(group_id=f"copy-{self.run_id}", deduplication_id=f"{self.run_id}-{number}")
        return entry

    def send(self, lines: list[str], *, fifo: bool) -> None:
        """Every line, in order, in requests of at most MAX_ENTRIES entries and MAX_REQUEST_BYTES."""
        batch: list[tuple[int, dict[str, Any]]] = []
        size = 0
        for number, line in enumerate(lines):
            entry = self.entry(number, line, fifo=fifo)
            entry_bytes = len(json.dumps(entry, ensure_ascii=False).encode("utf-8"))
            if batch and (len(batch) == MAX_ENTRIES or size + entry_bytes > MAX_REQUEST_BYTES):
                self._send_batch(batch)
                batch, size = [], 0
            batch.append((number, entry))
            size += entry_bytes
        if batch:
            self._send_batch(batch)

    def _send_batch(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
        """One POST /api/messages; entries SQS could not take now (503) are sent again."""
        for _ in range(30):
            status, answer, headers = self.api.call(
                "POST", "/api/messages", {"messages": [entry for _, entry in batch]}, key=self.api_key
            )
            if status == 503:
                time.sleep(_retry_after_s(headers))
                continue
            if status != 200:
                raise CopyError(f"POST /api/messages answered {status}: {answer.get('detail') if answer else ''}")
            again = []
            for (number, entry), result in zip(batch, answer["results"], strict=True):
                if result["status"] == 503:
                    again.append((number, entry))
                elif result["status"] != 201:
                    raise CopyError(f"line {number + 1}: {result['status']} {result.get('detail', '')}")
            if not again:
                return
            batch = again
            time.sleep(1.0)
        raise CopyError("the writer kept answering 503: SQS unavailable")

    def receive(self, total: int, out: BinaryIO, *, fifo: bool) -> int:
        """Read until every line is written; each acknowledged once it is written (and
        flushed). Returns the deliveries read."""
        written: list[str] = []  # tokens of lines written and flushed, acknowledged by the next receive
        try:
            return self._read_back(total, out, fifo=fifo, written=written)
        finally:  # a copy that stops, however, acknowledges what it wrote (best effort on failure)
            with contextlib.suppress(CopyError, OSError, http.client.HTTPException):
                self._settle("/api/messages/acknowledge", written)

    def _read_back(self, total: int, out: BinaryIO, *, fifo: bool, written: list[str]) -> int:
        """The loop of `receive`; `written` holds, at every moment, the tokens of lines written and
        not yet acknowledged."""
        next_line, pending, received = 0, {}, 0  # pending (standard queues): number -> (line, token)
        idle_since = time.monotonic()
        while next_line < total:
            messages = self._receive(acknowledge=written)
            written.clear()
            if not messages:
                if time.monotonic() - idle_since > self.idle_timeout_s:
                    raise CopyError(
                        f"{total - next_line} of {total} lines did not come back within {self.idle_timeout_s:g} s"
                    )
                continue
            idle_since = time.monotonic()
            received += len(messages)
            done, others = [], []
            for message in messages:
                attributes = message["attributes"]
                if attributes.get(RUN_ATTRIBUTE) != self.run_id:
                    others.append(message["token"])  # not this copy's: left for its reader
                    continue
                number = int(attributes[LINE_ATTRIBUTE])
                if number < next_line:  # delivered again: written already
                    done.append(message["token"])
                elif fifo and number != next_line:
                    raise CopyError(f"line {number + 1} came before line {next_line + 1} on a FIFO queue")
                else:
                    pending[number] = (message["body"], message["token"])
            while next_line in pending:
                body, token = pending.pop(next_line)
                out.write(body.encode("utf-8"))
                done.append(token)
                next_line += 1
            out.flush()  # written before acknowledged: a copy stopped here loses no line
            written.extend(done)
            self._settle("/api/messages/give-back", others, delay_seconds=1)
        self._settle("/api/messages/acknowledge", written)
        written.clear()
        return received

    def _receive(self, *, acknowledge: list[str]) -> list[dict[str, Any]]:
        """The next messages, acknowledging `acknowledge` first (one request a batch). Sent again
        after a 503 as it was: an acknowledgement made twice deletes its message once."""
        request: dict[str, Any] = {"max_messages": 10, "wait_seconds": self.wait_s, "lease_seconds": self.lease_s}
        if acknowledge:
            request["acknowledge"] = list(acknowledge)
        while True:
            status, answer, headers = self.api.call("POST", "/api/messages/receive", request, key=self.read_key)
            if status == 200:
                refused = [r for r in answer.get("acknowledged", {}).get("results", []) if r["status"] == 400]
                if refused:  # 410 and 503 are fine: the line comes back and is acknowledged as written
                    raise CopyError(f"POST /api/messages/receive refused a token: {refused[0].get('detail', '')}")
                return answer["messages"]
            if status != 503:
                raise CopyError(f"POST /api/messages/receive answered {status}: {(answer or {}).get('detail', '')}")
            time.sleep(_retry_after_s(headers))

    def _settle(self, path: str, tokens: list[str], **extra: Any) -> None:
        """Acknowledge or give back; a lapsed token (410) is fine: its line comes back, and is
        then acknowledged as written already."""
        if not tokens:
            return
        for _ in range(30):
            status, answer, headers = self.api.call("POST", path, {"tokens": tokens, **extra}, key=self.read_key)
            if status == 503:
                time.sleep(_retry_after_s(headers))
                continue
            if status not in (200, 410):
                raise CopyError(f"POST {path} answered {status}: {(answer or {}).get('detail', '')}")
            return
        raise CopyError(f"POST {path}: the writer kept answering 503")
