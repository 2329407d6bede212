"""Tasks: `submit`, `ls`, `get`, `logs`, `stop`, `resume`, `rm`, `export`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli import live_streams, output
from cli.api import Api
from cli.errors import EXIT_TASK_FAILED
from cli.follow import EXIT_CODE_OF_STATUS, follow_task
from cli.output import progress_text
from cli.task_config import load_config

TASKS = "/api/finetune/tasks"
JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON on stdout, nothing else")]
FollowOption = Annotated[bool, typer.Option("--follow", "-f", help="show progress and logs live until the task "
                                            "ends; exit 0 succeeded, 1 failed, 2 stopped")]
TaskId = Annotated[str, typer.Argument(help="the task's id")]


def _task_path(task_id: str, suffix: str = "") -> str:
    return f"{TASKS}/{task_id}{suffix}"


def _summary(task: dict[str, Any]) -> str:
    line = f"task {task['id']} ({task['type']}) is {task['status']}"
    if task.get("queue_position"):
        line += f", queue position {task['queue_position']}"
    if task.get("error"):
        line += f": {task['error']}"
    return line


def _show_or_follow(api: Api, task: dict[str, Any], follow: bool, json_output: bool, after_log_seq: int = 0) -> None:
    """Prints the task answered by a submit/resume/export, or follows it to its end and exits with its outcome.
    With --json the live display goes to stderr and the final task is the only thing on stdout."""
    if not follow:
        output.emit_json(task) if json_output else output.say(_summary(task))
        return
    console = output.stderr if json_output else output.stdout
    if not json_output:
        output.say(_summary(task))
    status = follow_task(api, task["id"], console, after_log_seq)
    final = api.get(_task_path(task["id"]))
    output.emit_json(final) if json_output else output.say(_summary(final))
    raise typer.Exit(EXIT_CODE_OF_STATUS.get(status, EXIT_TASK_FAILED))


def submit(
    config_file: Annotated[Path, typer.Argument(metavar="CONFIG", help="the task's config: a YAML or JSON file")],
    task_type: Annotated[str, typer.Option("--type", "-t", help="sft, dpo, embedding, kbalign")],
    follow: FollowOption = False,
    json_output: JsonOption = False,
) -> None:
    """Validate and queue a task; with --follow, watch it to the end."""
    config = load_config(config_file)
    with Api.connect() as api:
        task = api.post("/api/finetune/start", json={"type": task_type, "config": config})
        _show_or_follow(api, task, follow, json_output)


def ls(
    status: Annotated[Optional[str], typer.Option(help="only tasks in this status (queued, running, ...)")] = None,
    task_type: Annotated[Optional[str], typer.Option("--type", "-t", help="only tasks of this type")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="tasks per page")] = 20,
    page_token: Annotated[Optional[str], typer.Option(help="the next page, as the previous page printed it")] = None,
    json_output: JsonOption = False,
) -> None:
    """List your tasks (every user's for an admin), newest first."""
    params: dict[str, Any] = {"limit": limit}
    for key, value in (("status", status), ("type", task_type), ("page_token", page_token)):
        if value:
            params[key] = value
    with Api.connect() as api:
        page = api.get(TASKS, params=params)
    if json_output:
        output.emit_json(page)
        return
    output.table(
        ["ID", "TYPE", "STATUS", "PROGRESS", "CREATED", "OWNER"],
        ([t["id"], t["type"], t["status"], progress_text(t), output.short_time(t.get("created_at")),
         t.get("owner")] for t in page["tasks"]),
    )
    shown = len(page["tasks"])
    more = f"; next page: --page-token {page['next_page_token']}" if page.get("next_page_token") else ""
    output.note(f"{shown} of {page.get('total', shown)} task(s){more}")


def get(task_id: TaskId, json_output: JsonOption = False) -> None:
    """One task: status, progress, error, attempts, checkpoints."""
    with Api.connect() as api:
        task = api.get(_task_path(task_id))
    if json_output:
        output.emit_json(task)
        return
    progress = task.get("progress") or {}
    validation = task.get("validation") or {}
    output.fields([
        ("id", task["id"]), ("type", task["type"]), ("status", task["status"]), ("progress", progress_text(task)),
        ("loss", f"{progress['loss']:.4f}" if progress.get("loss") is not None else None), ("queue position", task.get("queue_position")), ("owner", task.get("owner")),
        ("created", task.get("created_at")), ("started", task.get("started_at")),
        ("finished", task.get("finished_at")), ("agent", task.get("agent_id")), ("devices", task.get("devices")),
        ("output_dir", task.get("output_dir")), ("attempt", task.get("attempt")),
        ("checkpoints", [c["path"] for c in task.get("checkpoints") or []]),
        ("validation", validation.get("state")), ("error", task.get("error")),
        ("error reason", task.get("error_reason")), ("model published", task.get("published_model_sha256")),
        ("config", json.dumps(task.get("config") or {}, ensure_ascii=False)),
    ])


async def _stream_logs(api: Api, task_id: str, after_seq: int, json_output: bool) -> None:
    async with api.async_client(read_timeout=live_streams.READ_TIMEOUT_SECONDS) as client:
        path = _task_path(task_id, "/logs/stream")
        async for event in live_streams.events(client, path, {"after_seq": after_seq}, output.note):
            if event.event == "end":
                return
            line = json.loads(event.data)
            output.emit_json_line(line) if json_output else output.say(line["text"])


def logs(
    task_id: TaskId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines until the task ends; "
                                         "exit 0 succeeded, 1 failed, 2 stopped")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="how many of the last lines to print first")] = 100,
    json_output: Annotated[bool, typer.Option("--json", help="the API's JSON (with -f: one line object per "
                                              "line of output)")] = False,
) -> None:
    """The task's last log lines; with -f, then every new line until it ends."""
    with Api.connect() as api:
        page = api.get(_task_path(task_id, "/logs"), params={"limit": limit})
        if json_output and not follow:
            output.emit_json(page)
            return
        for line in page["lines"]:
            output.emit_json_line(line) if json_output else output.say(line["text"])
        if not follow:
            return
        last_seq = max([line["seq"] for line in page["lines"]], default=page.get("last_seq") or 0)
        asyncio.run(_stream_logs(api, task_id, last_seq, json_output))
        status = api.get(_task_path(task_id))["status"]
    raise typer.Exit(EXIT_CODE_OF_STATUS.get(status, EXIT_TASK_FAILED))


