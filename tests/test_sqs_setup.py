"""sqs_setup: creates both queues as the settings say, changes only what differs, deletes."""

from __future__ import annotations

import json
from typing import Any

import botocore.exceptions
import pytest

import sqs_setup
from sqs_message_service.cli import EXIT_FAILED, EXIT_USAGE
from sqs_message_service.settings import Settings
from sqsinterface import NotAuthorized, SqsQueue


def test_first_run_creates_both_queues_with_a_redrive_policy(sqs: Any, settings: Settings) -> None:
    lines = sqs_setup.set_up(settings, sqs)

    assert lines == ["dead-letter queue 'messages-dlq': created", "queue 'messages': created"]
    dlq_arn = SqsQueue("messages-dlq", sqs).attributes()["QueueArn"]
    attributes = SqsQueue("messages", sqs).attributes()
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": 3,
    }
    assert attributes["VisibilityTimeout"] == str(settings.visibility_timeout_s)
    assert attributes["ReceiveMessageWaitTimeSeconds"] == "20"
    assert attributes["MaximumMessageSize"] == "262144"


def test_created_queues_are_tagged_and_existing_ones_keep_their_tags(sqs: Any, settings: Settings) -> None:
    sqs.create_queue(QueueName=settings.dlq_name, tags={"team": "payments"})

    sqs_setup.set_up(settings, sqs)

    def tags(name: str) -> dict[str, str]:
        return sqs.list_queue_tags(QueueUrl=SqsQueue(name, sqs).url).get("Tags", {})

    assert tags("messages") == {"application": "sqs-message-service", "role": "queue"}
    assert tags("messages-dlq") == {"team": "payments"}


def test_a_second_run_changes_nothing_and_says_so(sqs: Any, settings: Settings, sqs_calls: dict[str, int]) -> None:
    sqs_setup.set_up(settings, sqs)
    sqs_calls.clear()

    lines = sqs_setup.set_up(settings, sqs)

    assert lines == ["dead-letter queue 'messages-dlq': unchanged", "queue 'messages': unchanged"]
    assert "CreateQueue" not in sqs_calls and "SetQueueAttributes" not in sqs_calls


def test_a_changed_setting_updates_only_that_attribute(sqs: Any, settings: Settings) -> None:
    sqs_setup.set_up(settings, sqs)

    lines = sqs_setup.set_up(Settings(visibility_timeout_s=90, max_receive_count=5), sqs)

    assert lines[1] == "queue 'messages': updated RedrivePolicy, VisibilityTimeout"
    attributes = SqsQueue("messages", sqs).attributes()
    assert attributes["VisibilityTimeout"] == "90"
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 5


def test_fifo_queues_get_a_fifo_dlq_and_content_based_deduplication(sqs: Any) -> None:
    settings = Settings(queue_name="orders.fifo")

    sqs_setup.set_up(settings, sqs)

    attributes = SqsQueue("orders.fifo", sqs).attributes()
    assert attributes["FifoQueue"] == "true"
    assert attributes["ContentBasedDeduplication"] == "true"
    assert SqsQueue("orders-dlq.fifo", sqs).attributes()["FifoQueue"] == "true"


def test_delete_removes_both_and_a_second_delete_finds_them_absent(sqs: Any, settings: Settings) -> None:
    sqs_setup.set_up(settings, sqs)

    assert sqs_setup.tear_down(settings, sqs) == ["queue 'messages': deleted", "queue 'messages-dlq': deleted"]
    assert sqs_setup.tear_down(settings, sqs) == ["queue 'messages': absent", "queue 'messages-dlq': absent"]
    assert not SqsQueue("messages", sqs).exists()


def test_with_an_idempotency_table_setup_makes_it_and_delete_removes_it(sqs: Any, dynamodb: Any) -> None:
    settings = Settings(idempotency_table="keys")

    assert sqs_setup.set_up(settings, sqs, dynamodb)[-1] == "idempotency table 'keys': created"
    assert sqs_setup.set_up(settings, sqs, dynamodb)[-1] == "idempotency table 'keys': unchanged"
    assert dynamodb.describe_time_to_live(TableName="keys")["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
    assert sqs_setup.tear_down(settings, sqs, dynamodb)[-1] == "idempotency table 'keys': deleted"
    assert dynamodb.list_tables()["TableNames"] == []


def test_with_a_processed_table_setup_makes_it_tagged_for_its_role_and_delete_removes_it(
    sqs: Any, dynamodb: Any
) -> None:
    settings = Settings(idempotency_table="keys", processed_table="processed")

    assert sqs_setup.set_up(settings, sqs, dynamodb)[-2:] == [
        "idempotency table 'keys': created",
        "processed table 'processed': created",
    ]
    arn = dynamodb.describe_table(TableName="processed")["Table"]["TableArn"]
    tags = {tag["Key"]: tag["Value"] for tag in dynamodb.list_tags_of_resource(ResourceArn=arn)["Tags"]}
    assert tags["role"] == "processed-messages"
    ttl = dynamodb.describe_time_to_live(TableName="processed")["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    assert sqs_setup.tear_down(settings, sqs, dynamodb)[-1] == "processed table 'processed': deleted"


def test_main_reports_what_it_did(sqs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert sqs_setup.main([]) == 0
    assert "queue 'messages': created" in capsys.readouterr().out

    assert sqs_setup.main([]) == 0
    assert capsys.readouterr().out.endswith("nothing to change\n")


def test_missing_credentials_give_a_clear_message_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], closed_endpoint: str
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("SQS_ENDPOINT_URL", closed_endpoint)

    assert sqs_setup.main([]) == EXIT_FAILED  # AWS failed it: the same command may work later

    err = capsys.readouterr().err
    assert "not authorized" in err and "no AWS credentials" in err and "sqs:CreateQueue" in err
    assert "Traceback" not in err


def test_an_unreachable_endpoint_gives_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], closed_endpoint: str
) -> None:
    monkeypatch.setenv("SQS_ENDPOINT_URL", closed_endpoint)
    monkeypatch.setenv("SQS_MAX_ATTEMPTS", "1")

    assert sqs_setup.main([]) == EXIT_FAILED  # AWS failed it: the same command may work later
    assert f"cannot reach SQS at {closed_endpoint}" in capsys.readouterr().err


def test_an_unreachable_dynamodb_gives_a_clear_message(
    sqs: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], closed_endpoint: str
) -> None:
    monkeypatch.setenv("IDEMPOTENCY_TABLE", "keys")
    monkeypatch.setenv("DYNAMODB_ENDPOINT_URL", closed_endpoint)
    monkeypatch.setenv("SQS_MAX_ATTEMPTS", "1")

    assert sqs_setup.main([]) == EXIT_FAILED  # AWS failed it: the same command may work later
    err = capsys.readouterr().err
    assert "DynamoDB table 'keys'" in err and closed_endpoint in err and "Traceback" not in err


def test_an_invalid_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAX_RECEIVE_COUNT", "lots")

    assert sqs_setup.main([]) == EXIT_USAGE
    assert "MAX_RECEIVE_COUNT='lots'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "code",
    [
        "AccessDeniedException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
    ],
)
def test_dynamodb_refusing_the_credentials_is_not_authorized_as_sqs_refusing_them_is(code: str) -> None:
    def refused(tables: Any, table: str) -> str:
        raise botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "no"}}, "CreateTable")

    with pytest.raises(NotAuthorized, match=code):
        sqs_setup._table_call(refused, None, "keys")
