"""make containers: build the image from the Dockerfile, run docker-compose.yml, and check it.

What it checks, whatever the engine: the queues exist; the services started in the order the
compose file asks (sqs healthy, then setup done, then the writer and the worker healthy, then the
client); every message the client got a 201 for was processed or dead-lettered, none lost; each
long-running service's health check passes; the processes run as uid and gid 10001; stopping the
stack stops the client, then the writer and the worker (the worker drains, exit code 0), then SQS.

Where there is a Docker engine with compose and a registry, it is `docker compose` itself. Where
there is none (this project's machines: Debian, root, no registry), it is podman, driven from the
compose file by this script, because podman 4.3 without systemd runs no health-check timer (so
`depends_on: service_healthy` would never be met): the script runs each check itself, at the
service's interval. The base image, `python:3.11-slim`, is then bootstrapped from Debian's
packages with debootstrap, and ElasticMQ, which cannot be pulled, is replaced by moto's server
(deploy/sqs-standin). Everything podman writes goes under one directory (the cache below, given
through podman's --root, --runroot and --network-config-dir), so nothing under /etc changes and
the base is built once; `python scripts/containers.py clean` (run by `make clean`) removes it,
and removes any Debian package this script installed.

    python scripts/containers.py [--engine auto|docker|podman] [--profile P] [--count 1000] [--keep]
    python scripts/containers.py prepare    # an engine, or exit 3: this machine cannot run any
    python scripts/containers.py clean
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sqs-message-service" / "containers"
PROJECT = "sqs-message-service"
IMAGE = "sqs-message-service"
BASE_IMAGE = "localhost/sqs-message-service-base:bookworm"
STANDIN_IMAGE = "localhost/sqs-message-service-sqs-standin:latest"
#: What the podman route needs from Debian, and what the base image holds beside Debian's minbase.
#: netavark sets up container networks with iptables, which podman only suggests: a machine
#: without it fails every `podman run` on a network ("netavark: No such file or directory").
PODMAN_PACKAGES = ("podman", "runc", "debootstrap", "netavark", "aardvark-dns", "iptables")
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "python-is-python3", "ca-certificates")
INSTALLED_RECORD = CACHE / "installed-packages"
#: podman's limits without systemd: none are inherited that runc could set, so give them.
ULIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096")
APP_ID = "10001"
#: The exit code when this machine cannot run containers at all (no engine, nothing installable):
#: not a pass and not a failure of the project; .ci/run says so plainly.
CANNOT_RUN_HERE = 3
#: The services whose health checks must pass, and the ones that run once.
LONG_RUNNING = ("sqs", "writer", "worker")
ONE_SHOT = ("setup", "client")


def say(text: str) -> None:
    print(f"containers: {text}", flush=True)


def run(
    argv: list[str], *, check: bool = True, capture: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, text=True, capture_output=capture, timeout=timeout)


def seconds(value: Any, default: float) -> float:
    """A compose duration ("10s", "1m30s", "500ms") in seconds."""
    if value is None:
        return default
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(ms|s|m|h)", str(value)):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def interpolate(value: Any) -> Any:
    """${NAME:-default} and ${NAME} from this process's environment, as compose does."""
    if isinstance(value, str):
        return re.sub(
            r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}",
            lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""),
            value,
        )
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    return value


@dataclass
class Service:
    name: str
    spec: dict[str, Any]

    @property
    def depends_on(self) -> dict[str, dict[str, Any]]:
        value = self.spec.get("depends_on", {})
        return {name: {"condition": "service_started"} for name in value} if isinstance(value, list) else value


def load_compose(profiles: tuple[str, ...]) -> dict[str, Service]:
    import yaml  # from the virtualenv: only the run needs it, not `clean`

    document = interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))
    return {
        name: Service(name, spec)
        for name, spec in document["services"].items()
        if not spec.get("profiles") or set(spec["profiles"]) & set(profiles)
    }


