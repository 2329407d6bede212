"""The REST routes of DESIGN.md, each one gRPC call on FinetuneService.

Inputs are checked here before any call; a 400 goes out once the token is known to be valid (gateway.authn).
Live log/metric streams (SSE) are in stream_routes.py.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from gateway import api_models as api, serializers as ser
from gateway.client import ControlPlane, control_plane
from gateway.errors import ApiError, api_error_from_rpc, bad_request
from gateway.inputs import json_body_doc, parse_body, parse_start_body
from gateway.openapi_doc import error_responses
from protos import common_pb2, control_plane_pb2 as cp

router = APIRouter(prefix="/api")
CP = Annotated[ControlPlane, Depends(control_plane)]
# Seqs are stored as SQLite/PostgreSQL signed 64-bit integers; the list offset travels in an int32 proto field.
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
MAX_PAGE_TOKEN_CHARS = 200  # the control plane's tokens are far shorter
SeqParam = Query(ge=0, le=INT64_MAX)
# A dry run loads a tokenizer on an agent: far longer than the other calls' deadline.
VALIDATE_TIMEOUT_SECONDS = 340.0

_ERROR_RESPONSES = error_responses(400, 401, 404, 409, 503, e404="unknown task (or somebody else's)",
                                   e409="the task is in the wrong state")
_LIST_ERRORS = error_responses(400, 401, 503)


@router.get("/health", tags=["system"], summary="Gateway, control plane and agent health",
            description="503 when the control plane is unreachable, or answers but cannot serve (its database or its "
            "token checks do not answer): a probe must not be told ok by a service that times every call out.",
            response_model=api.SystemHealth,
            responses={**error_responses(400), 503: {"model": api.SystemHealth | api.ErrorResponse, "description":
                       "the control plane cannot serve (its health, `status: unavailable`) or is unreachable (error)"}})
async def get_health(call: CP) -> Any:
    try:
        reply = await call("GetSystemHealth", cp.GetSystemHealthRequest())
    except grpc.aio.AioRpcError as e:
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise ApiError(503, "control_plane_unavailable", f"control plane unreachable: {e.details()}") from None
        raise api_error_from_rpc(e) from None
    body = ser.health_model(reply)
    return JSONResponse(ser.to_json(body), status_code=503) if reply.status == "unavailable" else body


@router.post(
    "/finetune/start",
    status_code=201,
    tags=["tasks"],
    summary="Validate and queue a fine-tune task",
    responses=_ERROR_RESPONSES,
    openapi_extra=json_body_doc(api.StartTaskBody),
)
async def start_task(request: Request, call: CP) -> api.Task:
    # Raw bytes, not a body model: our own 400s, and config's JSON types reach the control plane untouched.
    task_type, config = parse_start_body(await request.body())
    reply = await call("StartTask", cp.StartTaskRequest(type=task_type, config_json=json.dumps(config)))
    return ser.task_model(reply)


@router.post(
    "/finetune/validate",
    tags=["tasks"],
    summary="Dry run: check a config and its data on an agent without training",
    description="Always 200 for the user's mistakes: `ok`, the row count, the first 20 problems with line numbers "
    "and field paths, and for LM types token-length statistics against `max_length`.",
    responses=error_responses(400, 401, 503),
    openapi_extra=json_body_doc(api.StartTaskBody),
)
async def validate_task(request: Request, call: CP) -> api.ValidationReport:
    task_type, config = parse_start_body(await request.body())
    request_pb = common_pb2.ValidateTaskRequest(type=task_type, config_json=json.dumps(config))
    reply = await call("ValidateTask", request_pb, timeout=VALIDATE_TIMEOUT_SECONDS)
    return ser.validation_report_model(reply)


@router.get("/finetune/tasks", tags=["tasks"], summary="List tasks, newest first", responses=_LIST_ERRORS)
async def list_tasks(
    call: CP,
    status: Annotated[str | None, Query(description=f"one of {', '.join(ser.TASK_STATUSES)}")] = None,
    task_type: Annotated[str | None, Query(alias="type", description="sft, dpo, embedding, kbalign, ...")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
    page_token: Annotated[str, Query(max_length=MAX_PAGE_TOKEN_CHARS, pattern=r"^[A-Za-z0-9_-]*$",
                                     description="the next_page_token of the previous page: the page after it, fast "
                                     "at any depth and never shifted by tasks added meanwhile")] = "",
) -> api.TaskList:
    status = (status or "").strip().lower()
    if status and status not in ser.TASK_STATUSES:
        raise bad_request(f"query parameter 'status': must be one of {', '.join(ser.TASK_STATUSES)}", "status")
    reply = await call("ListTasks", cp.ListTasksRequest(limit=limit, offset=offset, status=status,
                                                        type=(task_type or "").strip(), page_token=page_token))
    return api.TaskList(tasks=[ser.task_model(t) for t in reply.tasks], total=reply.total, limit=limit, offset=offset,
                        next_page_token=reply.next_page_token or None)


@router.get("/finetune/tasks/{task_id}", tags=["tasks"], summary="One task", responses=_ERROR_RESPONSES)
async def get_task(task_id: str, call: CP) -> api.Task:
    return ser.task_model(await call("GetTask", cp.GetTaskRequest(task_id=task_id)))


@router.get(
    "/finetune/tasks/{task_id}/logs",
    tags=["tasks"],
    summary="The last `limit` log lines, or a page before/after a seq",
    responses=_ERROR_RESPONSES,
)
async def get_task_logs(
    task_id: str,
    call: CP,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    after_seq: Annotated[int | None, SeqParam] = None,
    before_seq: Annotated[int, SeqParam] = 0,
) -> api.TaskLogs:
    if after_seq is not None and before_seq:
        raise bad_request("give either 'after_seq' or 'before_seq', not both", "before_seq")
    # after_seq=0 is meaningful (from the first line), so it is sent only when given.
    request = cp.GetTaskLogsRequest(task_id=task_id, limit=limit, before_seq=before_seq)
    if after_seq is not None:
        request.after_seq = after_seq
    reply = await call("GetTaskLogs", request)
    return api.TaskLogs(task_id=task_id, lines=[ser.log_line_model(x) for x in reply.lines], last_seq=reply.last_seq)


@router.get(
    "/finetune/tasks/{task_id}/metrics",
    tags=["tasks"],
    summary="The task's metric series (points after `after_seq`)",
    responses=_ERROR_RESPONSES,
)
async def get_task_metrics(
    task_id: str,
    call: CP,
    after_seq: Annotated[int, SeqParam] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
) -> api.TaskMetrics:
    reply = await call("GetTaskMetrics", cp.GetTaskMetricsRequest(task_id=task_id, after_seq=after_seq, limit=limit))
    return api.TaskMetrics(task_id=task_id, points=[ser.metric_point_model(p) for p in reply.points])


@router.delete(
    "/finetune/tasks/{task_id}", tags=["tasks"], summary="Stop a queued or running task", responses=_ERROR_RESPONSES
)
async def stop_task(task_id: str, call: CP) -> api.Task:
    return ser.task_model(await call("StopTask", cp.StopTaskRequest(task_id=task_id)))


@router.patch(
    "/finetune/tasks/{task_id}",
    tags=["tasks"],
    summary="Change a queued task's priority",
    description="Body `{\"priority\": <int>}`, in the config's priority range (higher runs first). 409 once the task "
    "has left the queue.",
    responses=_ERROR_RESPONSES,
    openapi_extra=json_body_doc(api.UpdatePriorityBody),
)
async def update_task(task_id: str, request: Request, call: CP) -> api.Task:
    body = parse_body(await request.body(), api.UpdatePriorityBody)
    priority = body["priority"]
    if isinstance(priority, bool) or not -INT32_MAX - 1 <= priority <= INT32_MAX:
        # A bool is an int to Python, and the proto field is 32-bit: the range itself is the control plane's check.
        raise bad_request(f"'priority' must be a JSON integer in range (got {json.dumps(priority)})", "priority")
    reply = await call("UpdateTaskPriority", cp.UpdateTaskPriorityRequest(task_id=task_id, priority=priority))
    return ser.task_model(reply)


@router.post(
    "/finetune/tasks/{task_id}/resume",
    tags=["tasks"],
    summary="A new attempt of a stopped or failed task from its latest checkpoint",
    description="Optional body `{\"checkpoint\": \"<path>\"}` picks one of the task's checkpoints.",
    responses=_ERROR_RESPONSES,
    openapi_extra=json_body_doc(api.ResumeBody, required=False),
)
async def resume_task(task_id: str, request: Request, call: CP) -> api.Task:
    raw = await request.body()
    body = parse_body(raw, api.ResumeBody) if raw.strip() else {}
    reply = await call("ResumeTask", cp.ResumeTaskRequest(task_id=task_id, checkpoint=body.get("checkpoint", "")))
    return ser.task_model(reply)


@router.delete(
    "/finetune/tasks/{task_id}/delete",
    tags=["tasks"],
    summary="Delete a finished task with its events, logs and metrics",
    responses=_ERROR_RESPONSES,
)
async def delete_task(task_id: str, call: CP) -> api.Deleted:
    reply = await call("DeleteTask", cp.DeleteTaskRequest(task_id=task_id))
    return api.Deleted(deleted=reply.task_id or task_id)


@router.get(
    "/finetune/templates",
    tags=["templates"],
    summary="Per type: description, default config, JSON schema, data example",
    responses=_LIST_ERRORS,
)
async def list_templates(call: CP) -> api.TemplateList:
    reply = await call("ListTemplates", cp.ListTemplatesRequest())
    return api.TemplateList(templates=[ser.template_model(t) for t in reply.templates])


@router.post(
    "/finetune/templates",
    status_code=201,
    tags=["templates"],
    summary="Save a named config template of your own",
    responses=_LIST_ERRORS,
    openapi_extra=json_body_doc(api.SaveTemplateBody),
)
async def save_template(request: Request, call: CP) -> api.Template:
    body = parse_body(await request.body(), api.SaveTemplateBody)
    reply = await call(
        "SaveTemplate", cp.SaveTemplateRequest(name=body["name"], type=body["type"], config_json=json.dumps(body["config"]))
    )
    return ser.template_model(reply)


@router.delete("/finetune/templates/{template_id}", tags=["templates"], summary="Delete one of your saved templates",
               responses=error_responses(400, 401, 404, 503, e404="unknown template (or somebody else's)"))
async def delete_template(template_id: str, call: CP) -> api.Deleted:
    reply = await call("DeleteTemplate", cp.DeleteTemplateRequest(template_id=template_id))
    return api.Deleted(deleted=reply.template_id)
