"""The spec the writer serves: swagger.yml fitted, once at start, to the queue it writes to.

swagger.yml describes every field a message can have on either kind of queue. A writer serves,
shows in Swagger UI and validates against one spec built from it, so that a schema-valid request
is one its queue takes:

- a standard queue: no `deduplication_id` (SQS takes it only on FIFO queues);
- a FIFO queue: `group_id` required, no `delay_seconds` (SQS takes a delay per queue only), and
  `deduplication_id` required unless the queue has content-based deduplication;
- no API keys configured: no `security` requirement;
- tracing carrying its context in a `traceparent` attribute: at most 9 attributes, and none of
  the user's named so;
- the read routes: READ_MAX_LEASE as the longest lease and delay, READ_MAX_WAIT as the longest
  long poll, and no key asked of them
  without READ_KEYS (they then refuse every request, saying how to turn reading on).

`RequestValidator` checks a body against it, including `x-propertyNames`: JSON Schema's
`propertyNames` (SQS's rule for attribute names), under the vendor prefix OpenAPI 3.0 requires.
`ServedSpec.describe` words a violation as a `detail` a client can act on.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import yaml
from jsonschema import ValidationError, validators
from jsonschema.exceptions import best_match

from ..rules import attribute_name_problem, character_problem, queue_fields
from ..settings import DATA_DIR
from .connexion_hooks import Draft4RequestValidator

SOURCE = DATA_DIR / "swagger.yml"

#: Where the fields of a message are described, in swagger.yml, and the text SQS accepts in them.
MESSAGE_FIELDS = ("components", "schemas", "MessageFields")
SQS_TEXT = ("components", "schemas", "SqsText")
#: The keyword that states what an object's property names must be.
PROPERTY_NAMES = "x-propertyNames"
#: The security scheme of the read routes, and the fields that take a lease's seconds.
READ_KEY = "readKey"
#: What marks a read route in swagger.yml.
READS = "x-reads"
LEASE_FIELDS = (("ReceiveRequest", "lease_seconds"), ("GiveBack", "delay_seconds"), ("Extend", "lease_seconds"))


def _property_names(validator: Any, names: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """JSON Schema's `propertyNames`: every name of the object is valid under `names`."""
    if validator.is_type(instance, "object"):
        for name in instance:
            yield from validator.descend(instance=name, schema=names)


#: connexion's request validator (OpenAPI 3.0's flavour of draft 4), with x-propertyNames.
RequestValidator = validators.extend(Draft4RequestValidator, {PROPERTY_NAMES: _property_names})


@dataclass(frozen=True)
class ServedSpec:
    """The spec as served, and why it lacks or requires what the source does not."""

    document: dict[str, Any]
    #: field -> why this queue takes no such field
    absent: Mapping[str, str]
    #: field -> why this queue needs it
    required: Mapping[str, str]
    #: the attribute name the writer sets itself (tracing's `traceparent`), if any
    reserved_attribute: Optional[str] = None

    @property
    def body_operations(self) -> frozenset[str]:
        """The operationIds that take a request body: those whose messages are counted."""
        return frozenset(
            operation["operationId"]
            for operations in self.document["paths"].values()
            for operation in operations.values()
            if "requestBody" in operation
        )

    @functools.cached_property
    def _entry_validator(self) -> Any:
        return RequestValidator(_at(self.document, MESSAGE_FIELDS), format_checker=RequestValidator.FORMAT_CHECKER)

    def entry_problem(self, entry: Any) -> Optional[str]:
        """What the served `MessageFields` finds wrong with one entry of a batch, worded as a
        request's violation would be (None: nothing): each entry is judged on its own."""
        errors = list(self._entry_validator.iter_errors(entry))
        if not errors:
            return None
        return self.describe(best_match(errors))

    @property
    def message_operations(self) -> frozenset[str]:
        """The operations whose body holds messages (not the read routes'): those counted."""
        return frozenset(
            operation["operationId"]
            for operations in self.document["paths"].values()
            for operation in operations.values()
            if "requestBody" in operation and not operation.get(READS)
        )

    def describe(self, error: ValidationError) -> str:
        """A request body's violation of the spec, as a `detail`: the reason this queue takes no
        such field, or needs it; the character or attribute name SQS would refuse; otherwise
        jsonschema's own words, with where in the body."""
        path = list(error.absolute_path)
        where = f" - '{'.'.join(str(step) for step in path)}'" if path else ""
        instance = error.instance
        if PROPERTY_NAMES in error.schema_path and isinstance(instance, str):
            if instance == self.reserved_attribute:
                return (
                    f"attribute {instance!r} carries the trace context while tracing is on; name yours otherwise{where}"
                )
            return (attribute_name_problem(instance) or error.message) + where
        if error.validator == "maxProperties" and path and path[-1] == "attributes" and self.reserved_attribute:
            return (
                f"at most {error.validator_value} attributes: while tracing is on, a {self.reserved_attribute!r} "
                f"attribute carries the trace context as the tenth{where}"
            )
        if error.validator == "additionalProperties" and isinstance(instance, dict):
            known = error.schema.get("properties", {})
            for name in instance:
                if name not in known and name in self.absent:
                    return self.absent[name] + where
        if error.validator == "required" and isinstance(instance, dict):
            for name in error.validator_value:
                if name not in instance and name in self.required:
                    return self.required[name] + where
        if error.validator == "pattern" and isinstance(instance, str) and path:
            field = path[-1]
            what = f"attribute {field!r}" if len(path) > 1 and path[-2] == "attributes" else str(field)
            text_problem = character_problem(what, instance)
            if text_problem is not None:
                return text_problem + where
        return error.message + where


