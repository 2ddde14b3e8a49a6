"""Create (or `--delete`) the queue and its dead-letter queue, as the settings describe them, and
with IDEMPOTENCY_TABLE or PROCESSED_TABLE set the DynamoDB tables they name (on-demand, TTL on).

Idempotent: a run compares what exists with what the settings ask for, changes only the
difference, and says what it did; a second run changes nothing and says so.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Any, Callable, Mapping, Optional

import botocore.exceptions

from sqs_message_service.aws import NOT_AUTHORIZED_CODES, create_client
from sqs_message_service.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from sqs_message_service.settings import DISTRIBUTION, Settings, settings_for_command
from sqs_message_service.sqs import NotAuthorized, QueueNotFound, QueueUnavailable, SqsError, SqsQueue
from sqs_message_service.tables import delete_table, ensure_table

#: Dead letters are kept as long as SQS allows (14 days), for inspection and redrive.
DLQ_RETENTION_S = 1_209_600
#: Tags a queue gets when it is created here, for cost allocation and for finding the pair in
#: an account. A queue that exists keeps the tags it has.
APPLICATION_TAG = {"application": DISTRIBUTION}


class SetupError(Exception):
    """The queues cannot be brought to the wanted state; the message says why and what to do."""


def desired_attributes(settings: Settings, *, dlq_arn: Optional[str]) -> dict[str, str]:
    """The attributes the settings ask for: the dead-letter queue's when `dlq_arn` is None."""
    attributes: dict[str, str] = {}
    if settings.is_fifo:
        attributes["FifoQueue"] = "true"
    if dlq_arn is None:
        attributes["MessageRetentionPeriod"] = str(DLQ_RETENTION_S)
        return attributes
    attributes.update(
        {
            "VisibilityTimeout": str(settings.visibility_timeout_s),
            "ReceiveMessageWaitTimeSeconds": str(settings.receive_wait_s),
            "MaximumMessageSize": str(settings.max_message_bytes),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.max_receive_count}
            ),
        }
    )
    if settings.is_fifo:
        # Repeated bodies are deduplicated within 5 minutes unless a deduplication_id is given.
        attributes["ContentBasedDeduplication"] = "true"
    return attributes


def _normalised(name: str, value: str) -> object:
    if name == "RedrivePolicy":
        policy = json.loads(value)
        return (policy.get("deadLetterTargetArn"), int(policy.get("maxReceiveCount", 0)))
    return str(value).lower()


def differences(current: Mapping[str, str], desired: Mapping[str, str]) -> dict[str, str]:
    """The desired attributes whose current value differs (compared as SQS means them)."""
    return {
        name: value
        for name, value in desired.items()
        if name not in current or _normalised(name, current[name]) != _normalised(name, value)
    }


def ensure(queue: SqsQueue, desired: Mapping[str, str], role: str) -> str:
    """Create the queue (tagged with its `role`) or bring its attributes to `desired`; returns
    what was done."""
    if not queue.exists():
        queue.create(desired, tags={**APPLICATION_TAG, "role": role})
        return "created"
    changed = differences(queue.attributes(), desired)
    if "FifoQueue" in changed:
        raise SetupError(
            f"queue {queue.name!r} exists with another type; a queue's type cannot change: "
            "delete it (sqs_setup.py --delete) or choose another QUEUE_NAME"
        )
    if not changed:
        return "unchanged"
    queue.set_attributes(changed)
    return "updated " + ", ".join(sorted(changed))


def set_up(settings: Settings, client: object, tables: object = None) -> list[str]:
    """Bring both queues (and the tables IDEMPOTENCY_TABLE and PROCESSED_TABLE name, on the
    DynamoDB client `tables`) to the settings' state; one line per queue or table saying what
    changed."""
    dlq = SqsQueue(settings.dlq_name, client)
    queue = SqsQueue(settings.queue_name, client)
    dlq_outcome = ensure(dlq, desired_attributes(settings, dlq_arn=None), role="dead-letter-queue")
    dlq_arn = dlq.attributes(["QueueArn"])["QueueArn"]
    queue_outcome = ensure(queue, desired_attributes(settings, dlq_arn=dlq_arn), role="queue")
    lines = [f"dead-letter queue {dlq.name!r}: {dlq_outcome}", f"queue {queue.name!r}: {queue_outcome}"]
    for what, table, role, setting in _tables(settings):
        outcome = _table_call(functools.partial(ensure_table, role=role, setting=setting), tables, table)
        lines.append(f"{what} {table!r}: {outcome}")
    return lines


