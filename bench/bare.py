"""The benchmark's reference: connexion's own FlaskApp, as it comes, with a one-line handler.

POST /api/message with a JSON body checked against a minimal schema, answered 201 by a handler
that does nothing else, under the writer's serving configuration (`server.serve`). What the
writer serves beside it in the same run, with its real SQS calls, says how far the writer is
from connexion's own floor.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import connexion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import server  # noqa: E402
from sqs_message_service.settings import Settings  # noqa: E402

SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "bare", "version": "1"},
    "servers": [{"url": "/api"}],
    "paths": {
        "/message": {
            "post": {
                "operationId": "bare.accept",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["body"],
                                "properties": {"body": {"type": "string"}},
                            }
                        }
                    },
                },
                "responses": {"201": {"description": "accepted"}},
            }
        }
    },
}


def accept(body: dict[str, Any]) -> tuple[dict[str, str], int]:
    return {"message_id": "m"}, 201


def main() -> int:
    settings = Settings.from_env()
    app = connexion.FlaskApp(__name__)
    app.add_api(SPEC)
    server.serve(app, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