@functools.cache
def load_source(path: Path = SOURCE) -> Mapping[str, Any]:
    """swagger.yml, parsed once per process (libyaml's parser where PyYAML has it); callers
    fit a copy of it (`served_spec`) and leave this one as it is."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)


def served_spec(
    source: Mapping[str, Any],
    *,
    fifo: bool,
    content_based_deduplication: bool,
    keys_required: bool,
    reserved_attribute: Optional[str] = None,
    read_keys: bool = False,
    max_lease_s: int = 300,
    max_wait_s: int = 20,
) -> ServedSpec:
    """`source` (swagger.yml, loaded) fitted to a queue of this kind, to the writer's keys, and
    to an attribute the writer sets itself (`reserved_attribute`: tracing's context, which then
    takes one of the ten attributes SQS allows, and its name); the read routes to READ_KEYS
    (`read_keys`: whether any is set), READ_MAX_LEASE (`max_lease_s`) and READ_MAX_WAIT
    (`max_wait_s`)."""
    document = copy.deepcopy(dict(source))
    for schema, field_name in LEASE_FIELDS:
        document["components"]["schemas"][schema]["properties"][field_name]["maximum"] = max_lease_s
    document["components"]["schemas"]["ReceiveRequest"]["properties"]["wait_seconds"]["maximum"] = max_wait_s
    if not read_keys:  # no key to ask for: the handlers refuse every read, saying how to turn it on
        for operations in document["paths"].values():
            for operation in operations.values():
                if operation.get(READS):
                    operation["security"] = []
    fields = _at(document, MESSAGE_FIELDS)
    if reserved_attribute is not None:
        attributes = fields["properties"]["attributes"]
        attributes["maxProperties"] -= 1
        attributes["description"] = (
            f"SQS message attributes, all of data type String (at most {attributes['maxProperties']}: while "
            f"tracing is on, the writer adds a {reserved_attribute!r} attribute with the trace context, and the "
            "name is the writer's)."
        )
        names = _at(document, SQS_TEXT)["properties"]["attributes"][PROPERTY_NAMES]
        names["pattern"] = f"^(?!{re.escape(reserved_attribute)}$)" + names["pattern"].removeprefix("^")
    kind = queue_fields(fifo=fifo, content_based_deduplication=content_based_deduplication)
    absent, required = dict(kind.absent), dict(kind.required)
    for name in absent:
        del fields["properties"][name]
    fields["required"] = [*fields["required"], *required]
    if not keys_required:
        del document["security"]  # no keys configured: the served spec says so too
    return ServedSpec(document=document, absent=absent, required=required, reserved_attribute=reserved_attribute)


def _at(document: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = document
    for step in path:
        node = node[step]
    return node
