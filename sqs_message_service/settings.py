"""Every setting of the writer, the worker and the tools, read once from the environment.

`Settings.from_env()` is the only place that reads `os.environ`; everything else is handed a
`Settings`. A bad value stops the program at start with an error that names the variable.

Each setting is declared once, as a field with its variable, help, bounds and the parts that
use it (`setting`); parsing, the checks, the command-line options that override settings
(`add_option`) and the docs' table (`configuration_table`, `python config.py`) all come from
that declaration. A part reads only its own settings and the shared ones
(`Settings.from_env(role=...)`), so that a writer-only setting set wrong never stops a worker.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging.config
import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, get_args, get_type_hints

#: The distribution's name: `pip install sqs-message-service`.
DISTRIBUTION = "sqs-message-service"

#: The directory holding swagger.yml and log.conf: the package's own, in a checkout (where they
#: link to the files at the top), in the wheel and in the image alike.
DATA_DIR = Path(__file__).resolve().parent

#: The parts a setting can be for; the tools (sqs_setup, queue-dlq) read every setting.
Role = Literal["writer", "worker", "console"]
WRITER: frozenset[str] = frozenset({"writer"})
WORKER: frozenset[str] = frozenset({"worker"})
CONSOLE: frozenset[str] = frozenset({"console"})
SHARED: frozenset[str] = WRITER | WORKER | CONSOLE
#: The parts that serve HTTP to clients, with the socket's limits (serving.py).
SERVED: frozenset[str] = WRITER | CONSOLE

#: SQS's own ceiling for one message (body plus attributes) since August 2025; queues default
#: to 256 KiB, which is our default too.
SQS_MAX_MESSAGE_BYTES_CEILING = 1_048_576

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,75}(\.fifo)?$")
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_STEP_URL = re.compile(r"^https?://[^/\s]+(/\S*)?$")


class ConfigError(ValueError):
    """A setting from the environment is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class Declared:
    """What a field of Settings says of itself: its variable, what it means, its bounds."""

    env: str
    help: str
    bounds: Optional[tuple[float, float]] = None  # inclusive, for a number
    default_text: Optional[str] = None  # how the docs show a default that is not a plain value
    roles: frozenset[str] = SHARED  # the parts that read it

    @property
    def roles_text(self) -> str:
        return "all" if self.roles == SHARED else ", ".join(sorted(self.roles))

    @property
    def range_text(self) -> str:
        return "" if self.bounds is None else " to ".join(_shown(bound) for bound in self.bounds)


def setting(
    default: Any,
    env: str,
    help: str,
    *,
    bounds: Optional[tuple[float, float]] = None,
    default_text: Optional[str] = None,
    roles: frozenset[str] = SHARED,
) -> Any:
    """Declare a field of Settings: its default, its environment variable, a one-line help, for
    a number its inclusive bounds, and the parts that read it (every part unless `roles` says).
    Parsing, checks, --help and the docs' table follow."""
    declared = Declared(env=env, help=help, bounds=bounds, default_text=default_text, roles=roles)
    return field(default=default, metadata={"setting": declared})


