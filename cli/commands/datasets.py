"""`datasets upload|ls|get|rm`: datasets checked row by row by the control plane as they stream in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli import output
from cli.api import Api
from cli.commands.tasks import JsonOption
from cli.transfers import upload_file

DATASETS = "/api/finetune/datasets"
app = typer.Typer(help="Upload and list datasets (use one in a config as `dataset:<id>`).", no_args_is_help=True)


@app.command()
def upload(
    file: Annotated[Path, typer.Argument(help="JSONL (one row a line) or a JSON list (.json)")],
    task_type: Annotated[str, typer.Option("--type", "-t", help="the task type whose rows it holds: sft, dpo, ...")],
    json_output: JsonOption = False,
) -> None:
    """Upload a dataset with a progress bar; a bad row is refused naming its line, and nothing is kept."""
    console = output.stderr  # the bar never mixes with the result on stdout
    with Api.connect() as api:
        dataset = upload_file(api, DATASETS, file, {"type": task_type}, console)
    if json_output:
        output.emit_json(dataset)
    else:
        output.say(f"uploaded {dataset['name']} as dataset {dataset['id']}: {dataset['rows']} rows, "
                   f"{output.human_size(dataset['size'])}; use it as dataset:{dataset['id']}")


@app.command("ls")
def list_datasets(
    task_type: Annotated[Optional[str], typer.Option("--type", "-t", help="only datasets of this task type")] = None,
    json_output: JsonOption = False,
) -> None:
    """Your datasets, newest first."""
    with Api.connect() as api:
        answer = api.get(DATASETS, params={"type": task_type} if task_type else None)
    if json_output:
        output.emit_json(answer)
        return
    output.table(["ID", "NAME", "TYPE", "ROWS", "SIZE", "CREATED"],
                 ([d["id"], d["name"], d["type"], d["rows"], output.human_size(d["size"]),
                   output.short_time(d["created_at"])]
                  for d in answer["datasets"]))


@app.command()
def get(dataset_id: Annotated[str, typer.Argument(help="the dataset's id")], json_output: JsonOption = False) -> None:
    """One dataset with its row statistics and first rows."""
    with Api.connect() as api:
        dataset = api.get(f"{DATASETS}/{dataset_id}")
    if json_output:
        output.emit_json(dataset)
        return
    output.fields([("id", dataset["id"]), ("name", dataset["name"]), ("type", dataset["type"]),
                   ("rows", str(dataset["rows"])), ("size", output.human_size(dataset["size"])),
                   ("sha256", dataset["sha256"]), ("created", dataset["created_at"]), ("stats", dataset.get("stats"))])


@app.command()
def rm(dataset_id: Annotated[str, typer.Argument(help="the dataset's id")], json_output: JsonOption = False) -> None:
    """Delete a dataset that no queued or running task uses."""
    with Api.connect() as api:
        answer = api.delete(f"{DATASETS}/{dataset_id}")
    output.emit_json(answer) if json_output else output.say(f"deleted dataset {answer['deleted']}")
