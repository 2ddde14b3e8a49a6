"""The writer's request checks, in place of connexion's request validation: each operation's
checks prepared once at start, where connexion rebuilds them for every request, and made safe
for hostile input. An operation they do not cover (a query or path parameter, a body that is
not JSON) is checked by connexion's own validation instead.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Optional

import jsonschema_rs
from jsonschema import Draft4Validator, ValidationError
from jsonschema.exceptions import best_match
from starlette.types import ASGIApp, Receive, Scope, Send

from .connexion_hooks import (
    MediaTypeDict,
    RequestValidationAPI,
    RequestValidationMiddleware,
    is_nullable,
    split_content_type,
)
from .errors import InvalidRequest, LengthRequired, RequestIncomplete, RequestTooLarge, UnsupportedMediaType
from .spec import PROPERTY_NAMES, RequestValidator, ServedSpec

log = logging.getLogger(__name__)


class OperationChecks:
    """One operation's checks of a request (header parameters and a JSON body: see `uncovered`),
    made as connexion's request validation makes them
    (header parameters, then the Content-Type, then the body) with the same refusals, and with
    everything that depends only on the operation prepared once, where connexion rebuilds it for
    every request (URI parsers, media-type tables, the body definition, validators).

    The body check is made safe for hostile input: a body over `max_bytes` is refused before it
    is read whole (413), a chunked upload too (411), a request with no Content-Type is 415, and
    invalid UTF-8, NaN, huge integers and deep nesting are 400, never 500. Refusals are
    errors.InvalidRequest and its kinds, worded by the served spec.
    """

    def __init__(self, next_app: ASGIApp, *, operation: Any, spec: ServedSpec, max_bytes: int) -> None:
        self.next_app = next_app
        self.spec = spec
        self.max_bytes = max_bytes
        parameters = list(operation.parameters)
        self.headers = [
            (
                param["name"],
                param["name"].lower().encode("latin-1"),
                bool(param.get("required")),
                Draft4Validator(param.get("schema", param), format_checker=Draft4Validator.FORMAT_CHECKER),
            )
            for param in parameters
        ]
        self.consumes: list[str] = list(operation.consumes)
        self.media_types = MediaTypeDict([(media_type.lower(), None) for media_type in self.consumes])
        self.body: Optional[Any] = None
        if self.consumes:
            schema = operation.body_schema(self.consumes[0])
            self.body = RequestValidator(schema, format_checker=RequestValidator.FORMAT_CHECKER) if schema else None
            self.accepts = fast_validity(schema) if schema else None
            self.body_required = bool(operation.request_body.get("required", False))
            self.body_nullable = is_nullable(operation.body_definition(self.consumes[0]))

    @staticmethod
    def uncovered(operation: Any) -> Optional[str]:
        """What of `operation` these checks do not check (then connexion's own validation
        does), or None: they check header parameters and JSON bodies."""
        kinds = sorted({parameter["in"] for parameter in operation.parameters} - {"header"})
        if kinds:
            return f"{' and '.join(kinds)} parameters"
        others = [media_type for media_type in operation.consumes if not media_type.lower().endswith("json")]
        if others:
            return f"{', '.join(others)} bodies"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:  # lower-case names, as ASGI gives them; the first of each
            headers.setdefault(name, value)
        self._check_headers(headers)
        content_type = headers.get(b"content-type", b"").decode("latin-1") or None
        if self.consumes:
            mime_type = (split_content_type(content_type)[0] if content_type else None) or self.consumes[0]
            if mime_type.lower() not in self.media_types:
                raise UnsupportedMediaType(f"Invalid Content-type ({mime_type}), expected {self.consumes}")
        if self.body is not None:
            body = await self._checked_body(headers, content_type, receive)
            receive = _replay(body, receive)
        await self.next_app(scope, receive, send)

    def _check_headers(self, headers: dict[bytes, bytes]) -> None:
        for name, key, required, validator in self.headers:
            raw = headers.get(key)
            if raw is None:
                error = f"Missing header parameter '{name}'" if required else None
            else:
                found = best_match(validator.iter_errors(raw.decode("latin-1")))
                error = None if found is None else str(found)
            if error:
                # jsonschema's own text neither names the header nor fits a detail on one line
                raise InvalidRequest(f"header {name}: {error.splitlines()[0]}")

    async def _checked_body(self, headers: dict[bytes, bytes], content_type: Optional[str], receive: Receive) -> bytes:
        """The body, read and checked; what a handler gets is these bytes again."""
        length = headers.get(b"content-length")
        if length is None and b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            raise LengthRequired("send the JSON body with a Content-Length header; chunked uploads are not accepted")
        if self.body_required and not int(length or 0):
            raise InvalidRequest("a JSON body is required")
        if content_type is None:
            raise UnsupportedMediaType("Content-Type must be application/json")
        charset = _charset(content_type)
        if charset not in (None, "utf-8", "utf8"):
            raise UnsupportedMediaType(f"JSON must be UTF-8, not {charset}")
        if int(length or 0) > self.max_bytes:
            raise self._too_large()
        assert self.body is not None  # called only for an operation with a body schema
        raw = await read_body(receive, limit=self.max_bytes, too_large=self._too_large)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"the request body is not valid UTF-8: {exc}") from None
        try:
            body = json.loads(text, parse_constant=_refuse_constant) if text else None
        except RecursionError:
            raise InvalidRequest("the JSON is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
            raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
        if body is None:
            if not self.body_nullable:
                raise InvalidRequest("Request body must not be empty")
            return raw
        if self.accepts is not None and self.accepts(body):
            return raw
        try:
            self.body.validate(body)
        except ValidationError as error:
            # Not logged: the detail can quote the body, which stays out of INFO logs.
            raise InvalidRequest(self.spec.describe(error)) from None
        return raw

    def _too_large(self) -> RequestTooLarge:
        return RequestTooLarge(f"the request body is over MAX_REQUEST_BYTES ({self.max_bytes} bytes)")


def fast_validity(schema: dict[str, Any]) -> Optional[Callable[[Any], bool]]:
    """A quick yes for a body `schema` allows, from jsonschema_rs (draft 4, as connexion reads
    OpenAPI 3.0, with x-propertyNames); None when it cannot take the schema. Python's jsonschema
    stays the judge: a body this does not accept goes to it, for the verdict and its words. So
    this may say no too often (its `$` is strict; it declines huge integers), never yes too often."""
    try:
        validator = jsonschema_rs.Draft4Validator(schema, keywords={PROPERTY_NAMES: _PropertyNames})
    except Exception:  # a keyword or pattern it does not take: Python's alone, as before
        return None

    def accepts(body: Any) -> bool:
        try:
            return bool(validator.is_valid(body))
        except Exception:  # a value it cannot convert (an integer of 400 digits, say)
            return False

    return accepts


class _PropertyNames:
    """x-propertyNames for jsonschema_rs: every name of the object is valid under its schema."""

    def __init__(self, parent_schema: Any, value: dict[str, Any], schema_path: Any) -> None:
        self.names = jsonschema_rs.Draft4Validator(value)

    def validate(self, instance: Any) -> None:
        if isinstance(instance, dict):
            for name in instance:
                if not self.names.is_valid(name):
                    raise ValueError(f"property name {name!r} is not allowed")


class _ChecksAPI(RequestValidationAPI):
    """connexion's request validation API, whose operations are OperationChecks wherever those
    cover the operation, and connexion's own RequestValidationOperation elsewhere."""

    def __init__(self, *args: Any, served: ServedSpec, max_bytes: int, **kwargs: Any) -> None:
        self.served, self.max_bytes = served, max_bytes
        super().__init__(*args, **kwargs)  # adds the paths, calling make_operation for each

    def make_operation(self, operation: Any) -> Any:
        uncovered = OperationChecks.uncovered(operation)
        if uncovered is not None:
            log.info("%s: checked by connexion's own validation (it has %s)", operation.operation_id, uncovered)
            return super().make_operation(operation)
        return OperationChecks(self.next_app, operation=operation, spec=self.served, max_bytes=self.max_bytes)


