"""The operator console as an operator meets it: a real headless Chromium (Debian's `chromium`
and `chromium-driver`, driven by Selenium) on the page of a console process, beside a writer, a
worker and the local SQS engine, all processes on loopback.

The page draws its charts and its figures move under load; a dead letter's reasons appear (each
attempt's); a redrive moves it back and the worker processes it; an action without the key is
refused; and JavaScript's console shows no error (nor a content-security-policy violation).
With CONSOLE_SCREENSHOT=path, the page under load is saved there (docs/console.png)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Union

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from e2e import LocalSystem, local_system
from harness import ROOT, free_port, wait_for_port
from helpers import LOCAL_ENGINE
from steps import attempts

KEY = "console-test-key"
#: What the page shows for a figure it has no reading of (an en dash).
NOTHING = "\u2013"
#: A series of each chart: writer, worker, queue depth, latency.
CHARTED = ("accepted", "processed", "visible", "p99_ms")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """fauxqs, the writer, a worker whose step fails `broken…` bodies while a file exists, and
    the console scraping both, refreshing twice a second."""
    workdir = tmp_path_factory.mktemp("console")
    broken = workdir / "broken"
    with local_system(
        workdir,
        engine=LOCAL_ENGINE,
        MAX_RECEIVE_COUNT="2",
        RETRY_BACKOFF_BASE="0",
        FAILURE_RATE="0",
        PROCESSOR="steps:record",
        STEP_LOG=str(workdir / "steps.jsonl"),
        STEP_BROKEN=str(broken),
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
    ) as running:
        running.python("worker", "worker.py", "--concurrency", "4")
        console_port = free_port()
        scrape = f"{running.writer_url}/metrics,http://127.0.0.1:{running.env['METRICS_PORT']}/metrics"
        running.python(
            "console",
            "-m",
            "sqs_message_service.console",
            env={
                "CONSOLE_PORT": str(console_port),
                "CONSOLE_KEYS": KEY,
                "CONSOLE_REFRESH": "0.5",
                "CONSOLE_SCRAPE": scrape,
            },
        )
        wait_for_port(console_port, 30)
        yield {
            "system": running,
            "url": f"http://127.0.0.1:{console_port}/",
            "broken": broken,
            "steps": workdir / "steps.jsonl",
        }


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1300",
        "--disable-gpu",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def javascript_errors(browser: WebDriver) -> list[dict[str, Any]]:
    """What the page's console said at level SEVERE since the last call: errors, failed loads and
    content-security-policy violations (Chromium's log, read through chromedriver)."""
    entries: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[attr-defined]
    return [entry for entry in entries if entry["level"] == "SEVERE"]


def figure(browser: WebDriver, name: str) -> float:
    shown = browser.find_element(By.ID, f"figure-{name}").text.split()[0]
    return float("nan") if shown == NOTHING else float(shown)


def series_attribute(browser: WebDriver, series: str, name: str) -> Optional[str]:
    """An attribute of a chart's line for `series`: each reading redraws the charts, so a line
    found may be replaced before it is read; then it is found again."""
    waiting = WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,))
    (value,) = waiting.until(lambda b: (b.find_element(By.CSS_SELECTOR, f"path.series-{series}").get_attribute(name),))
    return value


def send(system: LocalSystem, body: str) -> None:
    answer = requests.post(f"{system.writer_url}/api/message", json={"body": body}, timeout=10)
    assert answer.status_code == 201, answer.text


def load(system: LocalSystem, seconds: float, rate: float, stop: threading.Event) -> None:
    """Messages through the writer at about `rate` a second, for `seconds` or until `stop`."""
    session = requests.Session()
    started, sent = time.monotonic(), 0
    while not stop.is_set() and time.monotonic() - started < seconds:
        session.post(f"{system.writer_url}/api/message", json={"body": f"order {sent}"}, timeout=10)
        sent += 1
        time.sleep(max(0.0, started + sent / rate - time.monotonic()))


def rows(browser: WebDriver) -> list[Any]:
    return browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")


def row_of(browser: WebDriver, dead_letter_id: str) -> Any:
    """A listed dead letter's row as the page shows it now (a new listing draws new rows)."""
    return browser.find_element(By.CSS_SELECTOR, f'#dead-letters tbody tr[data-id="{dead_letter_id}"]')


