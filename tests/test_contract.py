"""The writer's contract: schemathesis, with every check it has, on a standard and a FIFO queue.

Valid requests (by the spec the writer serves for its queue) must be accepted, invalid ones
refused with a documented 4xx, and every response must be as the spec says: no 5xx. The project's
schemathesis.toml is read as `schemathesis run` reads it from the project's folder: its hook
applies swagger.yml's x-propertyNames to the valid requests, and on POST /message a 409 or 422
answers an earlier use of an Idempotency-Key, not the request's shape.

Twice: in process through the app (fast, every operation under Hypothesis), and as a user runs
it, the `schemathesis` command against a writer process on moto_server. moto, because fauxqs
refuses characters above U+FFFF that SQS accepts (see docs on the local engines).

The writer reads too (READ_KEYS): schemathesis sends a read key with every request, which the
write routes ignore. Stateful checks do not apply: the one thing an operation returns that
another takes is a receive's token, which the fuzzed acknowledgements cannot guess (they get
400, or 410 from SQS), so the spec has no links to follow.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, Callable, Iterator

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig

import sqs_setup
from harness import ROOT
from helpers import BIN
from schemathesis_hooks import keep_property_names
from server import create_app
from sqs_message_service.settings import Settings
from sqs_message_service.writer.service import WRITER_EXTENSION
from sqsinterface import SqsQueue, create_client

OPERATIONS = [  # (method, path as in the spec; served under /api)
    (method.upper(), path)
    for path, methods in yaml.safe_load((ROOT / "swagger.yml").read_text())["paths"].items()
    for method in methods
]
EXAMPLES_PER_OPERATION = 80
QUEUE_KINDS = ["messages", "orders.fifo"]
READ_KEY = "contract-reader"


@pytest.fixture(params=QUEUE_KINDS)
def kind_app(request: pytest.FixtureRequest, sqs: Any) -> Iterator[Any]:
    """The writer on a queue of each kind, made by sqs_setup as a user would."""
    # long polls of a second at most: the contract is the answers' shapes, not how long SQS waits
    writer_settings = Settings(queue_name=request.param, read_keys=READ_KEY, read_max_lease_s=30, read_max_wait_s=1)
    sqs_setup.set_up(writer_settings, sqs)
    application = create_app(writer_settings, queue=SqsQueue(writer_settings.queue_name, sqs))
    yield application
    application.app.extensions[WRITER_EXTENSION].close()


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} /api{p}" for m, p in OPERATIONS])
def test_every_operation_answers_as_the_spec_says(kind_app: Any, method: str, path: str) -> None:
    config = SchemathesisConfig.from_path(ROOT / "schemathesis.toml")
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", kind_app, config=config)
    operation = schema[path][method]

    @given(
        case=operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE)
        | operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE)
    )
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_specified(case: Any) -> None:
        case.call_and_validate(headers={"X-API-Key": READ_KEY})  # every check

    answers_as_specified()


def test_every_operation_of_the_spec_is_fuzzed() -> None:
    assert {f"{m} {p}" for m, p in OPERATIONS} == {
        "POST /message",
        "POST /messages",
        "GET /health",
        "GET /ready",
        "GET /stats",
        "POST /messages/receive",
        "POST /messages/acknowledge",
        "POST /messages/give-back",
        "POST /messages/extend",
    }


@pytest.mark.integration
@pytest.mark.parametrize(
    ("queue_name", "api_key"),
    [("messages", None), ("orders.fifo", "contract-key")],
    ids=["standard queue", "FIFO queue, with an API key"],
)
def test_schemathesis_run_with_every_check_passes(
    moto_server: str, start_writer: Callable[..., Any], queue_name: str, api_key: str | None
) -> None:
    # GIVEN a writer process on a queue of this kind, with an API key or none
    env = {
        "SQS_ENDPOINT_URL": moto_server,
        "QUEUE_NAME": queue_name,
        "API_KEYS": api_key or "",
        "READ_KEYS": api_key or READ_KEY,
        "READ_MAX_LEASE": "30",
        "READ_MAX_WAIT": "1",
    }  # one key that writes and reads, or reads
    writer_settings = Settings.from_env(env)
    sqs_setup.set_up(writer_settings, create_client(writer_settings))
    _, url = start_writer(env)

    # WHEN schemathesis runs from the project's folder with every check, as the config says
    headers = ["-H", f"X-API-Key: {api_key or READ_KEY}"]
    run = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            f"{url}/api/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "100",
            "--seed",
            "20261123",
            "--no-color",
            *headers,
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )

    # THEN every phase passes, valid and invalid requests alike
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout, run.stdout[-4000:]
    assert "Configuration:    " + str(ROOT / "schemathesis.toml") in run.stdout


NAMES = {"minLength": 1, "maxLength": 256, "pattern": "^[a-z]+$"}


def test_the_hook_renames_only_the_attribute_names_the_spec_rules_out() -> None:
    schema = {
        "allOf": [
            {"type": "object", "properties": {"attributes": {"type": "object"}}},
            {"properties": {"attributes": {"x-propertyNames": NAMES}}},
        ]
    }
    body: dict[str, Any] = {"body": "b", "attributes": {"ok": "1", "": "2", "Bad Name": "3"}}

    keep_property_names(body, schema)

    assert body["attributes"]["ok"] == "1"
    assert sorted(body["attributes"].values()) == ["1", "2", "3"]
    assert all(name.isalpha() and name.islower() for name in body["attributes"])


def test_the_hook_drops_a_property_when_no_name_can_keep_the_rule() -> None:
    body = {"attributes": {"ok": "1", "BAD": "2"}}

    keep_property_names(body, {"properties": {"attributes": {"x-propertyNames": {"pattern": "^ok$"}}}})

    assert body == {"attributes": {"ok": "1"}}
