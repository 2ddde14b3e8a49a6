"""moto's server, as `moto_server` runs it, with its DynamoDB requests served one at a time.

moto (5.2) checks a DynamoDB write's ConditionExpression and then writes, with nothing held in
between, and its server runs each request on a thread of its own. Under load two conditional
puts on one key can then both succeed: with the CPU busy, 2 of 300 rounds of 24 concurrent
claims of one key had two winners (8 of 400 in another run; 0 of 300 through this script).
DynamoDB never allows that, and IDEMPOTENCY_TABLE is built on it (one claim per key), so here
each DynamoDB request has the tables to itself. SQS requests are served concurrently, as moto
serves them: a long poll holds its thread for seconds.

    python scripts/local_moto.py [-H 127.0.0.1] [-p 4566]

local/sqs/serve.sh runs it for SQS_LOCAL=moto, and the tests for their moto_server.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterable
from typing import Any, Callable, Optional

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

#: The X-Amz-Target of DynamoDB's (and DynamoDB Streams') JSON protocol: "DynamoDB_20120810.PutItem".
DYNAMODB_TARGET_PREFIX = "DynamoDB"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class OneDynamoDBRequestAtATime:
    """WSGI middleware: a DynamoDB request runs, answer and all, while no other one does; any
    other request passes straight through."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self._tables = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith(DYNAMODB_TARGET_PREFIX):
            return self.app(environ, start_response)
        with self._tables:
            answer = self.app(environ, start_response)
            try:
                return [b"".join(answer)]  # made here, inside the lock, not later by the server
            finally:
                if hasattr(answer, "close"):
                    answer.close()


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("-p", "--port", type=int, default=4566, help="port (default %(default)s)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto_server does: some backends build URLs from it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = OneDynamoDBRequestAtATime(DomainDispatcherApplication(create_backend_app))
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
