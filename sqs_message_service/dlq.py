"""Dead letters: the reasons a worker gives a message it dead-letters, listing them, and moving
dead letters back to the source queue (redrive) once the cause is fixed.

    queue-dlq list [--max N] [--bodies]          (python -m sqs_message_service.dlq, in a checkout)
    queue-dlq redrive [--max N] [--rate R] [--method auto|move-task|receive]

Listing consumes nothing: what it received is made visible again at once. Redrive uses SQS's
own StartMessageMoveTask where the endpoint has it, and otherwise receives, sends to the source
queue, then deletes, in that order: an interrupted redrive can leave a message in both queues,
never in neither.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
from datetime import datetime
from typing import Any, Callable, Mapping, Optional, Sequence, TextIO

from .aws import create_client
from .cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .rules import MAX_ATTRIBUTES, payload_bytes
from .settings import settings_for_command
from .sqs import BATCH_MAX_ENTRIES, OutgoingMessage, ReceivedMessage, SqsError, SqsQueue

#: The attributes a dead letter gets from the worker that moved it; `SOURCE_ID` holds the id the
#: message had in the source queue (the copy in the dead-letter queue gets an id of its own).
DEAD_LETTER_PREFIX = "dead_letter."
SOURCE_ID = DEAD_LETTER_PREFIX + "source_id"
#: How much of an error's text travels with a dead letter.
ERROR_TEXT_CHARS = 256
#: The earlier failed attempts a worker saw of a message, as a JSON list of
#: [receive count, ISO time, error type, error text]: only where the message's own attributes
#: leave room for a seventh (SQS allows ten), the latest EARLIER_MAX of them, each error text
#: cut to EARLIER_TEXT_CHARS.
EARLIER = DEAD_LETTER_PREFIX + "earlier"
EARLIER_MAX = 9
EARLIER_TEXT_CHARS = 120
#: Messages whose failures a worker remembers, for EARLIER, before the oldest are forgotten.
HISTORY_MAX_MESSAGES = 10_000

#: How long a listed or moving message stays hidden from others while this tool holds it.
HOLD_S = 60
#: Seconds between looks at a move task's progress.
MOVE_TASK_POLL_S = 1.0

Progress = Callable[[int, Optional[int]], None]

log = logging.getLogger(__name__)


def error_text(error: BaseException, chars: int = ERROR_TEXT_CHARS) -> str:
    """An error's text as it travels with a dead letter: printable characters only, cut short."""
    return "".join(c if c.isprintable() else " " for c in str(error))[:chars].strip() or "(no message)"


def failure_attributes(
    message: ReceivedMessage, error: BaseException, *, worker_id: str, at: datetime
) -> dict[str, str]:
    """Why a message is dead-lettered, as message attributes an operator can read in any SQS
    console: its source id, the error's type and text, the attempts, which worker, when."""
    return {
        SOURCE_ID: message.id,
        DEAD_LETTER_PREFIX + "error_type": type(error).__name__,
        DEAD_LETTER_PREFIX + "error": error_text(error),
        DEAD_LETTER_PREFIX + "attempts": str(message.receive_count),
        DEAD_LETTER_PREFIX + "worker": worker_id,
        DEAD_LETTER_PREFIX + "at": at.isoformat(timespec="milliseconds"),
    }


def send_dead_letter(
    dead_letter_queue: SqsQueue,
    message: ReceivedMessage,
    reasons: dict[str, str],
    *,
    max_message_bytes: int,
    earlier: Sequence[Sequence[Any]] = (),
) -> bool:
    """Send a copy of `message` to the dead-letter queue with `reasons` (failure_attributes) in
    place of any earlier reasons it carries (a redriven message's), and the `earlier` attempts'
    errors (EARLIER) where a seventh attribute fits, in number and in size. True once SQS has
    it; False, leaving the message to SQS's redrive policy, when the reasons do not fit beside
    its own attributes or SQS refuses the send. The copy keeps the message's body, group, trace
    context and Idempotency-Key (AWSTraceHeader, or its own attributes); on a FIFO dead-letter
    queue its source id deduplicates it."""
    own = without_reasons(message.attributes)
    if len(own) + len(reasons) > MAX_ATTRIBUTES or payload_bytes(message.body, {**own, **reasons}) > max_message_bytes:
        log.info(
            "message %r has %d attributes: no room for the reasons; SQS's redrive policy moves it", message.id, len(own)
        )
        return False
    history = earlier_attribute(earlier)
    if (
        history
        and len(own) + len(reasons) + 1 <= MAX_ATTRIBUTES
        and payload_bytes(message.body, {**own, **reasons, **history}) <= max_message_bytes
    ):
        reasons = {**reasons, **history}
    copy = OutgoingMessage(
        body=message.body,
        attributes={**own, **reasons},
        group_id=message.group_id,
        deduplication_id=message.id if dead_letter_queue.is_fifo else None,
        trace_header=message.trace_header,
    )
    (result,) = dead_letter_queue.send([copy])
    if result.error is not None:
        log.warning(
            "message %r not sent to the dead-letter queue (%s); SQS's redrive policy moves it", message.id, result.error
        )
    return result.ok


