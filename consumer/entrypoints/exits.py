"""Exit codes of the console script and the failure a command reports without a traceback.

Kept free of heavy imports: `batchops --help` loads it.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_TIMEOUT = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class CommandFailed(Exception):
    """A command could not do its job for a reason outside the program (bad input, a service
    down); `main` prints it alone as `batchops: <message>` and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def confirm(question: str) -> None:
    """Ask before something that cannot be undone; raise CommandFailed unless the answer is yes.
    Without a terminal to ask (a script, CI) it refuses and names `--yes`."""
    import sys  # noqa: PLC0415 - kept light for `batchops --help`

    if not sys.stdin.isatty():
        raise CommandFailed(
            f"{question} There is no terminal to confirm it on: pass --yes", EXIT_BAD_INPUT
        )
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise CommandFailed("nothing was changed")
