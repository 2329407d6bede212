"""The CLI's exit codes and the one error type its commands raise for an expected failure.

Exit codes (also in the README's "Command line" section):
  0  done; a followed task succeeded
  1  a followed task failed
  2  a followed task was stopped; also a command-line usage error (click's own code)
  3  the gateway refused the request (its error JSON), or a local input (config file, dataset file) is bad
  4  the gateway could not be reached (connection refused, bad URL, timeout, a transfer broken off)
  5  not logged in, or the credential was refused (401)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_TASK_STOPPED = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4
EXIT_UNAUTHENTICATED = 5


class CliError(Exception):
    """An expected failure: printed as one line on stderr (no traceback), then the process exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.field = field

    def one_line(self) -> str:
        # A refused dataset row comes as several lines (one problem each): joined, so stderr stays one line per error.
        text = "; ".join(part.strip() for part in self.message.splitlines() if part.strip())
        if self.field and self.field not in text:
            return f"{text} (field: {self.field})"
        return text