class RequestChecks(RequestValidationMiddleware):
    """In place of connexion's RequestValidationMiddleware, and a kind of it: each operation's
    OperationChecks (or connexion's own validation), found by the operation connexion's routing
    gives the request."""

    api_cls = _ChecksAPI

    def __init__(self, app: ASGIApp, *, spec: ServedSpec, max_request_bytes: int) -> None:
        super().__init__(app)
        self.served = spec
        self.max_bytes = max_request_bytes

    def add_api(self, specification: Any, **kwargs: Any) -> Any:
        api = self.api_cls(specification, next_app=self.app, served=self.served, max_bytes=self.max_bytes, **kwargs)
        self.apis[api.base_path].append(api)
        return api


async def read_body(
    receive: Receive, *, limit: Optional[int] = None, too_large: Optional[Callable[[], Exception]] = None
) -> bytes:
    """A request's body from its `receive`; with `limit`, refused with `too_large()` as soon as
    it is over, without reading the rest. RequestIncomplete when the connection ends first (the
    socket's BODY_TIMEOUT, or a client gone): a part of a body is no body."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestIncomplete("the connection ended before the request's body did")
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit and too_large is not None:
            raise too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` with the body, already read, given again first."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def again() -> Any:
        return pending.pop() if pending else await receive()

    return again


def _charset(content_type: str) -> Optional[str]:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
