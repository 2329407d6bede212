"""OpenAI-style ids over the platform's own: a file is a dataset (`file-<dataset id>`), a job a task
(`ftjob-<task id>`), a checkpoint and an event name their task and place. Unprefixed ids are taken too, so a dataset
or task id from the REST API or the console works as it is."""

from __future__ import annotations

FILE, JOB, CHECKPOINT, EVENT = "file-", "ftjob-", "ftckpt-", "ftevent-"


def file_id(dataset_id: str) -> str:
    return FILE + dataset_id


def dataset_id(file: str) -> str:
    return file.removeprefix(FILE)


def job_id(task_id: str) -> str:
    return JOB + task_id


def task_id(job: str) -> str:
    return job.removeprefix(JOB)


def checkpoint_id(task: str, step: int, attempt: int) -> str:
    return f"{CHECKPOINT}{task}-{attempt}-{step}"


def event_id(task: str, kind: str, number: int) -> str:
    """kind: "s" a status change (its index), "m" a metric point (its seq), "l" a log line (its seq)."""
    return f"{EVENT}{task}-{kind}{number}"
