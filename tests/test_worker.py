"""worker.py, the entry point: its options, each with its environment variable. (The engine is
tested in tests/worker/; the process, its signals and its stop in tests/test_worker_process.py.)"""

from __future__ import annotations

from sqs_message_service.settings import Settings
from worker import build_parser


def test_help_documents_every_option_with_its_environment_variable() -> None:
    text = build_parser(Settings()).format_help()

    for variable in ("WORKER_CONCURRENCY", "PROCESS_TIME", "FAILURE_RATE", "FAILURE_SEED", "PROCESSOR",
                     "WORKER_OUTPUT", "STATS_INTERVAL", "EXIT_WHEN_IDLE", "SHUTDOWN_GRACE"):
        assert variable in text
