"""Every AWS client of the service is made here: SQS's for the queues (sqs.py), DynamoDB's for
the writer's idempotency table (writer/idempotency.py) and the worker's processed ledger
(worker/processed.py). Each service has its own timeouts and attempts
(SQS_* and DYNAMODB_* settings), botocore's standard retries, a bounded connection pool, and
the error codes that mean the same thing whichever service says them.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
from dataclasses import dataclass
from typing import Any, Optional

import boto3
import botocore
import botocore.config
import botocore.session
from botocore.loaders import Loader

from .settings import DISTRIBUTION, Settings

#: The error codes of credentials or rights refused, SQS's and DynamoDB's.
NOT_AUTHORIZED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSecurity",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
    }
)
#: The error codes of a service asking its caller to slow down.
THROTTLED_CODES = frozenset({"ThrottlingException", "Throttling", "RequestThrottled", "KmsThrottled", "OverLimit"})


def _version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "dev"


#: What AWS sees of this service's calls: its name and the versions AWS support asks for.
USER_AGENT = (
    f"{DISTRIBUTION}/{_version()} "
    f"Boto3/{boto3.__version__} Botocore/{botocore.__version__} Python/{platform.python_version()}"
)


@dataclass(frozen=True)
class ClientLimits:
    """How one service's client waits and retries, and for how many threads."""

    endpoint_url: Optional[str]
    connect_timeout_s: float
    read_timeout_s: float
    max_attempts: int
    pool: int


def limits_for(settings: Settings, service: str) -> ClientLimits:
    """The settings of `service`'s client: "sqs" or "dynamodb"."""
    if service == "sqs":
        return ClientLimits(
            settings.sqs_endpoint_url,
            settings.sqs_connect_timeout_s,
            settings.sqs_read_timeout_s,
            settings.sqs_max_attempts,
            pool=max(10, settings.send_concurrency * 2),
        )
    if service == "dynamodb":
        return ClientLimits(
            settings.dynamodb_endpoint_url,
            settings.dynamodb_connect_timeout_s,
            settings.dynamodb_read_timeout_s,
            settings.dynamodb_max_attempts,
            pool=max(10, settings.handler_threads),  # a call a keyed request
        )
    raise ValueError(f"no client settings for {service!r}")


@functools.cache
def _service_data() -> Loader:
    """botocore's service and endpoint descriptions, read once per process: a client made from a
    fresh session otherwise parses them again (about 80 ms here). Each session made on it adds
    boto3's data folder to its search path again (a lookup, no parse): harmless."""
    return botocore.session.get_session().get_component("data_loader")


def create_client(
    settings: Settings,
    *,
    service: str = "sqs",
    read_timeout_s: Optional[float] = None,
    pool: Optional[int] = None,
) -> Any:
    """A client of `service` ("sqs", or "dynamodb" for IDEMPOTENCY_TABLE), made here and only
    here: that service's timeouts (`read_timeout_s` overrides its read timeout: a long poll's;
    `pool` its connection pool: the threads that share it),
    botocore's standard retries (which back off with jitter on throttling and 5xx), a
    connection pool for the threads that share it. An endpoint setting unset (SQS_ENDPOINT_URL,
    DYNAMODB_ENDPOINT_URL) means real AWS."""
    limits = limits_for(settings, service)
    config = botocore.config.Config(
        region_name=settings.aws_region,
        connect_timeout=limits.connect_timeout_s,
        read_timeout=read_timeout_s or limits.read_timeout_s,
        # total_max_attempts counts the first attempt too (botocore's max_attempts counts retries)
        retries={"mode": "standard", "total_max_attempts": limits.max_attempts},
        max_pool_connections=pool or limits.pool,
        tcp_keepalive=True,
        # A sixth of a call's CPU: botocore checks again what this service builds from checked
        # values, and composes its User-Agent anew for every call unless one is given.
        parameter_validation=False,
        user_agent=USER_AGENT,
    )
    core = botocore.session.get_session()
    core.register_component("data_loader", _service_data())
    session = boto3.session.Session(botocore_session=core)
    return session.client(service, endpoint_url=limits.endpoint_url or None, config=config)