def start_order(services: dict[str, Service]) -> list[str]:
    """The services, each after what it depends on (compose's order); a cycle is an error."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise SystemExit(f"containers: depends_on has a cycle through {name}")
        visiting.add(name)
        for dependency, how in services[name].depends_on.items():
            if dependency in services:
                visit(dependency)
            elif how.get("required", True):
                raise SystemExit(f"containers: {name} depends on {dependency}, which is not enabled")
        visiting.discard(name)
        order.append(name)

    for name in services:
        visit(name)
    return order


# -- the podman route -----------------------------------------------------------------------


class Podman:
    """podman with every path under CACHE, and the options a machine without systemd needs."""

    def __init__(self) -> None:
        self.base = [
            "podman",
            "--root",
            str(CACHE / "storage"),
            "--runroot",
            str(CACHE / "run"),
            "--network-config-dir",
            str(CACHE / "networks"),
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]
        if shutil.which("runc"):
            self.base += ["--runtime", "runc"]
        self.network = f"{PROJECT}_default"

    def __call__(self, *argv: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        result = run([*self.base, *argv], check=False, timeout=timeout)
        if check and result.returncode:  # what podman said, not only that it failed
            raise SystemExit(
                f"containers: `podman {' '.join(argv[:2])} ...` exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result

    def has_image(self, name: str) -> bool:
        return self("image", "exists", name, check=False).returncode == 0

    def build(self, context: Path, tag: str, containerfile: Optional[Path] = None) -> float:
        argv = [
            "build",
            "--format",
            "docker",
            "--network",
            "host",
            "--pull=never",
            *ULIMITS,
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            "-t",
            tag,
        ]
        ca = extra_ca()
        if ca:
            argv += ["--secret", f"id=extra_ca,src={ca}"]
        if containerfile:
            argv += ["-f", str(containerfile)]
        started = time.monotonic()
        result = self(*argv, str(context), check=False)
        if result.returncode:
            raise SystemExit(f"containers: building {tag} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        return time.monotonic() - started

    def container(self, service: str) -> str:
        return f"{PROJECT}-{service}-1"

    def start(self, service: Service, image: str) -> None:
        spec = service.spec
        name = self.container(service.name)
        argv = ["run", "-d", "--name", name, "--network", self.network, "--network-alias", service.name, *ULIMITS]
        for key, value in spec.get("environment", {}).items():
            argv += ["-e", f"{key}={value}"]
        for port in spec.get("ports", []):
            argv += ["-p", str(port)]
        check = spec.get("healthcheck", {})
        if check.get("disable"):
            argv += ["--no-healthcheck"]
        elif check.get("test"):
            kind, *test = check["test"]
            command = test[0] if kind == "CMD-SHELL" else json.dumps(test)
            argv += [
                "--health-cmd",
                command,
                "--health-retries",
                str(check.get("retries", 3)),
                "--health-timeout",
                f"{seconds(check.get('timeout'), 30):g}s",
            ]
        argv += ["--stop-timeout", f"{int(seconds(spec.get('stop_grace_period'), 10))}", image]
        command = spec.get("command")
        if command:
            argv += command if isinstance(command, list) else shlex.split(command)
        self(*argv)  # run_podman removed any container of that name first (down)

    def healthy(self, service: str) -> bool:
        return self("healthcheck", "run", self.container(service), check=False, timeout=60).returncode == 0

    def state(self, service: str) -> dict[str, Any]:
        return json.loads(self("inspect", "--format", "{{json .State}}", self.container(service)).stdout)

    def exec(self, service: str, *argv: str) -> str:
        return self("exec", self.container(service), *argv).stdout.strip()

    def logs(self, service: str) -> str:
        result = self("logs", self.container(service), check=False)
        return result.stdout + result.stderr

    def stop(self, service: Service) -> float:
        started = time.monotonic()
        grace = int(seconds(service.spec.get("stop_grace_period"), 10))
        self("stop", "-t", str(grace), self.container(service.name), check=False, timeout=grace + 60)
        return time.monotonic() - started

    def down(self, services: list[str]) -> None:
        for service in services:
            self("rm", "-f", "-t", "0", self.container(service), check=False)
        self("network", "rm", "-f", self.network, check=False)


def extra_ca() -> Optional[str]:
    """The CA bundle this machine's pip trusts, when it names one (TLS interception)."""
    for variable in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        path = os.environ.get(variable)
        if path and Path(path).is_file():
            return path
    return None


