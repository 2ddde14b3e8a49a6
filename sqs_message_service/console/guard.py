"""What stands between the console and a request that changes state (a redrive, a delete), and
the headers every answer carries.

Every request must name, in `Host`, an address the console answers for (its own HOST:CONSOLE_PORT,
`localhost` too on loopback, and CONSOLE_ORIGIN's host), or it is 421: a page of another site
that a DNS name rebound to 127.0.0.1 reaches it under that name, and is refused.

An action needs all of:
- keys: CONSOLE_KEYS set (otherwise the console is read-only, and says so: 403), and one of
  them in `X-Console-Key` (401 otherwise; compared in constant time);
- the same origin: an `Origin` (or, without one, a `Referer`) naming this console (CONSOLE_ORIGIN
  when set, else the address it was asked at), and no `Sec-Fetch-Site` other than same-origin
  (403);
- a CSRF token: the one the page was served with, in `X-CSRF-Token`, matching the one held in
  the console's session cookie (HttpOnly, SameSite=Strict) (403).

Every answer carries a content security policy that allows the page's own script, style and
connections only, and forbids framing.
"""

from __future__ import annotations

import hmac
import secrets
import urllib.parse
from typing import Optional

import flask

from ..keys import Keys

#: The header an action's key travels in, and the CSRF token's.
KEY_HEADER = "X-Console-Key"
CSRF_HEADER = "X-CSRF-Token"
#: The session's entry holding the CSRF token the page was given.
CSRF_SESSION_KEY = "csrf"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def problem(status: int, title: str, detail: str) -> flask.Response:
    """A refusal as problem+json (RFC 9457), like every other error the console answers."""
    response = flask.jsonify({"type": "about:blank", "title": title, "status": status, "detail": detail})
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


#: Addresses that mean "this machine only", where `localhost` names the console too.
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: Addresses that mean "every interface": the Host cannot be known from them.
WILDCARD = frozenset({"0.0.0.0", "::", "[::]"})


def answered_hosts(host: str, port: int, origin: str) -> Optional[frozenset[str]]:
    """The `Host` values the console answers: its own address, `localhost` and the other
    loopback names when it is on loopback, and CONSOLE_ORIGIN's. None (any) when it listens on
    every interface with no CONSOLE_ORIGIN to say its name."""
    names: set[str] = set()
    if origin:
        parsed = urllib.parse.urlsplit(origin)
        names.add(parsed.netloc)
        if parsed.port is None:  # a browser may send the default port or not
            names.add(f"{parsed.netloc}:{443 if parsed.scheme == 'https' else 80}")
    if host in WILDCARD:
        return frozenset(names) if names else None
    for name in LOOPBACK if host in LOOPBACK else {host}:
        names.add(f"[{name}]:{port}" if ":" in name and not name.startswith("[") else f"{name}:{port}")
    return frozenset(names)


class Guard:
    """The checks of a request and of an action, and the page's CSRF token."""

    def __init__(self, keys: frozenset[str], *, hosts: Optional[frozenset[str]] = None, origin: str = "") -> None:
        self._keys = Keys(keys)
        self.hosts = hosts
        self.origin = origin

    @property
    def read_only(self) -> bool:
        return not self._keys

    @staticmethod
    def csrf_token() -> str:
        """The session's CSRF token, made on the first page served to it."""
        token = flask.session.get(CSRF_SESSION_KEY)
        if not isinstance(token, str):
            token = flask.session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
        return token

    def misdirected(self, request: flask.Request) -> Optional[flask.Response]:
        """A refusal of any request whose `Host` is not one the console answers for."""
        if self.hosts is None or request.host in self.hosts:
            return None
        return problem(
            421,
            "Misdirected Request",
            f"this console answers for {', '.join(sorted(self.hosts))}; set CONSOLE_ORIGIN to the address "
            "your browser uses, if it is behind a proxy",
        )

    def refusal(self, request: flask.Request) -> Optional[flask.Response]:
        """Why `request`, one that changes state, is refused; None when it may go on."""
        if self.read_only:
            return problem(
                403, "Read-only console", "this console has no CONSOLE_KEYS: it shows the system but takes no action"
            )
        if not self._keys.matches(request.headers.get(KEY_HEADER)):
            return problem(401, "Unauthorized", f"an action needs one of CONSOLE_KEYS in {KEY_HEADER}")
        if not same_origin(request, self.origin):
            return problem(
                403,
                "Cross-site request refused",
                "an action must come from the console's own page (Origin, Sec-Fetch-Site)",
            )
        expected = flask.session.get(CSRF_SESSION_KEY)
        presented = request.headers.get(CSRF_HEADER, "")
        if not isinstance(expected, str) or not hmac.compare_digest(presented.encode(), expected.encode()):
            return problem(
                403,
                "CSRF token missing or wrong",
                f"an action needs the token of the page it comes from in {CSRF_HEADER}; reload the page",
            )
        return None


def same_origin(request: flask.Request, origin: str = "") -> bool:
    """Whether the browser says the request comes from this console's own pages: `origin`
    (CONSOLE_ORIGIN) when set, else the scheme and host it was asked at (a host the console
    answers for: `Guard.misdirected` saw to it)."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") != "same-origin":
        return False
    claimed = request.headers.get("Origin") or request.headers.get("Referer")
    if not claimed:
        return False
    sent = urllib.parse.urlsplit(claimed)
    own = urllib.parse.urlsplit(origin or request.host_url)
    return (sent.scheme, sent.netloc) == (own.scheme, own.netloc)


def secure_headers(response: flask.Response) -> flask.Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if response.mimetype in ("application/json", "application/problem+json", "text/html"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response
