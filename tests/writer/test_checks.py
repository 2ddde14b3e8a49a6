"""writer/checks.py: the quick yes for valid bodies never says yes too often; a body read is given
again. (Served through the app, the checks are tested in tests/test_server.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqs_message_service.writer import checks
from sqs_message_service.writer.spec import RequestValidator, load_source, served_spec

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
names = mostly(
    st.sampled_from(["kind", "a.b", "ok_1", "x" * 256, "AWSx"]),
    st.sampled_from(["AWS.x", "amazon.y", "x" * 257, "", ".lead", "trail.", "a..b", "Bad Name", "é"]),
)
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
    accepts = checks.fast_validity(schema)
    assert accepts is not None

    if accepts(body):
        assert RequestValidator(schema).is_valid(body), body


@pytest.mark.parametrize(
    "body",
    [{"body": "This is a test message to enqueue"}, {"body": "b", "attributes": {"kind": "order"}, "delay_seconds": 5}],
)
def test_the_quick_yes_is_said_to_an_ordinary_message(body: dict[str, Any]) -> None:
    accepts = checks.fast_validity(MESSAGE_SCHEMAS["standard"])

    assert accepts is not None and accepts(body)


def test_a_schema_the_rust_validator_cannot_take_leaves_python_alone() -> None:
    assert checks.fast_validity({"pattern": "(unclosed"}) is None


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_replay_gives_the_body_read_then_what_comes_after() -> None:
    async def later() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def both() -> list[Any]:
        receive = checks._replay(b"body", later)
        return [await receive(), await receive()]

    assert run(both()) == [{"type": "http.request", "body": b"body", "more_body": False}, {"type": "http.disconnect"}]
