"""pyproject.toml: the wheel `python -m build` makes holds the package and the user's modules and
nothing else; installed into a fresh virtualenv, away from the checkout, it gives the console
scripts, finds its data where a checkout does, and its writer serves the spec and the metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from harness import ROOT, Process, accepts_connections, free_port
from helpers import CONSOLE_SCRIPTS, wait_until
from test_layout import USERS_NAMES

SCRIPTS = ("queue-writer", "queue-worker", "queue-client", "queue-setup", "queue-dlq", "queue-console")
#: The console's page, script, style and spec: data of its package that the wheel must carry.
CONSOLE_FILES = {
    f"sqs_message_service/console/{name}"
    for name in ("console.yml", "templates/console.html", "static/console.js", "static/console.css")
}


def run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin directory of a fresh virtualenv with the wheel installed (its dependencies at the
    versions of requirements.txt, which pip takes from its cache when it can)."""
    work = tmp_path_factory.mktemp("wheel")
    # The sdist first, then the wheel from it, as `python -m build` does: built from the sdist in
    # a directory of its own, never from the checkout, whose build/ keeps files of earlier builds.
    run(sys.executable, "-m", "build", "--outdir", work / "dist", ROOT, cwd=work)
    (wheel,) = (work / "dist").glob("sqs_message_service-*.whl")
    run(sys.executable, "-m", "venv", work / "venv", cwd=work)
    bin_dir = work / "venv" / "bin"
    run(bin_dir / "pip", "install", "--quiet", "--constraint", ROOT / "requirements.txt", wheel, cwd=work)
    yield bin_dir


def test_the_console_scripts_are_the_declared_ones_and_run(installed: Path) -> None:
    assert set(CONSOLE_SCRIPTS) == set(SCRIPTS)

    for script in SCRIPTS:
        assert "usage:" in run(installed / script, "--help", cwd=installed), script


def test_the_installed_modules_and_files_come_from_the_virtualenv(installed: Path) -> None:
    where = json.loads(
        run(
            installed / "python",
            "-c",
            "import json, config, server; "
            "print(json.dumps([server.__file__, str(config.DATA_DIR), str(config.Settings().log_config)]))",
            cwd=installed,
        )
    )
    venv = str(installed.parent)
    assert all(path.startswith(venv) for path in where), where  # not the checkout's
    assert where[1].endswith("site-packages/sqs_message_service")  # the package's data, as in a checkout
    for name in ("swagger.yml", "log.conf"):  # the files themselves, not links back to a checkout
        assert (Path(where[1]) / name).is_file() and not (Path(where[1]) / name).is_symlink()
    assert Path(where[2]).is_file()


def test_the_wheel_holds_the_package_and_the_users_modules_and_nothing_else(tmp_path: Path) -> None:
    run(sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path, ROOT, cwd=tmp_path)
    (wheel,) = tmp_path.glob("sqs_message_service-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")}
        data = {name for name in archive.namelist() if name.endswith((".yml", ".conf", ".html", ".js", ".css"))}

    assert top == {"sqs_message_service", *(f"{module}.py" for module in USERS_NAMES)}
    assert data == {"sqs_message_service/swagger.yml", "sqs_message_service/log.conf", *CONSOLE_FILES}


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_the_installed_writer_serves_the_spec_health_and_metrics(installed: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{name: value for name, value in os.environ.items() if name != "PYTHONPATH"},
        "PORT": str(port),
        "SQS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nothing there: health needs no SQS
    }
    writer = Process([installed / "queue-writer"], env=env, log_path=tmp_path / "writer.log")
    try:
        wait_until(lambda: accepts_connections(port), timeout_s=30, what="the installed writer listening")
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/api/health", timeout=5) as response:
            assert json.load(response) == {"status": "ok"}
        with urllib.request.urlopen(f"{base}/api/openapi.json", timeout=5) as response:
            assert json.load(response)["paths"].keys() >= {"/message", "/messages", "/health"}
        # Counted as its answer leaves, so a scrape right after it may come a moment early.
        counted = 'writer_requests_total{method="GET",route="/api/health",status="200"} 1.0'
        wait_until(lambda: counted in scrape(f"{base}/metrics"), timeout_s=5, what="the health check counted")
    finally:
        assert writer.stop() in (0, -15), writer.output[-3000:]
    assert "serving on http://127.0.0.1" in writer.output


def test_the_installed_console_serves_its_page_script_and_api(installed: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{name: value for name, value in os.environ.items() if name != "PYTHONPATH"},
        "CONSOLE_PORT": str(port),
        "SQS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nothing there: the page says so
        "CONSOLE_SCRAPE": f"http://127.0.0.1:{free_port()}/metrics",
    }
    console = Process([installed / "queue-console"], env=env, log_path=tmp_path / "console.log")
    try:
        wait_until(lambda: accepts_connections(port), timeout_s=30, what="the installed console listening")
        base = f"http://127.0.0.1:{port}"
        assert 'name="csrf-token"' in scrape(f"{base}/")
        assert "function drawChart" in scrape(f"{base}/static/console.js")
        assert json.loads(scrape(f"{base}/api/openapi.json"))["paths"].keys() >= {"/overview", "/dead-letters"}
        wait_until(
            lambda: json.loads(scrape(f"{base}/api/overview"))["sqs_error"] is not None,
            timeout_s=30,
            what="the console saying SQS does not answer",
        )
    finally:
        assert console.stop() in (0, -15), console.output[-3000:]
    assert f"http://127.0.0.1:{port}/" in console.output and "read-only" in console.output
