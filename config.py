"""Every setting of the writer, the worker and the tools, read once from the environment.

`Settings.from_env()` is the only place that reads `os.environ`; everything else is handed a
`Settings`. A bad value stops the program at start with an error that names the variable.
"""

from __future__ import annotations

import dataclasses
import logging.config
import os
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, TypeVar

#: The distribution's name: `pip install sqs-message-service`.
DISTRIBUTION = "sqs-message-service"


def _data_dir() -> Path:
    """Where swagger.yml and log.conf are: beside this module in a checkout (and an editable
    install); in <prefix>/share/sqs-message-service once the wheel is installed, into a
    virtualenv, the system or the user's site (`pip install --user`)."""
    here = Path(__file__).resolve().parent
    installed = [
        Path(sysconfig.get_path("data", scheme)) / "share" / DISTRIBUTION
        for scheme in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user"))
    ]
    for candidate in (here, *installed):
        if (candidate / "swagger.yml").is_file():
            return candidate
    return here  # not found: the errors that follow name this place


#: The directory holding swagger.yml and log.conf.
DATA_DIR = _data_dir()

#: SQS's own ceiling for one message (body plus attributes) since August 2025; queues default
#: to 256 KiB, which is our default too.
SQS_MAX_MESSAGE_BYTES_CEILING = 1_048_576

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,75}(\.fifo)?$")

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting from the environment is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """All settings, with their defaults. Field names carry units; see README.md for each variable."""

    sqs_endpoint_url: Optional[str] = None
    aws_region: str = "us-east-1"
    queue_name: str = "messages"
    dlq_name: str = ""  # empty: derived from queue_name in __post_init__
    max_receive_count: int = 3
    visibility_timeout_s: int = 30
    receive_wait_s: int = 20
    max_message_bytes: int = 262_144
    max_request_bytes: int = 2_097_152
    host: str = "127.0.0.1"
    port: int = 5000
    writer_processes: int = 1
    sqs_connect_timeout_s: float = 2.0
    sqs_read_timeout_s: float = 5.0
    sqs_max_attempts: int = 3
    handler_threads: int = 64
    send_concurrency: int = 4
    send_linger_s: float = 0.02
    send_timeout_s: float = 10.0
    retry_after_s: int = 1
    max_queue_depth: Optional[int] = None  # None: no backpressure
    depth_poll_interval_s: float = 5.0
    idempotency_window_s: float = 300.0  # as long as SQS's own FIFO deduplication interval
    idempotency_max_keys: int = 100_000
    worker_concurrency: int = 10
    process_time_s: float = 0.005
    failure_rate: float = 0.1
    failure_seed: Optional[int] = None
    processor: str = ""  # "module:function"; empty: the simulated work
    retry_backoff_base_s: float = 1.0
    retry_backoff_max_s: float = 60.0
    shutdown_grace_s: float = 30.0
    stats_interval_s: float = 2.0
    metrics_port: int = 9102  # the worker's /metrics; 0: not served
    worker_output: Optional[Path] = None
    exit_when_idle_s: Optional[float] = None
    api_keys: str = ""  # comma-separated; with api_keys_file, empty both: no keys needed
    api_keys_file: Optional[Path] = None
    log_config: Path = DATA_DIR / "log.conf"

    def __post_init__(self) -> None:
        if not self.dlq_name:
            object.__setattr__(self, "dlq_name", default_dlq_name(self.queue_name))
        self._check()

    @property
    def is_fifo(self) -> bool:
        return self.queue_name.endswith(".fifo")

    def load_api_keys(self) -> frozenset[str]:
        """The accepted API keys: API_KEYS (comma-separated) and API_KEYS_FILE (one per line,
        '#' comments). Empty: the writer needs no key."""
        keys = [key.strip() for key in self.api_keys.split(",")]
        if self.api_keys_file is not None:
            lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            keys += [line.strip() for line in lines if not line.lstrip().startswith("#")]
        return frozenset(key for key in keys if key)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        """Build the settings from environment variables; unset or empty ones keep their default."""
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            variable = ENV_NAMES[field.name]
            raw = environ.get(variable, "").strip()
            if raw:
                values[field.name] = _parse(variable, raw, _PARSERS[field.name])
        return cls(**values)  # type: ignore[arg-type]

    def _check(self) -> None:
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                raise ConfigError(f"{ENV_NAMES[name]}={value!r}: must be from {low} to {high}")
        for name in ("queue_name", "dlq_name"):
            if not _QUEUE_NAME.match(getattr(self, name)):
                raise ConfigError(
                    f"{ENV_NAMES[name]}={getattr(self, name)!r}: a queue name has 1 to 80 letters, "
                    "digits, '-' or '_', and ends in '.fifo' for a FIFO queue"
                )
        if self.dlq_name.endswith(".fifo") != self.is_fifo:
            raise ConfigError(
                f"DLQ_NAME={self.dlq_name!r}: a dead-letter queue must be of the same type "
                f"(FIFO or standard) as QUEUE_NAME={self.queue_name!r}"
            )
        if self.dlq_name == self.queue_name:
            raise ConfigError(f"DLQ_NAME={self.dlq_name!r}: must differ from QUEUE_NAME")
        if self.sqs_endpoint_url and not re.match(r"^https?://[^/\s]+", self.sqs_endpoint_url):
            raise ConfigError(
                f"SQS_ENDPOINT_URL={self.sqs_endpoint_url!r}: must be an http:// or https:// URL"
            )
        if self.api_keys_file is not None and not self.api_keys_file.is_file():
            raise ConfigError(f"API_KEYS_FILE={str(self.api_keys_file)!r}: no such file")
        if self.processor and not re.match(r"^[\w.]+:\w+$", self.processor):
            raise ConfigError(f"PROCESSOR={self.processor!r}: must be 'module:function'")
        if self.max_request_bytes < self.max_message_bytes:
            raise ConfigError(
                f"MAX_REQUEST_BYTES={self.max_request_bytes}: must be at least "
                f"MAX_MESSAGE_BYTES={self.max_message_bytes}"
            )