class FailureHistory:
    """The failed attempts a worker saw of the messages that are to come back, so that a dead
    letter can carry each attempt's error and not only the last (EARLIER). One worker sees the
    attempts it received; those another worker received are in that worker's log. Bounded: past
    HISTORY_MAX_MESSAGES messages the oldest are forgotten. Used by the settler's one thread."""

    def __init__(self, max_messages: int = HISTORY_MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        self._attempts: collections.OrderedDict[str, list[list[Any]]] = collections.OrderedDict()

    def failed(self, message: ReceivedMessage, error: BaseException, at: datetime) -> None:
        attempts = self._attempts.pop(message.id, [])
        attempts.append(
            [
                message.receive_count,
                at.isoformat(timespec="milliseconds"),
                type(error).__name__,
                error_text(error, EARLIER_TEXT_CHARS),
            ]
        )
        self._attempts[message.id] = attempts[-EARLIER_MAX:]
        while len(self._attempts) > self.max_messages:
            self._attempts.popitem(last=False)

    def forget(self, message_id: str) -> list[list[Any]]:
        """The attempts remembered of a message, forgotten now (it succeeded or is dead-lettered)."""
        return self._attempts.pop(message_id, [])

    def __len__(self) -> int:
        return len(self._attempts)


def earlier_attribute(attempts: Sequence[Sequence[Any]]) -> dict[str, str]:
    """EARLIER for these earlier attempts; none when there were none."""
    if not attempts:
        return {}
    return {EARLIER: json.dumps([list(attempt) for attempt in attempts[-EARLIER_MAX:]], separators=(",", ":"))}


def reasons(message: ReceivedMessage) -> dict[str, Any]:
    """What the worker recorded of a dead letter, read back: each attempt's failure (earlier
    ones as far as that worker saw them, then the last), the receive count, the first and last
    failure times and the source message id. `recorded` is False for one SQS's redrive policy
    moved (no worker wrote reasons: the worker's log has them)."""
    attributes = message.attributes
    if SOURCE_ID not in attributes:
        return {
            "recorded": False,
            "source_id": None,
            "attempts": None,
            "worker": None,
            "failures": [],
            "first_failure_at": None,
            "last_failure_at": None,
        }
    # Attributes are the sender's to write too: anything that is not what a worker writes is
    # left out, never an error that would stop a listing.
    try:
        earlier = json.loads(attributes.get(EARLIER, "[]"))
    except ValueError:
        earlier = []
    failures = [
        failure
        for failure in map(_earlier_failure, earlier if isinstance(earlier, list) else [])
        if failure is not None
    ]
    last_at = attributes.get(DEAD_LETTER_PREFIX + "at")
    attempts = _count(attributes.get(DEAD_LETTER_PREFIX + "attempts"))
    failures.append(
        {
            "attempt": attempts,
            "at": last_at,
            "error_type": attributes.get(DEAD_LETTER_PREFIX + "error_type"),
            "error": attributes.get(DEAD_LETTER_PREFIX + "error"),
        }
    )
    return {
        "recorded": True,
        "source_id": attributes[SOURCE_ID],
        "attempts": attempts,
        "worker": attributes.get(DEAD_LETTER_PREFIX + "worker"),
        "failures": failures,
        "first_failure_at": failures[0]["at"],
        "last_failure_at": last_at,
    }


def _count(text: Any) -> Optional[int]:
    """A receive count as a worker writes it (ASCII digits, a few of them); None for anything else."""
    text = str(text)
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None


def _earlier_failure(entry: Any) -> Optional[dict[str, Any]]:
    if not isinstance(entry, list) or len(entry) != 4:
        return None
    attempt, at, kind, text = entry
    return {"attempt": _count(attempt), "at": str(at), "error_type": str(kind), "error": str(text)}


def without_reasons(attributes: Mapping[str, str]) -> dict[str, str]:
    """A message's own attributes, without the dead_letter.* ones a worker added."""
    return {name: value for name, value in attributes.items() if not name.startswith(DEAD_LETTER_PREFIX)}


def sample(dead_letter_queue: SqsQueue, *, max_messages: int, next_wait_s: int = 1) -> list[ReceivedMessage]:
    """Up to `max_messages` dead letters, read and given back: SQS has no peek, so each is
    received (hidden for HOLD_S, so that one reading does not see a message twice) and made
    visible again before this returns, consuming nothing. The first receive waits up to a
    second for a message; the next ones `next_wait_s`: 0 ends a reading of a small queue at
    once, where on real SQS a short poll may miss some (it asks only some of SQS's servers)."""
    held: dict[str, ReceivedMessage] = {}  # by id, with its newest receipt handle
    try:
        while len(held) < max_messages:
            batch = dead_letter_queue.receive(
                max_messages=min(BATCH_MAX_ENTRIES, max_messages - len(held)),
                wait_s=1 if not held else next_wait_s,
                visibility_timeout_s=HOLD_S,
            )
            if not batch:
                break
            held.update((message.id, message) for message in batch)
    finally:
        if held:
            dead_letter_queue.change_visibility([(message.receipt_handle, 0) for message in held.values()])
    return list(held.values())


def list_dead_letters(dead_letter_queue: SqsQueue, *, max_messages: int, bodies: bool, out: TextIO) -> int:
    """Print up to `max_messages` dead letters with their reasons; returns how many. They are
    made visible again before this returns, so nothing is consumed."""
    held = sample(dead_letter_queue, max_messages=max_messages)
    for message in held:
        out.write(describe(message, body=bodies) + "\n")
    noun = "dead letter" if len(held) == 1 else "dead letters"
    out.write(f"{len(held)} {noun} shown ({dead_letter_queue.name!r})\n")
    return len(held)


def describe(message: ReceivedMessage, *, body: bool) -> str:
    """A dead letter: its source id and why its last attempt failed, as the worker recorded it,
    then a line for each earlier failed attempt that worker saw (as the console shows them)."""
    attributes = message.attributes

    def reason(name: str) -> str:
        return attributes.get(DEAD_LETTER_PREFIX + name, "?")

    if SOURCE_ID in attributes:
        why = (
            f"{reason('attempts')} attempts, {reason('at')}, {reason('worker')}: "
            f"{reason('error_type')}: {reason('error')}"
        )
    else:
        why = "moved by SQS's redrive policy: no reason recorded (see the worker's log)"
    lines = [f"{attributes.get(SOURCE_ID, message.id)}  {why}"]
    for failure in reasons(message)["failures"][:-1]:  # the last is the line above
        attempt = "?" if failure["attempt"] is None else failure["attempt"]
        lines.append(f"    attempt {attempt}, {failure['at']}: {failure['error_type']}: {failure['error']}")
    if body:
        lines.append(f"    body: {message.body!r}")
    return "\n".join(lines)


def back_to_source(message: ReceivedMessage, *, fifo: bool) -> OutgoingMessage:
    """The message as the source queue first had it: its own attributes, not the reasons. On
    FIFO, the dead letter's id deduplicates a send repeated by an interrupted redrive."""
    return OutgoingMessage(
        body=message.body,
        attributes=without_reasons(message.attributes),
        group_id=message.group_id if fifo else None,
        deduplication_id=message.id if fifo else None,
    )


def redrive_by_hand(
    dead_letter_queue: SqsQueue,
    source: SqsQueue,
    *,
    max_messages: Optional[int],
    rate: Optional[float],
    progress: Progress,
) -> int:
    """Receive, send to the source, then delete, a batch (ten) at a time; returns how many moved. Stops
    at the first send SQS refuses, leaving that message in the dead-letter queue."""
    moved, started = 0, time.monotonic()
    while max_messages is None or moved < max_messages:
        wanted = BATCH_MAX_ENTRIES if max_messages is None else min(BATCH_MAX_ENTRIES, max_messages - moved)
        batch = dead_letter_queue.receive(max_messages=wanted, wait_s=1, visibility_timeout_s=HOLD_S)
        if not batch:
            break
        results = source.send([back_to_source(message, fifo=source.is_fifo) for message in batch])
        sent = [message for message, result in zip(batch, results, strict=True) if result.ok]
        dead_letter_queue.delete_messages([message.receipt_handle for message in sent])
        moved += len(sent)
        progress(moved, max_messages)
        refused = [(message, result) for message, result in zip(batch, results, strict=True) if not result.ok]
        if refused:
            dead_letter_queue.change_visibility([(message.receipt_handle, 0) for message, _ in refused])
            raise SqsError(f"the source queue refused a message: {refused[0][1].error}")
        if rate:
            time.sleep(max(0.0, started + moved / rate - time.monotonic()))
    return moved


def redrive_with_move_task(
    dead_letter_queue: SqsQueue, source: SqsQueue, *, rate: Optional[float], progress: Progress
) -> int:
    """Let SQS move every dead letter back (StartMessageMoveTask) and follow its progress."""
    handle = dead_letter_queue.start_move_task(
        destination_arn=source.arn, max_per_second=None if rate is None else max(1, min(500, int(rate)))
    )
    while True:
        task = dead_letter_queue.move_task(handle)
        moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        progress(moved, task.get("ApproximateNumberOfMessagesToMove"))
        if task["Status"] == "COMPLETED":
            return moved
        if task["Status"] in ("FAILED", "CANCELLED", "UNKNOWN"):
            raise SqsError(f"the move task ended {task['Status']}: {task.get('FailureReason', 'no reason given')}")
        time.sleep(MOVE_TASK_POLL_S)


def redrive(
    dead_letter_queue: SqsQueue,
    source: SqsQueue,
    *,
    method: str = "auto",
    max_messages: Optional[int] = None,
    rate: Optional[float] = None,
    progress: Progress = lambda moved, total: None,
    say: Callable[[str], None] = print,
) -> int:
    """Move dead letters back to `source`; returns how many. `auto`: SQS's move task, unless a
    --max is asked for (a move task moves everything) or the endpoint does not have it."""
    if method == "move-task" or (method == "auto" and max_messages is None):
        try:
            return redrive_with_move_task(dead_letter_queue, source, rate=rate, progress=progress)
        except SqsError as exc:
            if method == "move-task":
                raise
            say(f"StartMessageMoveTask is not available here ({exc}); moving by receive, send, delete")
    return redrive_by_hand(dead_letter_queue, source, max_messages=max_messages, rate=rate, progress=progress)


def progress_bar(out: TextIO) -> Progress:
    """Redrive progress on one line of a terminal, or a line per 100 messages in a log."""
    shown = [0]

    def show(moved: int, total: Optional[int]) -> None:
        if out.isatty():
            width, fraction = 30, (min(1.0, moved / total) if total else 0.0)
            bar = "#" * int(width * fraction) + "." * (width - int(width * fraction))
            out.write(f"\rredrive [{bar}] {moved}" + (f"/{total}" if total else ""))
        elif moved - shown[0] >= 100:
            out.write(f"redrive: {moved} moved\n")
            shown[0] = moved
        out.flush()

    return show


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Dead letters of QUEUE_NAME's dead-letter queue (DLQ_NAME): list them with "
        "their reasons, or move them back to QUEUE_NAME. Settings come from the environment."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="show dead letters and why they failed; consumes none")
    listing.add_argument("--max", type=int, default=100, help="show at most this many (default %(default)s)")
    listing.add_argument("--bodies", action="store_true", help="show each body too (off: bodies may be private)")
    moving = commands.add_parser("redrive", help="move dead letters back to the source queue")
    moving.add_argument("--max", type=int, help="move at most this many (default: all)")
    moving.add_argument("--rate", type=float, help="messages per second at most (default: as fast as SQS goes)")
    moving.add_argument(
        "--method",
        choices=("auto", "move-task", "receive"),
        default="auto",
        help="auto (default): StartMessageMoveTask where the endpoint has it and no --max is "
        "given, else receive, send, delete",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """`queue-dlq list` or `redrive`. Exits 0 when done, 1 when SQS failed it, 2 when started
    wrongly, as every entry point does (cli.py)."""
    settings = settings_for_command("dlq")
    if settings is None:
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    client = create_client(settings)
    dead_letter_queue, source = SqsQueue(settings.dlq_name, client), SqsQueue(settings.queue_name, client)
    try:
        if args.command == "list":
            list_dead_letters(dead_letter_queue, max_messages=args.max, bodies=args.bodies, out=sys.stdout)
            return EXIT_OK
        moved = redrive(
            dead_letter_queue,
            source,
            method=args.method,
            max_messages=args.max,
            rate=args.rate,
            progress=progress_bar(sys.stderr),
        )
    except SqsError as exc:
        print(f"\ndlq: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"\nredrive: {moved} messages moved from {settings.dlq_name!r} back to {settings.queue_name!r}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
