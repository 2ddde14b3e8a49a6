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

It also makes moto's TransactWriteItems cost what the transaction touches, not what the table
holds. To roll a cancelled transaction back, moto deep-copies the whole table once for each of
its items, so a claim of 10 keys took 32 ms on a table of 200 records and 143 ms on one of 1,200,
growing without end while a worker's processed ledger (PROCESSED_TABLE) fills its table. Here
the copy shares the table's untouched records and deep-copies only the ones the transaction
names: the rollback restores the same state (tests/test_local_moto.py), at a cost that does not
grow with the table.
"""

from __future__ import annotations

import argparse
import collections
import copy
import os
import signal
import sys
import threading
import types
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


class TransactionSnapshots:
    """What moto's TransactWriteItems copies to roll back: for a hash-keyed table, a copy that
    shares its records but those the transaction under way names, which are deep-copied (an
    Update changes its record in place). Installed in moto's DynamoDB models by `install`."""

    def __init__(self) -> None:
        self.touched: list[dict[str, Any]] = []  # the Key (or Item) of each item of the transaction under way
        self.taken: dict[int, Any] = {}  # the snapshot of each table, once per transaction (moto asks per item)
        self.copied_records = 0  # deep-copied for rollbacks since start: what the transactions touched

    def install(self, set_attribute: Callable[[Any, str, Any], None] = setattr) -> None:
        """Put the snapshots in place of the whole-table copies (`set_attribute`: a test's
        monkeypatch.setattr, to undo it after)."""
        from moto.dynamodb import models

        original = models.DynamoDBBackend.transact_write_items
        snapshots = self

        def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
            snapshots.touched = [
                op.get("Key") or op.get("Item") or {} for item in transact_items for op in item.values()
            ]
            try:
                original(backend, transact_items)
            finally:
                snapshots.touched, snapshots.taken = [], {}

        set_attribute(models, "copy", types.SimpleNamespace(deepcopy=self.deepcopy, copy=copy.copy))
        set_attribute(models.DynamoDBBackend, "transact_write_items", transact_write_items)

    def deepcopy(self, value: Any, memo: Optional[dict[int, Any]] = None) -> Any:
        from moto.dynamodb.models.dynamo_type import DynamoType
        from moto.dynamodb.models.table import Table

        if not isinstance(value, Table) or value.has_range_key or not self.touched:
            return copy.deepcopy(value, memo)
        if id(value) in self.taken:  # before any write of the transaction: the same state
            return self.taken[id(value)]
        snapshot = self.taken[id(value)] = copy.copy(value)
        snapshot.items = collections.defaultdict(dict, value.items)
        for key in self.touched:
            if value.hash_key_attr in key and (hash_value := DynamoType(key[value.hash_key_attr])) in value.items:
                snapshot.items[hash_value] = copy.deepcopy(value.items[hash_value])
                self.copied_records += 1
        return snapshot


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("-p", "--port", type=int, default=4566, help="port (default %(default)s)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto_server does: some backends build URLs from it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    TransactionSnapshots().install()
    app = OneDynamoDBRequestAtATime(DomainDispatcherApplication(create_backend_app))
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
