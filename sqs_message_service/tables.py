"""The DynamoDB tables the service keeps, one key each and TTL on: the writer's Idempotency-Keys
(IDEMPOTENCY_TABLE) and the worker's processed ledger (PROCESSED_TABLE). Their creation and
deletion live here, for `sqs_setup.py`; what goes in each lives with the module that owns it."""

from __future__ import annotations

from typing import Any

from .settings import DISTRIBUTION

#: Both tables' key: one string attribute, "key".
KEY_SCHEMA = [{"AttributeName": "key", "KeyType": "HASH"}]
#: Both tables' TTL attribute: whole epoch seconds after which DynamoDB may remove a record.
TTL_ATTRIBUTE = "expires_at"


def ensure_table(client: Any, table: str, *, role: str = "idempotency-keys", setting: str = "IDEMPOTENCY_TABLE") -> str:
    """Create `table` (keyed by "key", on-demand billing, tagged with its `role`) and turn its TTL
    on, or leave it as it is when it is so already; what was done. `setting` names the variable
    that chose the table, for the error when it exists with another key."""
    done = "unchanged"
    try:
        described = client.describe_table(TableName=table)["Table"]
        if described.get("KeySchema") != KEY_SCHEMA:
            raise ValueError(
                f"table {table!r} exists with another key ({described.get('KeySchema')}); "
                f"delete it (sqs_setup.py --delete) or choose another {setting}"
            )
    except client.exceptions.ResourceNotFoundException:
        client.create_table(
            TableName=table,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=KEY_SCHEMA,
            AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
            Tags=[{"Key": "application", "Value": DISTRIBUTION}, {"Key": "role", "Value": role}],
        )
        client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        done = "created"
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        client.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        )
        done = "created" if done == "created" else "updated: TTL on"
    return done


def delete_table(client: Any, table: str) -> str:
    try:
        client.delete_table(TableName=table)
    except client.exceptions.ResourceNotFoundException:
        return "absent"
    return "deleted"
