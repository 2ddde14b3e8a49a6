"""Dockerfile and docker-compose.yml, read (`make containers` runs them): what each service runs
exists in the package, its environment is what config.py reads and accepts, its ports are the
ones that environment opens, its start waits for a health check that exists, and the image is
slim, unprivileged and without build tools."""

from __future__ import annotations

import re
import shlex
import subprocess
from typing import Any

import pytest
import yaml

import client
import containers
import worker
from harness import ROOT
from helpers import CONSOLE_SCRIPTS
from sqs_message_service.settings import ENV_NAMES, Settings

#: What boto3 reads from the environment beside config.py's settings.
AWS_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"}
OUR_IMAGE = "sqs-message-service"
SCRIPTS = CONSOLE_SCRIPTS


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, (INSTRUCTION, arguments), grouped by stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def final_stage() -> dict[str, list[str]]:
    instructions: dict[str, list[str]] = {}
    for instruction, arguments in dockerfile_stages()[-1]:
        instructions.setdefault(instruction, []).append(arguments)
    return instructions


def interpolated(value: Any) -> str:
    """A compose value with ${NAME:-default} replaced by its default, as with an empty env."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this project's image."""
    return {name: service for name, service in compose["services"].items() if service.get("image") == OUR_IMAGE}


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {name: interpolated(value) for name, value in service.get("environment", {}).items()}


def test_the_image_is_slim_unprivileged_healthchecked_and_has_no_build_tools() -> None:
    stages = dockerfile_stages()
    final = final_stage()
    (base,) = final["FROM"]
    if base == "${BASE_IMAGE}":  # an argument, whose default is the official slim image
        base = re.search(r"^ARG BASE_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M).group(1)  # type: ignore[union-attr]
    assert re.match(r"python:\$\{PYTHON_VERSION\}-slim$|python:3\.\d+-slim$", base), base
    assert len(stages) >= 2  # wheels are built in a stage of their own
    (user,) = final["USER"]
    assert user not in ("root", "0")
    assert "useradd" in " ".join(final["RUN"]) and "--no-create-home" in " ".join(final["RUN"])
    runs = " ".join(final["RUN"])
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "setuptools", "python -m build"):
        assert tool not in runs, tool
    assert "--no-index" in runs  # only the wheels of the first stage
    assert final["HEALTHCHECK"] and "/api/health" in final["HEALTHCHECK"][0]
    (command,) = final["CMD"]
    assert re.findall(r'"([^"]+)"', command)[0] in SCRIPTS


def test_the_images_environment_and_ports_are_settings_config_accepts() -> None:
    final = final_stage()
    env = dict(re.findall(r"([A-Z_]+)=(\S+)", " ".join(final["ENV"])))
    assert set(env) - {"PYTHONUNBUFFERED"} <= set(ENV_NAMES.values())
    settings = Settings.from_env(env)
    exposed = {int(port) for ports in final["EXPOSE"] for port in ports.split()}
    assert exposed == {settings.port, settings.metrics_port}
    assert (settings.port, settings.metrics_port) == (Settings().port, Settings().metrics_port)


def test_the_services_are_the_emulators_setup_writer_worker_and_one_shot_client(
    compose: dict[str, Any], ours: dict[str, dict[str, Any]]
) -> None:
    assert set(compose["services"]) == {"sqs", "localstack", "setup", "writer", "worker", "client"}
    assert set(ours) == {"setup", "writer", "worker", "client"}
    image = compose["services"]["sqs"]["image"]
    assert re.match(r"^softwaremill/elasticmq-native:\d+\.\d+\.\d+$", image), image  # pinned
    localstack = compose["services"]["localstack"]
    assert re.match(r"^localstack/localstack:\d+\.\d+$", localstack["image"])  # pinned, never latest
    assert localstack["profiles"] == ["localstack"] and "profiles" not in compose["services"]["sqs"]
    # the first of ours to start builds the image the others run
    assert [name for name, service in ours.items() if "build" in service] == ["setup"]
    for one_shot in ("setup", "client"):
        assert compose["services"][one_shot].get("restart") == "no"
        assert compose["services"][one_shot]["healthcheck"] == {"disable": True}  # not the writer's


