"""Live streams for the console as server-sent events (sse-starlette), resumable with Last-Event-ID.

- logs/stream: every log line (`id` = its seq), then `event: end` once the task has ended.
- events/stream: `event: task` whenever the task changes (status, progress), `event: metric` for each metric
  point (`id` = its seq), then `event: end`.
The task is read once before streaming, so a missing token or an unknown task is a plain 401/404, not a broken stream.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from sse_starlette.sse import EventSourceResponse

from gateway import serializers as ser
from gateway.client import ControlPlane, control_plane
from gateway.errors import bad_request
from protos import control_plane_pb2 as cp

router = APIRouter(prefix="/api")
CP = Annotated[ControlPlane, Depends(control_plane)]
TERMINAL = {"succeeded", "failed", "stopped"}
POLL_SECONDS = 1.0
PING_SECONDS = 15
_TOKEN = Query(description="the bearer token, for browsers' EventSource (which cannot send headers)")


def _resume_point(request: Request, after_seq: int) -> int:
    """Last-Event-ID (sent by a reconnecting EventSource) wins over the query's after_seq."""
    last_event_id = request.headers.get("last-event-id")
    if not last_event_id:
        return after_seq
    try:
        return max(0, int(last_event_id))
    except ValueError:
        raise bad_request(f"Last-Event-ID must be a seq number, got {last_event_id!r}", "Last-Event-ID") from None


@router.get("/finetune/tasks/{task_id}/logs/stream", tags=["streams"], summary="Live log lines (SSE)")
async def stream_logs(
    task_id: str, request: Request, call: CP,
    after_seq: Annotated[int, Query(ge=0)] = 0, access_token: Annotated[str | None, _TOKEN] = None,
) -> EventSourceResponse:
    start = _resume_point(request, after_seq)
    await call("GetTask", cp.GetTaskRequest(task_id=task_id))

    async def events() -> AsyncIterator[dict[str, Any]]:
        stream = await call.stream("StreamTaskLogs", cp.StreamTaskLogsRequest(task_id=task_id, after_seq=start, follow=True))
        try:
            async for line in stream:
                yield {"id": str(line.seq), "data": json.dumps(ser.log_line_to_dict(line), ensure_ascii=False)}
        finally:
            stream.cancel()  # the browser went away: end the gRPC stream too
        yield {"event": "end", "data": json.dumps({"task_id": task_id})}

    return EventSourceResponse(events(), ping=PING_SECONDS)


@router.get("/finetune/tasks/{task_id}/events/stream", tags=["streams"], summary="Live task updates and metrics (SSE)")
async def stream_events(
    task_id: str, request: Request, call: CP,
    after_seq: Annotated[int, Query(ge=0, description="metric seq to resume after")] = 0,
    access_token: Annotated[str | None, _TOKEN] = None,
) -> EventSourceResponse:
    start = _resume_point(request, after_seq)
    first = await call("GetTask", cp.GetTaskRequest(task_id=task_id))

    async def events() -> AsyncIterator[dict[str, Any]]:
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

    return EventSourceResponse(events(), ping=PING_SECONDS)
