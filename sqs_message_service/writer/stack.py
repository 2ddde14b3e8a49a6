"""What the writer puts in connexion's middleware stack, and where: the list itself (connexion's
own, changed by type), the access log and request metrics (RequestObserver), the admission limit,
Swagger UI asked only on its own paths, the API-key check and the compact jsonifier.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Optional

from connexion.jsonifier import Jsonifier
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.request_validation import RequestValidationMiddleware
from connexion.middleware.response_validation import ResponseValidationMiddleware
from connexion.middleware.security import SecurityMiddleware
from connexion.middleware.server_error import ServerErrorMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from prometheus_client import make_asgi_app
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..hooks import NO_HOOKS, Hooks
from ..keys import Keys
from ..metrics import WriterMetrics
from ..serving import ADMITTED, plain_response
from .connexion_hooks import ROUTING_CONTEXT, ApiKeySecurityHandler
from .errors import NotAReader, ServiceError, WriterBusy

access_log = logging.getLogger("access")

#: The JSON of responses: compact, where connexion's FlaskApp indents by default.
COMPACT_JSON = Jsonifier(json, separators=(",", ":"))


def middlewares(*, api_keys: bool, checks: Any, observer: Any, admission: Any) -> list[Any]:
    """The writer's stack, outermost first: connexion's own list (`default_middlewares`, as
    connexion's middleware docs build one), with a layer replaced or removed by its type, and
    every layer connexion adds in a later release kept where connexion puts it.

    `checks` (RequestChecks) takes the place of connexion's request validation; response
    validation (off in connexion by default, yet a layer every request passes) is left out, and
    so is the security check when no API keys are configured (the served spec then requires
    none). `observer` comes right after the server-error layer, so it sees every answer;
    `admission` comes after the key check and before the body is read. Raises LookupError when
    a layer this relies on is not in connexion's list."""
    stack: list[Any] = list(ConnexionMiddleware.default_middlewares)

    def position(kind: type) -> int:
        if kind not in stack:
            raise LookupError(f"{kind.__name__} is not among connexion's default middlewares: {stack}")
        return stack.index(kind)

    stack[position(SwaggerUIMiddleware)] = SwaggerUIOnItsPaths
    stack[position(RequestValidationMiddleware)] = checks
    del stack[position(ResponseValidationMiddleware)]
    if not api_keys:
        del stack[position(SecurityMiddleware)]
    stack.insert(stack.index(checks), admission)
    stack.insert(position(ServerErrorMiddleware) + 1, observer)
    return stack


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


class RequestObserver:
    """Hands every request, error responses included, to the writer's hooks (its metrics count
    and time it, tracing spans it), and logs one access line for it: client, method, path,
    status, duration. Answers `GET /metrics` itself, first of all and uncounted, so that a
    saturated writer still answers its scrapes.

    Requests are labelled by the spec's route (`/api/message`), never by the raw path, so that
    probing random URLs cannot grow the metrics without bound: whatever is not an operation of
    the spec is `other`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: WriterMetrics,
        routes: dict[str, str],
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.hooks = hooks  # they watch each request
        self.routes = routes  # operationId -> path in the spec
        self.metrics_app = make_asgi_app(metrics.view)
        self._found: dict[tuple[str, str], str] = {}  # (operationId, base path) -> route, found once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/metrics":
            await self.metrics_app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # connexion's routing notes the operation in scope["extensions"] of a shallow copy of
        # the scope: an extensions dict that exists already is shared, and shows it here too.
        scope.setdefault("extensions", {})
        with self.hooks.request(scope["method"], scope.get("headers", ())) as watch:
            try:
                await self.app(scope, receive, send_and_note_status)
            finally:
                self._observe(scope, status, started, watch)  # inside the watch: the access line carries its ids

    def _observe(self, scope: Scope, status: int, started: float, watch: Any) -> None:
        duration_s = time.perf_counter() - started
        self.hooks.answered(watch, scope["method"], self._route(scope), status, duration_s)
        client = scope.get("client") or ("-", 0)
        access_log.info('%s "%s %s" %d %.1fms', client[0], scope["method"], scope["path"], status, duration_s * 1000)

    def _route(self, scope: Scope) -> str:
        """The spec's path of the request's operation (`/api/message`), or `other`."""
        routing = scope["extensions"].get(ROUTING_CONTEXT, {})
        key = (routing.get("operation_id") or "", routing.get("api_base_path", ""))
        route = self._found.get(key)
        if route is None:
            path = self.routes.get(key[0])
            route = self._found[key] = "other" if path is None else key[1] + path
        return route


class Admission:
    """The writer's admission limit: at most `limit` requests in progress in the process; past it
    a request is answered 503 with Retry-After at once, before its body is read. This bounds the
    queue of waiting requests, and with it memory and latency, when SQS slows down or more
    clients come than the process can serve.

    One count, two places that admit: the socket (serving.GuardedHttp) once a request's headers
    are in, which while the limit is reached sends `response` itself (no task, scope or
    middleware for a request that will be turned away, so that turning clients away costs next
    to nothing), and otherwise counts the request until the app's call ends; and
    `AdmissionLimit`, the middleware, for a request that did not come through that socket (a
    test client, a pipelined request). Health checks and scrapes are never refused.
    """

    def __init__(
        self,
        *,
        limit: int,
        render: Callable[[ServiceError], Response],
        exempt_paths: frozenset[str],
        counted: Callable[[str, str], None],
        retry_after_s: int,
    ) -> None:
        self.limit = limit
        self.render = render  # counts the refusal, logs it (throttled), and answers it
        self.exempt_paths = exempt_paths  # the socket's view of what is never refused
        self.counted = counted  # counts an early refusal: (method, path)
        self.in_progress = 0  # one event loop: no lock
        detail = f"the writer is serving as many requests as it can ({limit}); retry later"
        self.response = plain_response(503, "Writer busy", detail, retry_after_s=retry_after_s, close=False)

    def refused(self, method: str, path: str) -> None:
        self.counted(method, path)


def early_refusals(
    metrics: WriterMetrics,
    route_paths: frozenset[str],
    refused: Callable[[ServiceError], Any],
) -> Callable[[str, str], None]:
    """What counts a request the socket turned away (Admission.refused): its 503 under its route
    (`other` for a path of no operation), and one message `busy` (`refused`, which also logs it,
    throttled). No access line: that is the cost an early refusal exists to save."""
    series: dict[tuple[str, str], Any] = {}  # labelled children, found once

    def count(method: str, path: str) -> None:
        child = series.get((method, path))
        if child is None:
            route = path if path in route_paths else "other"
            child = series[(method, path)] = metrics.requests.labels(method, route, "503")
            if route == "other" and len(series) > 64:  # random paths: do not keep each
                del series[(method, path)]
        child.inc()
        refused(WriterBusy("the writer is serving as many requests as it can; turned away at the socket"))

    return count


class AdmissionLimit:
    """Answer 503 at once, before reading the body, to a request past the Admission limit.
    Counts requests in progress, without locks (one event loop).

    Health checks are never limited: one thread is kept for them, so a saturated writer still
    answers its liveness probe instead of being restarted.
    """

    UNLIMITED = frozenset({"message.health"})

    def __init__(self, app: ASGIApp, *, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        routing = scope.get("extensions", {}).get(ROUTING_CONTEXT, {})
        if scope["type"] != "http" or ADMITTED in scope or routing.get("operation_id") in self.UNLIMITED:
            await self.app(scope, receive, send)  # admitted, and counted, at the socket; or unlimited
            return
        admission = self.admission
        if admission.in_progress >= admission.limit:
            busy = WriterBusy(f"{admission.in_progress} requests already in progress; retry later")
            await admission.render(busy)(scope, receive, send)
            return
        admission.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            admission.in_progress -= 1


def api_key_handler(keys: frozenset[str], read_keys: frozenset[str] = frozenset()) -> type[ApiKeySecurityHandler]:
    """connexion's API-key handler, checking this app's keys: API_KEYS for the scheme the writes
    use, READ_KEYS for the one the read routes use (`x-keys: READ_KEYS` in swagger.yml). Every key
    is compared in constant time and none ends the loop early, so timing tells nothing of which
    key, or how much of one, matched. A writer's key on a read route is 403, not 401: it is a
    key, only not one that reads."""
    known, readers = Keys(keys), Keys(read_keys)

    def check(presented: str, required_scopes: Any = None) -> Optional[dict[str, str]]:
        return {"sub": "api-key"} if known.matches(presented) else None

    def check_reader(presented: str, required_scopes: Any = None) -> Optional[dict[str, str]]:
        if readers.matches(presented):
            return {"sub": "read-key"}
        if known.matches(presented):
            raise NotAReader("this X-API-Key is a writer's (API_KEYS): reading needs one of READ_KEYS")
        return None

    class ConfiguredApiKeys(ApiKeySecurityHandler):
        def _resolve_func(self, security_scheme: dict[str, Any]) -> Any:
            return check_reader if security_scheme.get("x-keys") == "READ_KEYS" else check

    return ConfiguredApiKeys