def test_the_localstack_profile_is_reached_where_the_file_says(compose: dict[str, Any]) -> None:
    """The command at the top of the file points the parts at LocalStack's port, published on
    loopback, with SERVICES=sqs."""
    header = (ROOT / "docker-compose.yml").read_text().split("services:")[0]
    command = re.search(r"SQS_ENDPOINT_URL=http://(\w+):(\d+) docker compose --profile localstack up", header)
    assert command, "no LocalStack command at the top of docker-compose.yml"
    service = compose["services"][command.group(1)]
    port = int(command.group(2))
    assert service["environment"]["GATEWAY_LISTEN"] == f"0.0.0.0:{port}"
    assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert service["environment"]["SERVICES"] == "sqs"
    # the parts take that endpoint from the environment, the ElasticMQ one by default
    assert compose["x-sqs"]["SQS_ENDPOINT_URL"] == "${SQS_ENDPOINT_URL:-http://sqs:9324}"


def test_every_command_is_a_console_script_with_arguments_it_accepts(ours: dict[str, dict[str, Any]]) -> None:
    parsers = {"queue-client": client.build_parser(), "queue-worker": worker.build_parser(Settings())}
    for name, service in ours.items():
        command = service["command"]
        command = shlex.split(command) if isinstance(command, str) else command
        assert command[0] in SCRIPTS, name
        if command[0] in parsers:
            parsers[command[0]].parse_args(command[1:])  # exits (SystemExit) on an unknown option
        else:
            assert command[1:] == [], name


