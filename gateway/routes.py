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

from gateway import serializers as ser
from gateway.client import ControlPlane, control_plane
from gateway.errors import ApiError, api_error_from_rpc, bad_request
from gateway.inputs import StartTaskBody, object_schema, openapi_json_body, parse_object_body, parse_start_body
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

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad input; `error.field` names it"},
    401: {"description": "missing, invalid or expired token"},
    404: {"description": "unknown task"},
    409: {"description": "the task is in the wrong state"},
    503: {"description": "control plane unavailable"},
}


@router.get("/health", tags=["system"], summary="Gateway, control plane and agent health",
            description="503 when the control plane is unreachable, or answers but cannot serve (its database or its "
            "token checks do not answer): a probe must not be told ok by a service that times every call out.")
async def health(call: CP) -> Any:
    try:
        reply = await call("GetSystemHealth", cp.GetSystemHealthRequest())
    except grpc.aio.AioRpcError as e:
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise ApiError(503, "control_plane_unavailable", f"control plane unreachable: {e.details()}") from None
        raise api_error_from_rpc(e) from None
    body = ser.health_to_dict(reply)
    return JSONResponse(body, status_code=503) if reply.status == "unavailable" else body


@router.post(
    "/finetune/start",
    status_code=201,
    tags=["tasks"],
    summary="Validate and queue a fine-tune task",
    responses=_ERROR_RESPONSES,
    openapi_extra=openapi_json_body(StartTaskBody.model_json_schema()),
)
async def start_task(request: Request, call: CP) -> dict[str, Any]:
    # Raw bytes, not a body model: our own 400s, and config's JSON types reach the control plane untouched.
    task_type, config = parse_start_body(await request.body())
    reply = await call("StartTask", cp.StartTaskRequest(type=task_type, config_json=json.dumps(config)))
    return ser.task_to_dict(reply)


@router.post(
    "/finetune/validate",
    tags=["tasks"],
    summary="Dry run: check a config and its data on an agent without training",
    description="Always 200 for the user's mistakes: `ok`, the row count, the first 20 problems with line numbers "
    "and field paths, and for LM types token-length statistics against `max_length`.",
    responses={503: _ERROR_RESPONSES[503]},
    openapi_extra=openapi_json_body(StartTaskBody.model_json_schema()),
)
async def validate_task(request: Request, call: CP) -> dict[str, Any]:
    task_type, config = parse_start_body(await request.body())
    request_pb = common_pb2.ValidateTaskRequest(type=task_type, config_json=json.dumps(config))
    reply = await call("ValidateTask", request_pb, timeout=VALIDATE_TIMEOUT_SECONDS)
    return ser.validation_report_to_dict(reply)


