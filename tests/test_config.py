"""config.Settings: defaults, derived names, and errors that name the variable."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness import ROOT
from sqs_message_service.settings import (
    CONSOLE,
    DECLARED,
    WORKER,
    WRITER,
    ConfigError,
    Role,
    Settings,
    add_option,
    configuration_table,
    with_options,
)


def test_defaults_match_the_documented_ones() -> None:
    settings = Settings.from_env({})

    assert settings.sqs_endpoint_url is None  # real AWS
    assert (settings.aws_region, settings.queue_name, settings.dlq_name) == (
        "us-east-1",
        "messages",
        "messages-dlq",
    )
    assert (settings.max_receive_count, settings.max_message_bytes) == (3, 262_144)
    assert (settings.host, settings.port) == ("127.0.0.1", 5000)
    assert settings.log_config.name == "log.conf" and settings.log_config.exists()


def test_values_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "SQS_ENDPOINT_URL": "http://127.0.0.1:4566",
            "QUEUE_NAME": "orders",
            "PORT": "8080",
            "SEND_TIMEOUT": "2.5",
            "VISIBILITY_TIMEOUT": " 45 ",
            "HOST": "",  # empty keeps the default
        }
    )

    assert settings.sqs_endpoint_url == "http://127.0.0.1:4566"
    assert (settings.queue_name, settings.dlq_name) == ("orders", "orders-dlq")
    assert (settings.port, settings.send_timeout_s, settings.visibility_timeout_s) == (8080, 2.5, 45)
    assert settings.host == "127.0.0.1"


def test_a_fifo_queue_gets_a_fifo_dead_letter_queue() -> None:
    settings = Settings.from_env({"QUEUE_NAME": "orders.fifo"})

    assert settings.is_fifo
    assert settings.dlq_name == "orders-dlq.fifo"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"PORT": "http"}, "PORT='http': must be an integer"),
        ({"PORT": "70000"}, "PORT=70000: must be from 1 to 65535"),
        ({"SEND_TIMEOUT": "soon"}, "SEND_TIMEOUT='soon': must be a number"),
        ({"MAX_RECEIVE_COUNT": "0"}, "MAX_RECEIVE_COUNT=0"),
        ({"RECEIVE_WAIT_SECONDS": "21"}, "RECEIVE_WAIT_SECONDS=21"),
        ({"MAX_MESSAGE_BYTES": "2000000"}, "MAX_MESSAGE_BYTES=2000000"),
        ({"QUEUE_NAME": "has space"}, "QUEUE_NAME='has space'"),
        ({"QUEUE_NAME": "x" * 81}, "QUEUE_NAME="),
        ({"QUEUE_NAME": "a.fifo", "DLQ_NAME": "b"}, "DLQ_NAME='b': a dead-letter queue must be"),
        ({"DLQ_NAME": "messages"}, "DLQ_NAME='messages': must differ"),
        ({"SQS_ENDPOINT_URL": "localhost:4566"}, "SQS_ENDPOINT_URL='localhost:4566'"),
        ({"MAX_REQUEST_BYTES": "2048", "MAX_MESSAGE_BYTES": "4096"}, "MAX_REQUEST_BYTES=2048"),
        ({"API_KEYS_FILE": "/no/such/keys.txt"}, "API_KEYS_FILE='/no/such/keys.txt': no such file"),
        ({"MAX_QUEUE_DEPTH": "0"}, "MAX_QUEUE_DEPTH=0: must be from 1"),
        ({"DEPTH_POLL_INTERVAL": "fast"}, "DEPTH_POLL_INTERVAL='fast': must be a number"),
        ({"PROCESSOR": "not a function"}, "PROCESSOR='not a function'"),
    ],
)
def test_an_invalid_value_is_refused_naming_its_variable(environ: dict, named: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(environ)

    assert named in str(refused.value)


def test_settings_are_frozen() -> None:
    settings = Settings()

    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]  # on purpose: that it cannot be set is the test


def test_the_docs_table_is_the_declared_settings() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")

    assert configuration_table() in page, "docs/configuration.md: paste the output of `python config.py`"


def test_every_setting_declares_its_variable_help_and_a_bound_for_every_number() -> None:
    for name, declared in DECLARED.items():
        assert declared.env and declared.help, name
        kind = Settings.__dataclass_fields__[name].type
        if any(number in str(kind) for number in ("int", "float")) and name != "failure_seed":
            assert declared.bounds is not None, f"{name}: a number needs its bounds"


@pytest.mark.parametrize(
    ("variable", "text", "value"),
    [
        ("MAX_QUEUE_DEPTH", "5", 5),  # Optional[int]: parsed as an int, not kept as text
        ("FAILURE_SEED", "7", 7),
        ("EXIT_WHEN_IDLE", "1.5", 1.5),
        ("SEND_LINGER", "0", 0.0),
    ],
)
def test_an_optional_number_is_parsed_as_its_type(variable: str, text: str, value: object) -> None:
    name = next(name for name, declared in DECLARED.items() if declared.env == variable)

    parsed = getattr(Settings.from_env({variable: text}), name)

    assert parsed == value and type(parsed) is type(value)


def test_a_path_setting_is_a_path(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("k\n")

    assert Settings.from_env({"API_KEYS_FILE": str(keys)}).api_keys_file == keys


def test_an_option_overrides_its_setting_within_the_same_bounds() -> None:
    parser = argparse.ArgumentParser()
    add_option(parser, "--concurrency", "worker_concurrency", Settings())

    assert with_options(Settings(), parser.parse_args(["--concurrency", "7"])).worker_concurrency == 7
    assert "(WORKER_CONCURRENCY, default 10)" in parser.format_help()
    # the error names the flag as it was given, not a variable nobody set
    with pytest.raises(ConfigError, match=r"^--concurrency 0: must be from 1 to 1000 \(WORKER_CONCURRENCY\)$"):
        with_options(Settings(), parser.parse_args(["--concurrency", "0"]))


# Each part reads its own settings and the shared ones.

WRITER_ONLY_WRONG = {"API_KEYS_FILE": "/no/such/file", "PORT": "eighty", "HANDLER_THREADS": "0"}
WORKER_ONLY_WRONG = {"PROCESSOR": "not a function", "WORKER_CONCURRENCY": "0", "METRICS_PORT": "metrics"}


def test_the_worker_never_fails_on_a_writer_only_setting_nor_the_writer_on_a_worker_only_one() -> None:
    shared = {"QUEUE_NAME": "orders"}

    worker = Settings.from_env({**shared, **WRITER_ONLY_WRONG, "WORKER_OUTPUT": "out.jsonl"}, role="worker")
    writer = Settings.from_env({**shared, **WORKER_ONLY_WRONG, "PORT": "8080"}, role="writer")

    assert worker.queue_name == writer.queue_name == "orders"  # shared settings: both read them
    assert worker.worker_output == Path("out.jsonl") and worker.port == 5000  # not read: its default
    assert (writer.port, writer.processor, writer.worker_concurrency) == (8080, "", 10)


@pytest.mark.parametrize(("role", "environ"), [("writer", WRITER_ONLY_WRONG), ("worker", WORKER_ONLY_WRONG)])
def test_a_part_still_refuses_its_own_settings_when_they_are_wrong(role: Role, environ: dict[str, str]) -> None:
    for variable, value in environ.items():
        with pytest.raises(ConfigError, match=variable):
            Settings.from_env({variable: value}, role=role)


def test_a_tool_reads_every_setting() -> None:
    with pytest.raises(ConfigError, match="PORT"):
        Settings.from_env({"PORT": "eighty"})


def test_every_setting_says_which_parts_read_it() -> None:
    roles = {declared.env: declared.roles for declared in DECLARED.values()}

    assert roles["API_KEYS_FILE"] == WRITER and roles["PROCESSOR"] == WORKER
    assert roles["CONSOLE_KEYS"] == roles["CONSOLE_SCRAPE"] == CONSOLE
    assert roles["QUEUE_NAME"] == roles["SQS_ENDPOINT_URL"] == roles["LOG_CONFIG"] == WRITER | WORKER | CONSOLE
    # the socket's limits: the two parts that serve HTTP with uvicorn (serving.py), not the worker
    assert roles["HEADER_TIMEOUT"] == roles["MAX_CONNECTIONS"] == WRITER | CONSOLE
    known = (WRITER, WORKER, CONSOLE, WRITER | CONSOLE, WRITER | WORKER | CONSOLE)
    assert all(role in known for role in roles.values())


def test_the_console_reads_its_own_settings_and_no_other_part_does() -> None:
    wrong_for_the_console = {"CONSOLE_PORT": "web", "CONSOLE_SCRAPE": "ftp://x/metrics", "PROMETHEUS_URL": "nope"}

    for variable, value in wrong_for_the_console.items():
        with pytest.raises(ConfigError, match=variable):
            Settings.from_env({variable: value}, role="console")
        Settings.from_env({variable: value}, role="worker")  # not the worker's: never read
    environ = {"CONSOLE_SCRAPE": " http://a:1/metrics, http://b:2/metrics ", "CONSOLE_KEYS": "k1, k2,"}
    console = Settings.from_env(environ, role="console")
    assert console.scrape_urls == ("http://a:1/metrics", "http://b:2/metrics")
    assert console.load_console_keys() == {"k1", "k2"}
    assert Settings().load_console_keys() == frozenset()  # unset: read-only
