"""The writer as the benchmark runs it: `server.py`'s app and serving, with `--stub` replacing the
SQS call by an in-memory one, so that the benchmark can tell what SQS costs the write path from
what the app itself costs.

The stub answers SendMessageBatch at once, as SQS would when it accepts every entry; everything
else (queue URL, depths) still goes to the configured endpoint.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import server  # noqa: E402
from sqs_message_service.aws import create_client  # noqa: E402
from sqs_message_service.settings import Settings, configure_logging  # noqa: E402
from sqs_message_service.sqs import SqsQueue  # noqa: E402


class InMemorySends(SqsQueue):
    """An SqsQueue whose SendMessageBatch never leaves the process: every entry is accepted."""

    def _call(self, operation: str, *, payload_bytes: int = 0, **kwargs: Any) -> dict:
        if operation != "SendMessageBatch":
            return super()._call(operation, payload_bytes=payload_bytes, **kwargs)
        self.metrics.requests.labels(self.name, operation).inc()
        return {"Successful": [{"Id": entry["Id"], "MessageId": str(uuid.uuid4())} for entry in kwargs["Entries"]]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stub", action="store_true", help="answer SendMessageBatch in memory")
    args = parser.parse_args()
    settings = Settings.from_env()
    configure_logging(settings)
    queue_type = InMemorySends if args.stub else SqsQueue
    app = server.create_app(settings, queue_type(settings.queue_name, create_client(settings)))
    server.serve(app, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
