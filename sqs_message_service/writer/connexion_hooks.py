"""Every part of connexion (and of a2wsgi, which it brings) that the writer uses beyond connexion's
documented options, named once: the writer's modules import them from here, and
tests/test_connexion_hooks.py checks each one against the installed version, so that an
upgrade that moves one fails there, naming it, instead of at start or quietly.

Read from connexion 3.3 (pyproject.toml pins the minor version). What the writer uses through
documented options (`middlewares=` built from `ConnexionMiddleware.default_middlewares`,
`jsonifier=`, `security_map=`, `add_error_handler`, `add_wsgi_middleware`) is not listed here.
"""

from __future__ import annotations

from typing import Any

from a2wsgi.wsgi import build_environ
from connexion import FlaskApp
from connexion.apps.flask import FlaskASGIApp
from connexion.datastructures import MediaTypeDict
from connexion.json_schema import Draft4RequestValidator
from connexion.middleware.abstract import ROUTING_CONTEXT, RoutedAPI, RoutedMiddleware
from connexion.middleware.request_validation import RequestValidationAPI, RequestValidationMiddleware
from connexion.security import ApiKeySecurityHandler
from connexion.utils import is_nullable, split_content_type

__all__ = [
    "ROUTING_CONTEXT",
    "ApiKeySecurityHandler",
    "Draft4RequestValidator",
    "MediaTypeDict",
    "RequestValidationAPI",
    "RequestValidationMiddleware",
    "RoutedAPI",
    "RoutedMiddleware",
    "build_environ",
    "flask_asgi_app",
    "is_nullable",
    "split_content_type",
]

#: (what, where the writer uses it), for each hook: the test names them when one moves.
USES = {
    "ROUTING_CONTEXT": "where connexion's routing notes the operation in the ASGI scope (observer, admission, bridge)",
    "RoutedAPI.add_paths / make_operation": "RequestChecks prepares each operation's checks at start",
    "RoutedMiddleware.apis / add_api": "RequestChecks registers its operations by base path",
    "RequestValidationAPI.make_operation": "operations the prepared checks do not cover get connexion's own",
    "OpenAPIOperation.parameters / consumes / request_body / body_schema / body_definition": (
        "OperationChecks reads the operation as connexion's validation does"
    ),
    "MediaTypeDict": "OperationChecks matches the Content-Type as connexion does",
    "split_content_type / is_nullable": "OperationChecks reads the media type and a nullable body",
    "ApiKeySecurityHandler._resolve_func": "api_key_handler checks the configured keys in constant time",
    "FlaskApp._middleware_app / FlaskASGIApp.asgi_app(.app)": (
        "use_bridge puts FlaskBridge where connexion keeps its a2wsgi bridge; add_wsgi_middleware wraps its .app"
    ),
    "a2wsgi.wsgi.build_environ": "FlaskBridge builds the WSGI environ as a2wsgi does",
    "SwaggerUIMiddleware.default_fn": "SwaggerUIOnItsPaths passes on what its router does not serve, as connexion's",
    "Draft4RequestValidator": "spec.RequestValidator is connexion's (OpenAPI 3.0's draft 4) with x-propertyNames",
}


def flask_asgi_app(app: FlaskApp) -> Any:
    """The FlaskASGIApp inside a FlaskApp: where connexion keeps its Flask-to-ASGI bridge
    (`asgi_app`, whose `app` is the WSGI app that `add_wsgi_middleware` wraps)."""
    inner = app._middleware_app
    if not isinstance(inner, FlaskASGIApp):  # pragma: no cover - only when connexion moves it
        raise TypeError(f"FlaskApp._middleware_app is a {type(inner).__name__}, not a FlaskASGIApp")
    return inner
