"""Errors raised while checking a task's config or data, and the trainer exit codes the agent understands."""

from __future__ import annotations

from dataclasses import dataclass, field

# Exit codes of `python -m trainers.<type>`. The agent turns EXIT_INVALID_DATA into the reason `invalid_data`;
# EXIT_STOPPED_EARLY (what a shell reports for a SIGTERM death) means a stop ended training with a checkpoint saved
# and no final model; any other non-zero code is a `trainer_error`.
EXIT_OK = 0
EXIT_TRAINER_ERROR = 1
EXIT_INVALID_DATA = 3
EXIT_STOPPED_EARLY = 143


@dataclass(frozen=True)
class DataProblem:
    """One thing wrong with one row of a data file. line is 1-based; field is a dotted path like `chosen.text`."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


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
