"""`python -m sqs_message_service.console`: the operator console, as `queue-console` runs it."""

import sys

from .app import main

if __name__ == "__main__":
    sys.exit(main())
