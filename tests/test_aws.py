"""aws.py: every AWS client is made in one place, each service with its own timeouts and attempts."""

from __future__ import annotations

import pytest

from sqs_message_service.aws import USER_AGENT, create_client, limits_for
from sqs_message_service.settings import Settings

SETTINGS = Settings(
    sqs_endpoint_url="http://127.0.0.1:4566",
    sqs_connect_timeout_s=1.5,
    sqs_read_timeout_s=7.0,
    sqs_max_attempts=4,
    dynamodb_endpoint_url="http://127.0.0.1:5001",
    dynamodb_connect_timeout_s=0.5,
    dynamodb_read_timeout_s=2.5,
    dynamodb_max_attempts=2,
    handler_threads=32,
)


@pytest.mark.parametrize(
    ("service", "endpoint", "connect_s", "read_s", "attempts", "pool"),
    [("sqs", "http://127.0.0.1:4566", 1.5, 7.0, 4, 10), ("dynamodb", "http://127.0.0.1:5001", 0.5, 2.5, 2, 32)],
)
def test_each_service_gets_its_own_timeouts_attempts_and_pool(
    service: str, endpoint: str, connect_s: float, read_s: float, attempts: int, pool: int
) -> None:
    client = create_client(SETTINGS, service=service)
    config = client.meta.config

    assert client.meta.endpoint_url == endpoint
    assert (config.connect_timeout, config.read_timeout) == (connect_s, read_s)
    assert config.retries["mode"] == "standard" and config.retries["total_max_attempts"] == attempts
    assert config.max_pool_connections == pool and config.user_agent.startswith(USER_AGENT)


def test_a_long_poll_stretches_only_the_read_timeout_it_asks_for() -> None:
    client = create_client(SETTINGS, read_timeout_s=27.0)

    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (1.5, 27.0)


def test_a_service_with_no_settings_is_refused() -> None:
    with pytest.raises(ValueError, match="s3"):
        limits_for(SETTINGS, "s3")