def listed(browser: WebDriver) -> dict[str, str]:
    """The dead letters listed, by id, with their rows' text, once the newest reading asked for
    is shown (the page marks it: body[data-listing=idle]); read again if a new one replaced the
    rows meanwhile."""

    def shown(b: WebDriver) -> Union[tuple[dict[str, str]], Literal[False]]:  # a tuple: true even when empty
        if b.find_element(By.TAG_NAME, "body").get_attribute("data-listing") != "idle":
            return False
        return ({row.get_attribute("data-id"): row.text for row in rows(b)},)

    waiting = WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,))
    (found,) = waiting.until(shown)
    return found


def read_again(browser: WebDriver) -> dict[str, str]:
    """Press "Read again": the listing that reading brings, once shown (the page counts the
    readings asked for in body[data-listings-asked])."""

    def asked(b: WebDriver) -> int:
        return int(b.find_element(By.TAG_NAME, "body").get_attribute("data-listings-asked") or 0)

    before = asked(browser)
    browser.find_element(By.ID, "read-dead-letters").click()
    WebDriverWait(browser, 10).until(lambda b: asked(b) > before)
    return listed(browser)


def read_until_listed(browser: WebDriver, text: str, timeout_s: float = 60) -> str:
    """Press "Read again" until a dead letter whose reasons hold `text` is listed; its id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for dead_letter_id, shown in read_again(browser).items():
            if text in shown:
                return dead_letter_id
    raise AssertionError(f"no dead letter listed with {text!r} within {timeout_s} s: {listed(browser)}")


def dead_lettered(system: dict[str, Any], browser: WebDriver, body: str) -> str:
    """Send `body` while the step's cause is broken (left broken), open the page, and read until
    a dead letter with its last attempt's reason is listed: its id. Each test leaves no other
    dead letter behind, except the one the next test starts from."""
    system["broken"].touch()
    send(system["system"], body)
    browser.get(system["url"])
    return read_until_listed(browser, "broken on attempt 2")


def processed_once(steps: Path, body: str, timeout_s: float = 30) -> dict[str, Any]:
    """The step's record of `body` returning, once it has (STEP_LOG)."""
    deadline = time.monotonic() + timeout_s
    while not (ended := [a for a in attempts(steps) if a["body"] == body and a["event"] == "end"]):
        assert time.monotonic() < deadline, f"{body!r} not processed: {attempts(steps)[-5:]}"
        time.sleep(0.2)
    assert len(ended) == 1, ended
    return ended[0]


def confirm(browser: WebDriver) -> None:
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "confirm").get_attribute("open") is not None)
    browser.find_element(By.ID, "confirm-ok").click()


def test_the_page_draws_its_charts_and_its_figures_move_under_load(system: dict[str, Any], browser: WebDriver) -> None:
    # GIVEN the console's page, open
    browser.get(system["url"])
    WebDriverWait(browser, 20).until(lambda b: b.find_element(By.ID, "figure-visible").text != NOTHING)

    # WHEN messages arrive at about 100 a second
    stop = threading.Event()
    sender = threading.Thread(target=load, args=(system["system"], 15, 100, stop))
    sender.start()
    try:
        WebDriverWait(browser, 20, poll_frequency=0.2).until(lambda b: figure(b, "accepted") > 20)
        WebDriverWait(browser, 20, poll_frequency=0.2).until(lambda b: figure(b, "processed") > 20)
        seen = {browser.find_element(By.ID, "figure-processed").text}
        WebDriverWait(browser, 10, poll_frequency=0.2).until(
            lambda b: b.find_element(By.ID, "figure-processed").text not in seen
        )
        WebDriverWait(browser, 20, poll_frequency=0.2).until(
            lambda b: all(int(series_attribute(b, series, "data-points") or 0) >= 3 for series in CHARTED)
        )
        if os.environ.get("CONSOLE_SCREENSHOT"):
            time.sleep(3)
            browser.save_screenshot(os.environ["CONSOLE_SCREENSHOT"])
    finally:
        stop.set()
        sender.join()

    # THEN each chart has a line drawn from the readings, and the latency shows
    for series in CHARTED:
        assert (series_attribute(browser, series, "d") or "").count("L") >= 2, series
    assert figure(browser, "p50_ms") > 0
    assert "ok" in browser.find_element(By.ID, "sources").text
    assert javascript_errors(browser) == []


