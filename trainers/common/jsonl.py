"""Reads a data file row by row with 1-based line numbers, validating each row and collecting line-numbered problems.

Accepts JSONL (one object per line, blank lines skipped) or a `.json` file holding a list of rows (numbered as rows).
The pieces that look at one line, one JSON list and one file's problems (`parse_line`, `json_list_values`,
`RowTally`) are shared with `trainers.common.row_stream`, which checks an upload chunk by chunk with the same rules.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from pydantic import BaseModel, ValidationError

from trainers.errors import DataError, DataProblem
from trainers.paths import is_ref, limits, policy, readable_file, shown
from trainers.registry import DataReport

MAX_PROBLEMS = 20
JSON_LIST_MAX_BYTES = 256 * 1024**2

# A row parser returns the validated row or raises pydantic's ValidationError (or ValueError for a custom message).
RowParser = Callable[[Any], Any]
# What `parse_line` returns for a blank line: it is numbered, but it is not a row.
BLANK = object()
# What `RowTally.check` returns for a bad row.
NOT_A_ROW = object()


@dataclasses.dataclass
class RowChecker:
    """The rules for the rows of one file: `parse` validates a row, `count` adds a good one to `stats` (the type's
    own counters, e.g. SFT's rag_rows / chat_rows). Calling it parses, then counts.

    A type's `row_parser` is a factory of these (no arguments), because a checker may keep state across the rows of
    a file (KBAlign: the first row decides the file's kind) and its counters belong to one file."""

    parse: RowParser
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    count: Callable[[dict[str, Any], Any], None] | None = None

    def __call__(self, raw: Any) -> Any:
        row = self.parse(raw)
        if self.count is not None:
            self.count(self.stats, row)
        return row


def as_parser(parse_row: RowParser | type[BaseModel]) -> RowParser:
    """A row model class stands for its `model_validate`."""
    if isinstance(parse_row, type) and issubclass(parse_row, BaseModel):
        return parse_row.model_validate
    return parse_row


def problems_from_validation(line: int, exc: ValidationError) -> list[DataProblem]:
    out = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err.get("loc", ()))
        out.append(DataProblem(line, field, err.get("msg", "invalid")))
    return out


class RowTally:
    """One file's rows as they are checked: counts good and bad ones, keeps the first MAX_PROBLEMS problems, and
    raises the DataError that names the file and its first bad line (`raise_if_bad`)."""

    def __init__(self, field: str, name: str, unit: str):
        self.field, self.name, self.unit = field, name, unit
        self.good = 0
        self.bad_rows = 0
        self.problems: list[DataProblem] = []
        self.first_bad: DataProblem | None = None

    @property
    def rows(self) -> int:
        return self.good + self.bad_rows

    def add(self, found: list[DataProblem]) -> None:
        self.bad_rows += 1
        self.first_bad = self.first_bad or found[0]
        self.problems.extend(found[: max(0, MAX_PROBLEMS - len(self.problems))])

    def check(self, number: int, value: Any, parse: RowParser) -> Any:
        """The parsed row, or NOT_A_ROW after recording why `value` (a JSON value or a DataProblem) is bad."""
        if isinstance(value, DataProblem):
            self.add([value])
            return NOT_A_ROW
        try:
            row = parse(value)
        except ValidationError as exc:
            self.add(problems_from_validation(number, exc))
            return NOT_A_ROW
        except ValueError as exc:
            self.add([DataProblem(number, "", str(exc))])
            return NOT_A_ROW
        self.good += 1
        return row

    def raise_if_bad(self) -> None:
        """Raises DataError when a row was bad or there was no row at all."""
        field, name = self.field, self.name
        if self.first_bad is not None:
            first = self.first_bad
            what = f"{first.field}: {first.message}" if first.field else first.message
            more = f" ({self.bad_rows} bad {self.unit}s in all)" if self.bad_rows > 1 else ""
            raise DataError(field, f"{field}: {name} {self.unit} {first.line}: {what}{more}", self.problems,
                            rows=self.rows)
        if not self.good:
            raise DataError(field, f"{field}: {name} is empty (no rows)")


def parse_line(number: int, line: bytes) -> Any:
    """One JSONL line (its bytes, with or without the newline) -> its JSON value, BLANK, or a DataProblem when it is
    not UTF-8 or not JSON. Problems say what is wrong and where, never what the line holds. A BOM may open line 1."""
    try:
        text = line.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return DataProblem(number, "", f"not valid UTF-8 (byte {exc.start}: {exc.reason})")
    if not text.strip():
        return BLANK
    try:
        return json.loads(text.removesuffix("\n"))  # without it, an error at the line's end says "column 1"
    except json.JSONDecodeError as exc:
        return DataProblem(number, "", f"not valid JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:
        return DataProblem(number, "", "not valid JSON (nested too deeply)")


def too_long(number: int, limit: int) -> DataProblem:
    """The problem of a line whose bytes (without its newline) are more than `limit`."""
    return DataProblem(number, "", f"longer than {limit} bytes, the limit of one row (BUGAGARIC_MAX_ROW_BYTES)")


def check_json_list_size(size: int, field: str, name: str) -> None:
    if size > JSON_LIST_MAX_BYTES:
        raise DataError(field, f"{field}: {name} is a JSON list of {size} bytes; a list is read whole, so it may "
                               f"hold at most {JSON_LIST_MAX_BYTES // 1024**2} MiB: use JSONL (one row per line)")


def json_list_values(data: bytes | bytearray, field: str, name: str) -> list[Any]:
    """The rows of a `.json` file (the whole file's bytes: a list is read whole), or DataError naming the file."""
    check_json_list_size(len(data), field, name)
    try:
        values = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(field, f"{field}: {name} is not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(field, f"{field}: {name} is not valid JSON ({exc.msg} at line {exc.lineno} column "
                               f"{exc.colno})") from None
    except RecursionError:
        raise DataError(field, f"{field}: {name} is nested too deeply") from None
    if not isinstance(values, list):
        raise DataError(field, f"{field}: {name} must hold a JSON list of rows (or use a .jsonl file)")
    return values


def is_json_list_name(name: str | Path) -> bool:
    """A `.json` file holds a list of rows; anything else is read as JSONL."""
    return Path(name).suffix.lower() == ".json"


def load_rows(
    path: Path | str, parse_row: RowParser | type[BaseModel], *, field: str, workspace: Path | None = None,
    keep: bool = True,
) -> tuple[list[Any], DataReport]:
    """Validates every row of `path`; returns (rows, report) or raises DataError naming the file and first bad line.

    `keep=False` streams: each good row is checked (and counted, when `parse_row` is a RowChecker) and dropped, so
    checking a big file takes the memory of one row, not of the file; the returned list is then empty.

    The report's `lines` holds each kept row's line (or row) number, and its `stats` a RowChecker's counters.

    `field` is the config key that pointed at the file (e.g. `train_data_path`), used as the error's field. The file
    must be one tasks may read (`trainers.paths.readable_file`: inside the data roots, a regular file within the size
    limit); a row longer than the row limit, or reading longer than the time limit, is refused.
    """
    parse = as_parser(parse_row)
    given = path
    path = readable_file(path, field, workspace)
    name = str(given) if is_ref(given) else shown(path, policy(workspace).workspace)

    is_json_list = is_json_list_name(path)
    tally = RowTally(field, name, "row" if is_json_list else "line")
    rows: list[Any] = []
    lines: list[int] = []
    rules = limits()
    deadline = time.monotonic() + rules.max_read_seconds
    if is_json_list:
        check_json_list_size(path.stat().st_size, field, name)
        values: Iterator[tuple[int, Any]] = enumerate(json_list_values(path.read_bytes(), field, name), start=1)
    else:
        handle = path.open("rb")
        values = _numbered_lines(handle, rules.max_row_bytes)
    try:
        for number, value in values:
            if number % 1024 == 0 and time.monotonic() > deadline:
                raise DataError(field, f"{field}: reading {name} took longer than {rules.max_read_seconds:g} s "
                                       f"(stopped at {tally.unit} {number}; BUGAGARIC_MAX_DATA_READ_SECONDS)",
                                tally.problems, rows=tally.rows)
            row = tally.check(number, value, parse)
            if keep and row is not NOT_A_ROW:
                rows.append(row)
                lines.append(number)
    finally:
        if not is_json_list:
            handle.close()
    tally.raise_if_bad()
    stats = parse_row.stats if isinstance(parse_row, RowChecker) else {}
    return rows, DataReport(path=str(path), rows=tally.good, stats=stats, lines=lines)


def _numbered_lines(handle: BinaryIO, limit: int) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value or DataProblem) for each non-blank line; a line over `limit` bytes is skipped
    unread and becomes a problem."""
    number = 0
    while raw_line := handle.readline(limit + 1):
        number += 1
        if len(raw_line) > limit and not raw_line.endswith(b"\n"):
            _skip_rest_of_line(handle)
            yield number, too_long(number, limit)
            continue
        value = parse_line(number, raw_line)
        if value is not BLANK:
            yield number, value


def _skip_rest_of_line(handle: BinaryIO) -> None:
    while chunk := handle.readline(1024**2):
        if chunk.endswith(b"\n"):
            return