def installed(package: str) -> bool:
    """Whether Debian's `package` is installed. `dpkg -s` is not enough: it answers 0 too for a
    package removed with its configuration left ("deinstall ok config-files"), as `make clean`
    leaves podman, and the next run then found no podman to run."""
    status = run(["dpkg-query", "-W", "-f=${Status}", package], check=False)
    return status.returncode == 0 and status.stdout.strip().endswith("ok installed")


def install_missing_packages() -> None:
    missing = [package for package in PODMAN_PACKAGES if not installed(package)]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        cannot_run_here(f"no Docker engine, and podman's route needs root and apt-get to install {' '.join(missing)}")
    say(f"installing Debian packages {' '.join(missing)} (`make clean` removes them)")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    for step in (["apt-get", "update", "-qq"], install):
        if run(step, check=False, capture=False).returncode:
            cannot_run_here(f"`{' '.join(step)}` failed: Debian's packages are not reachable from here")
    CACHE.mkdir(parents=True, exist_ok=True)
    with INSTALLED_RECORD.open("a") as record:
        record.write("".join(f"{package}\n" for package in missing))


def cannot_run_here(why: str) -> None:
    say(f"cannot run here: {why}")
    sys.exit(CANNOT_RUN_HERE)


def bootstrap_base(podman: Podman) -> None:
    """A stand-in for python:3.11-slim from Debian bookworm's packages, built once and cached."""
    if podman.has_image(BASE_IMAGE):
        return
    say(f"bootstrapping {BASE_IMAGE} from Debian's packages with debootstrap (once; cached in {CACHE})")
    rootfs = CACHE / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    started = time.monotonic()
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            "bookworm",
            str(rootfs),
            debian_mirror(),
        ],
        capture=True,
        timeout=1800,
    )
    # The image's pip installs into its own Python, as the official image's does.
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        [*podman.base, "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True, text=True
    )
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    if imported.returncode or tar.returncode:
        raise SystemExit(f"containers: importing the base failed: {imported.stderr[-2000:]}")
    say(f"base bootstrapped in {time.monotonic() - started:.0f} s")


def debian_mirror() -> str:
    """The mirror this machine's apt uses (it is reachable), else Debian's own."""
    for source in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if source.is_file():
            pattern = r"(?:^URIs:\s*|^deb\s+(?:\[[^]]*\]\s*)?)(https?://\S+/debian)\b"
            match = re.search(pattern, source.read_text(), re.M)
            if match:
                return match.group(1)
    return "http://deb.debian.org/debian"


def registry_reachable(image: str) -> bool:
    return run(["docker", "pull", image], check=False, timeout=300).returncode == 0


# -- the run --------------------------------------------------------------------------------


