"""Reads a data file row by row with 1-based line numbers, validating each row and collecting line-numbered problems.

Accepts JSONL (one object per line, blank lines skipped) or a `.json` file holding a list of rows (numbered as rows).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from trainers.errors import DataError, DataProblem
from trainers.registry import DataReport

MAX_PROBLEMS = 20

# A row parser returns the validated row or raises pydantic's ValidationError (or ValueError for a custom message).
RowParser = Callable[[Any], Any]


def problems_from_validation(line: int, exc: ValidationError) -> list[DataProblem]:
    out = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err.get("loc", ()))
        out.append(DataProblem(line, field, err.get("msg", "invalid")))
    return out


def load_rows(path: Path, parse_row: RowParser | type[BaseModel], *, field: str) -> tuple[list[Any], DataReport]:
    """Validates every row of `path`; returns (rows, report) or raises DataError naming the file and first bad line.

    `field` is the config key that pointed at the file (e.g. `train_data_path`), used as the error's field.
    """
    parse = parse_row.model_validate if isinstance(parse_row, type) and issubclass(parse_row, BaseModel) else parse_row
    path = Path(path).resolve()
    if not path.exists():
        raise DataError(field, f"{field}: file not found: {path}")
    if path.is_dir():
        raise DataError(field, f"{field}: {path} is a directory, expected a JSONL file")

    is_json_list = path.suffix.lower() == ".json"
    unit = "row" if is_json_list else "line"
    rows: list[Any] = []
    problems: list[DataProblem] = []
    bad_rows = 0
    first_bad: DataProblem | None = None

    def add(found: list[DataProblem]) -> None:
        nonlocal bad_rows, first_bad
        bad_rows += 1
        first_bad = first_bad or found[0]
        problems.extend(found[: max(0, MAX_PROBLEMS - len(problems))])

    for number, raw in _numbered_values(path, is_json_list, field):
        if isinstance(raw, DataProblem):
            add([raw])
            continue
        try:
            rows.append(parse(raw))
        except ValidationError as exc:
            add(problems_from_validation(number, exc))
        except ValueError as exc:
            add([DataProblem(number, "", str(exc))])

    if first_bad is not None:
        what = f"{first_bad.field}: {first_bad.message}" if first_bad.field else first_bad.message
        more = f" ({bad_rows} bad {unit}s in all)" if bad_rows > 1 else ""
        raise DataError(field, f"{field}: {path} {unit} {first_bad.line}: {what}{more}", problems, rows=len(rows) + bad_rows)
    if not rows:
        raise DataError(field, f"{field}: {path} is empty (no rows)")
    return rows, DataReport(path=str(path), rows=len(rows))


def _numbered_values(path: Path, is_json_list: bool, field: str):
    """Yields (number, parsed JSON value) or (number, DataProblem) for a line that is not JSON."""
    if is_json_list:
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(field, f"{field}: {path} is not valid JSON ({exc})") from None
        if not isinstance(data, list):
            raise DataError(field, f"{field}: {path} must hold a JSON list of rows (or use a .jsonl file)")
        yield from enumerate(data, start=1)
        return
    with path.open("rb") as handle:
        for number, raw_line in enumerate(handle, start=1):
            try:
                text = raw_line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield number, DataProblem(number, "", f"not valid UTF-8 ({exc})")
                continue
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, DataProblem(number, "", f"not valid JSON ({exc})")