@dataclass(frozen=True)
class Settings:
    """All settings, with their defaults. Field names carry units."""

    sqs_endpoint_url: Optional[str] = setting(
        None,
        "SQS_ENDPOINT_URL",
        "an SQS-compatible endpoint, e.g. http://127.0.0.1:4566; unset: real AWS",
    )
    aws_region: str = setting("us-east-1", "AWS_REGION", "the region of the queue")
    queue_name: str = setting("messages", "QUEUE_NAME", "the queue; a name ending in .fifo means a FIFO queue")
    dlq_name: str = setting(
        "",
        "DLQ_NAME",
        "the dead-letter queue",
        default_text="<queue>-dlq (<name>-dlq.fifo for FIFO)",
    )
    max_receive_count: int = setting(
        3,
        "MAX_RECEIVE_COUNT",
        "receives before a message goes to the dead-letter queue",
        bounds=(1, 1000),
    )
    visibility_timeout_s: int = setting(
        30,
        "VISIBILITY_TIMEOUT",
        "seconds a received message stays hidden (queue attribute)",
        bounds=(0, 43_200),
    )
    receive_wait_s: int = setting(
        20,
        "RECEIVE_WAIT_SECONDS",
        "long-poll wait of a receive (queue attribute)",
        bounds=(0, 20),
    )
    max_message_bytes: int = setting(
        262_144,
        "MAX_MESSAGE_BYTES",
        "the largest message (body and attributes, UTF-8), up to SQS's 1 MiB; also set on the queue",
        bounds=(1024, SQS_MAX_MESSAGE_BYTES_CEILING),
    )
    max_request_bytes: int = setting(
        2_097_152,
        "MAX_REQUEST_BYTES",
        "the largest request body the writer reads; a larger one is 413 before it is read whole",
        bounds=(1024, 256 * 1_048_576),
        roles=WRITER,
    )
    host: str = setting(
        "127.0.0.1",
        "HOST",
        "the address the writer, the worker's metrics and the console bind; loopback unless you choose",
    )
    port: int = setting(5000, "PORT", "the writer's port", bounds=(1, 65_535), roles=WRITER)
    writer_processes: int = setting(
        1,
        "WRITER_PROCESSES",
        "writer processes serving the one port (uvicorn workers)",
        bounds=(1, 64),
        roles=WRITER,
    )
    sqs_connect_timeout_s: float = setting(
        2.0,
        "SQS_CONNECT_TIMEOUT",
        "seconds to connect to SQS",
        bounds=(0.05, 60),
    )
    sqs_read_timeout_s: float = setting(
        5.0,
        "SQS_READ_TIMEOUT",
        "seconds to wait for an SQS answer",
        bounds=(0.05, 300),
    )
    sqs_max_attempts: int = setting(
        3,
        "SQS_MAX_ATTEMPTS",
        "attempts per SQS call, with botocore's standard retries (backoff, jitter)",
        bounds=(1, 10),
    )
    handler_threads: int = setting(
        64,
        "HANDLER_THREADS",
        "threads running the writer's handlers; one is kept for /api/health, and with the rest busy a "
        "request is 503 at once",
        bounds=(1, 1024),
        roles=WRITER,
    )
    send_concurrency: int = setting(
        4,
        "SEND_CONCURRENCY",
        "SendMessageBatch calls in flight at once under load (group commit)",
        bounds=(1, 64),
        roles=WRITER,
    )
    send_linger_s: float = setting(
        0.02,
        "SEND_LINGER",
        "seconds a message may wait for others to share its SendMessageBatch call while requests arrive "
        "in a stream; 0: never wait",
        bounds=(0, 1),
        roles=WRITER,
    )
    send_timeout_s: float = setting(
        10.0,
        "SEND_TIMEOUT",
        "the longest any request waits for SQS (a send, /api/ready, /api/stats); then 503",
        bounds=(0.1, 300),
        roles=WRITER,
    )
    retry_after_s: int = setting(
        1,
        "RETRY_AFTER",
        "the Retry-After seconds sent with a 503",
        bounds=(1, 3600),
        roles=WRITER,
    )
    max_queue_depth: Optional[int] = setting(
        None,
        "MAX_QUEUE_DEPTH",
        "the writer answers 503 while the queue holds more visible messages than this; unset: no backpressure",
        bounds=(1, 1_000_000_000),
        roles=WRITER,
    )
    depth_poll_interval_s: float = setting(
        5.0,
        "DEPTH_POLL_INTERVAL",
        "seconds between the writer's reads of the queue depth, for MAX_QUEUE_DEPTH",
        bounds=(0.1, 3600),
        roles=WRITER,
    )
    idempotency_window_s: float = setting(  # as long as SQS's own FIFO deduplication interval
        300.0,
        "IDEMPOTENCY_WINDOW",
        "seconds the writer remembers an Idempotency-Key",
        bounds=(1, 86_400),
        roles=WRITER,
    )
    idempotency_max_keys: int = setting(
        100_000,
        "IDEMPOTENCY_MAX_KEYS",
        "the most keys a writer remembers in memory; past that the oldest go first (about 37 MiB at 100,000)",
        bounds=(1, 10_000_000),
        roles=WRITER,
    )
    idempotency_table: str = setting(
        "",
        "IDEMPOTENCY_TABLE",
        "a DynamoDB table that keeps Idempotency-Keys for every writer process and replica; "
        "unset: each process keeps its own, in memory",
        roles=WRITER,
    )
    dynamodb_endpoint_url: Optional[str] = setting(
        None,
        "DYNAMODB_ENDPOINT_URL",
        "a DynamoDB-compatible endpoint for IDEMPOTENCY_TABLE and PROCESSED_TABLE, e.g. http://127.0.0.1:5001; "
        "unset: real AWS",
    )
    dynamodb_connect_timeout_s: float = setting(
        2.0,
        "DYNAMODB_CONNECT_TIMEOUT",
        "seconds to connect to DynamoDB",
        bounds=(0.05, 60),
    )
    dynamodb_read_timeout_s: float = setting(
        5.0,
        "DYNAMODB_READ_TIMEOUT",
        "seconds to wait for a DynamoDB answer",
        bounds=(0.05, 300),
    )
    dynamodb_max_attempts: int = setting(
        3,
        "DYNAMODB_MAX_ATTEMPTS",
        "attempts per DynamoDB call, with botocore's standard retries",
        bounds=(1, 10),
    )
    processed_table: str = setting(
        "",
        "PROCESSED_TABLE",
        "a DynamoDB table where the worker records what it processed, so that a redelivered message is not "
        "handed to the processing step again; unset: every delivery is processed",
        roles=WORKER,
    )
    processed_window_s: Optional[int] = setting(
        None,
        "PROCESSED_WINDOW",
        "seconds a message's record in PROCESSED_TABLE keeps it from being processed again",
        bounds=(60, 31_536_000),
        default_text="the queue's retention period",
        roles=WORKER,
    )
    worker_concurrency: int = setting(
        10,
        "WORKER_CONCURRENCY",
        "messages the worker processes at once",
        bounds=(1, 1000),
        roles=WORKER,
    )
    worker_cpu: Optional[int] = setting(
        None,
        "WORKER_CPU",
        "run the worker's threads on this one CPU (Linux), for a busy worker; unset: wherever the OS puts them",
        bounds=(0, 4095),
        roles=WORKER,
    )
    process_time_s: float = setting(
        0.005,
        "PROCESS_TIME",
        "seconds of simulated work per message",
        bounds=(0, 3600),
        roles=WORKER,
    )
    failure_rate: float = setting(
        0.1,
        "FAILURE_RATE",
        "probability that simulated work fails",
        bounds=(0, 1),
        roles=WORKER,
    )
    failure_seed: Optional[int] = setting(
        None,
        "FAILURE_SEED",
        "makes simulated failures repeatable; unset: random",
        roles=WORKER,
    )
    processor: str = setting(
        "",
        "PROCESSOR",
        "your processing step: module:function (a plain or an async def function), or an http:// or "
        "https:// URL each message is POSTed to; unset: the simulated work",
        roles=WORKER,
    )
    processing_timeout_s: float = setting(
        600.0,
        "PROCESSING_TIMEOUT",
        "seconds an attempt at a message may take; past it the attempt fails (timed out) and the message "
        "comes back after its backoff",
        bounds=(0.1, 43_200),
        roles=WORKER,
    )
    max_stuck_threads: Optional[int] = setting(
        None,
        "MAX_STUCK_THREADS",
        "threads of a plain step still running past PROCESSING_TIMEOUT that the worker replaces; at this "
        "many its /health answers 503",
        bounds=(0, 10_000),
        default_text="WORKER_CONCURRENCY",
        roles=WORKER,
    )
    retry_backoff_base_s: float = setting(
        1.0,
        "RETRY_BACKOFF_BASE",
        "seconds before a failed message's first retry; doubles with each receive",
        bounds=(0, 43_200),
        roles=WORKER,
    )
    retry_backoff_max_s: float = setting(
        60.0,
        "RETRY_BACKOFF_MAX",
        "the longest retry backoff, in seconds",
        bounds=(0, 43_200),
        roles=WORKER,
    )
    shutdown_grace_s: float = setting(
        30.0,
        "SHUTDOWN_GRACE",
        "seconds to finish in-flight work after SIGINT or SIGTERM",
        bounds=(0, 3600),
        roles=WORKER,
    )
    stats_interval_s: float = setting(
        2.0,
        "STATS_INTERVAL",
        "seconds between the worker's stats reports and queue depth reads",
        bounds=(0.1, 3600),
        roles=WORKER,
    )
    metrics_port: int = setting(
        9102,
        "METRICS_PORT",
        "the worker's Prometheus metrics port, on HOST; 0: none",
        bounds=(0, 65_535),
        roles=WORKER,
    )
    worker_output: Optional[Path] = setting(
        None,
        "WORKER_OUTPUT",
        "a file that gets one JSON line per processed message",
        roles=WORKER,
    )
    exit_when_idle_s: Optional[float] = setting(
        None,
        "EXIT_WHEN_IDLE",
        "the worker exits once the queue has been empty this many seconds",
        bounds=(0, 86_400),
        roles=WORKER,
    )
    api_keys: str = setting(
        "",
        "API_KEYS",
        "comma-separated keys the writer accepts in X-API-Key; unset: no key needed",
        roles=WRITER,
    )
    api_keys_file: Optional[Path] = setting(
        None,
        "API_KEYS_FILE",
        "a file of keys, one per line (# comments), added to API_KEYS",
        roles=WRITER,
    )
    read_keys: str = setting(
        "",
        "READ_KEYS",
        "comma-separated keys that may read, acknowledge and give back messages over HTTP (X-API-Key), apart "
        "from API_KEYS; unset: the read routes refuse every request",
        roles=WRITER,
    )
    read_max_lease_s: int = setting(
        300,
        "READ_MAX_LEASE",
        "the longest lease (visibility timeout, seconds) a reader may ask for or extend to",
        bounds=(1, 43_200),
        roles=WRITER,
    )
    read_max_wait_s: int = setting(
        20,
        "READ_MAX_WAIT",
        "the longest long poll (seconds) a reader may ask for; SQS's own limit is 20",
        bounds=(0, 20),
        roles=WRITER,
    )
    read_max_polls: int = setting(
        16,
        "READ_MAX_POLLS",
        "long polls a writer process holds at once, each on a handler thread; one more is 503 with Retry-After "
        "(keep it below HANDLER_THREADS)",
        bounds=(1, 1024),
        roles=WRITER,
    )
    read_token_secret: str = setting(
        "",
        "READ_TOKEN_SECRET",
        "a secret shared by every writer that serves reads: it signs the copy of a message its token carries on "
        "the last allowed receive, for the dead-letter queue; unset: one made at random per process",
        roles=WRITER,
    )
    console_port: int = setting(
        5050, "CONSOLE_PORT", "the operator console's port, on HOST", bounds=(1, 65_535), roles=CONSOLE
    )
    console_keys: str = setting(
        "",
        "CONSOLE_KEYS",
        "comma-separated keys that allow the console's actions (redrive, delete), separate from API_KEYS; "
        "unset: the console is read-only",
        roles=CONSOLE,
    )
    console_origin: str = setting(
        "",
        "CONSOLE_ORIGIN",
        "the console's address as browsers reach it behind a proxy, e.g. https://console.example.com: the one "
        "origin its actions may come from, and a Host it answers; unset: http://HOST:CONSOLE_PORT",
        roles=CONSOLE,
    )
    console_scrape: str = setting(
        "http://127.0.0.1:5000/metrics,http://127.0.0.1:9102/metrics",
        "CONSOLE_SCRAPE",
        "comma-separated /metrics URLs of the writers and workers the console charts (summed); "
        "unused when PROMETHEUS_URL is set",
        default_text="the writer's and the worker's of make run",
        roles=CONSOLE,
    )
    prometheus_url: str = setting(
        "",
        "PROMETHEUS_URL",
        "a Prometheus server that scrapes the writers and workers; the console asks it for their rates "
        "instead of scraping CONSOLE_SCRAPE",
        roles=CONSOLE,
    )
    console_refresh_s: float = setting(
        2.0,
        "CONSOLE_REFRESH",
        "seconds between the console's readings (one GetQueueAttributes per queue, one scrape per URL), "
        "however many pages are open",
        bounds=(0.2, 300),
        roles=CONSOLE,
    )
    header_timeout_s: float = setting(
        10.0,
        "HEADER_TIMEOUT",
        "seconds a connection, and each request from its first byte, has to send the whole of a request's "
        "headers; then 408 (or a close) and the connection ends",
        bounds=(0.1, 300),
        roles=SERVED,
    )
    body_timeout_s: float = setting(
        30.0,
        "BODY_TIMEOUT",
        "seconds a request has to send its whole body once its headers are in; then 408 (or a close) and the "
        "connection ends",
        bounds=(0.1, 3600),
        roles=SERVED,
    )
    max_header_bytes: int = setting(
        16_384,
        "MAX_HEADER_BYTES",
        "the largest request line and headers together; larger is 431 and a close, before anything of the "
        "request is processed",
        bounds=(1024, 1_048_576),
        roles=SERVED,
    )
    max_connections: int = setting(
        1000,
        "MAX_CONNECTIONS",
        "open connections per process; past it a new one gets 503 with Retry-After and is closed (keep it "
        "below the open-files limit, ulimit -n)",
        bounds=(1, 1_000_000),
        roles=SERVED,
    )
    keep_alive_s: float = setting(
        5.0,
        "KEEP_ALIVE_TIMEOUT",
        "seconds an idle keep-alive connection stays open between requests; behind a load balancer, more "
        "than its idle timeout",
        bounds=(0.1, 3600),
        roles=SERVED,
    )
    otel_traces_exporter: str = setting(
        "",
        "OTEL_TRACES_EXPORTER",
        "tracing: `otlp` or `console` (comma-separated) turns it on, `none` keeps it off; unset: on when an "
        "OTLP endpoint is set",
    )
    otel_exporter_otlp_endpoint: str = setting(
        "",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "tracing: the OTLP/HTTP collector (`/v1/traces` is added); turns tracing on",
    )
    otel_exporter_otlp_traces_endpoint: str = setting(
        "",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "tracing: the OTLP/HTTP traces URL, whole; turns tracing on",
    )
    otel_sdk_disabled: str = setting("", "OTEL_SDK_DISABLED", "tracing: `true` keeps it off whatever else is set")
    trace_context_in: str = setting(
        "auto",
        "TRACE_CONTEXT_IN",
        "tracing: where a message's trace context travels: `AWSTraceHeader` (the system attribute), `attribute` "
        "(a `traceparent` message attribute, one of the ten), or `auto`: AWSTraceHeader on real SQS, the "
        "attribute with SQS_ENDPOINT_URL",
    )
    log_config: Path = setting(
        DATA_DIR / "log.conf",
        "LOG_CONFIG",
        "a logging.config.fileConfig file",
        default_text="log.conf",
    )

    def __post_init__(self) -> None:
        if not self.dlq_name:
            object.__setattr__(self, "dlq_name", default_dlq_name(self.queue_name))
        self._check()

    @property
    def is_fifo(self) -> bool:
        return self.queue_name.endswith(".fifo")

    @property
    def scrape_urls(self) -> tuple[str, ...]:
        return comma_list(self.console_scrape)

    def load_console_keys(self) -> frozenset[str]:
        """The keys that allow the console's actions; empty: the console is read-only."""
        return frozenset(comma_list(self.console_keys))

    def load_api_keys(self) -> frozenset[str]:
        """The accepted API keys: API_KEYS (comma-separated) and API_KEYS_FILE (one per line,
        '#' comments). Empty: the writer needs no key."""
        keys = list(comma_list(self.api_keys))
        if self.api_keys_file is not None:
            lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        return frozenset(keys)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, *, role: Optional[Role] = None) -> "Settings":
        """Build the settings from environment variables; unset or empty ones keep their default.
        With `role`, only that part's settings and the shared ones are read: the others keep
        their defaults, whatever the environment says of them."""
        values = {}
        for name, declared in DECLARED.items():
            if role is not None and role not in declared.roles:
                continue
            raw = environ.get(declared.env, "").strip()
            if raw:
                values[name] = parse(name, raw)
        return cls(**values)

    def _check(self) -> None:
        for name, declared in DECLARED.items():
            value = getattr(self, name)
            if declared.bounds is not None and value is not None:
                low, high = declared.bounds
                if not low <= value <= high:
                    raise ConfigError(f"{declared.env}={value!r}: must be from {declared.range_text}")
        for name in ("queue_name", "dlq_name"):
            if not _QUEUE_NAME.match(getattr(self, name)):
                raise ConfigError(
                    f"{DECLARED[name].env}={getattr(self, name)!r}: a queue name has 1 to 80 letters, "
                    "digits, '-' or '_', and ends in '.fifo' for a FIFO queue"
                )
        if self.dlq_name.endswith(".fifo") != self.is_fifo:
            raise ConfigError(
                f"DLQ_NAME={self.dlq_name!r}: a dead-letter queue must be of the same type "
                f"(FIFO or standard) as QUEUE_NAME={self.queue_name!r}"
            )
        if self.dlq_name == self.queue_name:
            raise ConfigError(f"DLQ_NAME={self.dlq_name!r}: must differ from QUEUE_NAME")
        for name in ("sqs_endpoint_url", "dynamodb_endpoint_url", "prometheus_url"):
            url = getattr(self, name)
            if url and not re.match(r"^https?://[^/\s]+", url):
                raise ConfigError(f"{DECLARED[name].env}={url!r}: must be an http:// or https:// URL")
        if self.console_origin and not re.match(r"^https?://[^/\s]+$", self.console_origin):
            raise ConfigError(f"CONSOLE_ORIGIN={self.console_origin!r}: must be scheme://host[:port], with no path")
        for url in self.scrape_urls:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ConfigError(f"CONSOLE_SCRAPE: {url!r} must be an http:// or https:// URL")
        for name in ("idempotency_table", "processed_table"):
            table = getattr(self, name)
            if table and not _TABLE_NAME.match(table):
                raise ConfigError(
                    f"{DECLARED[name].env}={table!r}: a DynamoDB table name has 3 to 255 letters, "
                    "digits, '_', '-' or '.'"
                )
        if self.trace_context_in not in ("auto", "AWSTraceHeader", "attribute"):
            raise ConfigError(f"TRACE_CONTEXT_IN={self.trace_context_in!r}: must be auto, AWSTraceHeader or attribute")
        if self.api_keys_file is not None and not self.api_keys_file.is_file():
            raise ConfigError(f"API_KEYS_FILE={str(self.api_keys_file)!r}: no such file")
        if self.processor and not re.match(r"^[\w.]+:\w+$", self.processor) and not _STEP_URL.match(self.processor):
            raise ConfigError(f"PROCESSOR={self.processor!r}: must be 'module:function' or an http:// or https:// URL")
        if self.max_request_bytes < self.max_message_bytes:
            raise ConfigError(
                f"MAX_REQUEST_BYTES={self.max_request_bytes}: must be at least "
                f"MAX_MESSAGE_BYTES={self.max_message_bytes}"
            )


