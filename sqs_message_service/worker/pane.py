"""The operator's view of a running worker: every STATS_INTERVAL the stats of the last interval
and both queues' depths, as a block that fits a narrow tmux pane; at the end, the summary."""

from __future__ import annotations

from typing import Any, Optional, TextIO

from ..metrics import StatsMark, WorkerStats, milliseconds
from ..sqs import SqsError
from .engine import Worker
from .part import Part


def render_stats(
    title: str,
    snapshot: dict[str, Any],
    *,
    in_flight: int,
    per_second: float,
    depths: dict[str, Optional[dict[str, int]]],
    sqs_requests: int = 0,
    ledger_errors: Optional[int] = None,
) -> str:
    """The stats as a block that fits a narrow (28-column) tmux pane; with the processed ledger
    (`ledger_errors` given), its duplicates and errors too."""
    lines = [
        f"{title}  up {snapshot['uptime_s']:.0f}s",
        f"received      {snapshot['received']:>9}",
        f"processed     {snapshot['processed']:>9}",
        f"failed        {snapshot['failed']:>9}",
        f"retried       {snapshot['retried']:>9}",
        f"dead-lettered {snapshot['dead_lettered']:>9}",
        f"deleted       {snapshot['deleted']:>9}",
        f"in flight     {in_flight:>9}",
        f"msg/s         {per_second:>9.1f}",
        f"latency p50 {milliseconds(snapshot['latency_p50_s']):>11}",
        f"latency p99 {milliseconds(snapshot['latency_p99_s']):>11}",
        f"e2e p50     {milliseconds(snapshot['end_to_end_p50_s']):>11}",
        f"e2e p99     {milliseconds(snapshot['end_to_end_p99_s']):>11}",
        f"sqs requests  {sqs_requests:>9}",
        f"sqs req/msg   {per_message(sqs_requests, snapshot['processed']):>9}",
    ]
    if ledger_errors is not None:
        lines += [
            f"duplicates    {snapshot['duplicates']:>9}",
            f"held          {snapshot['held']:>9}",
            f"ledger errors {ledger_errors:>9}",
        ]
    for label, depth in depths.items():
        if depth is None:
            lines.append(f"{label:<6}  (unavailable)")
        else:
            lines.append(f"{label:<6} visible {depth['visible']:>9}")
            lines.append(f"{'':<6} hidden  {depth['in_flight'] + depth['delayed']:>9}")
    return "\n".join(lines)


def per_message(requests: int, processed: int) -> str:
    """Requests per processed message; "-" before the first, where a ratio would be a count."""
    return f"{requests / processed:.2f}" if processed else "-"


def poll_depths(worker: Worker) -> dict[str, Optional[dict[str, int]]]:
    """Both queues' depths, into the sqs_queue_messages gauges; None for one SQS did not give."""
    depths: dict[str, Optional[dict[str, int]]] = {}
    for label, queue in (("queue", worker.queue), ("dlq", worker.dead_letter_queue)):
        try:
            depth = queue.depth()
        except SqsError:
            depths[label] = None
            continue
        for state, messages in depth.items():
            worker.metrics.queue_messages.labels(queue.name, state).set(messages)
        depths[label] = depth
    return depths


class StatsPane(Part):
    """Every STATS_INTERVAL, the queues' depths into the metrics and, on `out`, the stats of the
    last interval; at the end, the summary of the whole run."""

    def __init__(self, worker: Worker, stats: WorkerStats, out: Optional[TextIO], interval_s: float) -> None:
        super().__init__("stats")
        self.worker, self.stats, self.out, self.interval_s = worker, stats, out, interval_s

    def __enter__(self) -> "StatsPane":
        self.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop()
        self.join(10)
        self.report("summary")

    def run(self) -> None:
        mark: Optional[StatsMark] = None
        while not self.pause(self.interval_s):
            mark = self.report("worker", since=mark)

    def report(self, title: str, since: Optional[StatsMark] = None) -> StatsMark:
        snapshot, mark = self.stats.snapshot(since=since)
        depths = poll_depths(self.worker)
        if self.out is not None:
            text = render_stats(
                title,
                snapshot,
                in_flight=len(self.worker.in_flight),
                per_second=snapshot["processed_per_s"],
                depths=depths,
                sqs_requests=self.stats.billable_requests,
                ledger_errors=self.stats.ledger_errors if self.worker.processed is not None else None,
            )
            clear = "\x1b[H\x1b[2J" if title != "summary" and self.out.isatty() else ""
            self.out.write(f"{clear}{text}\n\n")
            self.out.flush()
        return mark
