"""deploy/aws/stack.yml, the CloudFormation template: cfn-lint passes it (and refuses a broken
copy); its queues, tables and defaults are what sqs_setup.py and the settings make; each role
allows exactly what its part's deploy/iam policies allow; what a local CloudFormation cannot
create waits on Platform=aws; and it deploys on moto's server, where the end-to-end check runs
against the stack's outputs with none lost, then the stack is deleted."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import boto3
import botocore.exceptions
import pytest
import yaml

import sqs_setup
from e2e import LocalSystem, ids_in
from harness import ROOT, free_port
from helpers import BIN, wait_until
from sqs_message_service.output import read_records
from sqs_message_service.settings import Settings
from sqs_message_service.tables import KEY_SCHEMA, TTL_ATTRIBUTE
from test_iam import grants

TEMPLATE = ROOT / "deploy" / "aws" / "stack.yml"
#: Each role of the template and the deploy/iam policies whose calls it holds.
ROLES = {
    "WriterRole": ("writer", "writer-idempotency"),
    "WorkerRole": ("worker", "worker-processed"),
    "ConsoleRole": ("console", "console-actions"),
}
#: The names deploy/iam's policies give each of the template's queues and tables.
NAMED_IN_POLICIES = {
    "Queue": "messages",
    "DeadLetterQueue": "messages-dlq",
    "IdempotencyTable": "writer-idempotency-keys",
    "ProcessedTable": "worker-processed-messages",
}
#: What moto's server can create; everything else must wait on Platform=aws.
LOCAL_TYPES = {"AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::IAM::Role"}


class TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms: `!GetAtt A.B` as {"Fn::GetAtt": ["A", "B"]},
    `!Ref X` as {"Ref": "X"}, any other `!Fn` as {"Fn::Fn": ...}."""


def _short_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


TemplateLoader.add_multi_constructor("!", _short_form)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=TemplateLoader)  # a SafeLoader, with CFN's tags


def cfn_lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / "cfn-lint", "--", str(path)], capture_output=True, text=True, timeout=120)


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def test_cfn_lint_passes_the_template() -> None:
    linted = cfn_lint(TEMPLATE)

    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_cfn_lint_refuses_a_broken_copy(tmp_path: Path) -> None:
    # GIVEN the template with a property the queue does not have and a reference to nothing
    broken = tmp_path / "stack.yml"
    text = TEMPLATE.read_text()
    text = text.replace(
        "      VisibilityTimeout: !Ref VisibilityTimeout\n", "      VisibilityTimeOut: !Ref VisibilityTimeout\n", 1
    )
    text = text.replace("TargetValue: !Ref BacklogPerWorkerTask", "TargetValue: !Ref BacklogPerTask", 1)
    broken.write_text(text)

    linted = cfn_lint(broken)

    assert linted.returncode != 0
    assert "VisibilityTimeOut" in linted.stdout and "BacklogPerTask" in linted.stdout, linted.stdout


