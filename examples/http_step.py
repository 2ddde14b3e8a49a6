"""An example processing step over HTTP: a small server the worker POSTs each message to.

    python -m examples.http_step --port 8080 &      (from the checkout's top)
    PROCESSOR=http://127.0.0.1:8080/orders python worker.py

It ships orders as examples/orders.py does, and answers as the worker reads answers
(docs/worker.md#http-steps): 204 when the order is shipped, 422 for a body that is not an order
(no retry can make it one: dead-lettered at once), 503 with Retry-After while it is told to
pause (`--busy-file`: while that file exists, as a rate-limited downstream would answer), and
500 for anything else that goes wrong (retried after the worker's backoff). The message's id,
receive count and attributes come as headers; nothing here is specific to Python, so a step in
any language answers the same way.

`--work-ms` adds that much simulated work to each request (the benchmark's HTTP stage).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

from examples.orders import NotAnOrder, parse_order

#: The orders shipped: order id -> quantity (in a real step, a table keyed by order id).
SHIPPED: dict[str, int] = {}
_lock = threading.Lock()


def ship(body: str) -> str:
    """Ship the order in `body` once, however many times it is delivered; what was done. Raises
    NotAnOrder (examples/orders.py) when it is not one."""
    order_id, quantity = parse_order(body)
    with _lock:
        if order_id in SHIPPED:
            return "shipped already"
        SHIPPED[order_id] = quantity
    return "shipped"


class StepHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the worker reuses its connections
    work_s = 0.0
    busy_file: Optional[Path] = None
    retry_after_s = 5

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode("utf-8")
        if self.busy_file is not None and self.busy_file.exists():
            self.answer(503, "paused: try again later", {"Retry-After": str(self.retry_after_s)})
            return
        if self.work_s:
            time.sleep(self.work_s)
        if self.work_s and not body.lstrip().startswith("{"):  # the benchmark's bodies: any text is work
            self.answer(204)
            return
        try:
            ship(body)
        except NotAnOrder as exc:
            self.answer(422, str(exc))
            return
        except Exception as exc:  # a fault of ours: the worker retries after its backoff
            self.answer(500, f"{type(exc).__name__}: {exc}")
            return
        self.answer(204)

    def answer(self, status: int, text: str = "", headers: Optional[dict[str, str]] = None) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # one line a request is too many here
        pass


def serve(host: str, port: int, *, work_s: float = 0.0, busy_file: Optional[Path] = None) -> ThreadingHTTPServer:
    """The step's server, bound (port 0: any free one); run it with `serve_forever`."""
    handler = type("Handler", (StepHandler,), {"work_s": work_s, "busy_file": busy_file})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="An example HTTP processing step: ships orders.")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: loopback)")
    parser.add_argument("--port", type=int, default=8080, help="the port (default 8080)")
    parser.add_argument("--work-ms", type=float, default=0.0, help="simulated work per request, in ms")
    parser.add_argument("--busy-file", type=Path, help="while this file exists, answer 503 with Retry-After")
    args = parser.parse_args(argv)
    server = serve(args.host, args.port, work_s=args.work_ms / 1000, busy_file=args.busy_file)
    print(f"http step on http://{args.host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
