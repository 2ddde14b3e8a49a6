"""Where the console's rates come from: the writers' and workers' own `/metrics` pages
(CONSOLE_SCRAPE), or a Prometheus server that scrapes them (PROMETHEUS_URL). Either way a reading
gives the same figures: messages a second by outcome, and the end-to-end latency's p50 and p99
over the last minute.

The queue's figures do not come from here: SQS itself answers them (`feed.py`), true for any
number of writers and workers.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Deque, Optional, Protocol

from prometheus_client.parser import text_string_to_metric_families

from ..metrics import quantile

#: The rates the console charts, by name: the writer's accepted and refused messages, the
#: worker's processed, failed and dead-lettered ones (per second).
RATES = ("accepted", "refused", "processed", "failed", "dead_lettered")
#: The span of time the latency percentiles cover, as PromQL's `rate(...[1m])` would.
LATENCY_WINDOW_S = 60.0
#: How long a scrape or a Prometheus query may take before the reading goes on without it.
FETCH_TIMEOUT_S = 2.0

#: Which counter (sample name, labels) feeds each rate; `refused` is every writer outcome but
#: accepted.
_COUNTERS = {
    "processed": "worker_messages_processed_total",
    "failed": "worker_messages_failed_total",
    "dead_lettered": "worker_messages_dead_lettered_total",
}
_WRITER_MESSAGES = "writer_messages_total"
_LATENCY = "worker_end_to_end_latency_seconds"

#: The same figures as PromQL, for a Prometheus server.
PROMQL = {
    "accepted": 'sum(rate(writer_messages_total{outcome="accepted"}[1m]))',
    "refused": 'sum(rate(writer_messages_total{outcome!="accepted"}[1m]))',
    "processed": "sum(rate(worker_messages_processed_total[1m]))",
    "failed": "sum(rate(worker_messages_failed_total[1m]))",
    "dead_lettered": "sum(rate(worker_messages_dead_lettered_total[1m]))",
    "p50_s": f"histogram_quantile(0.5, sum by (le) (rate({_LATENCY}_bucket[1m])))",
    "p99_s": f"histogram_quantile(0.99, sum by (le) (rate({_LATENCY}_bucket[1m])))",
}


@dataclasses.dataclass(frozen=True)
class SourceState:
    """One place the figures are read from, and how its last reading went."""

    url: str
    ok: bool
    error: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Figures:
    """One reading: rates a second (None until two readings exist, or nothing answered) and the
    latency percentiles in seconds (None without messages in the window)."""

    rates: dict[str, Optional[float]]
    p50_s: Optional[float]
    p99_s: Optional[float]
    sources: tuple[SourceState, ...]


class Source(Protocol):
    def read(self, now_s: float) -> Figures: ...


@dataclasses.dataclass
class _Scraped:
    """What one /metrics page said at one moment: counter totals, and the latency buckets."""

    at_s: float
    counters: dict[str, float]
    buckets: dict[float, float]


def parse_metrics(text: str) -> tuple[dict[str, float], dict[float, float]]:
    """The counters the console reads, and the end-to-end latency's cumulative buckets, from a
    Prometheus text page."""
    counters = dict.fromkeys(RATES, 0.0)
    latency: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == _WRITER_MESSAGES:
                counters["accepted" if sample.labels.get("outcome") == "accepted" else "refused"] += sample.value
            elif sample.name == _LATENCY + "_bucket":
                bound = float(sample.labels["le"])
                latency[bound] = latency.get(bound, 0.0) + sample.value
            else:
                for rate, name in _COUNTERS.items():
                    if sample.name == name:
                        counters[rate] += sample.value
    return counters, latency


def _increase(now: float, before: float) -> float:
    """A counter's increase between two readings; a counter that went down restarted from 0."""
    return now - before if now >= before else now


class Scrape:
    """Reads every CONSOLE_SCRAPE URL each time. Rates come from each page's counters against
    its previous reading (a restarted process counts from zero, as PromQL's `rate` takes it);
    the sum over pages is the system's. A page that does not answer is left out of that
    reading and said so, and its next reading starts afresh."""

    def __init__(self, urls: tuple[str, ...], timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self.urls = urls
        self.timeout_s = timeout_s
        self._previous: dict[str, _Scraped] = {}
        # Each reading's new latency observations, summed over pages, by bucket bound.
        self._latency: Deque[tuple[float, dict[float, float]]] = collections.deque()

    def _fetch(self, url: str) -> str:
        with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
            return response.read().decode("utf-8", "replace")

    def read(self, now_s: float) -> Figures:
        sums: dict[str, Optional[float]] = dict.fromkeys(RATES)
        new_latency: dict[float, float] = {}
        states = []
        for url in self.urls:
            try:
                counters, latency = parse_metrics(self._fetch(url))
            except (OSError, ValueError) as exc:
                self._previous.pop(url, None)
                states.append(SourceState(url, ok=False, error=_short(exc)))
                continue
            states.append(SourceState(url, ok=True))
            before, self._previous[url] = self._previous.get(url), _Scraped(now_s, counters, latency)
            if before is None or now_s <= before.at_s:
                continue
            for rate in RATES:
                per_s = _increase(counters[rate], before.counters[rate]) / (now_s - before.at_s)
                sums[rate] = (sums[rate] or 0.0) + per_s
            for bound, count in latency.items():
                new_latency[bound] = new_latency.get(bound, 0.0) + _increase(count, before.buckets.get(bound, 0.0))
        self._latency.append((now_s, new_latency))
        while self._latency and self._latency[0][0] <= now_s - LATENCY_WINDOW_S:
            self._latency.popleft()
        window: dict[float, float] = {}
        for _, observed in self._latency:
            for bound, count in observed.items():
                window[bound] = window.get(bound, 0.0) + count
        cumulative = sorted(window.items())
        return Figures(sums, quantile(cumulative, 0.5), quantile(cumulative, 0.99), tuple(states))


class Prometheus:
    """Asks a Prometheus server (PROMETHEUS_URL) for the same figures as PromQL, each reading:
    the rates over its last minute, summed over every writer and worker it scrapes."""

    def __init__(self, url: str, timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, promql: str) -> Optional[float]:
        """An instant query's value: the sum of its vector, None for an empty one or NaN."""
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(address, timeout=self.timeout_s) as response:
            answer = json.loads(response.read())
        if answer.get("status") != "success":
            raise ValueError(f"Prometheus: {answer.get('error', 'no success')}")
        values = [float(item["value"][1]) for item in answer["data"]["result"]]
        values = [value for value in values if not math.isnan(value)]
        return sum(values) if values else None

    def read(self, now_s: float) -> Figures:
        try:
            figures = {name: self.query(promql) for name, promql in PROMQL.items()}
        except (OSError, ValueError, KeyError) as exc:
            return Figures(dict.fromkeys(RATES), None, None, (SourceState(self.url, ok=False, error=_short(exc)),))
        return Figures(
            {rate: figures[rate] for rate in RATES},
            figures["p50_s"],
            figures["p99_s"],
            (SourceState(self.url, ok=True),),
        )


def _short(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        error = error.reason if isinstance(error.reason, BaseException) else error
    return f"{type(error).__name__}: {error}"[:200]
