"""The operator console's app: `create_app()` assembles console.yml, the handlers, the readings
(feed.py), the dead letters (dead_letters.py) and the guard on actions (guard.py); `main()`
serves it on HOST:CONSOLE_PORT with the socket's limits of serving.py (`queue-console`,
`python -m sqs_message_service.console`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import connexion
import flask
from connexion.middleware import ConnexionMiddleware
from connexion.middleware.security import SecurityMiddleware
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from ..aws import create_client
from ..cli import EXIT_OK, EXIT_USAGE
from ..serving import SocketLimits, serve
from ..settings import Settings, settings_for_command, with_address
from ..sqs import SqsMetrics, SqsQueue
from .dead_letters import DeadLetters
from .feed import HISTORY_S, Feed
from .guard import Guard, answered_hosts, secure_headers
from .readings import Prometheus, Scrape, Source

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
#: Where an app keeps its Console, in Flask's extensions.
CONSOLE_EXTENSION = "console"


class Console:
    """What the console's operations work on: the settings, the readings, the dead letters,
    the guard on actions, and the console's own metrics (its SQS calls)."""

    def __init__(self, settings: Settings, feed: Feed, dead_letters: DeadLetters, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.feed = feed
        self.dead_letters = dead_letters
        self.guard = Guard(
            settings.load_console_keys(),
            origin=settings.console_origin,
            hosts=answered_hosts(settings.host, settings.console_port, settings.console_origin),
        )
        self.registry = registry
        self.boot = secrets.token_hex(8)  # a page that sees it change (a restart) reads all again

    def overview(self, since: int) -> dict[str, Any]:
        job = self.dead_letters.job
        return {
            "boot": self.boot,
            "refresh_s": self.feed.refresh_s,
            "window_s": HISTORY_S,
            "queue": self.feed.queue.name,
            "dead_letter_queue": self.feed.dead_letter_queue.name,
            "endpoint": self.settings.sqs_endpoint_url or f"AWS {self.settings.aws_region}",
            "read_only": self.guard.read_only,
            "points": self.feed.since(since),
            "sources": list(self.feed.sources),
            "sqs_error": self.feed.sqs_error,
            "redrive": None if job is None else job.as_dict(),
        }


def source_for(settings: Settings) -> Source:
    """Prometheus when PROMETHEUS_URL is set, else the /metrics pages of CONSOLE_SCRAPE."""
    if settings.prometheus_url:
        return Prometheus(settings.prometheus_url)
    return Scrape(settings.scrape_urls)


def middlewares() -> list[Any]:
    """connexion's own stack without its security check: the guard (guard.py) checks an
    action's key, origin and CSRF token in one place, and tells a read-only console apart."""
    return [layer for layer in ConnexionMiddleware.default_middlewares if layer is not SecurityMiddleware]


def create_app(
    settings: Optional[Settings] = None,
    *,
    client: Any = None,
    source: Optional[Source] = None,
    start_feed: bool = True,
) -> connexion.FlaskApp:
    """Build the console. `settings` default to the environment's; `client`, the SQS client, to
    a new one (tests pass moto's); `source` of the rates to `source_for(settings)`;
    `start_feed` False leaves the readings to the caller (`feed.read_once()`)."""
    settings = settings or Settings.from_env(role="console")
    client = client if client is not None else create_client(settings)
    metrics = SqsMetrics()
    registry = CollectorRegistry()
    metrics.expose_in(registry)
    ProcessCollector(registry=registry)
    queue = SqsQueue(settings.queue_name, client, metrics)
    dead_letter_queue = SqsQueue(settings.dlq_name, client, metrics)
    feed = Feed(
        queue=queue,
        dead_letter_queue=dead_letter_queue,
        source=source or source_for(settings),
        refresh_s=settings.console_refresh_s,
    )
    console = Console(settings, feed, DeadLetters(dead_letter_queue, queue), registry)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        feed.stop()

    app = connexion.FlaskApp(__name__, specification_dir=HERE, lifespan=lifespan, middlewares=middlewares())
    app.add_api("console.yml")
    flask_app: flask.Flask = app.app
    flask_app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # a session (and its CSRF token) lasts as long as the process
        SESSION_COOKIE_NAME="console_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    flask_app.extensions[CONSOLE_EXTENSION] = console
    flask_app.add_url_rule("/", "page", _page)
    flask_app.add_url_rule("/metrics", "metrics", _metrics)
    flask_app.before_request(_guard_actions)
    flask_app.after_request(secure_headers)
    if start_feed:
        feed.start()
    return app


def current_console() -> Console:
    """The Console of the app serving this request."""
    console: Console = flask.current_app.extensions[CONSOLE_EXTENSION]
    return console


def _page() -> str:
    console = current_console()
    return flask.render_template(
        "console.html",
        csrf_token=console.guard.csrf_token(),
        read_only=console.guard.read_only,
        queue=console.feed.queue.name,
        dead_letter_queue=console.feed.dead_letter_queue.name,
    )


def _metrics() -> flask.Response:
    return flask.Response(generate_latest(current_console().registry), mimetype="text/plain")


def _guard_actions() -> Optional[flask.Response]:
    """Every request passes the guard's Host check first, and one that could change state its
    checks of an action."""
    guard = current_console().guard
    misdirected = guard.misdirected(flask.request)
    if misdirected is not None or flask.request.method in ("GET", "HEAD", "OPTIONS"):
        return misdirected
    return guard.refusal(flask.request)


def main(argv: list[str] | None = None) -> int:
    """Serve the console until SIGINT or SIGTERM. Exits 2 when started wrongly, 1 when it cannot
    serve (a port taken: uvicorn's own exit), as every entry point does (cli.py)."""
    settings = settings_for_command("console", role="console")
    if settings is None:
        return EXIT_USAGE
    settings = with_address(
        settings,
        argv,
        description="The operator console: the system live, and the dead letters with their reasons.",
        port="console_port",
    )
    keys = settings.load_console_keys()
    log.info(
        "console for queue %r on %s: http://%s:%d/ (%s; rates from %s)",
        settings.queue_name,
        settings.sqs_endpoint_url or f"AWS {settings.aws_region}",
        settings.host,
        settings.console_port,
        f"{len(keys)} action key(s)" if keys else "read-only: no CONSOLE_KEYS",
        settings.prometheus_url or ", ".join(settings.scrape_urls),
    )
    if answered_hosts(settings.host, settings.console_port, settings.console_origin) is None:
        log.warning(
            "the console listens on every interface and answers any Host: set CONSOLE_ORIGIN to the "
            "address browsers use, so that a page of another site cannot reach it by a rebound DNS name"
        )
    serve(create_app(settings), SocketLimits.of(settings), host=settings.host, port=settings.console_port)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