@router.get("/finetune/tasks", tags=["tasks"], summary="List tasks, newest first", responses=_ERROR_RESPONSES)
async def list_tasks(
    call: CP,
    status: Annotated[str | None, Query(description=f"one of {', '.join(ser.TASK_STATUSES)}")] = None,
    task_type: Annotated[str | None, Query(alias="type", description="sft, dpo, embedding, kbalign, ...")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
    page_token: Annotated[str, Query(max_length=MAX_PAGE_TOKEN_CHARS, pattern=r"^[A-Za-z0-9_-]*$",
                                     description="the next_page_token of the previous page: the page after it, fast "
                                     "at any depth and never shifted by tasks added meanwhile")] = "",
) -> dict[str, Any]:
    status = (status or "").strip().lower()
    if status and status not in ser.TASK_STATUSES:
        raise bad_request(f"query parameter 'status': must be one of {', '.join(ser.TASK_STATUSES)}", "status")
    reply = await call("ListTasks", cp.ListTasksRequest(limit=limit, offset=offset, status=status,
                                                        type=(task_type or "").strip(), page_token=page_token))
    return {"tasks": [ser.task_to_dict(t) for t in reply.tasks], "total": reply.total, "limit": limit, "offset": offset,
            "next_page_token": reply.next_page_token or None}


@router.get("/finetune/tasks/{task_id}", tags=["tasks"], summary="One task", responses=_ERROR_RESPONSES)
async def get_task(task_id: str, call: CP) -> dict[str, Any]:
    return ser.task_to_dict(await call("GetTask", cp.GetTaskRequest(task_id=task_id)))


@router.get(
    "/finetune/tasks/{task_id}/logs",
    tags=["tasks"],
    summary="The last `limit` log lines, or a page before/after a seq",
    responses=_ERROR_RESPONSES,
)
async def get_logs(
    task_id: str,
    call: CP,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    after_seq: Annotated[int | None, SeqParam] = None,
    before_seq: Annotated[int, SeqParam] = 0,
) -> dict[str, Any]:
    if after_seq is not None and before_seq:
        raise bad_request("give either 'after_seq' or 'before_seq', not both", "before_seq")
    # after_seq=0 is meaningful (from the first line), so it is sent only when given.
    request = cp.GetTaskLogsRequest(task_id=task_id, limit=limit, before_seq=before_seq)
    if after_seq is not None:
        request.after_seq = after_seq
    reply = await call("GetTaskLogs", request)
    return {"task_id": task_id, "lines": [ser.log_line_to_dict(x) for x in reply.lines], "last_seq": reply.last_seq}


@router.get(
    "/finetune/tasks/{task_id}/metrics",
    tags=["tasks"],
    summary="The task's metric series (points after `after_seq`)",
    responses=_ERROR_RESPONSES,
)
async def get_metrics(
    task_id: str,
    call: CP,
    after_seq: Annotated[int, SeqParam] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
) -> dict[str, Any]:
    reply = await call("GetTaskMetrics", cp.GetTaskMetricsRequest(task_id=task_id, after_seq=after_seq, limit=limit))
    return {"task_id": task_id, "points": [ser.metric_point_to_dict(p) for p in reply.points]}


@router.delete(
    "/finetune/tasks/{task_id}", tags=["tasks"], summary="Stop a queued or running task", responses=_ERROR_RESPONSES
)
async def stop_task(task_id: str, call: CP) -> dict[str, Any]:
    return ser.task_to_dict(await call("StopTask", cp.StopTaskRequest(task_id=task_id)))


@router.patch(
    "/finetune/tasks/{task_id}",
    tags=["tasks"],
    summary="Change a queued task's priority",
    description="Body `{\"priority\": <int>}`, in the config's priority range (higher runs first). 409 once the task "
    "has left the queue.",
    responses=_ERROR_RESPONSES,
    openapi_extra=openapi_json_body(object_schema(priority="integer")),
)
async def update_task(task_id: str, request: Request, call: CP) -> dict[str, Any]:
    body = parse_object_body(await request.body(), {"priority": int})
    priority = body["priority"]
    if isinstance(priority, bool) or not -INT32_MAX - 1 <= priority <= INT32_MAX:
        # A bool is an int to Python, and the proto field is 32-bit: the range itself is the control plane's check.
        raise bad_request(f"'priority' must be a JSON integer in range (got {json.dumps(priority)})", "priority")
    reply = await call("UpdateTaskPriority", cp.UpdateTaskPriorityRequest(task_id=task_id, priority=priority))
    return ser.task_to_dict(reply)


@router.post(
    "/finetune/tasks/{task_id}/resume",
    tags=["tasks"],
    summary="A new attempt of a stopped or failed task from its latest checkpoint",
    description="Optional body `{\"checkpoint\": \"<path>\"}` picks one of the task's checkpoints.",
    responses=_ERROR_RESPONSES,
)
async def resume_task(task_id: str, request: Request, call: CP) -> dict[str, Any]:
    raw = await request.body()
    body = parse_object_body(raw, {"checkpoint": str}, optional=("checkpoint",)) if raw.strip() else {}
    reply = await call("ResumeTask", cp.ResumeTaskRequest(task_id=task_id, checkpoint=body.get("checkpoint", "")))
    return ser.task_to_dict(reply)


@router.delete(
    "/finetune/tasks/{task_id}/delete",
    tags=["tasks"],
    summary="Delete a finished task with its events, logs and metrics",
    responses=_ERROR_RESPONSES,
)
async def delete_task(task_id: str, call: CP) -> dict[str, Any]:
    reply = await call("DeleteTask", cp.DeleteTaskRequest(task_id=task_id))
    return {"deleted": reply.task_id or task_id}


@router.get(
    "/finetune/templates",
    tags=["templates"],
    summary="Per type: description, default config, JSON schema, data example",
    responses={503: _ERROR_RESPONSES[503]},
)
async def list_templates(call: CP) -> dict[str, Any]:
    reply = await call("ListTemplates", cp.ListTemplatesRequest())
    return {"templates": [ser.template_to_dict(t) for t in reply.templates]}


@router.post(
    "/finetune/templates",
    status_code=201,
    tags=["templates"],
    summary="Save a named config template of your own",
    responses=_ERROR_RESPONSES,
    openapi_extra=openapi_json_body(object_schema(name="string", type="string", config="object")),
)
async def save_template(request: Request, call: CP) -> dict[str, Any]:
    body = parse_object_body(await request.body(), {"name": str, "type": str, "config": dict})
    reply = await call(
        "SaveTemplate", cp.SaveTemplateRequest(name=body["name"], type=body["type"], config_json=json.dumps(body["config"]))
    )
    return ser.template_to_dict(reply)


@router.delete("/finetune/templates/{template_id}", tags=["templates"], summary="Delete one of your saved templates",
               responses=_ERROR_RESPONSES)
async def delete_template(template_id: str, call: CP) -> dict[str, Any]:
    reply = await call("DeleteTemplate", cp.DeleteTemplateRequest(template_id=template_id))
    return {"deleted": reply.template_id}
