"""worker.py, the entry point: its options, each with its environment variable. (The engine is
tested in tests/worker/; the process, its signals and its stop in tests/test_worker_process.py.)"""

from __future__ import annotations

import pytest

import worker
from sqs_message_service.settings import Settings
from worker import build_parser


def test_help_documents_every_option_with_its_environment_variable() -> None:
    text = build_parser(Settings()).format_help()

    for variable in ("WORKER_CONCURRENCY", "PROCESS_TIME", "FAILURE_RATE", "FAILURE_SEED", "PROCESSOR",
                     "WORKER_OUTPUT", "STATS_INTERVAL", "EXIT_WHEN_IDLE", "SHUTDOWN_GRACE"):
        assert variable in text


def test_the_worker_starts_whatever_a_writer_only_setting_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS_FILE", "/no/such/file")
    monkeypatch.setenv("PORT", "eighty")

    with pytest.raises(SystemExit) as shown:  # --help: the settings were read, the options parsed
        worker.main(["--help"])

    assert shown.value.code == 0


def test_the_worker_refuses_its_own_settings_when_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_CONCURRENCY", "0")

    assert worker.main(["--help"]) == 2
