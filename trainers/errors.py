"""Errors raised while checking a task's config or data, and the trainer exit codes the agent understands."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Exit codes of `python -m trainers.<type>`. The agent turns EXIT_INVALID_DATA into the reason `invalid_data`;
# EXIT_STOPPED_EARLY (what a shell reports for a SIGTERM death) means a stop ended training with a checkpoint saved
# and no final model; any other non-zero code is a `trainer_error`.
EXIT_OK = 0
EXIT_TRAINER_ERROR = 1
EXIT_INVALID_DATA = 3
EXIT_STOPPED_EARLY = 143


# The last stderr line of a failed trainer (trainers.common.cli._fail): the one sentence a user needs.
ERROR_LINE_PREFIX = "error: "
_TRACEBACK_LINE = re.compile(r'^(Traceback \(most recent call last\):|\s+File ".*", line \d+)')


def split_failure(text: str) -> tuple[str, str]:
    """A failed task's error text (the agent's tail of the trainer's stderr) -> (message, details).

    Where a Python traceback is in it, the message is the trainer's closing `error: ...` line alone (it repeats the
    traceback's last line, so showing both says it twice) or, without one, the agent's own first line (`killed by
    signal 9`, ...); every other line is the details. Text without a traceback (a data error and its problem lines)
    is all message. The `error: ` prefix is dropped: the text is shown as an error already."""
    lines = text.rstrip().splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not any(_TRACEBACK_LINE.match(line) for line in lines):
        return "\n".join(line.removeprefix(ERROR_LINE_PREFIX) for line in lines), ""
    error_lines = [i for i, line in enumerate(lines) if line.startswith(ERROR_LINE_PREFIX)]
    if error_lines:
        at = error_lines[-1]
    elif not (_TRACEBACK_LINE.match(lines[0]) or lines[0][:1].isspace()):
        at = 0  # the agent's word on how the trainer ended, above the stderr it caught
    else:
        at = len(lines) - 1  # a bare traceback: its last line names the exception
    message = lines[at].removeprefix(ERROR_LINE_PREFIX).strip()
    return message, "\n".join(lines[:at] + lines[at + 1:]).strip("\n")


@dataclass(frozen=True)
class DataProblem:
    """One thing wrong with one row of a data file. line is 1-based; field is a dotted path like `chosen.text`."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


def problem_lines(message: str, problems: list[DataProblem]) -> list[str]:
    """The message, then one line per problem it does not already name: each problem is told once (a data error's
    message names its first bad line)."""
    def named(problem: DataProblem) -> bool:
        return f"line {problem.line}:" in message and problem.message in message

    return [message, *(str(p) for p in problems if not named(p))]


class ConfigError(ValueError):
    """A task's config is wrong. `field` names the config key (dotted for nested keys), '' for the whole config."""

    def __init__(self, field: str, message: str, problems: list[DataProblem] | None = None):
        super().__init__(message)
        self.field = field
        self.message = message
        self.problems: list[DataProblem] = list(problems or [])


class UnknownTaskType(ConfigError):
    def __init__(self, name: str, known: list[str]):
        super().__init__("type", f"unknown task type {name!r}; known types: {', '.join(known)}")


class DataError(ConfigError):
    """The data a config points at is missing or has bad rows; the message names the file and the first bad line."""

    def __init__(self, field: str, message: str, problems: list[DataProblem] | None = None, rows: int = 0):
        super().__init__(field, message, problems)
        self.rows = rows  # rows read, good and bad (0 when the file could not be read at all)


class TrainerError(RuntimeError):
    """A training run failed for a reason the user can act on; its message is printed as the last stderr line."""


class ModelNotFound(TrainerError):
    """The base model is neither a local model directory nor loadable from the model hub (or its cache)."""
