"""Every setting of the writer, the worker and the tools, from the environment, checked at start.

The entry point to sqs_message_service/settings.py, where each setting is declared once (its
variable, type, range, help and the parts that read it). `python config.py` prints the table
of docs/configuration.md.
"""

from sqs_message_service.settings import (
    DATA_DIR,
    DECLARED,
    DISTRIBUTION,
    ENV_NAMES,
    ConfigError,
    Role,
    Settings,
    add_option,
    configuration_table,
    configure_logging,
    default_dlq_name,
    settings_for_command,
    with_options,
)

__all__ = [
    "DATA_DIR",
    "DECLARED",
    "DISTRIBUTION",
    "ENV_NAMES",
    "ConfigError",
    "Role",
    "Settings",
    "add_option",
    "configuration_table",
    "configure_logging",
    "default_dlq_name",
    "settings_for_command",
    "with_options",
]

if __name__ == "__main__":
    print(configuration_table())
