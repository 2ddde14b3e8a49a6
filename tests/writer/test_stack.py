"""writer/stack.py: the middleware list is connexion's own, changed by type."""

from __future__ import annotations

import pytest
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.request_validation import RequestValidationMiddleware
from connexion.middleware.response_validation import ResponseValidationMiddleware
from connexion.middleware.security import SecurityMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware

from sqs_message_service.writer import stack


@pytest.mark.parametrize("api_keys", [True, False])
def test_the_stack_checks_keys_only_with_keys_and_requests_with_our_checks(api_keys: bool) -> None:
    layers = stack.middlewares(api_keys=api_keys, checks="checks", observer="observer", admission="admission")

    assert (SecurityMiddleware in layers) == api_keys
    assert RequestValidationMiddleware not in layers
    assert layers.index("observer") < layers.index("admission") < layers.index("checks")


def test_a_layer_connexion_adds_stays_where_connexion_puts_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a connexion whose default list gained a layer before routing
    class NewLayer:
        pass

    defaults = list(ConnexionMiddleware.default_middlewares)
    defaults.insert(defaults.index(SwaggerUIMiddleware), NewLayer)
    monkeypatch.setattr(ConnexionMiddleware, "default_middlewares", defaults)

    # WHEN the writer builds its list
    layers = stack.middlewares(api_keys=True, checks="checks", observer="observer", admission="admission")

    # THEN the new layer runs, in its place; ours replace theirs and response validation is gone
    assert NewLayer in layers and layers.index(NewLayer) < layers.index(stack.SwaggerUIOnItsPaths)
    assert SwaggerUIMiddleware not in layers and ResponseValidationMiddleware not in layers
    assert len(layers) == len(defaults) + 2 - 1  # observer and admission in, response validation out


def test_a_layer_the_writer_relies_on_missing_from_connexion_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = [each for each in ConnexionMiddleware.default_middlewares if each is not RequestValidationMiddleware]
    monkeypatch.setattr(ConnexionMiddleware, "default_middlewares", defaults)

    with pytest.raises(LookupError, match="RequestValidationMiddleware"):
        stack.middlewares(api_keys=False, checks="checks", observer="observer", admission="admission")
