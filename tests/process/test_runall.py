"""runall.sh: three panes with moving counters, the console's URL, and `stop` leaves nothing behind
but the summaries it prints; `--help` starts nothing; a missing virtualenv, a taken port or a part
that does not start is said, with what to do."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from harness import ROOT, free_port
from helpers import wait_until

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="runall.sh needs tmux"),
]


def pane(session: str, index: int) -> str:
    result = subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", f"{session}:run.{index}"], capture_output=True, text=True
    )
    return result.stdout


def counter(text: str, name: str) -> int:
    found = re.findall(rf"^{re.escape(name)}\s+(\d+)\s*$", text, flags=re.MULTILINE)
    return int(found[-1]) if found else 0


def test_runall_shows_moving_counters_and_stop_leaves_no_process(tmp_path: Path) -> None:
    session = f"test-runall-{os.getpid()}"
    sqs_port, writer_port, console_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "RUNALL_SESSION": session,
        "LOCAL_SQS_PORT": str(sqs_port),
        "PORT": str(writer_port),
        "METRICS_PORT": str(free_port()),
        "RUN_RATE": "50",
        "RUN_DURATION": "120",
        "CONSOLE_PORT": str(console_port),
    }
    env.pop("SQS_ENDPOINT_URL", None)
    started = subprocess.run(
        [str(ROOT / "runall.sh"), "--detached"], env=env, capture_output=True, text=True, timeout=90
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr

        def counting() -> bool:
            return counter(pane(session, 2), "201") > 20 and counter(pane(session, 1), "processed") > 10

        wait_until(counting, timeout_s=60, what="client and worker counters moving")
        assert counter(pane(session, 2), "400") >= 1  # the malformed request of each batch
        assert "POST /api/message" in pane(session, 0)
        pane_pids = subprocess.run(
            ["tmux", "list-panes", "-s", "-t", session, "-F", "#{pane_pid}"], capture_output=True, text=True
        ).stdout.split()
        assert len(pane_pids) == 5  # the local endpoint, writer, worker, client, console
        assert f"the console is at http://127.0.0.1:{console_port}/ (read-only" in started.stdout
        wait_until(lambda: _answers(f"http://127.0.0.1:{console_port}/api/health"), timeout_s=30, what="the console")
    finally:
        stopped = subprocess.run([str(ROOT / "runall.sh"), "stop"], env=env, capture_output=True, text=True, timeout=60)

    assert stopped.returncode == 0, stopped.stderr
    assert "── worker ──" in stopped.stdout and "── client ──" in stopped.stdout  # the summaries, kept
    # the load stopped first: each of its last requests answered by a writer still serving
    client = stopped.stdout.split("── client ──")[1]
    assert re.findall(r"^conn errors +(\d+)$", client, re.M)[-1:] == ["0"], client  # its summary's
    assert "Pane is dead (status 0" in client, client
    assert subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0
    assert [pid for pid in pane_pids if Path(f"/proc/{pid}").exists()] == []
    assert not _listening(sqs_port) and not _listening(writer_port) and not _listening(console_port)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_runall_without_tmux_says_how_to_install_it(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "cat"):  # what the script needs before it looks for tmux
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)

    result = subprocess.run(
        [str(ROOT / "runall.sh"), "--detached"], env={"PATH": str(bin_dir)}, capture_output=True, text=True
    )

    assert result.returncode == 1
    assert "needs tmux" in result.stderr and "apt-get install tmux" in result.stderr


@pytest.fixture
def runall_env(tmp_path: Path) -> Iterator[Callable[..., dict[str, str]]]:
    """runall.sh's environment with a session name and ports of this test's own (and `values`);
    whatever it started is stopped at the end, even when the script wrongly started it."""
    ports = {name: str(free_port()) for name in ("LOCAL_SQS_PORT", "PORT", "METRICS_PORT", "CONSOLE_PORT")}
    env = {**os.environ, **ports, "RUNALL_SESSION": f"test-runall-{os.getpid()}-{tmp_path.name}"}
    env.pop("SQS_ENDPOINT_URL", None)
    yield lambda **values: {**env, **values}
    if not _no_session(env):
        subprocess.run([str(ROOT / "runall.sh"), "stop"], env=env, capture_output=True, timeout=60)


def _no_session(env: dict[str, str]) -> bool:
    return subprocess.run(["tmux", "has-session", "-t", env["RUNALL_SESSION"]], capture_output=True).returncode != 0


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_usage_at_once_and_starts_nothing(flag: str, runall_env: Any) -> None:
    env = runall_env()

    started = time.monotonic()
    result = subprocess.run([str(ROOT / "runall.sh"), flag], env=env, capture_output=True, text=True, timeout=10)

    assert result.returncode == 0 and time.monotonic() - started < 1
    assert "./runall.sh --detached" in result.stdout and "./runall.sh stop" in result.stdout
    assert _no_session(env)


def test_without_the_virtualenv_it_says_to_run_make_run(tmp_path: Path, runall_env: Any) -> None:
    env = runall_env(PY=str(tmp_path / "no-venv" / "bin" / "python"))

    result = subprocess.run(
        [str(ROOT / "runall.sh"), "--detached"], env=env, capture_output=True, text=True, timeout=10
    )

    assert result.returncode == 1 and "no virtualenv" in result.stderr and "make run" in result.stderr
    assert _no_session(env)


def test_a_taken_port_stops_it_before_anything_starts_naming_the_port_and_its_setting(runall_env: Any) -> None:
    # GIVEN another program listening where the writer would
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        env = runall_env(PORT=str(port))

        # WHEN the system is started
        result = subprocess.run(
            [str(ROOT / "runall.sh"), "--detached"], env=env, capture_output=True, text=True, timeout=10
        )

    # THEN it stops at once, names the port, what holds it and the setting that moves it
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port {port} (the writer) is taken by" in result.stderr and "set PORT to another port" in result.stderr
    assert "running" not in result.stdout
    assert _no_session(env)


def test_a_part_that_does_not_start_is_named_and_everything_is_stopped(tmp_path: Path, runall_env: Any) -> None:
    # GIVEN a Python that starts every part but the worker
    python = tmp_path / "python"
    python.write_text(f"""#!/usr/bin/env bash
if [ "$1" = worker.py ]; then echo "worker: cannot start, on purpose" >&2; exit 2; fi
exec {ROOT / ".venv" / "bin" / "python"} "$@"
""")
    python.chmod(0o755)
    env = runall_env(PY=str(python), RUN_DURATION="30")

    result = subprocess.run(
        [str(ROOT / "runall.sh"), "--detached"], env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "the worker did not start" in result.stderr
    # its stderr is quoted from the copy runall.sh keeps, which holds even when tmux drops the
    # last lines of a pane whose process ended before tmux read them
    assert "its stderr ended with:\nworker: cannot start, on purpose" in result.stderr
    assert "running in tmux" not in result.stdout
    assert _no_session(env)