def _tables(settings: Settings) -> list[tuple[str, str, str, str]]:
    """The DynamoDB tables the settings name: (what, table, its role tag, its setting)."""
    named = [
        ("idempotency table", settings.idempotency_table, "idempotency-keys", "IDEMPOTENCY_TABLE"),
        ("processed table", settings.processed_table, "processed-messages", "PROCESSED_TABLE"),
    ]
    return [entry for entry in named if entry[1]]


def tear_down(settings: Settings, client: object, tables: object = None) -> list[str]:
    lines = []
    for name in (settings.queue_name, settings.dlq_name):
        queue = SqsQueue(name, client)
        try:
            queue.delete_queue()
            lines.append(f"queue {name!r}: deleted")
        except QueueNotFound:
            lines.append(f"queue {name!r}: absent")
    for what, table, _, _ in _tables(settings):
        lines.append(f"{what} {table!r}: {_table_call(delete_table, tables, table)}")
    return lines


def _table_call(step: Callable[[Any, str], str], tables: Any, table: str) -> str:
    """A step on the table, its failures as SetupError (naming the table) and NotAuthorized."""
    try:
        return step(tables, table)
    except ValueError as exc:  # the table exists with another key
        raise SetupError(str(exc)) from None
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in NOT_AUTHORIZED_CODES:
            raise NotAuthorized(f"DynamoDB table {table!r}: {code}") from exc
        raise SetupError(f"DynamoDB table {table!r}: {code}: {exc}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise SetupError(f"DynamoDB table {table!r}: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Create the SQS queue and its dead-letter queue (redrive after "
        "MAX_RECEIVE_COUNT receives), or delete them. Names and attributes come from the "
        "settings (QUEUE_NAME, DLQ_NAME, VISIBILITY_TIMEOUT, RECEIVE_WAIT_SECONDS, "
        "MAX_MESSAGE_BYTES, MAX_RECEIVE_COUNT); a QUEUE_NAME ending in .fifo makes FIFO queues. "
        "With IDEMPOTENCY_TABLE set, also the DynamoDB table of Idempotency-Keys, and with "
        "PROCESSED_TABLE the worker's processed ledger (both on-demand, TTL on). Running it again "
        "changes only what differs. Exits 0 when done, 1 when AWS failed it, 2 on a wrong option "
        "or setting."
    )
    parser.add_argument(
        "--delete",
        action="store_true",
        help="delete both queues (and the IDEMPOTENCY_TABLE and PROCESSED_TABLE tables, when set) instead",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Create (or with --delete, delete) what the settings describe. Exits 0 when done, 1 when
    AWS failed it (unreachable, not authorized, a queue that cannot be changed so), 2 when
    started wrongly, as every entry point does (sqs_message_service/cli.py)."""
    settings = settings_for_command("sqs_setup")
    if settings is None:
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    where = settings.sqs_endpoint_url or f"AWS region {settings.aws_region}"
    try:
        client = create_client(settings)
        tables = create_client(settings, service="dynamodb") if _tables(settings) else None
        lines = (tear_down if args.delete else set_up)(settings, client, tables)
    except NotAuthorized as exc:
        print(
            f"sqs_setup: not authorized at {where}: {exc}\n"
            "Give credentials with the rights sqs:CreateQueue, sqs:TagQueue, sqs:GetQueueUrl, "
            "sqs:GetQueueAttributes, sqs:SetQueueAttributes (and sqs:DeleteQueue for --delete): "
            "deploy/iam/setup.json, with deploy/iam/setup-idempotency.json for IDEMPOTENCY_TABLE and "
            "deploy/iam/setup-processed.json for PROCESSED_TABLE (docs/deployment.md); or set "
            "SQS_ENDPOINT_URL (and DYNAMODB_ENDPOINT_URL) to a local endpoint.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except QueueUnavailable as exc:
        print(f"sqs_setup: cannot reach SQS at {where}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (SetupError, SqsError) as exc:
        print(f"sqs_setup: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for line in lines:
        print(line)
    if not args.delete and all(line.endswith("unchanged") for line in lines):
        print("nothing to change")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
