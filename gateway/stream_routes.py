"""Live streams for the console as server-sent events (sse-starlette), resumable with Last-Event-ID.

- logs/stream: every log line (`id` = its seq), then `event: end` once the task has ended.
- events/stream: `event: task` whenever the task changes (status, progress), `event: metric` for each metric
  point (`id` = its seq), then `event: end`.
The task is read once before streaming, so a bad token or an unknown task is a plain 401/404, not a broken stream.
A failure once streaming has begun (the token revoked by a logout, the task deleted, the control plane gone) is sent
as one `event: error` whose data is the error JSON, and the stream ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated, Any, AsyncIterator

import grpc
from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse
from sse_starlette.sse import EventSourceResponse

from gateway import api_models as api, serializers as ser
from gateway.client import ControlPlane, control_plane
from gateway.errors import api_error_from_rpc, error_body
from gateway.openapi_doc import error_responses, event_stream_response
from gateway.routes import INT64_MAX
from protos import control_plane_pb2 as cp

log = logging.getLogger("gateway")
router = APIRouter(prefix="/api")
CP = Annotated[ControlPlane, Depends(control_plane)]
TERMINAL = {"succeeded", "failed", "stopped"}
POLL_SECONDS = 1.0
PING_SECONDS = 15
Event = dict[str, Any]
# Sent by a reconnecting EventSource: the `id` of the last event it saw, which wins over the query's after_seq.
LastEventId = Annotated[
    int | None,
    Header(alias="Last-Event-ID", ge=0, le=INT64_MAX, description="resume after this seq (wins over after_seq)"),
]


async def _ending_cleanly(task_id: str, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """The stream's events, then, if producing them failed, one `error` event with the error JSON."""
    try:
        async for event in events:
            yield event
    except grpc.aio.AioRpcError as exc:
        err = api_error_from_rpc(exc)
        log.info("stream of task %s ended by the control plane: %s: %s", task_id, err.code, err.message)
        yield {"event": "error", "data": json.dumps(error_body(err.code, err.message, err.field))}
    except Exception as exc:  # never a broken chunked response
        log.exception("stream of task %s failed", task_id)
        yield {"event": "error", "data": json.dumps(error_body("internal", f"internal gateway error: {type(exc).__name__}"))}


_ERRORS = error_responses(400, 401, 404, 503, e404="unknown task (or somebody else's)")
_ERROR_EVENT = "`event: error` (an ErrorResponse) if the stream fails once begun"


@router.get("/finetune/tasks/{task_id}/logs/stream", tags=["streams"], summary="Live log lines (SSE)",
            response_class=StreamingResponse,
            responses={**_ERRORS, **event_stream_response(
                "server-sent events: each log line (a LogLine, `id` = its seq), then `event: end` (a LogStreamEnd); "
                f"{_ERROR_EVENT}", api.LogLine, api.LogStreamEnd, api.ErrorResponse)})
async def stream_task_logs(
    task_id: str, call: CP, last_event_id: LastEventId = None,
    after_seq: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> EventSourceResponse:
    start = after_seq if last_event_id is None else last_event_id
    await call("GetTask", cp.GetTaskRequest(task_id=task_id))

    async def events() -> AsyncIterator[Event]:
        stream = await call.stream("StreamTaskLogs", cp.StreamTaskLogsRequest(task_id=task_id, after_seq=start, follow=True))
        try:
            async for line in stream:
                yield {"id": str(line.seq), "data": json.dumps(ser.to_json(ser.log_line_model(line)), ensure_ascii=False)}
        finally:
            stream.cancel()  # the browser went away: end the gRPC stream too
        yield {"event": "end", "data": json.dumps(ser.to_json(api.LogStreamEnd(task_id=task_id)))}

    return EventSourceResponse(_ending_cleanly(task_id, events()), ping=PING_SECONDS)


@router.get("/finetune/tasks/{task_id}/events/stream", tags=["streams"], summary="Live task updates and metrics (SSE)",
            response_class=StreamingResponse,
            responses={**_ERRORS, **event_stream_response(
                "server-sent events: `event: task` (a Task) whenever the task changes, `event: metric` (a MetricPoint, "
                f"`id` = its seq) for each metric point, then `event: end` (an EventStreamEnd); {_ERROR_EVENT}",
                api.Task, api.MetricPoint, api.EventStreamEnd, api.ErrorResponse)})
async def stream_task_events(
    task_id: str, call: CP, last_event_id: LastEventId = None,
    after_seq: Annotated[int, Query(ge=0, le=INT64_MAX, description="metric seq to resume after")] = 0,
) -> EventSourceResponse:
    start = after_seq if last_event_id is None else last_event_id
    first = await call("GetTask", cp.GetTaskRequest(task_id=task_id))

    async def events() -> AsyncIterator[Event]:
        last_metric, task, previous = start, first, None
        while True:
            points = await call("GetTaskMetrics", cp.GetTaskMetricsRequest(task_id=task_id, after_seq=last_metric))
            for point in points.points:
                last_metric = point.seq
                yield {"event": "metric", "id": str(point.seq),
                       "data": json.dumps(ser.to_json(ser.metric_point_model(point)))}
            snapshot = ser.to_json(ser.task_model(task))
            if snapshot != previous:
                previous = snapshot
                yield {"event": "task", "data": json.dumps(snapshot, ensure_ascii=False)}
            if snapshot["status"] in TERMINAL:
                end = api.EventStreamEnd(task_id=task_id, status=snapshot["status"])
                yield {"event": "end", "data": json.dumps(ser.to_json(end))}
                return
            await asyncio.sleep(POLL_SECONDS)
            task = await call("GetTask", cp.GetTaskRequest(task_id=task_id))

    return EventSourceResponse(_ending_cleanly(task_id, events()), ping=PING_SECONDS)