def test_each_services_environment_is_known_to_config_and_valid(ours: dict[str, dict[str, Any]]) -> None:
    for name, service in ours.items():
        env = environment(service)
        assert set(env) <= set(ENV_NAMES.values()) | AWS_VARIABLES, name
        settings = Settings.from_env(env)  # raises ConfigError on a value it refuses
        if name != "client":
            assert settings.sqs_endpoint_url == "http://sqs:9324"
            assert {"AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)


def test_published_ports_are_the_ones_the_settings_open_and_only_on_loopback(
    compose: dict[str, Any], ours: dict[str, dict[str, Any]]
) -> None:
    listening = {
        "writer": Settings.from_env(environment(ours["writer"])).port,
        "worker": Settings.from_env(environment(ours["worker"])).metrics_port,
        "sqs": 9324,
    }
    for name, port in listening.items():
        (published,) = compose["services"][name]["ports"]
        host, _host_port, container_port = published.split(":")
        assert host == "127.0.0.1" and int(container_port) == port, name


def test_start_order_waits_for_health_checks_that_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def has_health_check(name: str) -> bool:
        service = services[name]
        return "healthcheck" in service or service.get("image") == OUR_IMAGE  # the image's own

    assert services["setup"]["depends_on"]["sqs"]["condition"] == "service_healthy"
    assert services["setup"]["depends_on"]["localstack"] == {"condition": "service_healthy", "required": False}
    for part in ("writer", "worker"):
        assert services[part]["depends_on"] == {"setup": {"condition": "service_completed_successfully"}}
    assert services["client"]["depends_on"]["writer"]["condition"] == "service_healthy"
    assert services["client"]["depends_on"]["worker"]["condition"] == "service_healthy"
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            if rule["condition"] == "service_healthy":
                assert has_health_check(dependency), f"{name} waits for {dependency}, which has no health check"
    worker_check = " ".join(services["worker"]["healthcheck"]["test"])
    assert f":{listening_metrics_port(services['worker'])}/health" in worker_check


def listening_metrics_port(service: dict[str, Any]) -> int:
    return Settings.from_env(environment(service)).metrics_port


def test_the_emulators_queues_are_the_ones_the_services_use(compose: dict[str, Any]) -> None:
    (volume,) = compose["services"]["sqs"]["volumes"]
    source, target, _ = volume.split(":")
    assert target == "/opt/elasticmq.conf"
    config = (ROOT / source).read_text()
    settings = Settings.from_env(environment(compose["services"]["writer"]))
    block = re.search(r"^queues \{(.*)^\}", config, re.M | re.S)
    assert block is not None, "no queues block"
    queues = block.group(1)
    assert re.search(rf"^  {settings.queue_name} \{{", queues, re.M)
    assert re.search(rf"^  {settings.dlq_name} \{{", queues, re.M)
    assert f'name = "{settings.dlq_name}"' in queues
    assert f"maxReceiveCount = {settings.max_receive_count}" in queues
    assert f"defaultVisibilityTimeout = {settings.visibility_timeout_s} seconds" in queues
    assert f"receiveMessageWait = {settings.receive_wait_s} seconds" in queues


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert "*" in ignore
    copied = [
        arguments.split()[:-1]
        for stage in dockerfile_stages()
        for instruction, arguments in stage
        if instruction == "COPY" and "--from" not in arguments
    ]
    for sources in copied:
        for source in sources:
            assert source in allowed, source
            assert list(ROOT.glob(source)), source


def test_the_image_runs_as_uid_and_gid_10001_and_says_what_it_is() -> None:
    final = final_stage()
    runs = " ".join(final["RUN"])

    assert final["USER"] == ["10001:10001"]
    assert "groupadd --system --gid 10001 app" in runs and "--uid 10001 --gid 10001" in runs
    labels = " ".join(final["LABEL"])
    for name in ("title", "description", "licenses", "version"):
        assert f"org.opencontainers.image.{name}=" in labels, name
    version = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', labels)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert version and f'version = "{version.group(1)}"' in pyproject  # one version, said twice


def test_an_extra_ca_is_a_build_secret_used_only_where_pip_fetches() -> None:
    wheels_stage = " ".join(arguments for instruction, arguments in dockerfile_stages()[0] if instruction == "RUN")

    assert "--mount=type=secret,id=extra_ca" in wheels_stage and "PIP_CERT" in wheels_stage
    assert "extra_ca" not in " ".join(final_stage()["RUN"])  # the runtime image never holds it


def test_health_checks_run_on_every_engine_and_the_one_shot_client_has_none(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        if test is None:
            continue
        # exec form only with programs free of spaces: podman's Docker API splits them there
        assert test[0] == "CMD-SHELL" or not any(" " in part for part in test[1:]), name
    assert services["client"]["healthcheck"] == {"disable": True}


def test_make_containers_starts_the_services_in_the_compose_files_order() -> None:
    assert containers.start_order(containers.load_compose(())) == ["sqs", "setup", "writer", "worker", "client"]
    with_localstack = containers.start_order(containers.load_compose(("localstack",)))
    assert with_localstack.index("localstack") < with_localstack.index("setup")


def test_make_containers_refuses_a_required_dependency_that_is_not_enabled() -> None:
    services = {
        "writer": containers.Service("writer", {"depends_on": {"db": {"condition": "service_healthy"}}}),
    }
    with pytest.raises(SystemExit, match="writer depends on db"):
        containers.start_order(services)
    services["writer"].spec["depends_on"]["db"]["required"] = False
    assert containers.start_order(services) == ["writer"]


def test_make_containers_reads_values_and_durations_as_compose_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQS_ENDPOINT_URL", "http://localstack:4566")
    monkeypatch.delenv("AWS_REGION", raising=False)
    assert containers.interpolate(["${SQS_ENDPOINT_URL:-http://sqs:9324}", "${AWS_REGION:-us-east-1}"]) == [
        "http://localstack:4566",
        "us-east-1",
    ]
    assert [containers.seconds(v, 0) for v in ("10s", "1m30s", "500ms", None)] == [10, 90, 0.5, 0]


def test_make_containers_finds_a_service_that_started_before_its_dependency_was_ready() -> None:
    services = {
        "sqs": containers.Service("sqs", {}),
        "writer": containers.Service("writer", {"depends_on": {"sqs": {"condition": "service_healthy"}}}),
    }
    checks = [{"ExitCode": 1, "End": "2026-12-02T10:00:01Z"}, {"ExitCode": 0, "End": "2026-12-02T10:00:03Z"}]
    sqs: dict[str, Any] = {"StartedAt": "2026-12-02T10:00:00Z", "Health": {"Log": checks}}
    for writer_started, passes in (("2026-12-02T10:00:04.5Z", True), ("2026-12-02T10:00:02Z", False)):
        report = containers.Report()
        states: dict[str, dict[str, Any]] = {"sqs": sqs, "writer": {"StartedAt": writer_started}}
        containers.check_order(states, services, ["sqs", "writer"], report)
        assert (report.failures == []) is passes


@pytest.mark.parametrize(
    ("status", "is_installed"),
    [
        ("install ok installed", True),
        ("deinstall ok config-files", False),  # removed by `make clean`, its configuration left
        ("unknown ok not-installed", False),
    ],
)
def test_make_containers_installs_a_package_removed_with_its_configuration_left(
    monkeypatch: pytest.MonkeyPatch, status: str, is_installed: bool
) -> None:
    asked: list[list[str]] = []

    def dpkg_query(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        asked.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout=status, stderr="")

    monkeypatch.setattr(containers, "run", dpkg_query)

    assert containers.installed("podman") is is_installed
    assert asked == [["dpkg-query", "-W", "-f=${Status}", "podman"]]
