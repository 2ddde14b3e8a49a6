"""cli.py: every entry point's `main` has one shape and one convention of exit codes; each code is
what a user sees for the case the convention gives it."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest

import client
import sqs_setup
import worker
from harness import ROOT
from helpers import CONSOLE_SCRIPTS
from sqs_message_service import dlq
from sqs_message_service.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE

#: Every console script pyproject.toml installs: queue-writer, queue-worker, queue-dlq...
SCRIPTS = CONSOLE_SCRIPTS


def test_the_codes_are_the_documented_ones() -> None:
    assert (EXIT_OK, EXIT_FAILED, EXIT_USAGE) == (0, 1, 2)
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert "## Exit codes" in operations
    assert len(SCRIPTS) == 6


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_entry_points_main_takes_argv_and_returns_an_exit_code(script: str) -> None:
    module_name, _, function = SCRIPTS[script].partition(":")
    main = getattr(importlib.import_module(module_name), function)

    signature = inspect.signature(main)

    assert function == "main"
    assert list(signature.parameters) == ["argv"] and signature.parameters["argv"].default is None
    assert signature.parameters["argv"].annotation == "list[str] | None" and signature.return_annotation == "int"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_entry_point_run_as_a_file_exits_with_what_main_returns(script: str) -> None:
    module = importlib.import_module(SCRIPTS[script].partition(":")[0])
    path = Path(inspect.getfile(module))
    if path.name == "app.py":  # the console runs as `python -m sqs_message_service.console`
        path = path.with_name("__main__.py")
    tree = ast.parse(path.read_text(encoding="utf-8"))

    guards = [ast.unparse(node) for node in tree.body if isinstance(node, ast.If)]

    assert "if __name__ == '__main__':\n    sys.exit(main())" in guards, path


def test_a_wrong_setting_is_usage_for_every_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_RECEIVE_COUNT", "lots")  # read by the worker, the setup and the tools

    assert worker.main([]) == EXIT_USAGE
    assert sqs_setup.main([]) == EXIT_USAGE
    assert dlq.main(["list"]) == EXIT_USAGE


def test_a_wrong_option_is_usage_as_argparse_says_it(capsys: pytest.CaptureFixture[str]) -> None:
    for main, argv in (
        (worker.main, ["--concurrency", "0"]),
        (sqs_setup.main, ["--no-such-option"]),
        (dlq.main, ["peek"]),
        (client.main, ["--concurrency", "0"]),
    ):
        with pytest.raises(SystemExit) as shown:
            main(argv)
        assert shown.value.code == EXIT_USAGE
    assert "--concurrency 0: " in capsys.readouterr().err  # the worker's flag is named as given


def test_sqs_failing_a_redrive_is_a_failure_not_usage(
    monkeypatch: pytest.MonkeyPatch, closed_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SQS_ENDPOINT_URL", closed_endpoint)
    monkeypatch.setenv("SQS_MAX_ATTEMPTS", "1")

    assert dlq.main(["list"]) == EXIT_FAILED
    assert "dlq: " in capsys.readouterr().err


def test_a_copy_to_a_url_that_is_not_the_writers_is_usage(
    live_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], app: Any
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("a line\n", encoding="utf-8")

    exit_code = client.main(
        ["copy", str(source), str(tmp_path / "out.txt"), "--url", f"{live_server}/api/message", "--wait-ready", "20"]
    )

    assert exit_code == EXIT_USAGE
    assert "answered 404" in capsys.readouterr().err
