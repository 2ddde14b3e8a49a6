"""The parts of connexion the writer relies on beyond its documented options, each named: when an
upgrade moves one, this fails saying which and what the writer does with it, instead of the
writer failing at start, or quietly doing less. All of them are used in webstack.py.

pyproject.toml pins connexion to the minor version these were read from (3.3).
"""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any

import pytest
from connexion import FlaskApp
from connexion.apps.flask import FlaskASGIApp
from connexion.middleware.abstract import ROUTING_CONTEXT, RoutedAPI, RoutedMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.operations import OpenAPIOperation
from connexion.options import SwaggerUIOptions
from connexion.security import ApiKeySecurityHandler
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import webstack
from conftest import ROOT


def declared_connexion_range() -> SpecifierSet:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    line = next(line for line in pyproject.splitlines() if '"connexion[' in line)
    return SpecifierSet(line.split("]", 1)[1].split('"', 1)[0])


def test_the_installed_connexion_is_in_the_pinned_range() -> None:
    installed = Version(importlib.metadata.version("connexion"))

    assert installed in declared_connexion_range(), f"connexion {installed}: these hooks were read from another"


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


#: (owner, its attribute, what the writer does with it)
HOOKS = [
    (ApiKeySecurityHandler, "_resolve_func", "api_key_handler checks API keys in constant time"),
    (RoutedAPI, "add_paths", "RequestChecks prepares each operation's checks at start"),
    (OpenAPIOperation, "parameters", "RequestChecks checks the header parameters"),
    (OpenAPIOperation, "consumes", "RequestChecks checks the Content-Type"),
    (OpenAPIOperation, "request_body", "RequestChecks reads whether a body is required"),
    (OpenAPIOperation, "body_schema", "RequestChecks validates the body against it"),
    (OpenAPIOperation, "body_definition", "RequestChecks reads whether a body is nullable"),
    (SwaggerUIMiddleware, "default_fn", "SwaggerUIOnItsPaths passes on what it does not serve"),
]


@pytest.mark.parametrize(("owner", "name", "use"), HOOKS, ids=[f"{o.__name__}.{n}" for o, n, _ in HOOKS])
def test_each_hook_is_where_the_writer_expects_it(owner: type, name: str, use: str) -> None:
    assert hasattr(owner, name), f"{owner.__name__}.{name} is gone: {use}"


def test_the_hooks_take_what_the_writer_gives_them() -> None:
    assert parameters(ApiKeySecurityHandler._resolve_func) == ["self", "security_scheme"]
    assert parameters(RoutedMiddleware.__init__) == ["self", "app"]
    assert parameters(RoutedMiddleware.add_api) == ["self", "specification", "kwargs"]
    assert {"specification", "next_app"} <= set(parameters(RoutedAPI.__init__))
    assert ROUTING_CONTEXT == "connexion_routing"  # where routing notes the operation in the scope


def test_a_routed_middleware_keeps_its_apis_by_base_path() -> None:
    checks = webstack.RequestChecks(lambda *_: None, spec=None, max_request_bytes=1024)  # type: ignore[arg-type]  # no spec needed

    assert isinstance(checks.apis, dict), "RoutedMiddleware.apis: RequestChecks registers its operations there"
    assert "api_cls" in RoutedMiddleware.__annotations__


def test_the_flask_bridge_is_where_the_writer_swaps_it() -> None:
    flask_asgi = FlaskApp(__name__)._middleware_app

    assert isinstance(flask_asgi, FlaskASGIApp), "FlaskApp._middleware_app: use_bridge swaps the bridge in it"
    assert hasattr(flask_asgi, "asgi_app") and callable(flask_asgi.app.wsgi_app)


def test_swagger_ui_serves_only_under_the_paths_it_is_asked_for() -> None:
    options = SwaggerUIOptions()

    served = [options.spec_path or "/openapi.json", options.swagger_ui_path]

    assert all(any(marker in path for marker in webstack.SwaggerUIOnItsPaths.MARKERS) for path in served)
