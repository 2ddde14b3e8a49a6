"""The parts of connexion (and a2wsgi) the writer relies on beyond its documented options, each named
in sqs_message_service/writer/connexion_hooks.py: when an upgrade moves one, a test here fails
naming it, the installed version and what the writer does with it, instead of the writer failing
at start, or quietly doing less.

pyproject.toml pins connexion to the minor version these were read from (3.3).
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
from pathlib import Path
from typing import Any

import pytest
from connexion import FlaskApp
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.operations import OpenAPIOperation
from connexion.options import SwaggerUIOptions
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import sqs_message_service.writer as writer_package
from harness import ROOT
from sqs_message_service.writer import checks, connexion_hooks, stack
from sqs_message_service.writer.connexion_hooks import (
    ROUTING_CONTEXT,
    ApiKeySecurityHandler,
    Draft4RequestValidator,
    MediaTypeDict,
    RequestValidationAPI,
    RequestValidationMiddleware,
    RoutedAPI,
    RoutedMiddleware,
    build_environ,
    flask_asgi_app,
    is_nullable,
    split_content_type,
)

CONNEXION = importlib.metadata.version("connexion")
A2WSGI = importlib.metadata.version("a2wsgi")


def moved(what: str) -> str:
    """The failure's words: which hook, in which versions, and what the writer does with it."""
    use = next((use for name, use in connexion_hooks.USES.items() if name.startswith(what)), "see connexion_hooks.py")
    return f"{what} has moved in connexion {CONNEXION} (a2wsgi {A2WSGI}): {use}"


def declared_connexion_range() -> SpecifierSet:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    line = next(line for line in pyproject.splitlines() if '"connexion[' in line)
    return SpecifierSet(line.split("]", 1)[1].split('"', 1)[0])


def test_the_installed_connexion_is_in_the_pinned_range() -> None:
    assert Version(CONNEXION) in declared_connexion_range(), f"connexion {CONNEXION}: these hooks were read from 3.3"


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


#: (owner, its attribute, the name connexion_hooks.USES gives it)
ATTRIBUTES = [
    (ApiKeySecurityHandler, "_resolve_func", "ApiKeySecurityHandler._resolve_func"),
    (RoutedAPI, "add_paths", "RoutedAPI.add_paths"),
    (RoutedAPI, "make_operation", "RoutedAPI.add_paths"),
    (RoutedMiddleware, "add_api", "RoutedMiddleware.apis"),
    (RequestValidationAPI, "make_operation", "RequestValidationAPI.make_operation"),
    (OpenAPIOperation, "parameters", "OpenAPIOperation.parameters"),
    (OpenAPIOperation, "consumes", "OpenAPIOperation.parameters"),
    (OpenAPIOperation, "request_body", "OpenAPIOperation.parameters"),
    (OpenAPIOperation, "body_schema", "OpenAPIOperation.parameters"),
    (OpenAPIOperation, "body_definition", "OpenAPIOperation.parameters"),
    (SwaggerUIMiddleware, "default_fn", "SwaggerUIMiddleware.default_fn"),
]


@pytest.mark.parametrize(("owner", "name", "use"), ATTRIBUTES, ids=[f"{o.__name__}.{n}" for o, n, _ in ATTRIBUTES])
def test_each_hook_is_where_the_writer_expects_it(owner: type, name: str, use: str) -> None:
    assert hasattr(owner, name), moved(use)


def test_the_hooks_take_what_the_writer_gives_them() -> None:
    assert parameters(ApiKeySecurityHandler._resolve_func) == ["self", "security_scheme"], moved("ApiKeySecurity")
    assert parameters(RoutedMiddleware.__init__) == ["self", "app"], moved("RoutedMiddleware")
    assert parameters(RoutedMiddleware.add_api) == ["self", "specification", "kwargs"], moved("RoutedMiddleware")
    assert {"specification", "next_app"} <= set(parameters(RoutedAPI.__init__)), moved("RoutedAPI")
    assert parameters(RequestValidationAPI.make_operation) == ["self", "operation"], moved("RequestValidationAPI")
    assert ROUTING_CONTEXT == "connexion_routing", moved("ROUTING_CONTEXT")


