"""The private parts of connexion the writer relies on, each named: when an upgrade moves one, this
fails saying which, instead of the writer failing at start, or quietly doing less.

pyproject.toml pins connexion to the minor version these were read from (3.3).
"""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any

import pytest
from a2wsgi import WSGIMiddleware
from connexion import FlaskApp
from connexion.apps.flask import FlaskASGIApp
from connexion.security import ApiKeySecurityHandler
from connexion.validators import AbstractRequestBodyValidator, JSONRequestBodyValidator
from packaging.specifiers import SpecifierSet
from packaging.version import Version

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


#: (class, its private attribute, what the writer does with it)
HOOKS = [
    (ApiKeySecurityHandler, "_resolve_func", "server.py checks API keys in constant time"),
    (AbstractRequestBodyValidator, "_parse", "server.py's body validator bounds and parses the body"),
    (AbstractRequestBodyValidator, "_validate", "server.py's body validator words violations for the client"),
    (JSONRequestBodyValidator, "_validator", "server.py's body validator adds x-propertyNames"),
]


@pytest.mark.parametrize(("owner", "name", "use"), HOOKS, ids=[f"{o.__name__}.{n}" for o, n, _ in HOOKS])
def test_each_private_hook_is_where_the_writer_expects_it(owner: type, name: str, use: str) -> None:
    assert hasattr(owner, name), f"{owner.__name__}.{name} is gone: {use}"


def test_the_flask_bridge_is_where_the_writer_swaps_it() -> None:
    bridge = FlaskApp(__name__)._middleware_app  # server.py gives it HANDLER_THREADS threads

    assert isinstance(bridge, FlaskASGIApp)
    assert isinstance(bridge.asgi_app, WSGIMiddleware) and callable(bridge.asgi_app.app)


def test_the_hooks_take_what_the_writer_gives_them() -> None:
    assert parameters(AbstractRequestBodyValidator._parse) == ["self", "stream", "scope"]
    assert parameters(AbstractRequestBodyValidator._validate) == ["self", "body"]
    assert parameters(ApiKeySecurityHandler._resolve_func) == ["self", "security_scheme"]
    assert set(parameters(AbstractRequestBodyValidator.__init__)) >= {
        "schema", "required", "nullable", "encoding", "strict_validation",
    }