def test_a_dead_letters_reasons_appear_and_a_redrive_brings_it_back_to_be_processed(
    system: dict[str, Any], browser: WebDriver
) -> None:
    # GIVEN a message the worker's step cannot process until its cause is fixed: dead-lettered
    row = row_of(browser, dead_lettered(system, browser, "broken order 7"))

    # THEN its reasons are each attempt's: the first one the worker saw, and the last
    reasons = row.find_element(By.CSS_SELECTOR, "ol.reasons").text
    assert "#1" in reasons and "broken on attempt 1" in reasons, reasons
    assert "#2" in reasons and "ValueError: broken on attempt 2" in reasons, reasons
    row.find_element(By.CSS_SELECTOR, "button.show-body").click()
    shown = WebDriverWait(browser, 10).until(lambda b: row.find_elements(By.CSS_SELECTOR, "pre.body"))
    assert shown[0].text == "broken order 7"

    # WHEN the cause is fixed and the operator redrives it, with the key, confirming
    system["broken"].unlink()
    browser.find_element(By.ID, "console-key").send_keys(KEY)
    row.find_element(By.CSS_SELECTOR, "input.select").click()
    browser.find_element(By.ID, "redrive-selected").click()
    confirm(browser)

    # THEN it is moved back, and the worker processes it
    WebDriverWait(browser, 20).until(lambda b: b.find_element(By.ID, "action-result").text.startswith("Done: 1"))
    processed = processed_once(system["steps"], "broken order 7")
    assert processed["receive_count"] == 1  # a new message in the source queue, as a redrive makes it
    WebDriverWait(browser, 10).until(lambda b: all("broken order 7" not in shown for shown in listed(b).values()))
    assert javascript_errors(browser) == []


def test_an_action_without_the_right_key_is_refused_and_changes_nothing(
    system: dict[str, Any], browser: WebDriver
) -> None:
    # GIVEN a dead letter, listed
    target = dead_lettered(system, browser, "broken order 8")
    row = row_of(browser, target)

    # WHEN the operator deletes it with a wrong key
    browser.find_element(By.ID, "console-key").send_keys("not-the-key")
    row.find_element(By.CSS_SELECTOR, "input.select").click()
    browser.find_element(By.ID, "delete-selected").click()
    confirm(browser)

    # THEN the page says it was refused, and the dead letter is still there
    WebDriverWait(browser, 20).until(lambda b: b.find_element(By.ID, "action-result").text.startswith("Refused"))
    assert "401" in browser.find_element(By.ID, "action-result").text
    assert target in listed(browser)
    javascript_errors(browser)  # the 401 answer is logged as a failed load: expected here, and cleared

    # AND the same action from another site, with the key, is refused before it is looked at
    forged = requests.post(
        f"{system['url']}api/dead-letters/delete",
        json={"ids": [target]},
        timeout=10,
        headers={"X-Console-Key": KEY, "Origin": "http://evil.example", "X-CSRF-Token": "x"},
    )
    assert forged.status_code == 403 and forged.headers["Content-Type"] == "application/problem+json"
    assert target in read_again(browser)


def test_a_redrive_of_all_at_a_chosen_rate_shows_its_progress_and_empties_the_dead_letter_queue(
    system: dict[str, Any], browser: WebDriver
) -> None:
    # GIVEN the dead letter the last test left (the engine has no move task: fauxqs says InvalidAction)
    browser.get(system["url"])
    read_until_listed(browser, "broken on attempt 2")
    system["broken"].unlink()

    # WHEN the operator redrives all, at most 50 a second, with the key
    browser.find_element(By.ID, "console-key").send_keys(KEY)
    browser.find_element(By.ID, "redrive-rate").send_keys("50")
    browser.find_element(By.ID, "redrive-all").click()
    confirm(browser)

    # THEN the page follows the job to its end, and the worker processes what came back
    WebDriverWait(browser, 30).until(lambda b: "(done): 1" in b.find_element(By.ID, "redrive-progress").text)
    assert "receive, send, delete" in browser.find_element(By.ID, "redrive-progress").text
    WebDriverWait(browser, 30).until(lambda b: figure(b, "dead_letters") == 0)
    processed_once(system["steps"], "broken order 8")
    assert javascript_errors(browser) == []