def test_the_helpers_read_what_connexion_reads() -> None:
    assert split_content_type("application/json; charset=utf-8")[0] == "application/json", moved("split_content_type")
    assert is_nullable({"nullable": True}) and not is_nullable({}), moved("split_content_type")
    assert "application/json" in MediaTypeDict([("application/*", None)]), moved("MediaTypeDict")


def test_connexions_body_validator_is_a_jsonschema_draft_4_validator_the_spec_can_extend() -> None:
    assert Draft4RequestValidator.META_SCHEMA["id"].startswith("http://json-schema.org/draft-04/"), moved(
        "Draft4RequestValidator"
    )
    assert callable(getattr(Draft4RequestValidator, "iter_errors", None)), moved("Draft4RequestValidator")


def test_a2wsgi_builds_the_environ_the_bridge_hands_to_flask() -> None:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/message",
        "query_string": b"a=1",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "http_version": "1.1",
        "server": ("127.0.0.1", 5000),
        "client": ("127.0.0.1", 1234),
    }

    environ = build_environ(scope, None)  # type: ignore[arg-type]  # any file-like body

    request_line = (environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"])
    assert request_line == ("POST", "/api/message", "a=1"), moved("a2wsgi.wsgi.build_environ")
    assert environ["CONTENT_TYPE"] == "application/json", moved("a2wsgi.wsgi.build_environ")


def test_a_routed_middleware_keeps_its_apis_by_base_path() -> None:
    request_checks = checks.RequestChecks(lambda *_: None, spec=None, max_request_bytes=1024)  # type: ignore[arg-type]

    assert isinstance(request_checks.apis, dict), moved("RoutedMiddleware.apis")
    assert "api_cls" in RoutedMiddleware.__annotations__, moved("RoutedMiddleware.apis")


def test_the_flask_bridge_is_where_the_writer_swaps_it() -> None:
    flask_asgi = flask_asgi_app(FlaskApp(__name__))

    # add_wsgi_middleware wraps asgi_app.app: the bridge keeps its WSGI app under that name
    assert callable(flask_asgi.asgi_app.app), moved("FlaskApp._middleware_app")
    assert "self._middleware_app.asgi_app.app" in inspect.getsource(FlaskApp.add_wsgi_middleware), moved(
        "FlaskApp._middleware_app"
    )


def test_the_default_middlewares_hold_every_layer_the_writer_changes() -> None:
    defaults = ConnexionMiddleware.default_middlewares

    for layer in (
        "ServerErrorMiddleware",
        "SwaggerUIMiddleware",
        "SecurityMiddleware",
        "RequestValidationMiddleware",
        "ResponseValidationMiddleware",
    ):
        assert layer in [each.__name__ for each in defaults], f"connexion {CONNEXION}: {layer} left default_middlewares"
    assert issubclass(checks.RequestChecks, RequestValidationMiddleware)


def test_swagger_ui_serves_only_under_the_paths_it_is_asked_for() -> None:
    options = SwaggerUIOptions()

    served = [options.spec_path or "/openapi.json", options.swagger_ui_path]

    assert all(any(marker in path for marker in stack.SwaggerUIOnItsPaths.MARKERS) for path in served), (
        f"connexion {CONNEXION} serves its UI or spec elsewhere: {served}"
    )


def test_no_other_module_of_the_writer_imports_a_connexion_internal() -> None:
    """The documented surface (connexion's top level, its middleware classes for the list,
    jsonifier, exceptions, lifecycle) may be imported anywhere; an internal only here."""
    documented = {
        "connexion",
        "connexion.exceptions",
        "connexion.jsonifier",
        "connexion.lifecycle",
        "connexion.middleware.main",
        "connexion.middleware.request_validation",
        "connexion.middleware.response_validation",
        "connexion.middleware.security",
        "connexion.middleware.server_error",
        "connexion.middleware.swagger_ui",
    }
    for path in [*Path(writer_package.__file__).parent.glob("*.py"), ROOT / "server.py", ROOT / "message.py"]:
        if path.name == "connexion_hooks.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("connexion", "a2wsgi"):
                assert node.module in documented, f"{path.name} imports {node.module}: name it in connexion_hooks.py"
