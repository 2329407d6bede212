"""`artifacts ls|download`: a task's output files, and its final model as one tar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional
from urllib.parse import quote

import typer

from cli import output
from cli.api import Api
from cli.commands.tasks import JsonOption, TaskId
from cli.transfers import download as stream_to_disk

app = typer.Typer(help="A task's output files, and its final model.", no_args_is_help=True)


def _task(task_id: str) -> str:
    return f"/api/finetune/tasks/{task_id}"


@app.command("ls")
def list_artifacts(task_id: TaskId, json_output: JsonOption = False) -> None:
    """The files of the task's output directory."""
    with Api.connect() as api:
        answer = api.get(f"{_task(task_id)}/artifacts")
    if json_output:
        output.emit_json(answer)
        return
    output.table(["PATH", "SIZE", "KIND"], ([a["path"], output.human_size(a["size"]), a["kind"]]
                                           for a in answer["artifacts"]))
    output.note(f"from the {answer.get('source') or 'agent'}")


def _destination(requested: Optional[Path], default_name: str) -> Path:
    if requested is None:
        return Path(default_name)
    return requested / default_name if requested.is_dir() else requested


def _url_path(path: str) -> str:
    """Each segment percent-encoded, dots too: httpx would resolve a literal `..` away, so a path leaving the task's
    directory must reach the gateway as written (for its 400) instead of turning into another URL."""
    return "/".join(quote(part, safe="") if part not in (".", "..") else part.replace(".", "%2E")
                    for part in path.strip("/").split("/"))


def _size_of(api: Api, task_id: str, path: str) -> Any:
    """The file's size from the listing, for the bar's total (the download itself is chunked, without a length)."""
    listing = api.get(f"{_task(task_id)}/artifacts")["artifacts"]
    return next((a["size"] for a in listing if a["path"] == path.strip("/")), None)


@app.command()
def download(
    task_id: TaskId,
    path: Annotated[Optional[str], typer.Argument(help="a file of the task (see `artifacts ls`); without it, the "
                                                  "final model directory as one tar")] = None,
    out: Annotated[Optional[Path], typer.Option("--output", "-o", help="file or directory to write to (default: "
                                                "the file's name, or <task>-model.tar, here)")] = None,
    json_output: JsonOption = False,
) -> None:
    """Download one file, or the final model, streamed to disk with a progress bar."""
    with Api.connect() as api:
        if path:
            destination = _destination(out, path.rstrip("/").rsplit("/", 1)[-1])
            written = stream_to_disk(api, f"{_task(task_id)}/artifacts/{_url_path(path)}", destination,
                                     _size_of(api, task_id, path), output.stderr)
        else:
            destination = _destination(out, f"{task_id}-model.tar")
            written = stream_to_disk(api, f"{_task(task_id)}/model", destination, None, output.stderr)
    if json_output:
        output.emit_json({"task_id": task_id, "path": path, "file": str(destination), "bytes": written})
    else:
        output.say(f"saved {destination} ({output.human_size(written)})")