#: Each field of Settings, and what it declares of itself.
DECLARED: dict[str, Declared] = {each.name: each.metadata["setting"] for each in fields(Settings)}
#: The environment variable behind each field.
ENV_NAMES: dict[str, str] = {name: declared.env for name, declared in DECLARED.items()}
#: The type each field's text is parsed into: its annotation, without Optional.
_TYPES: dict[str, type] = {
    name: next(arg for arg in get_args(hint) or (hint,) if arg is not type(None))
    for name, hint in get_type_hints(Settings).items()
}
_KINDS = {int: "an integer", float: "a number"}


def comma_list(text: str) -> tuple[str, ...]:
    """The items of a comma-separated setting, stripped, the empty ones left out."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _shown(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def parse(name: str, raw: str) -> Any:
    """The value of field `name` from its text; ConfigError, naming the variable, when it is not one."""
    kind = _TYPES[name]
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{DECLARED[name].env}={raw!r}: must be {_KINDS.get(kind, 'a valid value')}") from None


#: Where add_option leaves each option's flag in the parsed arguments, for with_options' errors.
_FLAG = "_flag_of_"


def add_option(parser: argparse.ArgumentParser, flag: str, name: str, settings: Settings, **extra: Any) -> None:
    """A command-line option that overrides setting `name`: its type, its default from
    `settings`, and a help naming its variable. Parsed into `args.<name>`."""
    declared = DECLARED[name]
    parser.add_argument(
        flag,
        dest=name,
        type=_TYPES[name],
        default=getattr(settings, name),
        help=f"{declared.help} ({declared.env}, default %(default)s)",
        **extra,
    )
    parser.set_defaults(**{f"{_FLAG}{name}": flag})  # so that an error names the flag given


def with_address(settings: Settings, argv: Optional[list[str]], *, description: str, port: str) -> Settings:
    """The settings of a program that serves HTTP, with `--host` and `--port` (the field `port`
    names) overriding HOST and its port variable; a bad value ends the program, as argparse does."""
    parser = argparse.ArgumentParser(
        description=f"{description} Every setting comes from the environment (see docs/configuration.md); "
        "these flags override two."
    )
    add_option(parser, "--host", "host", settings)
    add_option(parser, "--port", port, settings)
    return parse_options(parser, settings, argv)[0]


def parse_options(
    parser: argparse.ArgumentParser, settings: Settings, argv: Optional[list[str]]
) -> tuple[Settings, argparse.Namespace]:
    """`argv` parsed by `parser`, and `settings` with the values of the options `add_option`
    made: every entry point's one way of taking its options. A bad value ends the program as
    argparse does (exit 2), naming the flag and its variable."""
    args = parser.parse_args(argv)
    try:
        return with_options(settings, args), args
    except ConfigError as exc:
        parser.error(str(exc))


def with_options(settings: Settings, args: argparse.Namespace) -> Settings:
    """`settings` with the values of the options `add_option` made, checked again: a flag gets
    the same bounds as its variable (ConfigError otherwise)."""
    given = {name: value for name, value in vars(args).items() if name in DECLARED}
    try:
        return dataclasses.replace(settings, **given)
    except ConfigError as exc:
        for name, value in given.items():  # a bad flag is named as the user wrote it
            flag, env = getattr(args, f"{_FLAG}{name}", None), DECLARED[name].env
            if flag and value != getattr(settings, name) and str(exc).startswith(f"{env}="):
                raise ConfigError(f"{flag} {value}: {str(exc).partition(': ')[2]} ({env})") from None
        raise


def configuration_table() -> str:
    """The docs' table of every setting, made from the declarations: `python config.py` prints it."""
    rows = ["| variable | default | range | read by | meaning |", "|---|---|---|---|---|"]
    for each in fields(Settings):
        declared = DECLARED[each.name]
        default = declared.default_text or ("" if each.default in (None, "") else str(each.default))
        shown = f"`{default}`" if default else "unset"
        rows.append(f"| `{declared.env}` | {shown} | {declared.range_text} | {declared.roles_text} | {declared.help} |")
    return "\n".join(rows)


def settings_for_command(program: str, role: Optional[Role] = None) -> Optional[Settings]:
    """The settings for a command-line program (of `role`, or a tool that reads them all),
    logging configured; None, after saying which variable is wrong on stderr, when one is
    invalid (the program then exits 2: `cli.EXIT_USAGE`)."""
    try:
        settings = Settings.from_env(role=role)
    except ConfigError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return None
    configure_logging(settings)
    return settings


def configure_logging(settings: Settings) -> None:
    """Apply log.conf (or LOG_CONFIG); only entry points call this, never an import."""
    logging.config.fileConfig(settings.log_config, disable_existing_loggers=False)


def default_dlq_name(queue_name: str) -> str:
    """`orders` -> `orders-dlq`; `orders.fifo` -> `orders-dlq.fifo` (a FIFO queue needs a FIFO DLQ)."""
    if queue_name.endswith(".fifo"):
        return queue_name[: -len(".fifo")] + "-dlq.fifo"
    return queue_name + "-dlq"


if __name__ == "__main__":
    print(configuration_table())
