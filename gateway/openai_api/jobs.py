"""/v1/fine_tuning/jobs: OpenAI fine-tuning jobs over the platform's sft and dpo tasks (StartTask, ListTasks,
GetTask, StopTask, GetTaskMetrics, GetTaskLogs). A job is a task: `ftjob-<task id>`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Request

from gateway.client import ControlPlane, control_plane
from gateway.json_body import load_json
from gateway.openai_api import ids
from gateway.openai_api.errors import OpenAIError, invalid_request, not_found
from gateway.openai_api.files import get_dataset
from gateway.openai_api.job_request import OPENAI_METHODS, parse_job_request
from gateway.openai_api.objects import (checkpoint_objects, job_object, log_events, metric_events, newest_first,
                                        status_events)
from gateway.openai_api.paging import AfterParam, LimitParam, list_page, page_after
from protos import control_plane_pb2 as cp

router = APIRouter(prefix="/v1/fine_tuning", tags=["fine-tuning"])
CP = Annotated[ControlPlane, Depends(control_plane)]
JOB_TYPES = tuple(OPENAI_METHODS)  # sft, dpo
LIST_BATCH = 200
# The events list reads this many of the newest log lines (metric points: all of them, up to the same bound).
EVENT_SOURCE_LIMIT = 10000
_FILE_KINDS = {"sft": "chat rows {\"messages\": [...]}", "dpo": "preference rows {\"input\": {\"messages\"}, "
               "\"preferred_output\", \"non_preferred_output\"}"}


async def _schemas(call: ControlPlane) -> dict[str, dict[str, Any]]:
    """Each job type's config JSON schema (field names, defaults), from the control plane's templates."""
    reply = await call("ListTemplates", cp.ListTemplatesRequest())
    return {t.type: json.loads(t.json_schema or "{}") for t in reply.templates if t.builtin and t.type in JOB_TYPES}


def _default_learning_rates(schemas: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    return {task_type: schema.get("properties", {}).get("learning_rate", {}).get("default")
            for task_type, schema in schemas.items()}


async def _task(call: ControlPlane, job_id: str) -> cp.Task:
    """The job's task; 404 in OpenAI's shape for an unknown job, another user's, or a task of another type."""
    try:
        task = await call("GetTask", cp.GetTaskRequest(task_id=ids.task_id(job_id)))
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        task = None
    if task is None or task.type not in JOB_TYPES:
        raise not_found(f"No fine-tuning job found with id {job_id!r}", "fine_tuning_job_id",
                        "fine_tuning_job_not_found")
    return task


async def _job(call: ControlPlane, task: cp.Task) -> dict[str, Any]:
    return job_object(task, _default_learning_rates(await _schemas(call)).get(task.type))


async def _check_file_fits(call: ControlPlane, file_id: str, param: str, task_type: str, method: str) -> None:
    dataset = await get_dataset(call, file_id, param)
    if dataset.type != task_type:
        raise invalid_request(
            f"{param}: {file_id} ({dataset.name}) holds {dataset.type} data ({_FILE_KINDS[dataset.type]}); method "
            f"{method!r} needs {_FILE_KINDS[task_type]}", param, "invalid_file_format")


@router.post("/jobs", summary="Create a fine-tuning job (method supervised -> sft, dpo -> dpo)")
async def create_job(request: Request, call: CP) -> dict[str, Any]:
    job = parse_job_request(load_json(await request.body()))
    await _check_file_fits(call, job.training_file, "training_file", job.task_type, job.method)
    if job.validation_file:
        await _check_file_fits(call, job.validation_file, "validation_file", job.task_type, job.method)
    schemas = await _schemas(call)
    config = job.config(schemas.get(job.task_type, {}))
    try:
        task = await call("StartTask", cp.StartTaskRequest(type=job.task_type, config_json=json.dumps(config)))
    except grpc.aio.AioRpcError as exc:
        raise OpenAIError.from_rpc(exc, job.params) from None
    return job_object(task, _default_learning_rates(schemas).get(job.task_type))


@router.get("/jobs", summary="Your fine-tuning jobs, newest first (cursor paging: after, limit)")
async def list_jobs(call: CP, after: Annotated[str | None, AfterParam] = None,
                    limit: Annotated[int, LimitParam] = 20) -> dict[str, Any]:
    # ListTasks pages through every type; the jobs are its sft and dpo tasks, so pages are read until one more job
    # than asked for is found (has_more) or the list ends.
    found: list[cp.Task] = []
    request = cp.ListTasksRequest(limit=LIST_BATCH, after_task_id=ids.task_id(after) if after else "")
    while len(found) <= limit:
        try:
            reply = await call("ListTasks", request)
        except grpc.aio.AioRpcError as exc:
            raise OpenAIError.from_rpc(exc, {"task_id": "after", "after_task_id": "after"}) from None
        found.extend(t for t in reply.tasks if t.type in JOB_TYPES)
        if not reply.next_page_token:
            break
        request = cp.ListTasksRequest(limit=LIST_BATCH, page_token=reply.next_page_token)
    rates = _default_learning_rates(await _schemas(call)) if found else {}
    return list_page([job_object(t, rates.get(t.type)) for t in found[:limit]], len(found) > limit)


@router.get("/jobs/{fine_tuning_job_id}", summary="One fine-tuning job")
async def retrieve_job(fine_tuning_job_id: str, call: CP) -> dict[str, Any]:
    return await _job(call, await _task(call, fine_tuning_job_id))


@router.post("/jobs/{fine_tuning_job_id}/cancel", summary="Cancel a queued or running job")
async def cancel_job(fine_tuning_job_id: str, call: CP) -> dict[str, Any]:
    task = await _task(call, fine_tuning_job_id)
    try:
        task = await call("StopTask", cp.StopTaskRequest(task_id=task.id))
    except grpc.aio.AioRpcError as exc:
        raise OpenAIError.from_rpc(exc, {"task_id": "fine_tuning_job_id"}) from None
    return await _job(call, task)


async def _metric_points(call: ControlPlane, task_id: str) -> list[Any]:
    reply = await call("GetTaskMetrics", cp.GetTaskMetricsRequest(task_id=task_id, limit=EVENT_SOURCE_LIMIT))
    return list(reply.points)


@router.get("/jobs/{fine_tuning_job_id}/events",
            summary="The job's events, newest first: status changes, training metrics and log lines")
async def list_events(fine_tuning_job_id: str, call: CP, after: Annotated[str | None, AfterParam] = None,
                      limit: Annotated[int, LimitParam] = 20) -> dict[str, Any]:
    task = await _task(call, fine_tuning_job_id)
    logs = await call("GetTaskLogs", cp.GetTaskLogsRequest(task_id=task.id, limit=EVENT_SOURCE_LIMIT))
    events = newest_first([*status_events(task), *metric_events(task.id, await _metric_points(call, task.id)),
                           *log_events(task.id, list(logs.lines))])
    return page_after(events, after, limit)


@router.get("/jobs/{fine_tuning_job_id}/checkpoints", summary="The job's checkpoints, newest first")
async def list_checkpoints(fine_tuning_job_id: str, call: CP, after: Annotated[str | None, AfterParam] = None,
                           limit: Annotated[int, LimitParam] = 10) -> dict[str, Any]:
    task = await _task(call, fine_tuning_job_id)
    points = await _metric_points(call, task.id) if task.checkpoints else []
    return page_after(checkpoint_objects(task, points), after, limit)

