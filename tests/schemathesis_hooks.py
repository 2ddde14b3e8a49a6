"""schemathesis hooks for the writer's spec, loaded through schemathesis.toml.

OpenAPI 3.0 has no keyword for what an object's property names must be, so swagger.yml states
SQS's rule for attribute names as `x-propertyNames`: JSON Schema's `propertyNames` under the
vendor prefix OpenAPI 3.0 allows, which the writer checks. schemathesis reads OpenAPI 3.0
schemas as JSON Schema draft 4, which has no `propertyNames` either, so it would send names the
spec rules out and call their 400 a valid request rejected. These hooks apply the rule to the
valid requests it generates: a name that breaks it is renamed to one that keeps it. Invalid
requests are left as generated; the writer's own tests send it the names SQS refuses.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import schemathesis
from jsonschema import Draft4Validator
from schemathesis import GenerationMode

VENDOR_KEYWORD = "x-propertyNames"

#: The spec as loaded, for following its `$ref`s.
_document: dict[str, Any] = {}


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    _document.clear()
    _document.update(raw_schema)


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE or not isinstance(case.body, dict):
        return case
    for body in case.operation.body:
        if body.media_type == case.media_type:
            keep_property_names(case.body, body.definition.get("schema", {}))
    return case


def keep_property_names(instance: Any, schema: Any) -> None:
    """Rename, in place, every property of `instance` whose name breaks an `x-propertyNames` of
    `schema` (followed through $ref, allOf, properties and items)."""
    for node in _schemas(schema):
        names = node.get(VENDOR_KEYWORD)
        if names is not None and isinstance(instance, dict):
            _rename_invalid(instance, Draft4Validator(names))
        if isinstance(instance, dict):
            for name, subschema in node.get("properties", {}).items():
                if name in instance:
                    keep_property_names(instance[name], subschema)
        if isinstance(instance, list) and "items" in node:
            for item in instance:
                keep_property_names(item, node["items"])


def _schemas(schema: Any) -> Iterator[dict[str, Any]]:
    """`schema` and every schema it is made of through $ref and allOf."""
    schema = _resolved(schema)
    if not isinstance(schema, dict):
        return
    yield schema
    for part in schema.get("allOf", []):
        yield from _schemas(part)


def _resolved(schema: Any) -> Any:
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        node: Any = _document
        for step in schema["$ref"].removeprefix("#/").split("/"):
            node = node[step]
        schema = node
    return schema


def _rename_invalid(instance: dict[str, Any], names: Draft4Validator) -> None:
    for name in [name for name in instance if not names.is_valid(name)]:
        value = instance.pop(name)
        replacement = _valid_name(instance, names)
        if replacement is not None:  # else the property goes: no name of ours keeps the rule
            instance[replacement] = value


def _valid_name(taken: dict[str, Any], names: Draft4Validator, tries: int = 1000) -> Optional[str]:
    """A name not in `taken` that keeps the rule: "namea", "nameb", ..., at most `tries` of them."""
    for number in range(tries):
        candidate = "name" + _letters(number)
        if candidate not in taken and names.is_valid(candidate):
            return candidate
    return None


def _letters(number: int) -> str:
    """0 -> "a", 25 -> "z", 26 -> "ba": letters only, which the rules of names most often take."""
    text = ""
    while True:
        number, digit = divmod(number, 26)
        text = "abcdefghijklmnopqrstuvwxyz"[digit] + text
        if not number:
            return text
