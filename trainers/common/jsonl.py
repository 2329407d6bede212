"""Reads a data file row by row with 1-based line numbers, validating each row and collecting line-numbered problems.

Accepts JSONL (one object per line, blank lines skipped) or a `.json` file holding a list of rows (numbered as rows).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from trainers.errors import DataError, DataProblem
from trainers.paths import Limits, limits, policy, readable_file, shown
from trainers.registry import DataReport

MAX_PROBLEMS = 20
JSON_LIST_MAX_BYTES = 256 * 1024**2

# A row parser returns the validated row or raises pydantic's ValidationError (or ValueError for a custom message).
RowParser = Callable[[Any], Any]


def problems_from_validation(line: int, exc: ValidationError) -> list[DataProblem]:
    out = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err.get("loc", ()))
        out.append(DataProblem(line, field, err.get("msg", "invalid")))
    return out


def load_rows(
    path: Path | str, parse_row: RowParser | type[BaseModel], *, field: str, workspace: Path | None = None,
    keep: bool = True, on_row: Callable[[Any], None] | None = None,
) -> tuple[list[Any], DataReport]:
    """Validates every row of `path`; returns (rows, report) or raises DataError naming the file and first bad line.

    `keep=False` streams: each good row goes to `on_row` (e.g. a stats counter) and is dropped, so checking a big
    file takes the memory of one row, not of the file; the returned list is then empty.

    `field` is the config key that pointed at the file (e.g. `train_data_path`), used as the error's field. The file
    must be one tasks may read (`trainers.paths.readable_file`: inside the data roots, a regular file within the size
    limit); a row longer than the row limit, or reading longer than the time limit, is refused.
    """
    parse = parse_row.model_validate if isinstance(parse_row, type) and issubclass(parse_row, BaseModel) else parse_row
    path = readable_file(path, field, workspace)
    name = shown(path, policy(workspace).workspace)

    is_json_list = path.suffix.lower() == ".json"
    unit = "row" if is_json_list else "line"
    rows: list[Any] = []
    good = 0
    problems: list[DataProblem] = []
    bad_rows = 0
    first_bad: DataProblem | None = None

    def add(found: list[DataProblem]) -> None:
        nonlocal bad_rows, first_bad
        bad_rows += 1
        first_bad = first_bad or found[0]
        problems.extend(found[: max(0, MAX_PROBLEMS - len(problems))])

    rules = limits()
    deadline = time.monotonic() + rules.max_read_seconds
    for number, raw in _numbered_values(path, is_json_list, field, name, rules):
        if number % 1024 == 0 and time.monotonic() > deadline:
            raise DataError(field, f"{field}: reading {name} took longer than {rules.max_read_seconds:g} s "
                                   f"(stopped at {unit} {number}; BUGAGARIC_MAX_DATA_READ_SECONDS)",
                            problems, rows=good + bad_rows)
        if isinstance(raw, DataProblem):
            add([raw])
            continue
        try:
            row = parse(raw)
        except ValidationError as exc:
            add(problems_from_validation(number, exc))
        except ValueError as exc:
            add([DataProblem(number, "", str(exc))])
        else:
            good += 1
            if keep:
                rows.append(row)
            if on_row is not None:
                on_row(row)

    if first_bad is not None:
        what = f"{first_bad.field}: {first_bad.message}" if first_bad.field else first_bad.message
        more = f" ({bad_rows} bad {unit}s in all)" if bad_rows > 1 else ""
        raise DataError(field, f"{field}: {name} {unit} {first_bad.line}: {what}{more}", problems, rows=good + bad_rows)
    if not good:
        raise DataError(field, f"{field}: {name} is empty (no rows)")
    return rows, DataReport(path=str(path), rows=good)


def _numbered_values(path: Path, is_json_list: bool, field: str, name: str, rules: Limits):
    """Yields (number, parsed JSON value) or (number, DataProblem) for a line that is not JSON or is too long.

    Problems say what is wrong and where, never what the line holds."""
    if is_json_list:
        size = path.stat().st_size
        if size > JSON_LIST_MAX_BYTES:
            raise DataError(field, f"{field}: {name} is a JSON list of {size} bytes; a list is read whole, so it may "
                                   f"hold at most {JSON_LIST_MAX_BYTES // 1024**2} MiB: use JSONL (one row per line)")
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as exc:
            raise DataError(field, f"{field}: {name} is not valid JSON ({exc.msg} at line {exc.lineno} column "
                                   f"{exc.colno})") from None
        except UnicodeDecodeError as exc:
            raise DataError(field, f"{field}: {name} is not valid UTF-8 (byte {exc.start})") from None
        except RecursionError:
            raise DataError(field, f"{field}: {name} is nested too deeply") from None
        if not isinstance(data, list):
            raise DataError(field, f"{field}: {name} must hold a JSON list of rows (or use a .jsonl file)")
        yield from enumerate(data, start=1)
        return
    limit = rules.max_row_bytes
    with path.open("rb") as handle:
        number = 0
        while raw_line := handle.readline(limit + 1):
            number += 1
            if len(raw_line) > limit and not raw_line.endswith(b"\n"):
                _skip_rest_of_line(handle)
                yield number, DataProblem(number, "", f"longer than {limit} bytes, the limit of one row "
                                                      "(BUGAGARIC_MAX_ROW_BYTES)")
                continue
            try:
                text = raw_line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield number, DataProblem(number, "", f"not valid UTF-8 (byte {exc.start}: {exc.reason})")
                continue
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, DataProblem(number, "", f"not valid JSON ({exc.msg} at column {exc.colno})")
            except RecursionError:
                yield number, DataProblem(number, "", "not valid JSON (nested too deeply)")


def _skip_rest_of_line(handle) -> None:
    while chunk := handle.readline(1024**2):
        if chunk.endswith(b"\n"):
            return
