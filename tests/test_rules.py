"""rules.py: SQS's rules once. swagger.yml states the same patterns and limits (checked here, so the
two cannot drift), the served spec and the handler refuse the same fields with the same words,
and what only the code can check (lone surrogates, the size SQS counts) agrees with the spec."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqs_message_service import rules
from sqs_message_service.rules import attribute_name_problem, character_problem, payload_bytes, queue_fields
from sqs_message_service.writer.errors import InvalidMessage
from sqs_message_service.writer.service import to_outgoing
from sqs_message_service.writer.spec import load_source, served_spec

SOURCE = load_source()
SCHEMAS = SOURCE["components"]["schemas"]
FIELDS = SCHEMAS["MessageFields"]["properties"]
TEXT = SCHEMAS["SqsText"]["properties"]


def test_swagger_states_the_rules_character_pattern_for_the_body_and_every_attribute_value() -> None:
    assert TEXT["body"]["pattern"] == rules.TEXT_PATTERN
    assert TEXT["attributes"]["additionalProperties"]["pattern"] == rules.TEXT_PATTERN


def test_swagger_states_the_rules_for_attribute_names_and_their_number() -> None:
    names = TEXT["attributes"]["x-propertyNames"]

    assert names["pattern"] == rules.ATTRIBUTE_NAME_PATTERN
    assert (names["minLength"], names["maxLength"]) == (1, rules.MAX_ATTRIBUTE_NAME_CHARS)
    assert FIELDS["attributes"]["maxProperties"] == rules.MAX_ATTRIBUTES


def test_swagger_states_the_rules_for_ids_and_delays() -> None:
    for field in ("group_id", "deduplication_id"):
        assert FIELDS[field]["pattern"] == rules.ID_PATTERN
        assert (FIELDS[field]["minLength"], FIELDS[field]["maxLength"]) == (1, rules.MAX_ID_CHARS)
    key = SOURCE["paths"]["/message"]["post"]["parameters"][0]["schema"]
    assert (key["pattern"], key["maxLength"]) == (rules.ID_PATTERN, rules.MAX_ID_CHARS)
    assert (FIELDS["delay_seconds"]["minimum"], FIELDS["delay_seconds"]["maximum"]) == (0, rules.MAX_DELAY_S)


SQS_CHARACTERS = re.compile(rules.TEXT_PATTERN)


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
@settings(max_examples=500, deadline=None)
def test_the_spec_and_the_handler_accept_the_same_characters(text: str) -> None:
    # the handler also refuses lone surrogates, which JSON cannot carry between systems
    assert bool(SQS_CHARACTERS.search(text)) == (character_problem("body", text) is None)


@pytest.mark.parametrize("character", ["\u0000", "\u0008", "\u000b", "\u001f", "\ufffe", "\uffff", "\t", "\U0010ffff"])
def test_the_edges_of_the_character_set_agree(character: str) -> None:
    assert bool(SQS_CHARACTERS.search(character)) == (character_problem("body", character) is None)


def test_a_lone_surrogate_is_refused_by_the_handler_where_no_pattern_can_say_it() -> None:
    assert SQS_CHARACTERS.search("a\ud800") and character_problem("body", "a\ud800") == (
        "body holds U+D800 at position 1, a character SQS does not accept (allowed: tab, newline, carriage return, "
        "U+0020 to U+D7FF, U+E000 to U+FFFD, U+10000 to U+10FFFF)"
    )


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("kind", True),
        ("a.b-c_d", True),
        ("x" * 256, True),
        ("AWSx", True),
        ("x" * 257, False),
        ("", False),
        ("AWS.x", False),
        ("amazon.y", False),
        ("Amazon.y", False),
        (".lead", False),
        ("trail.", False),
        ("a..b", False),
        ("Bad Name", False),
        ("é", False),
    ],
)
def test_an_attribute_name_is_judged_alike_by_the_spec_and_the_handler(name: str, allowed: bool) -> None:
    in_spec = 1 <= len(name) <= rules.MAX_ATTRIBUTE_NAME_CHARS and re.match(rules.ATTRIBUTE_NAME_PATTERN, name)

    assert bool(in_spec) == allowed
    assert (attribute_name_problem(name) is None) == allowed


def test_the_size_is_what_sqs_counts_body_names_types_and_values_in_utf8() -> None:
    assert payload_bytes("é", {"k": "€"}) == 2 + 1 + len("String") + 3


@pytest.mark.parametrize(("fifo", "content_based"), [(False, False), (True, False), (True, True)])
def test_the_served_spec_and_the_handler_refuse_the_same_fields_with_the_same_words(
    fifo: bool, content_based: bool
) -> None:
    kind = queue_fields(fifo=fifo, content_based_deduplication=content_based)
    spec = served_spec(SOURCE, fifo=fifo, content_based_deduplication=content_based, keys_required=False)

    assert (dict(spec.absent), dict(spec.required)) == (dict(kind.absent), dict(kind.required))
    base: dict[str, Any] = {"body": "b", "group_id": "g", "deduplication_id": "d"} if fifo else {"body": "b"}
    for name, why in kind.absent.items():
        with pytest.raises(InvalidMessage) as refused:
            to_outgoing(
                {**base, name: 1 if name == "delay_seconds" else "x"},
                fifo=fifo,
                content_based_dedup=content_based,
                max_bytes=1024,
            )
        assert str(refused.value) == why
    for name, why in kind.required.items():
        with pytest.raises(InvalidMessage) as refused:
            to_outgoing(
                {key: value for key, value in base.items() if key != name},
                fifo=fifo,
                content_based_dedup=content_based,
                max_bytes=1024,
            )
        assert str(refused.value) == why
