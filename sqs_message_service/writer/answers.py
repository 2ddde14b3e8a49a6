"""The one way the writer answers an error: its problem+json body (errors.problem), Retry-After
for a 503, counted where no one counted it before, logged without flooding."""

from __future__ import annotations

import json
import logging

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from starlette.responses import Response

from ..logs import ThrottledLog
from .connexion_hooks import ROUTING_CONTEXT
from .errors import Answerable, InvalidRequest, ServiceError, Unauthenticated, UnsupportedMediaType, answer, problem
from .service import Writer

log = logging.getLogger(__name__)

#: The header of the writer's keys, and the details of a 401 without one, or with another key.
API_KEY_HEADER = "X-API-Key"
UNAUTHENTICATED_NONE = f"no {API_KEY_HEADER} header: this route needs one of the writer's keys in it"
UNAUTHENTICATED_WRONG = f"the {API_KEY_HEADER} header holds no key this route takes"

PROBLEM = "application/problem+json"


class ProblemAnswers:
    """The one way the writer answers an error: its problem (errors.problem), with Retry-After
    for a 503, counted under its outcome where no one counted it before, and logged once per
    10 s per kind when it is SQS's or the writer's side (an outage is not a log flood).

    The writer counts the refusals it decides; these count the rest: a request the spec or the
    admission limit refused before any of its messages was read, as one message."""

    def __init__(self, writer: Writer, *, retry_after_s: int, body_operations: frozenset[str]) -> None:
        self.writer = writer
        self.retry_after = str(retry_after_s)
        self.body_operations = body_operations
        self._throttled = ThrottledLog(log)

    def _answer(self, error: Answerable) -> tuple[int, bytes, dict[str, str]]:
        """The status, body and headers that answer `error`."""
        answered = answer(error)
        if answered.status >= 500:
            self._throttled.warning(error)
        headers = {"Retry-After": self.retry_after} if answered.retry_later else {}
        return answered.status, json.dumps(problem(error)).encode("utf-8"), headers

    def refusal(self, error: ServiceError) -> Response:
        """A request refused before any of its messages was read: one message, counted."""
        status, body, headers = self._answer(self.writer.refused(error))
        return Response(body, status_code=status, headers=headers, media_type=PROBLEM)

    def turned_away(self, error: ServiceError) -> None:
        """A request refused before the app saw it (at the socket): counted and logged as
        `refusal` would, with no response to build."""
        if answer(self.writer.refused(error)).status >= 500:
            self._throttled.warning(error)

    async def handle(self, request: ConnexionRequest, error: Answerable) -> ConnexionResponse:
        """connexion's error handler for every ServiceError and SqsError (async: no thread
        hand-off)."""
        routing = request.scope.get("extensions", {}).get(ROUTING_CONTEXT, {})
        if isinstance(error, InvalidRequest) and routing.get("operation_id") in self.body_operations:
            self.writer.refused(error)
        status, body, headers = self._answer(error)
        return ConnexionResponse(status_code=status, mimetype=PROBLEM, body=body, headers=headers)

    async def handle_connexion(self, request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
        """connexion's own refusals in the writer's vocabulary: a missing or unknown API key (401),
        and the 400 and 415 of its own request validation, which checks the operations that
        checks.OperationChecks does not cover. Any other keeps its words."""
        adapted = {400: InvalidRequest, 401: Unauthenticated, 415: UnsupportedMediaType}.get(exc.status)
        if adapted is None:
            return exc.to_problem()
        detail = exc.detail or exc.title or ""
        if exc.status == 401:  # connexion's words name no header: ours say which, and what goes in it
            detail = UNAUTHENTICATED_NONE if request.headers.get(API_KEY_HEADER) is None else UNAUTHENTICATED_WRONG
        return await self.handle(request, adapted(detail))
