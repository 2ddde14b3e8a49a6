"""worker.py, the entry point: its options, each with its environment variable. (The engine is
tested in tests/worker/; the process, its signals and its stop in tests/process/test_worker_process.py.)"""

from __future__ import annotations

from typing import Any

import pytest

import worker
from sqs_message_service.settings import Settings
from worker import build_parser


def test_help_documents_every_option_with_its_environment_variable() -> None:
    text = build_parser(Settings()).format_help()

    for variable in (
        "WORKER_CONCURRENCY",
        "PROCESS_TIME",
        "FAILURE_RATE",
        "FAILURE_SEED",
        "PROCESSOR",
        "WORKER_OUTPUT",
        "STATS_INTERVAL",
        "EXIT_WHEN_IDLE",
        "SHUTDOWN_GRACE",
    ):
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


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        (
            "no_such_step_module:handle",
            "no module named 'no_such_step_module': a module is found in the working "
            "directory, on PYTHONPATH, or as an installed package",
        ),
        ("json:no_such_function", "module 'json' ("),
        ("json:__doc__", "'__doc__' in 'json' is a str, not a function"),
        ("broken_step:handle", "importing 'broken_step' raised ZeroDivisionError: division by zero"),
        ("needs_a_package:handle", "it imports 'not_installed_anywhere', which is not installed"),
    ],
)
def test_a_step_that_cannot_be_loaded_stops_the_worker_at_start_with_one_line(
    spec: str,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "broken_step.py").write_text("handle = 1 / 0\n")
    (tmp_path / "needs_a_package.py").write_text("import not_installed_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PROCESSOR", spec)
    monkeypatch.setenv("SQS_ENDPOINT_URL", "http://127.0.0.1:9")  # never reached: it stops before

    assert worker.main([]) == 2

    error = capsys.readouterr().err
    assert error.startswith(f"worker: PROCESSOR={spec}: ") and said in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_processor_takes_a_url_and_refuses_what_is_neither_a_url_nor_module_function(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert Settings(processor="https://steps.example/orders").processor == "https://steps.example/orders"
    monkeypatch.setenv("PROCESSOR", "ftp://steps/orders")

    assert worker.main(["--help"]) == 2
    assert "must be 'module:function' or an http:// or https:// URL" in capsys.readouterr().err