def policy_grants(statements: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """A role's statements as test_iam's grants: (action, the name deploy/iam gives the resource)."""
    allowed = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        resource = statement["Resource"]
        ((logical, _attribute),) = [resource["Fn::GetAtt"]]
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        allowed |= {(action, NAMED_IN_POLICIES[logical]) for action in actions}
    return allowed


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_role_allows_exactly_what_its_parts_deploy_iam_policies_allow(role: str) -> None:
    template = load_template()
    policies = template["Resources"][role]["Properties"]["Policies"]
    statements = [statement for policy in policies for statement in policy["PolicyDocument"]["Statement"]]

    assert policy_grants(statements) == grants(*ROLES[role])


def test_every_role_is_for_ecs_tasks_and_every_part_that_runs_has_one() -> None:
    template = load_template()
    roles = resources_of(template, "AWS::IAM::Role")
    # setup's policies are the stack's own work: CloudFormation creates the queues and tables
    assert set(ROLES) == set(roles) - {"ExecutionRole"}
    for name in ROLES:
        trust = roles[name]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust == [
            {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
    tasks = resources_of(template, "AWS::ECS::TaskDefinition")
    assert tasks["WriterTask"]["Properties"]["TaskRoleArn"] == {"Fn::GetAtt": ["WriterRole", "Arn"]}
    assert tasks["WorkerTask"]["Properties"]["TaskRoleArn"] == {"Fn::GetAtt": ["WorkerRole", "Arn"]}


def test_the_queues_and_tables_are_those_sqs_setup_makes_with_the_settings_defaults() -> None:
    template = load_template()
    parameters, resources = template["Parameters"], template["Resources"]
    defaults = Settings()
    assert {
        name: parameters[name]["Default"]
        for name in (
            "QueueName",
            "MaxReceiveCount",
            "VisibilityTimeout",
            "ReceiveWaitSeconds",
            "MaxMessageBytes",
            "ShutdownGrace",
        )
    } == {
        "QueueName": defaults.queue_name,
        "MaxReceiveCount": defaults.max_receive_count,
        "VisibilityTimeout": defaults.visibility_timeout_s,
        "ReceiveWaitSeconds": defaults.receive_wait_s,
        "MaxMessageBytes": defaults.max_message_bytes,
        "ShutdownGrace": defaults.shutdown_grace_s,
    }
    queue, dlq = resources["Queue"]["Properties"], resources["DeadLetterQueue"]["Properties"]
    assert dlq["MessageRetentionPeriod"] == sqs_setup.DLQ_RETENTION_S
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    assert {"Key": "role", "Value": "queue"} in queue["Tags"]
    assert {"Key": "role", "Value": "dead-letter-queue"} in dlq["Tags"]
    for name, role in (("IdempotencyTable", "idempotency-keys"), ("ProcessedTable", "processed-messages")):
        table = resources[name]["Properties"]
        assert table["KeySchema"] == KEY_SCHEMA and table["BillingMode"] == "PAY_PER_REQUEST"
        assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
        assert {"Key": "role", "Value": role} in table["Tags"]


def container(template: dict[str, Any], task: str) -> dict[str, Any]:
    (definition,) = template["Resources"][task]["Properties"]["ContainerDefinitions"]
    return definition


def test_each_service_checks_its_health_logs_and_stops_after_the_workers_grace() -> None:
    template = load_template()
    parameters = template["Parameters"]
    assert parameters["StopTimeout"]["Default"] > parameters["ShutdownGrace"]["Default"]
    assert parameters["ShutdownGrace"]["MaxValue"] < parameters["StopTimeout"]["MaxValue"]
    writer, worker = container(template, "WriterTask"), container(template, "WorkerTask")
    assert "/api/health" in writer["HealthCheck"]["Command"][-1]  # liveness: no SQS call
    assert "9102/health" in worker["HealthCheck"]["Command"][-1]
    assert {"Name": "METRICS_PORT", "Value": "9102"} in worker["Environment"]
    assert {"Name": "SHUTDOWN_GRACE", "Value": {"Ref": "ShutdownGrace"}} in worker["Environment"]
    target_group = template["Resources"]["WriterTargetGroup"]["Properties"]
    assert target_group["HealthCheckPath"] == "/api/ready"  # readiness: the queue answers
    swagger = yaml.safe_load((ROOT / "swagger.yml").read_text())
    assert {"/health", "/ready"} <= set(swagger["paths"])
    for part in (writer, worker):
        assert part["StopTimeout"] == {"Ref": "StopTimeout"}
        assert part["LogConfiguration"]["LogDriver"] == "awslogs"
        assert part["ReadonlyRootFilesystem"] is True and part["User"] == "10001:10001"


def test_the_worker_scales_on_visible_messages_over_running_tasks() -> None:
    template = load_template()
    policy = template["Resources"]["WorkerBacklogScaling"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    metrics = {metric["Id"]: metric for metric in policy["CustomizedMetricSpecification"]["Metrics"]}

    assert policy["TargetValue"] == {"Ref": "BacklogPerWorkerTask"}
    assert metrics["visible"]["MetricStat"]["Metric"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert metrics["tasks"]["MetricStat"]["Metric"]["MetricName"] == "RunningTaskCount"
    assert [m["Id"] for m in metrics.values() if m["ReturnData"]] == ["backlog_per_task"]
    assert metrics["backlog_per_task"]["Expression"].startswith("visible / ")


def test_the_alarms_watch_the_dead_letters_and_the_oldest_message() -> None:
    alarms = resources_of(load_template(), "AWS::CloudWatch::Alarm")
    watched = {(a["Properties"]["MetricName"], json.dumps(a["Properties"]["Dimensions"])) for a in alarms.values()}

    def of(queue: str) -> str:
        return json.dumps([{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}])

    assert watched == {
        ("ApproximateNumberOfMessagesVisible", of("DeadLetterQueue")),
        ("ApproximateAgeOfOldestMessage", of("Queue")),
    }


def test_what_a_local_cloudformation_cannot_create_waits_on_platform_aws() -> None:
    template = load_template()
    for name, resource in template["Resources"].items():
        if resource["Type"] in LOCAL_TYPES and name != "ExecutionRole":
            assert "Condition" not in resource, name
        else:
            assert resource.get("Condition") == "OnAws", name


# ---- Deployed on moto's server ----


@contextlib.contextmanager
def deployed(endpoint: str, name: str, **parameters: str) -> Iterator[dict[str, str]]:
    """The stack created on `endpoint` with Platform=local: its outputs. Deleted on exit, and
    checked gone."""
    cloudformation = boto3.client("cloudformation", endpoint_url=endpoint, region_name="us-east-1")
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in {"Platform": "local", **parameters}.items()],
    )

    def status() -> str:
        return cloudformation.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]

    try:
        wait_until(lambda: not status().endswith("_IN_PROGRESS"), timeout_s=60, what="the stack created")
        stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack
        yield {output["OutputKey"]: output["OutputValue"] for output in stack["Outputs"]}
    finally:
        cloudformation.delete_stack(StackName=name)

        def gone() -> bool:
            try:
                return status() == "DELETE_COMPLETE"
            except botocore.exceptions.ClientError as exc:  # "Stack with id ... does not exist"
                return "does not exist" in str(exc)

        wait_until(gone, timeout_s=60, what="the stack deleted")


def test_the_stack_deploys_on_moto_and_the_end_to_end_check_loses_nothing(moto_server: str, tmp_path: Path) -> None:
    started = time.monotonic()
    with deployed(moto_server, "sqs-message-service", ReceiveWaitSeconds="1") as outputs:
        # THEN the outputs name what the parts read
        assert outputs["QueueName"] == "messages" and outputs["DeadLetterQueueName"] == "messages-dlq"
        assert outputs["QueueUrl"].endswith("/messages")
        assert "WriterUrl" not in outputs  # the services are not deployed locally

        # WHEN the writer, the worker and the client run against the stack's queues and tables
        result = run_against(moto_server, outputs, tmp_path, count=200)
        print(f"on the stack: {result}; {time.monotonic() - started:.1f} s")

        assert result["client_exit"] == 0 and result["accepted"] == 200
        assert result["lost"] == 0 and result["in_both"] == 0
        assert result["processed"] + result["dead_lettered"] == 200 and result["dead_lettered"] > 0
        assert result["redelivered"] == 0  # the processed ledger in the stack's table at work

    # AND the stack is gone, and everything it made with it
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_server, region_name="us-east-1")
    iam = boto3.client("iam", endpoint_url=moto_server, region_name="us-east-1")
    assert sqs.list_queues().get("QueueUrls", []) == []
    assert dynamodb.list_tables()["TableNames"] == []
    assert iam.list_roles()["Roles"] == []


def run_against(endpoint: str, outputs: dict[str, str], workdir: Path, *, count: int) -> dict[str, int]:
    """make e2e's check on queues and tables it did not create: the writer (with the stack's
    idempotency table), the worker (with its processed table), the client; then every accepted
    id is looked for among the processed and the dead letters."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_REGION": "us-east-1",
        "SQS_ENDPOINT_URL": endpoint,
        "DYNAMODB_ENDPOINT_URL": endpoint,
        "QUEUE_NAME": outputs["QueueName"],
        "DLQ_NAME": outputs["DeadLetterQueueName"],
        "IDEMPOTENCY_TABLE": outputs["IdempotencyTableName"],
        "PROCESSED_TABLE": outputs["ProcessedTableName"],
        "PORT": str(free_port()),
        "METRICS_PORT": "0",
        "RECEIVE_WAIT_SECONDS": "1",
        "FAILURE_RATE": "0.3",
        "RETRY_BACKOFF_BASE": "0",
    }
    ids_path, output_path = workdir / "accepted-ids.txt", workdir / "processed.jsonl"
    system = LocalSystem(workdir, env)
    try:
        system.start_writer()
        worker = system.python("worker", "worker.py", "--output", str(output_path), "--exit-when-idle", "3")
        load = system.client(
            "--count",
            str(count),
            "--malformed-per-batch",
            "0",
            "--concurrency",
            "8",
            "--ids-out",
            str(ids_path),
            "--processed",
            str(output_path),
            timeout_s=180,
        )
        assert worker.wait(timeout=120) == 0, system.log("worker")[-2000:]
        accepted = set(ids_path.read_text().split())
        processed = [record.id for record in read_records(output_path)]
        dead = ids_in(system.queue(outputs["DeadLetterQueueName"]))
    finally:
        system.stop()
    return {
        "client_exit": load.returncode,
        "accepted": len(accepted),
        "processed": len(accepted & set(processed)),
        "dead_lettered": len(accepted & dead),
        "lost": len(accepted - set(processed) - dead),
        "in_both": len(set(processed) & dead),
        "redelivered": len(processed) - len(set(processed)),
    }
