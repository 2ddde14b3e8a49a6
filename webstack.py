"""What the writer changes in connexion's stack, all in one place: every use of a connexion
internal is here, and tests/test_connexion_hooks.py names each one, so that an upgrade that
moves one fails there, clearly.

Through connexion's documented options: the middleware list (`middlewares`), in which
RequestChecks, a routed middleware as connexion's own are, takes the place of its request
validation with every check prepared once per operation; a jsonifier that does not indent
(`jsonifier`); API keys checked in constant time (`security_map`).

Through its internals, where it has no option: the Flask-to-ASGI bridge (`use_bridge`), since
connexion builds a2wsgi's with 10 threads and four or more loop/thread hand-offs a request;
the API-key handler's `_resolve_func`; and the operation's description, which RequestChecks
reads as connexion's validation does (`parameters`, `consumes`, `body_schema`, ...).
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import io
import json
import queue
import threading
from typing import Any, Callable, Optional

import jsonschema_rs
from a2wsgi.wsgi import build_environ
from connexion import FlaskApp
from connexion.datastructures import MediaTypeDict
from connexion.jsonifier import Jsonifier
from connexion.middleware.abstract import ROUTING_CONTEXT, RoutedAPI, RoutedMiddleware
from connexion.middleware.context import ContextMiddleware
from connexion.middleware.exceptions import ExceptionMiddleware
from connexion.middleware.lifespan import LifespanMiddleware
from connexion.middleware.routing import RoutingMiddleware
from connexion.middleware.security import SecurityMiddleware
from connexion.middleware.server_error import ServerErrorMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.security import ApiKeySecurityHandler
from connexion.utils import is_nullable, split_content_type
from jsonschema import Draft4Validator, ValidationError
from jsonschema.exceptions import best_match
from starlette.types import ASGIApp, Receive, Scope, Send

from errors import InvalidRequest, LengthRequired, RequestTooLarge, UnsupportedMediaType
from spec import PROPERTY_NAMES, RequestValidator, ServedSpec

#: The JSON of responses: compact, where connexion's FlaskApp indents by default.
COMPACT_JSON = Jsonifier(json, separators=(",", ":"))


def middlewares(*, api_keys: bool, checks: Any, observer: Any, admission: Any) -> list[Any]:
    """The writer's stack, outermost first: connexion's middlewares, less what it does not use,
    with its own in their places. `checks` (RequestChecks) takes the place of connexion's request
    validation; response validation (off in connexion by default, yet a layer every request
    passes) is left out, and so is the security check when no API keys are configured (the
    served spec then requires none). `observer` sees every answer, `admission` comes after the
    key check and before the body is read."""
    return [
        ServerErrorMiddleware, observer, ExceptionMiddleware, SwaggerUIOnItsPaths, RoutingMiddleware,
        *([SecurityMiddleware] if api_keys else []), admission, checks, LifespanMiddleware, ContextMiddleware,
    ]


class SwaggerUIOnItsPaths(SwaggerUIMiddleware):
    """connexion's Swagger UI and served spec, asked only for a path they may serve (the spec's
    `.../openapi.json` and `.yaml`, the UI's `.../ui`): its own router matches every request's
    path against each of its routes, which a message need not pay for."""

    MARKERS = ("/openapi.", "/ui")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(marker in scope["path"] for marker in self.MARKERS):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class OperationChecks:
    """One operation's checks of a request, made as connexion's request validation makes them
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
        unchecked = sorted({parameter["in"] for parameter in parameters} - {"header"})
        if unchecked:
            raise ValueError(f"{operation.operation_id}: only header parameters are checked, not {unchecked}")
        self.headers = [
            (param["name"], param["name"].lower().encode("latin-1"), bool(param.get("required")),
             Draft4Validator(param.get("schema", param), format_checker=Draft4Validator.FORMAT_CHECKER))
            for param in parameters
        ]
        self.consumes: list[str] = list(operation.consumes)
        self.media_types = MediaTypeDict([(media_type.lower(), None) for media_type in self.consumes])
        self.body: Optional[Any] = None
        if self.consumes:
            if any(not media_type.lower().endswith("json") for media_type in self.consumes):
                raise ValueError(f"{operation.operation_id}: only JSON bodies are checked, not {self.consumes}")
            schema = operation.body_schema(self.consumes[0])
            self.body = RequestValidator(schema, format_checker=RequestValidator.FORMAT_CHECKER) if schema else None
            self.accepts = fast_validity(schema) if schema else None
            self.body_required = bool(operation.request_body.get("required", False))
            self.body_nullable = is_nullable(operation.body_definition(self.consumes[0]))

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
        raw = await _read_body(receive, limit=self.max_bytes, too_large=self._too_large)
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


class _ChecksAPI(RoutedAPI[OperationChecks]):
    def __init__(self, *args: Any, served: ServedSpec, max_bytes: int, **kwargs: Any) -> None:
        self.served, self.max_bytes = served, max_bytes
        super().__init__(*args, **kwargs)
        self.add_paths()

    def make_operation(self, operation: Any) -> OperationChecks:
        return OperationChecks(self.next_app, operation=operation, spec=self.served, max_bytes=self.max_bytes)


