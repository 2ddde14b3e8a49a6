"""webstack: the quick yes for valid bodies never says yes too often; the bridge's threads and its
reading of bodies; the middleware list."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any, MutableMapping

import pytest
from connexion.middleware.request_validation import RequestValidationMiddleware
from connexion.middleware.security import SecurityMiddleware
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import webstack
from spec import RequestValidator, load_source, served_spec

MESSAGE_SCHEMAS = {
    kind: {"$ref": "#/components/schemas/Message", "components": spec.document["components"]}
    for kind, spec in {
        "standard": served_spec(load_source(), fifo=False, content_based_deduplication=False, keys_required=False),
        "fifo": served_spec(load_source(), fifo=True, content_based_deduplication=False, keys_required=False),
    }.items()
}

#: JSON values, and messages that are mostly valid, each with a few things (names, characters,
#: types, ranges, fields) at or past the spec's edges: where a validator that differs would show.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def mostly(valid: st.SearchStrategy[Any], edge: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Three times in four a valid value, else one at or past an edge."""
    return st.integers(0, 3).flatmap(lambda draw: valid if draw else edge)


valid_text = st.from_regex(r"[A-Za-z0-9 .,_-]{1,12}", fullmatch=True)
edge_texts = st.sampled_from(["", "\x00", "\t\n", "\x7f", "\ufffe", "\U0001f600", "\ud800", "a\n"])
texts = mostly(valid_text, edge_texts | st.text())
names = mostly(st.sampled_from(["kind", "a.b", "ok_1", "x" * 256, "AWSx"]),
               st.sampled_from(["AWS.x", "amazon.y", "x" * 257, "", ".lead", "trail.", "a..b", "Bad Name", "é"]))
ids = mostly(st.from_regex(r"[!-~]{1,128}", fullmatch=True), st.sampled_from(["", "has space", "g" * 129, "é"]))
messages = st.fixed_dictionaries(
    {"body": texts},
    optional={
        "attributes": st.dictionaries(names, mostly(valid_text, texts | st.integers()), max_size=11),
        "delay_seconds": mostly(st.integers(0, 900), st.sampled_from([-1, 901, 5.0, 1.5, True, "5"])),
        "group_id": ids,
        "deduplication_id": ids,
        "extra": json_values,
    },
)


@pytest.mark.parametrize("kind", MESSAGE_SCHEMAS)
@given(body=messages | json_values)
@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_quick_yes_never_accepts_what_the_spec_refuses(kind: str, body: Any) -> None:
    schema = MESSAGE_SCHEMAS[kind]
    accepts = webstack.fast_validity(schema)
    assert accepts is not None

    if accepts(body):
        assert RequestValidator(schema).is_valid(body), body


@pytest.mark.parametrize(
    "body",
    [{"body": "This is a test message to enqueue"}, {"body": "b", "attributes": {"kind": "order"}, "delay_seconds": 5}],
)
def test_the_quick_yes_is_said_to_an_ordinary_message(body: dict[str, Any]) -> None:
    accepts = webstack.fast_validity(MESSAGE_SCHEMAS["standard"])

    assert accepts is not None and accepts(body)


def test_a_schema_the_rust_validator_cannot_take_leaves_python_alone() -> None:
    assert webstack.fast_validity({"pattern": "(unclosed"}) is None


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_handler_threads_run_in_the_callers_context_and_hand_back_the_result_or_error() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    threads = webstack.HandlerThreads(4)

    async def calls() -> tuple[Any, Any]:
        request_id.set("r-1")
        seen = await threads.run(lambda: (request_id.get(), threading.current_thread().name))
        with pytest.raises(KeyError, match="missing"):
            await threads.run(lambda: {"present": 1}["missing"])
        return seen

    seen_id, thread_name = run(calls())
    threads.close()

    assert seen_id == "r-1" and thread_name.startswith("handler-")


def test_handler_threads_start_only_as_many_as_run_at_once() -> None:
    threads = webstack.HandlerThreads(8)
    release = threading.Event()

    async def calls() -> None:
        for _ in range(5):  # one after another: one thread serves them all
            await threads.run(lambda: None)
        assert len(threads._started) == 1
        blocked = [asyncio.ensure_future(threads.run(release.wait, 10)) for _ in range(3)]
        deadline = time.monotonic() + 10
        while len(threads._started) < 3:  # three at once need three
            assert time.monotonic() < deadline, f"{len(threads._started)} threads for 3 calls at once"
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*blocked)

    run(calls())
    threads.close()
    assert len(threads._started) == 3


def test_the_bridge_reads_no_body_for_an_operation_that_takes_none() -> None:
    # GIVEN a request to a route without a body, sending one all the same
    calls: list[str] = []

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    bridge = webstack.FlaskBridge(wsgi_app, threads=1, body_operations=frozenset({"message.post_message"}))
    received: list[bool] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        received.append(True)
        return {"type": "http.request", "body": b"x" * 1_000_000, "more_body": True}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http", "method": "GET", "path": "/api/health", "query_string": b"", "headers": [],
        "http_version": "1.1", "extensions": {"connexion_routing": {"operation_id": "message.health"}},
    }

    # WHEN the bridge serves it
    run(bridge(scope, receive, send))
    bridge.threads.close()

    # THEN the handler ran and answered, and not a byte of the body was read
    assert calls == [b""] and received == []
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"{}"


def test_replay_gives_the_body_read_then_what_comes_after() -> None:
    async def later() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def both() -> list[Any]:
        receive = webstack._replay(b"body", later)
        return [await receive(), await receive()]

    assert run(both()) == [{"type": "http.request", "body": b"body", "more_body": False}, {"type": "http.disconnect"}]


@pytest.mark.parametrize("api_keys", [True, False])
def test_the_stack_checks_keys_only_with_keys_and_requests_with_our_checks(api_keys: bool) -> None:
    stack = webstack.middlewares(api_keys=api_keys, checks="checks", observer="observer", admission="admission")

    assert (SecurityMiddleware in stack) == api_keys
    assert RequestValidationMiddleware not in stack
    assert stack.index("observer") < stack.index("admission") < stack.index("checks")
