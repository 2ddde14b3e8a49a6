"""The worker's output file (WORKER_OUTPUT, --output): one JSON line per processed message.

The worker writes a message's line, and flushes it, before the message is deleted, so nothing
acknowledged is missing from the file. A line cut short by a worker killed while writing it is
skipped by the readers: its message was not deleted, so it comes back. This module is the one
writer and the one reader of the format; client.py, make e2e and make bench read it here.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional, TextIO

if TYPE_CHECKING:  # the load client reads this format without loading boto3
    from .sqs import ReceivedMessage


@dataclass(frozen=True)
class ProcessedRecord:
    """One line of the file: which message, how many deliveries it took, and when SQS accepted
    it (SentTimestamp) and the worker finished it."""

    id: str
    body: str
    receive_count: int
    sent_at: Optional[datetime]
    processed_at: datetime

    @classmethod
    def of(cls, message: ReceivedMessage, *, processed_at_s: float) -> "ProcessedRecord":
        sent_at = None if message.sent_at_s is None else _utc(message.sent_at_s)
        return cls(message.id, message.body, message.receive_count, sent_at, _utc(processed_at_s))

    def to_line(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "body": self.body,
                "receive_count": self.receive_count,
                "sent_at": None if self.sent_at is None else _iso(self.sent_at),
                "processed_at": _iso(self.processed_at),
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_line(cls, line: str) -> "ProcessedRecord":
        """Raises ValueError (or KeyError) for a line that is not a whole record."""
        fields = json.loads(line)
        sent_at = fields.get("sent_at")
        return cls(
            id=fields["id"],
            body=fields["body"],
            receive_count=int(fields["receive_count"]),
            sent_at=None if sent_at is None else datetime.fromisoformat(sent_at),
            processed_at=datetime.fromisoformat(fields["processed_at"]),
        )


class OutputWriter:
    """Appends records to a stream, whole lines only: the worker's settler writes, and each
    delete call flushes on its own thread.

    `write` only holds a record; `flush` writes all those held in one call. The worker flushes
    before each DeleteMessageBatch, so that a message's record is out before its delete: one
    write per batch instead of one per message, which at a few thousand messages a second was
    a good part of a worker's CPU.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._held: list[str] = []
        self._lock = threading.Lock()  # guards _held
        self._writing = threading.Lock()  # one flush at a time: lines leave whole and in order

    def write(self, record: ProcessedRecord) -> None:
        line = record.to_line() + "\n"
        with self._lock:
            self._held.append(line)

    def flush(self) -> None:
        with self._writing:
            with self._lock:
                lines, self._held = self._held, []
            if lines:
                self.stream.write("".join(lines))
                self.stream.flush()


def parse_lines(lines: list[str]) -> list[ProcessedRecord]:
    """The whole records among `lines`, in order; a torn or foreign line is skipped."""
    records = []
    for line in lines:
        try:
            records.append(ProcessedRecord.from_line(line))
        except (ValueError, KeyError, TypeError):
            continue
    return records


def read_records(path: Path) -> list[ProcessedRecord]:
    """Every whole record of the file at `path`, in order; none when there is no file."""
    if not path.exists():
        return []
    return parse_lines(path.read_text(encoding="utf-8").splitlines())


def read_appended(path: Path, offset: int) -> tuple[int, list[ProcessedRecord]]:
    """The records written to `path` after byte `offset`, and the offset after them: a line
    still being written is left for the next look."""
    if not path.exists():
        return offset, []
    with open(path, "rb") as file:
        file.seek(offset)
        data = file.read()
    complete = data[: data.rfind(b"\n") + 1]
    return offset + len(complete), parse_lines(complete.decode("utf-8").splitlines())


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")