@dataclass
class Report:
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        say(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            self.failures.append(what)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return sum(float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (OSError, ValueError):
            pass
        time.sleep(interval_s)
    return False


def run_podman(args: argparse.Namespace, report: Report) -> None:
    install_missing_packages()
    podman = Podman()
    for directory in ("storage", "run", "networks"):
        (CACHE / directory).mkdir(parents=True, exist_ok=True)
    say(f"podman, with its storage, run state and networks under {CACHE}")
    bootstrap_base(podman)
    services = load_compose(tuple(args.profile))
    order = start_order(services)
    report.figures["build_s"] = round(podman.build(ROOT, IMAGE), 1)
    say(f"built {IMAGE} from the Dockerfile in {report.figures['build_s']} s")
    images = {name: IMAGE if service.spec.get("build") else service.spec["image"] for name, service in services.items()}
    if images["sqs"].startswith("softwaremill/elasticmq"):
        podman.build(ROOT, STANDIN_IMAGE, ROOT / "deploy/sqs-standin/Containerfile")
        say(f"sqs: {images['sqs']} cannot be pulled here; moto's server stands in for it")
        images["sqs"] = STANDIN_IMAGE
    podman.down(order)
    podman("network", "create", podman.network)
    try:
        for name in order:
            service = services[name]
            for dependency, how in service.depends_on.items():
                if dependency not in services:
                    continue
                if not wait_for_condition(podman, services[dependency], how["condition"]):
                    report.check(False, f"{dependency} reached {how['condition']} before {name} started")
                    raise SystemExit(podman.logs(dependency)[-3000:])
            podman.start(service, images[name])
            say(f"started {name}")
        check_order({name: podman.state(name) for name in order}, services, order, report)
        check_run(podman, services, report, args)
        check_stop(podman, services, order, report)
    finally:
        if not args.keep:
            podman.down(order)


def wait_for_condition(podman: Podman, service: Service, condition: str) -> bool:
    check = service.spec.get("healthcheck", {})
    if condition == "service_healthy":
        interval = seconds(check.get("interval"), 30)
        budget = seconds(check.get("start_period"), 0) + interval * (int(check.get("retries", 3)) + 30)
        return wait_until(lambda: podman.healthy(service.name), min(budget, 180), interval_s=min(interval, 2))
    if condition == "service_completed_successfully":
        code = podman("wait", podman.container(service.name), timeout=180).stdout.strip()
        return code == "0"
    return bool(podman.state(service.name).get("Running"))


def moment(text: str) -> float:
    """A time podman reports ("2026-12-02T21:40:01.123456789Z", or with an offset), in seconds."""
    from datetime import datetime

    text = re.sub(r"(\.\d{6})\d*", r"\1", text.strip().replace("Z", "+00:00"))
    text = re.sub(r" ([+-]\d{2}):?(\d{2}).*$", r"\1:\2", text)
    return datetime.fromisoformat(text.replace(" ", "T", 1)).timestamp()


def ready_moment(state: dict[str, Any], condition: str) -> float:
    """When a service met its dependants' condition, from podman's own record of it."""
    if condition == "service_completed_successfully":
        return moment(state["FinishedAt"])
    if condition == "service_healthy":
        passed = [entry for entry in (state.get("Health") or {}).get("Log") or [] if entry.get("ExitCode") == 0]
        if passed:
            return min(moment(entry["End"]) for entry in passed)
    return moment(state["StartedAt"])


def check_order(
    states: dict[str, dict[str, Any]], services: dict[str, Service], order: list[str], report: Report
) -> None:
    """From the engine's records (`inspect`'s State, alike on Docker and podman): each service
    started after what it depends on met its condition."""
    for name in order:
        for dependency, how in services[name].depends_on.items():
            if dependency in states:
                ok = ready_moment(states[dependency], how["condition"]) <= moment(states[name]["StartedAt"])
                report.check(ok, f"{dependency} {how['condition'].removeprefix('service_')} before {name} started")
    report.figures["order"] = " → ".join(order)


def check_run(podman: Podman, services: dict[str, Service], report: Report, args: argparse.Namespace) -> None:
    check_queues(services, report)
    for name in LONG_RUNNING:
        report.check(podman.healthy(name), f"{name}'s health check passes")
    for name in ("writer", "worker"):
        ids = podman.exec(name, "id", "-u") + ":" + podman.exec(name, "id", "-g")
        report.check(ids == f"{APP_ID}:{APP_ID}", f"{name} runs as uid:gid {ids}")
    client_code = podman("wait", podman.container("client"), timeout=600).stdout.strip()
    summary = [line for line in podman.logs("client").splitlines() if "201" in line]
    say(f"client: {summary[-1].strip() if summary else 'no summary'}")
    report.check(client_code == "0", f"the client exited {client_code}")

    check_counts(report, args)


def left_in_queue(stats: dict[str, Any]) -> int:
    """What the writer's /api/stats says is still in the queue: waiting, in flight or delayed."""
    return sum(int(stats["queue"].get(key, 0) or 0) for key in ("visible", "in_flight", "delayed"))


def check_queues(services: dict[str, Service], report: Report) -> None:
    """The queue and its dead-letter queue, asked of the SQS endpoint through its published port."""
    import boto3

    sqs = boto3.client(
        "sqs",
        endpoint_url="http://127.0.0.1:9324",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    queues = {url.rsplit("/", 1)[-1] for url in sqs.list_queues().get("QueueUrls", [])}
    environment = services["writer"].spec["environment"]
    report.check({environment["QUEUE_NAME"], environment["DLQ_NAME"]} <= queues, f"queues created: {sorted(queues)}")


def check_counts(report: Report, args: argparse.Namespace) -> None:
    """From the writer's /api/stats (SQS's own depths) and the worker's /metrics, through the
    published ports: every accepted message processed or dead-lettered, the queue empty."""

    def drained() -> bool:  # twice: a message coming back while SQS counts can be missed by one reading
        return all(left_in_queue(get_json("http://127.0.0.1:5000/api/stats")) == 0 for _ in range(2))

    started = time.monotonic()
    report.check(wait_until(drained, 300), "the queue drained")
    report.figures["drain_after_client_s"] = round(time.monotonic() - started, 1)
    stats = get_json("http://127.0.0.1:5000/api/stats")
    accepted = int(stats["messages"].get("accepted", 0))
    processed = int(metric("http://127.0.0.1:9102/metrics", "worker_messages_processed_total"))
    dead_lettered = int(stats["dead_letter_queue"].get("visible", 0))
    lost = accepted - processed - dead_lettered
    report.figures.update(
        accepted=accepted,
        processed=processed,
        dead_lettered=dead_lettered,
        lost=lost,
        refused=int(stats["messages"].get("invalid", 0)),
    )
    report.check(accepted >= args.count * 0.85, f"{accepted} accepted of the client's requests")
    report.check(lost == 0, f"{accepted} accepted = {processed} processed + {dead_lettered} dead-lettered")


def check_stop(podman: Podman, services: dict[str, Service], order: list[str], report: Report) -> None:
    """Stopped as compose stops: in the reverse of the start order, each within its grace; the
    worker while it holds messages."""
    for name in reversed(order):
        if name in ONE_SHOT:
            continue
        if name == "worker":
            check_drain(
                report, stop_worker=lambda: podman.stop(services["worker"]), worker_log=lambda: podman.logs("worker")
            )
            code = podman.state(name).get("ExitCode")
        else:
            took = podman.stop(services[name])
            code = podman.state(name).get("ExitCode")
            if name == "writer":
                report.check(code == 0, f"the writer stopped in {took:.1f} s, exit code {code}")
        if name == "worker":
            report.check(code == 0, f"the worker exited {code}")


#: Messages sent just before the worker is stopped, so that it stops with work in hand.
DRAIN_BURST = 300


def check_drain(report: Report, *, stop_worker: Callable[[], float], worker_log: Callable[[], str]) -> None:
    """Send a burst, stop the worker while it works on it, and account for every message: each
    accepted one was processed (the worker's own summary), is in the dead-letter queue, or is
    still in the queue for the next worker. One counted twice or not at all fails the check."""
    sent = 0
    for number in range(DRAIN_BURST):
        body = json.dumps({"body": f"drain {number}"}).encode()
        request = urllib.request.Request(
            "http://127.0.0.1:5000/api/message", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            sent += answer.status == 201
    took = stop_worker()
    report.figures["worker_stop_s"] = round(took, 1)
    log = worker_log()
    report.check("stopping: finishing in-flight work" in log, f"the worker drained in {took:.1f} s")
    summary = log[log.rfind("summary") :]
    processed = re.search(r"^processed\s+(\d+)$", summary, re.M)
    report.check(processed is not None, "the worker wrote its summary")
    stats = get_json("http://127.0.0.1:5000/api/stats")
    accepted = int(stats["messages"].get("accepted", 0))
    left = left_in_queue(stats)
    dead = int(stats["dead_letter_queue"].get("visible", 0))
    done = int(processed.group(1)) if processed else 0
    report.figures.update(burst_accepted=sent, burst_left_in_queue=left, processed_in_all=done)
    report.check(
        accepted == done + dead + left,
        f"after the stop: {accepted} accepted = {done} processed + {dead} dead-lettered + {left} left in the queue",
    )


def run_docker(args: argparse.Namespace, report: Report) -> None:
    """Docker's own compose: the same file, the same checks, read through the Docker CLI."""
    compose = ["docker", "compose", "-p", PROJECT, *[f"--profile={p}" for p in args.profile]]
    started = time.monotonic()
    run([*compose, "build"], capture=False)
    report.figures["build_s"] = round(time.monotonic() - started, 1)
    try:
        run([*compose, "up", "-d"], capture=False)
        run([*compose, "wait", "client"], check=False, timeout=600)
        services = load_compose(tuple(args.profile))
        order = start_order(services)
        states = {
            name: json.loads(run(["docker", "inspect", "--format", "{{json .State}}", f"{PROJECT}-{name}-1"]).stdout)
            for name in order
        }
        check_order(states, services, order, report)
        check_queues(services, report)
        report.check(states["client"]["ExitCode"] == 0, f"the client exited {states['client']['ExitCode']}")
        for name in ("writer", "worker"):
            ids = run([*compose, "exec", "-T", name, "sh", "-c", "echo $(id -u):$(id -g)"]).stdout.strip()
            report.check(ids == f"{APP_ID}:{APP_ID}", f"{name} runs as uid:gid {ids}")
            health = run(
                ["docker", "inspect", "--format", "{{.State.Health.Status}}", f"{PROJECT}-{name}-1"]
            ).stdout.strip()
            report.check(health == "healthy", f"{name}'s health check passes ({health})")
        check_counts(report, args)
        run([*compose, "stop", "client"], check=False, capture=False)

        def stop_worker() -> float:
            started = time.monotonic()
            run([*compose, "stop", "worker"], capture=False)
            return time.monotonic() - started

        def worker_log() -> str:
            return run([*compose, "logs", "--no-log-prefix", "worker"]).stdout

        check_drain(report, stop_worker=stop_worker, worker_log=worker_log)
        run([*compose, "stop"], capture=False)
        for name in ("writer", "worker"):
            code = run(["docker", "inspect", "--format", "{{.State.ExitCode}}", f"{PROJECT}-{name}-1"]).stdout.strip()
            report.check(code == "0", f"{name} exit code {code}")
    finally:
        if not args.keep:
            run([*compose, "down", "--remove-orphans"], check=False, capture=False)


def docker_usable() -> bool:
    return (
        shutil.which("docker") is not None
        and run(["docker", "info"], check=False, timeout=30).returncode == 0
        and run(["docker", "compose", "version"], check=False, timeout=30).returncode == 0
        and registry_reachable("softwaremill/elasticmq-native:1.6.16")
    )


def clean() -> int:
    """Undo what the podman route did: its containers, images and cache, and its packages."""
    if not CACHE.exists():
        return 0
    packages = INSTALLED_RECORD.read_text().split() if INSTALLED_RECORD.exists() else []
    if shutil.which("podman") and (CACHE / "storage").exists():
        podman = Podman()
        podman("rm", "-af", "-t", "0", check=False)
        podman("system", "reset", "--force", check=False)
    subprocess.run(["umount", "-R", str(CACHE / "storage" / "overlay")], capture_output=True)
    shutil.rmtree(CACHE, ignore_errors=True)
    if CACHE.parent.is_dir() and not any(CACHE.parent.iterdir()):
        CACHE.parent.rmdir()
    say(f"removed {CACHE}")
    if packages:
        say(f"removing the Debian packages it installed: {' '.join(packages)}")
        run(["apt-get", "remove", "-y", "-qq", *packages], check=False, capture=False)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "action",
        nargs="?",
        choices=("run", "prepare", "clean"),
        default="run",
        help="prepare: find an engine or install podman's route, and run nothing",
    )
    parser.add_argument("--engine", choices=("auto", "docker", "podman"), default="auto")
    parser.add_argument("--profile", action="append", default=[], help="a compose profile to enable")
    parser.add_argument("--count", type=int, default=1000, help="the client's requests (docker-compose.yml's)")
    parser.add_argument("--keep", action="store_true", help="leave the containers running afterwards")
    args = parser.parse_args(argv)
    if args.action == "clean":
        return clean()
    engine = args.engine
    if engine == "auto":
        engine = "docker" if docker_usable() else "podman"
    say(f"engine: {engine}")
    if args.action == "prepare":
        if engine == "podman":
            install_missing_packages()
        return 0
    report = Report()
    started = time.monotonic()
    (run_docker if engine == "docker" else run_podman)(args, report)
    report.figures["total_s"] = round(time.monotonic() - started, 1)
    say("figures: " + json.dumps(report.figures, ensure_ascii=False))
    if report.failures:
        say(f"{len(report.failures)} check(s) failed: {'; '.join(report.failures)}")
        return 1
    say("every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