def settings_for_command(program: str) -> Optional[Settings]:
    """The settings for a command-line tool, logging configured; None, after saying which
    variable is wrong on stderr, when one is invalid (the tool then exits 2)."""
    try:
        settings = Settings.from_env()
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


#: The environment variable behind each field.
ENV_NAMES: dict[str, str] = {
    "sqs_endpoint_url": "SQS_ENDPOINT_URL",
    "aws_region": "AWS_REGION",
    "queue_name": "QUEUE_NAME",
    "dlq_name": "DLQ_NAME",
    "max_receive_count": "MAX_RECEIVE_COUNT",
    "visibility_timeout_s": "VISIBILITY_TIMEOUT",
    "receive_wait_s": "RECEIVE_WAIT_SECONDS",
    "max_message_bytes": "MAX_MESSAGE_BYTES",
    "max_request_bytes": "MAX_REQUEST_BYTES",
    "host": "HOST",
    "port": "PORT",
    "writer_processes": "WRITER_PROCESSES",
    "sqs_connect_timeout_s": "SQS_CONNECT_TIMEOUT",
    "sqs_read_timeout_s": "SQS_READ_TIMEOUT",
    "sqs_max_attempts": "SQS_MAX_ATTEMPTS",
    "handler_threads": "HANDLER_THREADS",
    "send_concurrency": "SEND_CONCURRENCY",
    "send_linger_s": "SEND_LINGER",
    "send_timeout_s": "SEND_TIMEOUT",
    "retry_after_s": "RETRY_AFTER",
    "max_queue_depth": "MAX_QUEUE_DEPTH",
    "depth_poll_interval_s": "DEPTH_POLL_INTERVAL",
    "idempotency_window_s": "IDEMPOTENCY_WINDOW",
    "idempotency_max_keys": "IDEMPOTENCY_MAX_KEYS",
    "worker_concurrency": "WORKER_CONCURRENCY",
    "process_time_s": "PROCESS_TIME",
    "failure_rate": "FAILURE_RATE",
    "failure_seed": "FAILURE_SEED",
    "processor": "PROCESSOR",
    "retry_backoff_base_s": "RETRY_BACKOFF_BASE",
    "retry_backoff_max_s": "RETRY_BACKOFF_MAX",
    "shutdown_grace_s": "SHUTDOWN_GRACE",
    "stats_interval_s": "STATS_INTERVAL",
    "metrics_port": "METRICS_PORT",
    "worker_output": "WORKER_OUTPUT",
    "exit_when_idle_s": "EXIT_WHEN_IDLE",
    "api_keys": "API_KEYS",
    "api_keys_file": "API_KEYS_FILE",
    "log_config": "LOG_CONFIG",
}

_PARSERS: dict[str, Callable[[str], object]] = {
    field.name: {"int": int, "float": float, "Path": Path}.get(
        str(field.type).removeprefix("Optional[").removesuffix("]"), str
    )
    for field in dataclasses.fields(Settings)
}

#: Inclusive bounds of numeric settings; SQS's own limits where SQS has one.
_RANGES: dict[str, tuple[float, float]] = {
    "max_receive_count": (1, 1000),
    "visibility_timeout_s": (0, 43_200),
    "receive_wait_s": (0, 20),
    "max_message_bytes": (1024, SQS_MAX_MESSAGE_BYTES_CEILING),
    "max_request_bytes": (1024, 256 * 1_048_576),
    "port": (1, 65_535),
    "writer_processes": (1, 64),
    "sqs_connect_timeout_s": (0.05, 60),
    "sqs_read_timeout_s": (0.05, 300),
    "sqs_max_attempts": (1, 10),
    "handler_threads": (1, 1024),
    "send_concurrency": (1, 64),
    "send_linger_s": (0, 1),
    "send_timeout_s": (0.1, 300),
    "retry_after_s": (1, 3600),
    "max_queue_depth": (1, 1_000_000_000),
    "depth_poll_interval_s": (0.1, 3600),
    "idempotency_window_s": (1, 86_400),
    "idempotency_max_keys": (1, 10_000_000),
    "worker_concurrency": (1, 1000),
    "process_time_s": (0, 3600),
    "failure_rate": (0, 1),
    "retry_backoff_base_s": (0, 43_200),
    "retry_backoff_max_s": (0, 43_200),
    "shutdown_grace_s": (0, 3600),
    "stats_interval_s": (0.1, 3600),
    "metrics_port": (0, 65_535),
    "exit_when_idle_s": (0, 86_400),
}


def _parse(variable: str, raw: str, parser: Callable[[str], T]) -> T:
    try:
        return parser(raw)
    except ValueError:
        kind = {int: "an integer", float: "a number"}.get(parser, "a valid value")  # type: ignore
        raise ConfigError(f"{variable}={raw!r}: must be {kind}") from None
