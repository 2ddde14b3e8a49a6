"""tables.py: each table created with its key, on-demand billing and TTL on, left as it is when it
is so already, refused when it has another key, and deleted; as sqs_setup.py calls them."""

from __future__ import annotations

from typing import Any

import pytest

from sqs_message_service.tables import KEY_SCHEMA, delete_table, ensure_table

TABLE = "keys"


@pytest.fixture
def table(dynamodb: Any) -> str:
    ensure_table(dynamodb, TABLE)
    return TABLE


def test_ensure_table_creates_it_with_ttl_on_and_then_leaves_it(dynamodb: Any) -> None:
    assert ensure_table(dynamodb, TABLE) == "created"
    assert ensure_table(dynamodb, TABLE) == "unchanged"

    described = dynamodb.describe_table(TableName=TABLE)["Table"]
    assert described["KeySchema"] == KEY_SCHEMA
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = dynamodb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_ensure_table_turns_ttl_on_where_it_was_off(table: str, dynamodb: Any) -> None:
    dynamodb.update_time_to_live(
        TableName=TABLE, TimeToLiveSpecification={"Enabled": False, "AttributeName": "expires_at"}
    )

    assert ensure_table(dynamodb, TABLE) == "updated: TTL on"
    assert dynamodb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"


def test_ensure_table_refuses_a_table_with_another_key(dynamodb: Any) -> None:
    dynamodb.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )

    with pytest.raises(ValueError, match="another key"):
        ensure_table(dynamodb, TABLE)


def test_delete_table_deletes_it_then_finds_it_absent(table: str, dynamodb: Any) -> None:
    assert delete_table(dynamodb, TABLE) == "deleted"
    assert delete_table(dynamodb, TABLE) == "absent"
