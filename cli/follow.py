"""Following a task live: its progress (step/total, loss, status) and its log lines, from the gateway's two SSE
routes (`events/stream` for task snapshots, `logs/stream` for lines), until it ends.

On a terminal the progress is a rich progress bar with the log lines scrolling above it; elsewhere (a CI log, a
pipe) each change of progress is one plain line. The outcome is the exit code: succeeded 0, failed 1, stopped 2.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from cli import live_streams
from cli.api import Api
from cli.errors import EXIT_OK, EXIT_TASK_FAILED, EXIT_TASK_STOPPED
from cli.output import progress_text

EXIT_CODE_OF_STATUS = {"succeeded": EXIT_OK, "failed": EXIT_TASK_FAILED, "stopped": EXIT_TASK_STOPPED}
# Only task snapshots are wanted from events/stream: starting past every metric seq skips replaying the series.
_NO_METRICS = {"after_seq": 2**63 - 1}
# Once the task has ended, its log stream ends after the last line; a little longer than that is not waited for.
LOG_DRAIN_SECONDS = 30.0


class PlainDisplay:
    """A line per progress change, and the log lines as they are (for pipes and CI logs)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last: tuple[Any, ...] | None = None

    def __enter__(self) -> "PlainDisplay":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def task(self, task: dict[str, Any]) -> None:
        progress = task.get("progress") or {}
        key = (task["status"], progress.get("step"), progress.get("total_steps"), progress.get("stage"),
               progress.get("stage_done"))
        if key == self._last:
            return
        self._last = key
        parts = [f"[{task['id']}] {task['status']}", progress_text(task)]
        if progress.get("loss") is not None:
            parts.append(f"loss {progress['loss']:.4f}")
        self.console.print("  ".join(p for p in parts if p), markup=False)

    def log(self, line: dict[str, Any]) -> None:
        self.console.print(line["text"], markup=False)

    def note(self, message: str) -> None:
        self.console.print(message, markup=False, style="dim")


class ProgressDisplay(PlainDisplay):
    """A rich progress bar of the task's steps; log lines and notes print above it."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[extra]}"),
            TimeElapsedColumn(), console=console, transient=False,
        )
        self._bar_task: TaskID | None = None

    def __enter__(self) -> "ProgressDisplay":
        self.bar.start()
        self._bar_task = self.bar.add_task("waiting", total=None, extra="")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def task(self, task: dict[str, Any]) -> None:
        progress = task.get("progress") or {}
        extra = progress.get("stage") or ""
        if progress.get("loss") is not None:
            extra = f"loss {progress['loss']:.4f}"
        total = progress.get("total_steps") or progress.get("stage_total") or None
        done = progress.get("step") if progress.get("total_steps") else progress.get("stage_done")
        self.bar.update(self._bar_task, description=f"{task['id'][:12]} {task['status']}", total=total,
                        completed=done or 0, extra=extra)

    def log(self, line: dict[str, Any]) -> None:
        self.bar.console.print(line["text"], markup=False, highlight=False)

    def note(self, message: str) -> None:
        self.bar.console.print(message, markup=False, style="dim")


def display_for(console: Console) -> PlainDisplay:
    return ProgressDisplay(console) if console.is_terminal else PlainDisplay(console)


async def _pump_events(client: Any, task_id: str, display: PlainDisplay) -> str:
    path = f"/api/finetune/tasks/{task_id}/events/stream"
    async for event in live_streams.events(client, path, _NO_METRICS, display.note):
        if event.event == "task":
            display.task(json.loads(event.data))
        elif event.event == "end":
            return json.loads(event.data)["status"]
    raise AssertionError("unreachable: events() returns only after `end`")


async def _pump_logs(client: Any, task_id: str, display: PlainDisplay, after_seq: int) -> None:
    path = f"/api/finetune/tasks/{task_id}/logs/stream"
    async for event in live_streams.events(client, path, {"after_seq": after_seq}, display.note):
        if event.event == "end":
            return
        display.log(json.loads(event.data))


async def _follow(api: Api, task_id: str, display: PlainDisplay, after_log_seq: int) -> str:
    async with api.async_client(read_timeout=live_streams.READ_TIMEOUT_SECONDS) as client:
        status_job = asyncio.create_task(_pump_events(client, task_id, display))
        logs_job = asyncio.create_task(_pump_logs(client, task_id, display, after_log_seq))
        jobs = {status_job, logs_job}
        try:
            pending = set(jobs)
            while pending:
                timeout = LOG_DRAIN_SECONDS if status_job.done() else None
                done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for job in done:
                    job.result()  # a stream's CliError ends the follow
                if not done:
                    display.note("the log stream did not end with the task; not waiting for it")
                    break
            return status_job.result()
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)


def follow_task(api: Api, task_id: str, console: Console, after_log_seq: int = 0) -> str:
    """Shows the task live until it ends; returns its final status."""
    with display_for(console) as display:
        try:
            return asyncio.run(_follow(api, task_id, display, after_log_seq))
        except KeyboardInterrupt:
            # Only the watching ends (typer exits 130): say so, since the task itself goes on.
            display.note(f"stopped following; task {task_id} keeps running (`bugagaric stop {task_id}` stops it)")
            raise
