"""Exit codes of the console script and the failure a command reports without a traceback.

Kept free of heavy imports: `batchops --help` loads it.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_TIMEOUT = 0, 1, 2, 3


class CommandFailed(Exception):
    """A command could not do its job for a reason outside the program (bad input, a service
    down); `main` prints it alone as `batchops: <message>` and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code
