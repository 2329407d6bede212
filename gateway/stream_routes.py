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
from sse_starlette.sse import EventSourceResponse

from gateway import serializers as ser
from gateway.client import ControlPlane, control_plane
from gateway.errors import api_error_from_rpc, error_body
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


@router.get("/finetune/tasks/{task_id}/logs/stream", tags=["streams"], summary="Live log lines (SSE)")
async def stream_logs(
    task_id: str, call: CP, last_event_id: LastEventId = None,
    after_seq: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> EventSourceResponse:
    start = after_seq if last_event_id is None else last_event_id
    await call("GetTask", cp.GetTaskRequest(task_id=task_id))

    async def events() -> AsyncIterator[Event]:
        stream = await call.stream("StreamTaskLogs", cp.StreamTaskLogsRequest(task_id=task_id, after_seq=start, follow=True))
        try:
            async for line in stream:
                yield {"id": str(line.seq), "data": json.dumps(ser.log_line_to_dict(line), ensure_ascii=False)}
        finally:
            stream.cancel()  # the browser went away: end the gRPC stream too
        yield {"event": "end", "data": json.dumps({"task_id": task_id})}

    return EventSourceResponse(_ending_cleanly(task_id, events()), ping=PING_SECONDS)


@router.get("/finetune/tasks/{task_id}/events/stream", tags=["streams"], summary="Live task updates and metrics (SSE)")
async def stream_events(
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
                yield {"event": "metric", "id": str(point.seq), "data": json.dumps(ser.metric_point_to_dict(point))}
            snapshot = ser.task_to_dict(task)
            if snapshot != previous:
                previous = snapshot
                yield {"event": "task", "data": json.dumps(snapshot, ensure_ascii=False)}
            if snapshot["status"] in TERMINAL:
                yield {"event": "end", "data": json.dumps({"task_id": task_id, "status": snapshot["status"]})}
                return
            await asyncio.sleep(POLL_SECONDS)
            task = await call("GetTask", cp.GetTaskRequest(task_id=task_id))

    return EventSourceResponse(_ending_cleanly(task_id, events()), ping=PING_SECONDS)