class RequestChecks(RoutedMiddleware[_ChecksAPI]):
    """In place of connexion's RequestValidationMiddleware: each operation's OperationChecks,
    found by the operation connexion's routing gives the request."""

    api_cls = _ChecksAPI

    def __init__(self, app: ASGIApp, *, spec: ServedSpec, max_request_bytes: int) -> None:
        super().__init__(app)
        self.served = spec
        self.max_bytes = max_request_bytes

    def add_api(self, specification: Any, **kwargs: Any) -> _ChecksAPI:
        api = self.api_cls(specification, next_app=self.app, served=self.served, max_bytes=self.max_bytes, **kwargs)
        self.apis[api.base_path].append(api)
        return api


def api_key_handler(keys: frozenset[str]) -> type[ApiKeySecurityHandler]:
    """connexion's API-key handler, checking this app's keys. Every key is compared in constant
    time and none ends the loop early, so timing tells nothing of which key, or how much of one,
    matched."""
    known = [key.encode("utf-8") for key in keys]

    def check(presented: str, required_scopes: Any = None) -> Optional[dict[str, str]]:
        candidate = presented.encode("utf-8", "surrogateescape")
        matched = False
        for key in known:
            matched |= hmac.compare_digest(candidate, key)
        return {"sub": "api-key"} if matched else None

    class ConfiguredApiKeys(ApiKeySecurityHandler):
        def _resolve_func(self, security_scheme: dict[str, Any]) -> Any:
            return check

    return ConfiguredApiKeys


class HandlerThreads:
    """Up to `threads` threads that run a function in the caller's context (connexion's context
    middleware passes the operation to Flask that way) and give its result back to the event
    loop: one hand-off each way. Threads start as they are needed, and stay."""

    def __init__(self, threads: int) -> None:
        self.max_threads = threads
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._started: list[threading.Thread] = []
        self._lock = threading.Lock()

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((loop, future, contextvars.copy_context(), function, args))
        if not self._idle.acquire(blocking=False):
            self._start_one()
        return await future

    def close(self) -> None:
        """Let the threads end once the jobs queued before have run."""
        with self._lock:
            for _ in self._started:
                self._jobs.put(None)

    def _start_one(self) -> None:
        with self._lock:
            if len(self._started) < self.max_threads:
                thread = threading.Thread(target=self._work, name=f"handler-{len(self._started)}", daemon=True)
                thread.start()
                self._started.append(thread)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, context, function, args = job
            result, error = None, None
            try:
                result = context.run(function, *args)
            except BaseException as exc:  # handed to the awaiting request, as it was raised
                error = exc
            self._idle.release()  # idle before the answer goes back: its next request finds this thread
            loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: Optional[BaseException]) -> None:
    if future.cancelled():  # the request went away; its handler ran to its end all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class FlaskBridge:
    """Flask under ASGI with one hand-off each way: the body, already read and bounded by the
    validator, is taken on the event loop; the WSGI call runs whole on a handler thread; the
    response is sent from the loop. a2wsgi instead reads and sends from the thread, a loop
    round trip for each. Flask's answers here are small JSON, so holding one whole is cheap.

    Only operations that take a body (`body_operations`) have theirs read: any other request's
    body is left unread, as Flask would leave it, so that no one can make the writer buffer it.
    """

    def __init__(self, wsgi_app: Callable[..., Any], *, threads: int, body_operations: frozenset[str]) -> None:
        self.wsgi_app = wsgi_app
        self.threads = HandlerThreads(threads)
        self.body_operations = body_operations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # connexion answers the lifespan; there are no websockets
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        routing = scope.get("extensions", {}).get(ROUTING_CONTEXT, {})
        # RequestChecks has read and bounded the body of an operation that takes one.
        body = await _read_body(receive) if routing.get("operation_id") in self.body_operations else b""
        environ = build_environ(scope, io.BytesIO(body))  # type: ignore[arg-type]  # any file-like body
        status, headers, content = await self.threads.run(self._call, environ)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _call(self, environ: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The whole WSGI call, on a handler thread: (status, headers, body)."""
        started: list[tuple[int, list[tuple[bytes, bytes]]]] = []
        written: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            encoded = [(name.lower().encode("latin1"), value.encode("latin1")) for name, value in headers]
            started[:] = [(int(status.split(" ", 1)[0]), encoded)]
            return written.append

        chunks = self.wsgi_app(environ, start_response)
        try:
            written.extend(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        (status, headers), = started
        return status, headers, b"".join(written)


async def _read_body(
    receive: Receive, *, limit: Optional[int] = None, too_large: Optional[Callable[[], Exception]] = None
) -> bytes:
    """A request's body from its `receive`; with `limit`, refused with `too_large()` as soon as
    it is over, without reading the rest."""
    chunks, size = [], 0
    while True:
        message = await receive()
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


def use_bridge(app: FlaskApp, *, threads: int, body_operations: frozenset[str]) -> FlaskBridge:
    """Serve `app`'s Flask app through a FlaskBridge of `threads` handler threads, in place of the
    a2wsgi bridge connexion builds (it has no option for either: spec-first/connexion#1979)."""
    flask_asgi = app._middleware_app  # FlaskASGIApp: where connexion keeps its bridge
    bridge = FlaskBridge(flask_asgi.app.wsgi_app, threads=threads, body_operations=body_operations)
    flask_asgi.asgi_app = bridge
    return bridge


def _charset(content_type: str) -> Optional[str]:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
