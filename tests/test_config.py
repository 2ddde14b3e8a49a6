"""config.Settings: defaults, derived names, and errors that name the variable."""

from __future__ import annotations

import pytest

from config import ConfigError, Settings


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
        settings.port = 1  # type: ignore[misc]
