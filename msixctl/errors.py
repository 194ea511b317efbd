"""What msixctl tells the user when a command cannot do its work, and the exit codes."""

from __future__ import annotations

EXIT_DAEMON_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class ClientError(Exception):
    """Something to tell the user in one line, with the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = EXIT_DAEMON_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class BadUsage(Exception):
    """Options that parse but do not go together: typer reports it as bad usage (exit 2)."""
