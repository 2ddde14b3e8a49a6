"""console/app.py and guard.py: the page and its headers, and an action's key, origin and CSRF
token, each refused on its own with problem+json."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Callable

import pytest

from sqs_message_service.console.guard import answered_hosts
from sqs_message_service.dlq import failure_attributes
from sqsinterface import OutgoingMessage, ReceivedMessage, SqsQueue

KEY = "op-key-1"
ORIGIN = "http://testserver"  # the test client's own origin


def page_token(page: Any, **headers: str) -> str:
    """The CSRF token the page carries; the session cookie it came with stays in the client."""
    answer = page.get("/", headers=headers)
    assert answer.status_code == 200
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', answer.text)
    assert found is not None
    return found.group(1)


@pytest.fixture
def dead(queues: tuple[SqsQueue, SqsQueue]) -> list[str]:
    """Three dead letters, listed: their own ids."""
    _, dead_letter_queue = queues
    failed = ReceivedMessage(id="src", body="b", receipt_handle="r", receive_count=3)
    reasons = failure_attributes(failed, ValueError("nope"), worker_id="w", at=datetime.now(timezone.utc))
    dead_letter_queue.send([OutgoingMessage(body=f"order {n}", attributes=reasons) for n in range(3)])
    return [message.id for message in dead_letter_queue.receive(max_messages=10, wait_s=0, visibility_timeout_s=0)]


def test_the_page_carries_a_content_security_policy_a_csrf_token_and_its_own_script(
    console_app: Callable[..., Any],
) -> None:
    page = console_app().test_client()

    answer = page.get("/")
    script = page.get("/static/console.js")

    policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in answer.text and "style=" not in answer.text  # nothing inline for the policy to refuse
    assert 'name="read-only" content="true"' in answer.text and "Read-only" in answer.text
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]


def test_without_keys_the_console_is_read_only_and_every_action_is_refused(
    console_app: Callable[..., Any], dead: list[str], queues: tuple[SqsQueue, SqsQueue]
) -> None:
    page = console_app().test_client()
    token = page_token(page)

    answer = page.post(
        "/api/dead-letters/delete",
        json={"ids": dead},
        headers={"X-Console-Key": "anything", "Origin": ORIGIN, "X-CSRF-Token": token},
    )

    assert answer.status_code == 403 and answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json()["title"] == "Read-only console"
    assert queues[1].depth()["visible"] == 3


@pytest.mark.parametrize(
    ("change", "status", "title"),
    [
        ({"X-Console-Key": None}, 401, "Unauthorized"),
        ({"X-Console-Key": "wrong"}, 401, "Unauthorized"),
        ({"Origin": "http://evil.example"}, 403, "Cross-site request refused"),
        ({"Origin": None}, 403, "Cross-site request refused"),
        ({"Sec-Fetch-Site": "cross-site"}, 403, "Cross-site request refused"),
        ({"X-CSRF-Token": None}, 403, "CSRF token missing or wrong"),
        ({"X-CSRF-Token": "forged"}, 403, "CSRF token missing or wrong"),
    ],
)
def test_an_action_needs_the_key_the_same_origin_and_the_pages_csrf_token(
    console_app: Callable[..., Any],
    dead: list[str],
    queues: tuple[SqsQueue, SqsQueue],
    change: dict[str, Any],
    status: int,
    title: str,
) -> None:
    page = console_app(console_keys=f"{KEY},second-key").test_client()
    headers = {"X-Console-Key": KEY, "Origin": ORIGIN, "X-CSRF-Token": page_token(page), **change}

    refused = page.post(
        "/api/dead-letters/delete",
        json={"ids": dead[:1]},
        headers={name: value for name, value in headers.items() if value is not None},
    )

    assert (refused.status_code, refused.json()["title"]) == (status, title)
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert queues[1].depth()["visible"] == 3  # nothing deleted


def test_an_action_with_all_three_goes_through(
    console_app: Callable[..., Any], dead: list[str], queues: tuple[SqsQueue, SqsQueue]
) -> None:
    page = console_app(console_keys=KEY).test_client()
    headers = {"X-Console-Key": KEY, "Origin": ORIGIN, "X-CSRF-Token": page_token(page)}
    page.get("/api/dead-letters")

    answer = page.post("/api/dead-letters/delete", json={"ids": dead[:1]}, headers=headers)

    assert answer.status_code == 200 and answer.json()["done"] == dead[:1]
    assert queues[1].depth()["visible"] == 2


def test_a_session_cannot_use_another_sessions_token(console_app: Callable[..., Any], dead: list[str]) -> None:
    app = console_app(console_keys=KEY)
    theirs, ours = app.test_client(), app.test_client()
    stolen = page_token(theirs)
    page_token(ours)

    answer = ours.post(
        "/api/dead-letters/delete",
        json={"ids": dead[:1]},
        headers={"X-Console-Key": KEY, "Origin": ORIGIN, "X-CSRF-Token": stolen},
    )

    assert answer.status_code == 403


@pytest.mark.parametrize(
    "body",
    [{"ids": []}, {"ids": ["a"], "all": True}, {}, {"all": True, "rate": 0}, {"ids": ["a"], "extra": 1}, {"ids": "a"}],
)
def test_a_malformed_action_is_a_400_problem(console_app: Callable[..., Any], body: dict[str, Any]) -> None:
    page = console_app(console_keys=KEY).test_client()
    headers = {"X-Console-Key": KEY, "Origin": ORIGIN, "X-CSRF-Token": page_token(page)}

    answer = page.post("/api/dead-letters/redrive", json=body, headers=headers)

    assert answer.status_code == 400 and answer.headers["Content-Type"] == "application/problem+json"


def test_listing_answers_the_page_and_a_body_only_when_asked(console_app: Callable[..., Any], dead: list[str]) -> None:
    page = console_app().test_client()

    listing = page.get("/api/dead-letters", params={"limit": 2})
    item = listing.json()["items"][0]
    body = page.get(f"/api/dead-letters/{item['id']}/body")

    assert listing.status_code == 200 and len(listing.json()["items"]) == 2 and "body" not in item
    assert body.json()["body"].startswith("order ")
    assert page.get("/api/dead-letters/nope/body").status_code == 404
    assert page.get("/api/dead-letters", params={"limit": 0}).status_code == 400


def test_a_request_for_another_host_is_refused_as_a_rebound_dns_name_would_send_it(
    console_app: Callable[..., Any], dead: list[str]
) -> None:
    page = console_app(console_origin="").test_client()  # it answers for 127.0.0.1:5050 and localhost:5050

    rebound = page.get("/api/dead-letters", headers={"Host": "evil.example:5050"})
    own = page.get("/api/overview", headers={"Host": "localhost:5050"})

    assert rebound.status_code == 421 and rebound.headers["Content-Type"] == "application/problem+json"
    assert own.status_code == 200


@pytest.mark.parametrize(
    ("host", "origin", "answered"),
    [
        ("127.0.0.1", "", {"127.0.0.1:5050", "localhost:5050", "[::1]:5050"}),
        ("10.0.0.7", "", {"10.0.0.7:5050"}),
        ("0.0.0.0", "", None),  # every interface, no name given: any Host (the console warns at start)
        ("0.0.0.0", "https://console.example.com", {"console.example.com", "console.example.com:443"}),
    ],
)
def test_the_hosts_a_console_answers_for(host: str, origin: str, answered: Any) -> None:
    assert answered_hosts(host, 5050, origin) == (None if answered is None else frozenset(answered))


def test_behind_a_proxy_an_action_must_come_from_console_origin(
    console_app: Callable[..., Any], dead: list[str]
) -> None:
    page = console_app(console_keys=KEY, console_origin="https://console.example.com").test_client()
    token = page_token(page, Host="console.example.com")
    asked = {"Host": "console.example.com", "X-Console-Key": KEY, "X-CSRF-Token": token}

    as_the_proxy_serves_it = page.post(
        "/api/dead-letters/delete", json={"ids": dead[:1]}, headers={**asked, "Origin": "https://console.example.com"}
    )
    from_plain_http = page.post(
        "/api/dead-letters/delete", json={"ids": dead[1:2]}, headers={**asked, "Origin": "http://console.example.com"}
    )

    assert as_the_proxy_serves_it.status_code == 200, as_the_proxy_serves_it.text
    assert from_plain_http.status_code == 403
