"""The shell blocks of README.md and docs/ that a newcomer would paste work as written.

Every ```sh block carries a decision, on the line just before its fence (an unmarked one fails
tests/test_docs.py):

    <!-- doc-test: runs needs=venv,local-sqs,writer -->   run it; what it needs, comma-separated
    <!-- doc-test: runs needs=venv stops-after=5 -->      a block that serves until Ctrl-C: still
                                                          running after 5 s is a pass
    <!-- doc-test: skip needs Docker -->                  not run, and why

What `needs` gives a block:
- `venv`: the virtualenv's bin/ first on PATH and VIRTUAL_ENV set, as `. .venv/bin/activate` does;
- `local-sqs`: a local SQS endpoint (fauxqs, or moto without Node.js) on a free loopback port,
  its queues made, SQS_ENDPOINT_URL and dummy credentials in the environment;
- `writer`: a writer on that endpoint, on a free port.

A block runs under `bash -euo pipefail` in a folder of its own that links to every file of the
checkout (what it writes stays there), with `127.0.0.1:5000` (the writer's port, also PORT) and
4566 (a local endpoint the block starts) read as ports the test chose, METRICS_PORT=0, and at
most BLOCK_TIMEOUT_S seconds. A block that fails shows its output.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from harness import ROOT, Process, accepts_connections, free_port
from helpers import LOCAL_ENGINE, wait_until

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: A marker line, then the block's fence (indented as in a list, or not), its text, its end.
SH_BLOCK = re.compile(r"^(?P<marker>[^\n]*)\n(?P<indent>[ \t]*)```sh\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)
MARKER = re.compile(r"^\s*<!-- doc-test: (?P<decision>runs|skip)\b(?P<rest>[^>]*?)\s*-->\s*$")
NEEDS = frozenset({"venv", "local-sqs", "writer"})
BLOCK_TIMEOUT_S = 40


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    body: str
    decision: str | None  # runs, skip, or None when unmarked
    needs: frozenset[str] = field(default_factory=frozenset)
    stops_after_s: float | None = None
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every ```sh block of `page`, with the decision its marker states."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in SH_BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("indent")) + 1
        body = "\n".join(row[len(match["indent"]) :] for row in match["body"].splitlines())
        name = page.relative_to(ROOT).as_posix()
        marker = MARKER.match(match["marker"])
        if marker is None:
            found.append(Block(name, line, body, None))
            continue
        options = dict(option.partition("=")[::2] for option in marker["rest"].split() if "=" in option)
        needs = frozenset(filter(None, options.get("needs", "").split(",")))
        stops = options.get("stops-after")
        found.append(
            Block(name, line, body, marker["decision"], needs, float(stops) if stops else None, marker["rest"].strip())
        )
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
RUN = [block for block in ALL_BLOCKS if block.decision == "runs"]


@dataclass
class LocalSystem:
    env: dict[str, str]
    sqs_port: int
    writer_port: int


@pytest.fixture(scope="module")
def local_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    """A local SQS endpoint with its queues, and a writer on it, on free loopback ports."""
    logs = tmp_path_factory.mktemp("doc-system")
    sqs_port, writer_port = free_port(), free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(
        SQS_ENDPOINT_URL=f"http://127.0.0.1:{sqs_port}",
        AWS_ACCESS_KEY_ID="local",
        AWS_SECRET_ACCESS_KEY="local",
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        METRICS_PORT="0",
        PORT=str(writer_port),
    )
    started: list[Process] = []
    try:
        started.append(
            Process(
                [ROOT / "local/sqs/serve.sh"],
                log_path=logs / "sqs.log",
                env={**env, "LOCAL_SQS_PORT": str(sqs_port), "SQS_LOCAL": LOCAL_ENGINE},
            )
        )
        wait_until(lambda: accepts_connections(sqs_port), timeout_s=30, what="the local SQS endpoint")
        subprocess.run([sys.executable, "sqs_setup.py"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)
        started.append(Process([sys.executable, "server.py"], env=env, log_path=logs / "writer.log"))
        wait_until(lambda: accepts_connections(writer_port), timeout_s=60, what="the writer")
        yield LocalSystem(env, sqs_port, writer_port)
    finally:
        for process in reversed(started):
            process.stop()


def checkout_links(folder: Path) -> Path:
    """`folder` with a link to every file and folder at the top of the checkout, the virtualenv
    current first: a block's `make` that found it stale would reinstall it through the link, and
    pip would write the link's path, gone after the test, into every script's first line."""
    virtualenv_current()
    for entry in ROOT.iterdir():
        if entry.name not in {".git", "processed.jsonl", "accepted.txt", "input.txt"}:
            (folder / entry.name).symlink_to(entry)
    return folder


@functools.cache
def virtualenv_current() -> None:
    """`make venv` in the checkout itself, once a test process, one at a time (a no-op when current)."""
    with open(ROOT / ".venv" / ".doc-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["make", "-s", "venv"], cwd=ROOT, check=True, capture_output=True)


def block_env(block: Block, system: LocalSystem | None) -> dict[str, str]:
    env = dict(system.env) if system is not None else {**os.environ, "METRICS_PORT": "0"}
    if "writer" not in block.needs:  # a writer the block starts gets a port of its own
        env["PORT"] = str(free_port())
    bin_dir = ROOT / ".venv" / "bin"
    path = [entry for entry in env.get("PATH", "").split(os.pathsep) if Path(entry) != bin_dir]
    if "venv" in block.needs:
        env.update(VIRTUAL_ENV=str(ROOT / ".venv"), PATH=os.pathsep.join([str(bin_dir), *path]))
    else:
        env.pop("VIRTUAL_ENV", None)
        env["PATH"] = os.pathsep.join(path)
    return env


def run_block(block: Block, folder: Path, env: dict[str, str]) -> tuple[int | None, str]:
    """The block's exit code (None when it was still running after `stops_after_s`) and output."""
    log = folder / "block.log"
    with open(log, "wb") as out:
        shell = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", block.body],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code: int | None = shell.wait(block.stops_after_s or BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            for sig in (signal.SIGINT, signal.SIGKILL):  # Ctrl-C first, as a user would, then the rest
                try:
                    os.killpg(shell.pid, sig)
                    shell.wait(5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
    return code, log.read_text(errors="replace")


@pytest.mark.parametrize("block", RUN, ids=[block.id for block in RUN])
def test_the_block_works_as_written(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    assert block.needs <= NEEDS, f"unknown needs in {block.id}: {block.needs - NEEDS}"
    system = request.getfixturevalue("local_system") if block.needs & {"local-sqs", "writer"} else None
    # 4566 in a block is an endpoint the block starts itself (the shared one is in the environment)
    body = re.sub(r"(?<![\d.])4566\b", str(free_port()), block.body)
    if system is not None:
        body = body.replace("127.0.0.1:5000", f"127.0.0.1:{system.writer_port}")

    code, output = run_block(
        Block(block.page, block.line, body, "runs", block.needs, block.stops_after_s),
        checkout_links(tmp_path),
        block_env(block, system),
    )

    if block.stops_after_s is not None:
        assert code in (None, 0), f"{block.id} stopped with {code} before {block.stops_after_s:g} s:\n{output}"
    else:
        assert code == 0, f"{block.id} exited {code} (None: still running after {BLOCK_TIMEOUT_S} s):\n{output}"


def test_some_blocks_run_and_each_needs_only_what_the_test_gives() -> None:
    assert len(RUN) >= 5
    assert all(block.needs <= NEEDS for block in RUN)
