"""Checks an uploaded dataset while it streams in, chunk by chunk, with the rules its task type's trainer uses.

    stream = RowStream.for_type("sft", name="train.jsonl")
    for chunk in chunks:              # any sizes; a row may span chunks
        stream.feed(chunk)
    report = stream.finish()          # or DataError, exactly as trainers.common.jsonl.load_rows raises it

JSONL is checked line by line as the bytes arrive: the stream holds at most one partial line, and a line longer than
BUGAGARIC_MAX_ROW_BYTES is dropped as it grows (it becomes that line's problem), so memory stays bounded by the row
limit whatever the upload's size. A `.json` upload (a JSON list of rows, e.g. KBAlign's list of strings) cannot be
cut into rows before it is complete: it is buffered, up to JSON_LIST_MAX_BYTES (`feed` refuses more at once, as the
trainer would refuse the file), and its rows are checked by `finish`, numbered as rows. The line logic, the list
logic and the error messages are trainers.common.jsonl's own, so an upload is accepted exactly when the trainer would
accept the same file.

Pure and cheap: no torch, no gRPC, no files; the control plane calls `feed` from a worker thread per chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from trainers.common.jsonl import (
    BLANK, NOT_A_ROW, RowChecker, RowParser, RowTally, as_parser, check_json_list_size, is_json_list_name,
    json_list_values, parse_line, too_long,
)
from trainers.errors import ConfigError
from trainers.paths import limits

PREVIEW_ROWS = 5
# A preview is for a person's eyes: rows stop joining it once it would hold more than this many bytes.
PREVIEW_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class StreamReport:
    """What an accepted upload holds: its good rows counted, a few of them as a preview, and its stats."""

    name: str
    rows: int
    size: int  # bytes fed
    format: str  # "jsonl" or "json" (a JSON list)
    # rows, bytes, mean_row_bytes, max_row_bytes, then the type's own counters (e.g. sft: rag_rows, chat_rows).
    stats: dict[str, Any] = field(default_factory=dict)
    preview: list[Any] = field(default_factory=list)  # the first good rows, as the JSON values they were


class RowStream:
    """Validates one uploaded file fed in chunks; see the module's docstring.

    `parse_row` is a row parser (a RowChecker, whose counters join the stats, a function, or a row model class);
    `name` is the uploaded file's name (its suffix picks JSONL or a JSON list) and `field` the error's field."""

    def __init__(self, parse_row: RowParser | type[BaseModel], *, name: str, field: str = "file",
                 preview_rows: int = PREVIEW_ROWS, preview_max_bytes: int = PREVIEW_MAX_BYTES):
        self.name, self.field = name, field
        self._parse = as_parser(parse_row)
        self._type_stats = parse_row.stats if isinstance(parse_row, RowChecker) else None
        self._json_list = is_json_list_name(name)
        self._tally = RowTally(field, name, "row" if self._json_list else "line")
        self._limit = limits().max_row_bytes
        self._preview_rows, self._preview_max_bytes = preview_rows, preview_max_bytes
        self._preview: list[Any] = []
        self._preview_bytes = 0
        self._preview_full = preview_rows <= 0
        self._size = 0
        self._number = 0  # lines started so far
        self._partial = bytearray()  # the current line's bytes so far (JSONL), or the whole list (JSON)
        self._skipping = False  # inside a line already refused as too long: drop bytes until its newline
        self._row_bytes_total = 0
        self._row_bytes_max = 0
        self._finished = False

    @classmethod
    def for_type(cls, task_type: Any, *, name: str, field: str = "file", **options: Any) -> "RowStream":
        """A stream checking rows of `task_type` (a registry TaskType or its name) with a fresh `row_parser()`."""
        from trainers import registry

        if isinstance(task_type, str):
            task_type = registry.get(task_type)
        if task_type.row_parser is None:
            raise ConfigError("type", f"task type {task_type.name!r} takes no uploaded datasets")
        return cls(task_type.row_parser(), name=name, field=field, **options)

    @property
    def size(self) -> int:
        return self._size

    @property
    def buffered(self) -> int:
        """Bytes held between chunks: the current partial line (at most the row limit), or a JSON list so far."""
        return len(self._partial)

    @property
    def rows(self) -> int:
        """Rows checked so far, good and bad."""
        return self._tally.rows

    @property
    def bad_rows(self) -> int:
        """Bad rows so far: a caller may stop reading early (finish() then raises naming the first)."""
        return self._tally.bad_rows

    def feed(self, data: bytes) -> None:
        """Checks the complete lines in `data` and keeps the rest of the last one. Raises DataError only when the
        upload can no longer be accepted whatever follows (a JSON list over JSON_LIST_MAX_BYTES)."""
        if self._finished:
            raise RuntimeError("RowStream.feed after finish")
        self._size += len(data)
        if self._json_list:
            check_json_list_size(self._size, self.field, self.name)
            self._partial += data
            return
        start = 0
        while (end := data.find(b"\n", start)) != -1:
            if self._skipping:  # the end of a line already refused
                self._skipping = False
            elif len(self._partial) + end - start > self._limit:
                self._partial.clear()
                self._too_long()
            elif self._partial:
                self._partial += data[start:end]
                self._line(bytes(self._partial))
                self._partial.clear()
            else:
                self._line(data[start:end])
            start = end + 1
        if self._skipping or start == len(data):
            return
        if len(self._partial) + len(data) - start > self._limit:  # too long already: refuse it, drop its bytes
            self._partial.clear()
            self._too_long()
            self._skipping = True
            return
        self._partial += data[start:]

    def finish(self) -> StreamReport:
        """The report of an accepted upload, or DataError exactly as load_rows raises it for the same file."""
        if self._finished:
            raise RuntimeError("RowStream.finish called twice")
        self._finished = True
        if self._json_list:
            data, self._partial = self._partial, bytearray()
            for number, value in enumerate(json_list_values(data, self.field, self.name), start=1):
                self._row(number, value, None)
        elif self._partial and not self._skipping:  # the last line, without a newline
            self._line(bytes(self._partial))
            self._partial.clear()
        self._tally.raise_if_bad()
        good = self._tally.good
        stats = {"rows": good, "bytes": self._size, "mean_row_bytes": round(self._row_bytes_total / good, 1),
                 "max_row_bytes": self._row_bytes_max, **(self._type_stats or {})}
        return StreamReport(self.name, good, self._size, "json" if self._json_list else "jsonl", stats,
                            list(self._preview))

    def _too_long(self) -> None:
        self._number += 1
        self._tally.check(self._number, too_long(self._number, self._limit), self._parse)

    def _line(self, line: bytes) -> None:
        """One complete line (not over the limit), without its newline."""
        self._number += 1
        value = parse_line(self._number, line)
        if value is not BLANK:
            self._row(self._number, value, len(line))

    def _row(self, number: int, value: Any, size: int | None) -> None:
        if self._tally.check(number, value, self._parse) is NOT_A_ROW:
            return
        if size is None:  # a JSON list's row: its compact JSON
            size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        self._row_bytes_total += size
        self._row_bytes_max = max(self._row_bytes_max, size)
        if not self._preview_full:
            if len(self._preview) < self._preview_rows and self._preview_bytes + size <= self._preview_max_bytes:
                self._preview.append(value)
                self._preview_bytes += size
            else:
                self._preview_full = True  # the preview is the first rows, with no gap
