"""The console's picture for the docs (docs/console.png): the whole system on the local engine,
the load client at RATE requests a second, the simulated work failing FAILURE_RATE of attempts
(so that some messages reach the dead-letter queue), and the console's page in headless
Chromium, saved once its charts have a minute of readings and its dead letters are listed.

    .venv/bin/python scripts/console_screenshot.py [--out docs/console.png] [--seconds 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By

from e2e import local_system
from harness import ROOT, free_port, wait_for_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console.png")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=int, default=80)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as work,
        local_system(
            Path(work),
            engine="fauxqs",
            FAILURE_RATE="0.2",
            RETRY_BACKOFF_BASE="0",
            PROCESS_TIME="0.02",
        ) as system,
    ):
        system.python("worker", "worker.py", "--concurrency", "8")
        port = free_port()
        system.python(
            "console",
            "-m",
            "sqs_message_service.console",
            env={
                "CONSOLE_PORT": str(port),
                "CONSOLE_KEYS": "docs",
                "CONSOLE_REFRESH": "1",
                "CONSOLE_SCRAPE": f"{system.writer_url}/metrics,http://127.0.0.1:{system.env['METRICS_PORT']}/metrics",
            },
        )
        wait_for_port(port, 30)
        client = system.python(
            "client",
            "client.py",
            "--url",
            system.writer_url,
            "--rate",
            str(args.rate),
            "--duration",
            str(args.seconds + 30),
        )
        options = webdriver.ChromeOptions()
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1360,1500",
            "--hide-scrollbars",
        ):
            options.add_argument(argument)
        browser = webdriver.Chrome(options=options, service=webdriver.ChromeService("/usr/bin/chromedriver"))
        try:
            browser.get(f"http://127.0.0.1:{port}/")
            time.sleep(args.seconds)
            browser.find_element(By.ID, "read-dead-letters").click()
            time.sleep(2)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(args.out))
            listed = len(browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr"))
        finally:
            browser.quit()
            system.stop_process(client)
    print(f"{args.out}: {listed} dead letters listed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
