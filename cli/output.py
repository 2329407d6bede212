"""What the commands print: `--json` writes the API's JSON to stdout and nothing else (for scripts); otherwise rich
tables and lines for a person. Errors and notes go to stderr, so stdout stays clean either way."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def emit_json_line(data: Any) -> None:
    """One object per line (`logs -f --json`): a stream a script can read line by line."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_error(message: str) -> None:
    stderr.print(f"error: {message}", markup=False)


def note(message: str) -> None:
    stderr.print(message, markup=False)


def say(message: str) -> None:
    stdout.print(message, markup=False)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    view = Table(*columns, title=title, header_style="bold")
    view.columns[0].overflow = "fold"  # the id: shown whole (wrapped if need be), it is what the next command takes
    for row in rows:
        view.add_row(*("" if cell is None else str(cell) for cell in row))
    stdout.print(view)


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """A record as aligned `key  value` rows, skipping unset values."""
    view = Table.grid(padding=(0, 2))
    view.add_column(style="bold")
    view.add_column()
    for key, value in pairs:
        if value not in (None, "", [], {}):
            view.add_row(key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    stdout.print(view)


def short_time(iso: str | None) -> str:
    """`2026-12-04T05:56:51.054741Z` -> `2026-12-04 05:56:51` (UTC), for tables."""
    return iso[:19].replace("T", " ") if iso else ""


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def progress_text(task: dict[str, Any]) -> str:
    """`step 3/10 (30%)`, the stage of a multi-stage trainer, or "" before the first step."""
    progress = task.get("progress") or {}
    if progress.get("stage"):
        done, total = progress.get("stage_done") or 0, progress.get("stage_total") or 0
        return f"{progress['stage']} {done}/{total}" if total else str(progress["stage"])
    total = progress.get("total_steps") or 0
    if not total:
        return ""
    return f"step {progress.get('step') or 0}/{total} ({progress.get('percent') or 0:.0f}%)"
