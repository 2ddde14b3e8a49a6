"""runall.sh: three panes with moving counters, the console's URL, and `stop` leaves nothing behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, free_port, wait_until

pytestmark = [
    pytest.mark.integration,
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