def stop(task_id: TaskId, json_output: JsonOption = False) -> None:
    """Stop a queued or running task (it saves a checkpoint first)."""
    with Api.connect() as api:
        task = api.delete(_task_path(task_id))
    output.emit_json(task) if json_output else output.say(_summary(task))


def resume(
    task_id: TaskId,
    checkpoint: Annotated[Optional[str], typer.Option(help="one of the task's checkpoints (default: the latest)")] = None,
    follow: FollowOption = False,
    json_output: JsonOption = False,
) -> None:
    """Start a new attempt of a stopped or failed task from a checkpoint."""
    with Api.connect() as api:
        before = api.get(_task_path(task_id))
        body = {"checkpoint": checkpoint} if checkpoint else None
        task = api.post(_task_path(task_id, "/resume"), json=body)
        # Seqs continue across attempts: follow only the new attempt's lines.
        _show_or_follow(api, task, follow, json_output, after_log_seq=before.get("last_log_seq") or 0)


def rm(task_id: TaskId, json_output: JsonOption = False) -> None:
    """Delete a finished task with its logs, metrics and events."""
    with Api.connect() as api:
        answer = api.delete(_task_path(task_id, "/delete"))
    output.emit_json(answer) if json_output else output.say(f"deleted task {answer['deleted']}")


def export(
    task_id: TaskId,
    merge_lora: Annotated[Optional[bool], typer.Option("--merge-lora/--no-merge-lora", help="merge the LoRA "
                                                       "adapter into its base model (the gateway's default if unset)")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="the exported weights' dtype, e.g. auto, float16, bfloat16")] = None,
    follow: FollowOption = False,
    json_output: JsonOption = False,
) -> None:
    """Queue an export task of a succeeded task's model (merged or packaged); download it with `artifacts download`."""
    body: dict[str, Any] = {}
    if merge_lora is not None:
        body["merge_lora"] = merge_lora
    if dtype:
        body["dtype"] = dtype
    with Api.connect() as api:
        task = api.post(_task_path(task_id, "/export"), json=body)
        _show_or_follow(api, task, follow, json_output)
