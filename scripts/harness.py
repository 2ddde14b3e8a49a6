"""Processes of ours on loopback, for the tests, make e2e, make bench and make soak: started in a
session of their own, with their output in a file, and stopped with everything they started; and
a proxy that makes an endpoint refuse what a check says.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, Union

ROOT = Path(__file__).resolve().parent.parent


class Process(subprocess.Popen[bytes]):
    """A program started from the project's folder, in a session of its own (so that stopping it
    ends what it started: uvicorn's worker processes, say), its output in `log_path`."""

    def __init__(self, args: Sequence[Union[str, Path]], *, env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        super().__init__(
            [str(arg) for arg in args],
            cwd=ROOT,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10) -> int:
        """Send `sig` (SIGINT is Ctrl-C) and wait up to `timeout_s`; then, however it went,
        kill whatever of its session is left. Its exit code; a timeout's TimeoutExpired is raised
        after the kill."""
        if self.poll() is None:
            self.send_signal(sig)
        try:
            return self.wait(timeout_s)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.wait()
            self._log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not accepts_connections(port):
        if time.monotonic() >= deadline:
            raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout_s:g} s")
        time.sleep(0.1)


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """This process's environment with `values`, restored afterwards: its own SQS calls (setup,
    reading the dead-letter queue) must see the local endpoint's dummy credentials too."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def rss_mib(pid: int) -> float:
    """A process's resident memory, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """A process's user and system CPU time so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ApiProxy:
    """An HTTP proxy on loopback in front of an AWS endpoint (fauxqs, moto's server), that refuses the
    operations named in `refusing` (by their X-Amz-Target, such as "AmazonSQS.DeleteMessageBatch")
    with a 500, as a service failing on its side would, and with `down` set drops every request
    without an answer, as an unreachable one. A test may change both at any time."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream_url)
        self.refusing: set[str] = set()
        self.down = False
        self.refused: collections.Counter[str] = collections.Counter()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore expects

            def log_message(self, *_: Any) -> None:
                pass

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError):  # the caller went away (a killed worker)
                    self.close_connection = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                target = self.headers.get("X-Amz-Target", "")
                if proxy.down:
                    self.close_connection = True
                    return
                if target in proxy.refusing:
                    proxy.refused[target] += 1
                    answer = json.dumps({"__type": "InternalError", "message": "refused by the test"}).encode()
                    self._send(500, {"Content-Type": "application/x-amz-json-1.0"}, answer)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream.netloc, timeout=60)
                try:
                    upstream.request("POST", self.path, body, dict(self.headers))
                    response = upstream.getresponse()
                    self._send(response.status, dict(response.getheaders()), response.read())
                finally:
                    upstream.close()

            do_GET = do_POST

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
