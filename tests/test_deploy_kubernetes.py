"""deploy/kubernetes: the base and the local overlay render (kubectl's kustomize where there is
one), every object is valid Kubernetes for KUBERNETES_VERSION (kubernetes-validate, offline,
strict) and a broken one is refused; the KEDA objects, which it has no schema for, are held to
KEDA's documented aws-sqs-queue trigger; and the pods are what the service needs: the image,
probes on its real routes, a grace above SHUTDOWN_GRACE, non-root, read-only, requests, a
PodDisruptionBudget, settings the service knows."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # no type information
import pytest
import yaml

from harness import ROOT
from sqs_message_service.settings import ENV_NAMES, Settings

KUSTOMIZE = ROOT / "deploy" / "kubernetes"
RENDERINGS = ["base", "overlays/local"]
#: The Kubernetes the manifests are checked against (kubernetes-validate ships its schemas).
KUBERNETES_VERSION = "1.33.0"
#: The image docker-compose.yml builds and runs (`image: sqs-message-service`).
IMAGE = "sqs-message-service"
PARTS = ("writer", "worker", "console")
#: Credentials boto3 reads, beside the service's own settings.
AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}

# KEDA's aws-sqs-queue trigger and AWS authentication, as its documentation states them
# (keda.sh/docs/2.16/scalers/aws-sqs/ and /authentication-providers/aws/; ScaledObject's spec
# from keda.sh/docs/2.16/reference/scaledobject-spec/).
KEDA_API_VERSION = "keda.sh/v1alpha1"
SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
TRIGGER_FIELDS = {"type", "metadata", "name", "metricType", "useCachedMetrics", "authenticationRef"}
AWS_SQS_QUEUE_METADATA = {
    "queueURL",
    "queueURLFromEnv",
    "queueLength",
    "activationQueueLength",
    "awsRegion",
    "awsEndpoint",
    "identityOwner",
    "scaleOnInFlight",
    "scaleOnDelayed",
}
AWS_SECRET_PARAMETERS = {"awsAccessKeyID", "awsSecretAccessKey", "awsSessionToken", "awsRoleArn"}
AWS_POD_IDENTITY = {"provider": {"aws"}, "identityOwner": {"keda", "workload"}}


def render(directory: str) -> list[dict[str, Any]]:
    """The objects a kustomization makes: `kubectl kustomize` where kubectl is installed; else
    each file its `resources` list (followed into directories), patches not applied."""
    path = KUSTOMIZE / directory
    if shutil.which("kubectl"):
        built = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60)
        assert built.returncode == 0, built.stderr
        return [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    objects = []
    for entry in kustomization(path)["resources"]:
        target = (path / entry).resolve()
        if target.is_dir():
            objects += render(str(target.relative_to(KUSTOMIZE)))
        else:
            objects += [doc for doc in yaml.safe_load_all(target.read_text()) if doc]
    return objects


def kustomization(path: Path) -> dict[str, Any]:
    return yaml.safe_load((path / "kustomization.yaml").read_text())


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("directory", RENDERINGS)
def test_every_file_a_kustomization_names_exists(directory: str) -> None:
    path = KUSTOMIZE / directory
    listed = kustomization(path)
    named = listed.get("resources", []) + [patch["path"] for patch in listed.get("patches", [])]

    assert named and all((path / entry).exists() for entry in named), named


@pytest.mark.parametrize("directory", RENDERINGS)
def test_every_object_is_valid_kubernetes(directory: str) -> None:
    objects = render(directory)
    checked = 0
    for obj in objects:
        if obj["apiVersion"] == KEDA_API_VERSION:
            continue  # no schema in kubernetes-validate: test_keda_objects_* below
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1

    assert checked >= 12, [o["kind"] for o in objects]


def test_kubernetes_validate_refuses_a_broken_deployment() -> None:
    (writer,) = [o for o in render("base") if o["kind"] == "Deployment" and o["metadata"]["name"] == "writer"]
    broken = copy.deepcopy(writer)
    spec = broken["spec"]["template"]["spec"]
    spec["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/api/ready"  # a field no probe has
    spec["terminationGracePeriodSeconds"] = "45"  # a string where a number goes

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def keda_problems(objects: list[dict[str, Any]]) -> list[str]:
    """What in the KEDA objects its documentation does not allow, or points at nothing."""
    problems = []
    deployments = by_kind(objects, "Deployment")
    authentications = by_kind(objects, "TriggerAuthentication")
    config = by_kind(objects, "ConfigMap")["sqs-message-service"]["data"]
    scaled = by_kind(objects, "ScaledObject")
    if not scaled:
        problems.append("no ScaledObject")
    for name, obj in scaled.items():
        spec = obj["spec"]
        problems += [f"ScaledObject {name}: unknown field {field}" for field in set(spec) - SCALED_OBJECT_SPEC]
        if spec["scaleTargetRef"]["name"] not in deployments:
            problems.append(f"ScaledObject {name}: scales no Deployment of these ({spec['scaleTargetRef']})")
        for trigger in spec["triggers"]:
            problems += trigger_problems(trigger, config)
            if trigger.get("authenticationRef", {}).get("name") not in authentications:
                problems.append(f"trigger: no TriggerAuthentication {trigger.get('authenticationRef')}")
    for name, obj in authentications.items():
        problems += [
            f"TriggerAuthentication {name}: {problem}"
            for problem in authentication_problems(obj["spec"], by_kind(objects, "Secret"))
        ]
    return problems


def trigger_problems(trigger: dict[str, Any], config: dict[str, str]) -> list[str]:
    """An aws-sqs-queue trigger against KEDA's documented metadata and the service's settings."""
    problems = [f"trigger: unknown field {field}" for field in set(trigger) - TRIGGER_FIELDS]
    metadata = trigger["metadata"]
    if trigger["type"] != "aws-sqs-queue":
        problems.append(f"trigger type {trigger['type']!r}")
    problems += [f"aws-sqs-queue: unknown metadata {key}" for key in set(metadata) - AWS_SQS_QUEUE_METADATA]
    problems += [f"aws-sqs-queue: {key} is not a string" for key, v in metadata.items() if not isinstance(v, str)]
    if "awsRegion" not in metadata or not {"queueURL", "queueURLFromEnv"} & set(metadata):
        problems.append("aws-sqs-queue: needs awsRegion and queueURL or queueURLFromEnv")
    if not str(metadata.get("queueLength", "")).isdigit() or int(metadata["queueLength"]) < 1:
        problems.append("aws-sqs-queue: queueLength must be a whole number above 0")
    if metadata.get("scaleOnInFlight") != "true":
        problems.append("aws-sqs-queue: in-flight messages must count (scaleOnInFlight: 'true')")
    if not str(metadata.get("queueURL", "")).endswith("/" + config["QUEUE_NAME"]):
        problems.append(f"aws-sqs-queue: queueURL is not QUEUE_NAME's ({config['QUEUE_NAME']})")
    if metadata.get("awsRegion") != config["AWS_REGION"]:
        problems.append("aws-sqs-queue: awsRegion is not AWS_REGION")
    return problems


def authentication_problems(spec: dict[str, Any], secrets: dict[str, dict[str, Any]]) -> list[str]:
    """A TriggerAuthentication's spec against KEDA's documented AWS authentication."""
    problems = []
    if set(spec) - {"podIdentity", "secretTargetRef"} or len(spec) != 1:
        problems.append(f"one of podIdentity or secretTargetRef ({sorted(spec)})")
    for field, value in spec.get("podIdentity", {}).items():
        if value not in AWS_POD_IDENTITY.get(field, set()):
            problems.append(f"podIdentity {field}={value!r}")
    for ref in spec.get("secretTargetRef", []):
        if ref["parameter"] not in AWS_SECRET_PARAMETERS:
            problems.append(f"unknown parameter {ref['parameter']}")
        if ref["key"] not in secrets.get(ref["name"], {}).get("stringData", {}):
            problems.append(f"no Secret {ref['name']} with {ref['key']}")
    return problems


@pytest.mark.parametrize("directory", RENDERINGS)
def test_keda_objects_are_what_kedas_aws_sqs_queue_trigger_documents(directory: str) -> None:
    assert keda_problems(render(directory)) == []


def test_keda_objects_check_refuses_a_misspelt_trigger() -> None:
    objects = copy.deepcopy(render("base"))
    (scaled,) = by_kind(objects, "ScaledObject").values()
    metadata = scaled["spec"]["triggers"][0]["metadata"]
    metadata["queueUrl"] = metadata.pop("queueURL")  # the documented key is queueURL
    metadata["queueLength"] = 500  # KEDA's metadata are strings

    problems = keda_problems(objects)

    assert "aws-sqs-queue: unknown metadata queueUrl" in problems
    assert "aws-sqs-queue: queueLength is not a string" in problems


def pod(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]


@pytest.mark.parametrize("directory", RENDERINGS)
def test_each_part_runs_the_image_non_root_read_only_with_requests_and_a_grace_above_shutdown_grace(
    directory: str,
) -> None:
    objects = render(directory)
    config = by_kind(objects, "ConfigMap")["sqs-message-service"]["data"]
    shutdown_grace_s = float(config.get("SHUTDOWN_GRACE", Settings().shutdown_grace_s))
    for part in PARTS:
        spec = pod(objects, part)
        (main,) = spec["containers"]
        assert main["image"].split(":")[0] == IMAGE and main["args"] == [f"queue-{part}"]
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
        assert main["securityContext"]["readOnlyRootFilesystem"] is True
        assert main["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"cpu", "memory"} <= set(main["resources"]["requests"])
        assert main["readinessProbe"] and main["livenessProbe"]
    assert pod(objects, "worker")["terminationGracePeriodSeconds"] > shutdown_grace_s
    assert pod(objects, "writer")["terminationGracePeriodSeconds"] > Settings().send_timeout_s


def probes(container: dict[str, Any]) -> set[tuple[str, int]]:
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    return {
        (probe["httpGet"]["path"], ports[probe["httpGet"]["port"]])
        for probe in (container["readinessProbe"], container["livenessProbe"])
    }


def test_the_probes_ask_the_routes_and_ports_the_parts_serve() -> None:
    objects = render("base")
    writer, worker, console = ({**pod(objects, part)["containers"][0]} for part in PARTS)
    spec = yaml.safe_load((ROOT / "swagger.yml").read_text())
    console_spec = yaml.safe_load((ROOT / "sqs_message_service" / "console" / "console.yml").read_text())
    assert {"/health", "/ready"} <= set(spec["paths"]) and "/health" in console_spec["paths"]

    assert probes(writer) == {("/api/ready", 5000), ("/api/health", 5000)}
    assert probes(worker) == {("/metrics", 9102), ("/health", 9102)}  # live: 503 once threads are stuck
    assert {"name": "METRICS_PORT", "value": "9102"} in worker["env"]
    assert probes(console) == {("/api/health", 5050)}
    assert {"name": "CONSOLE_PORT", "value": "5050"} in console["env"]


@pytest.mark.parametrize("directory", RENDERINGS)
def test_every_setting_given_is_one_the_service_reads_and_accepts(directory: str) -> None:
    objects = render(directory)
    config = by_kind(objects, "ConfigMap")["sqs-message-service"]["data"]
    known = set(ENV_NAMES.values()) | {"AWS_REGION"}
    assert set(config) <= known
    for part in PARTS:
        (main,) = pod(objects, part)["containers"]
        env = {item["name"]: item["value"] for item in main.get("env", [])}
        assert set(env) <= known, part
        Settings.from_env({**config, **env})  # raises, naming the variable, on a value it refuses
    for secret in by_kind(objects, "Secret").values():
        keys = set(secret["stringData"])
        assert keys <= AWS_CREDENTIALS or keys <= AWS_SECRET_PARAMETERS


@pytest.mark.parametrize("directory", RENDERINGS)
def test_each_part_has_a_disruption_budget_the_writer_a_service_and_an_hpa(directory: str) -> None:
    objects = render(directory)
    budgets = {
        o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for o in by_kind(objects, "PodDisruptionBudget").values()
    }
    assert set(PARTS) <= budgets
    assert by_kind(objects, "Service")["writer"]["spec"]["selector"] == {"app.kubernetes.io/name": "writer"}
    hpa = by_kind(objects, "HorizontalPodAutoscaler")["writer"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "writer"}
    assert "writer" not in {o["spec"]["scaleTargetRef"]["name"] for o in by_kind(objects, "ScaledObject").values()}
