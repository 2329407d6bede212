"""Chat with a succeeded task's model over REST: `POST /api/finetune/tasks/{id}/chat` answers server-sent events
(`token` events as the model generates them, then one `done` with the whole answer; an embedding task answers `done`
alone, with the passages ranked), `DELETE` closes the task's chat session (frees its device).

The first event is read before the response starts, so a bad task, a task that has not succeeded or no free device is
a plain error JSON with its status (404, 409, 503); a failure after that ends the stream with one `event: error`.
"""

from __future__ import annotations

import json
from typing import Annotated, AsyncIterator

import grpc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from sse_starlette.sse import EventSourceResponse

from gateway import api_models as api, serializers as ser
from gateway.client import ControlPlane, control_plane
from gateway.errors import bad_request
from gateway.inputs import json_body_doc
from gateway.json_body import load_json
from gateway.openapi_doc import error_responses, event_stream_response
from gateway.stream_routes import PING_SECONDS, _ending_cleanly
from protos import common_pb2
from protos import control_plane_pb2 as cp
from protos.chat_input import ChatInput, ChatInputError, parse_chat_input

router = APIRouter(prefix="/api/finetune")
CP = Annotated[ControlPlane, Depends(control_plane)]

_ERRORS = error_responses(
    400, 401, 404, 409, 503,
    e404="unknown task (or somebody else's)",
    e409="the task has not succeeded, its type has no model to chat with, or an export's source task was deleted",
    e503="no free device for a chat session (or the control plane is unavailable)",
)


def chat_event_to_sse(event: common_pb2.ChatEvent) -> dict[str, str]:
    model = ser.chat_event_model(event)
    name = "token" if isinstance(model, api.ChatToken) else "done"
    return {"event": name, "data": json.dumps(ser.to_json(model, exclude_unset=True), ensure_ascii=False)}


@router.post(
    "/tasks/{task_id}/chat",
    tags=["chat"],
    summary="Chat with a succeeded task's model (SSE: token events, then done)",
    description="Body `{\"question\", \"passages\": [...], \"model\": \"tuned\" | \"base\", \"max_new_tokens\"}`. The "
    "first call opens a chat session on an agent's free device; later calls reuse it until it is closed or idle for "
    "`BUGAGARIC_CHAT_IDLE_SECONDS`. The prompt is the task's RAG template. For an embedding task, `done` carries "
    "`ranking`: the passages' indices by cosine similarity to the question, best first.",
    response_class=StreamingResponse,
    responses={**_ERRORS, **event_stream_response(
        "server-sent events: `event: token` (a ChatToken) as the model generates, then one `event: done` (a ChatDone); "
        "`event: error` (an ErrorResponse) if the stream fails once begun", api.ChatToken, api.ChatDone, api.ErrorResponse)},
    openapi_extra=json_body_doc(ChatInput),
)
async def chat_with_task(task_id: str, request: Request, call: CP) -> EventSourceResponse:
    try:
        asked = parse_chat_input(load_json(await request.body()))
    except ChatInputError as exc:
        raise bad_request(exc.message, exc.field or None) from None
    stream = await call.stream("Chat", cp.ChatRequest(task_id=task_id, question=asked.question, passages=asked.passages,
                                                      model=asked.model, max_new_tokens=asked.max_new_tokens))
    events = stream.__aiter__()
    try:
        first = await events.__anext__()  # errors before any event are plain HTTP errors (the handlers map them)
    except StopAsyncIteration:
        first = None
    except grpc.aio.AioRpcError:
        stream.cancel()
        raise

    async def relay() -> AsyncIterator[dict[str, str]]:
        try:
            if first is not None:
                yield chat_event_to_sse(first)
            async for event in events:
                yield chat_event_to_sse(event)
        finally:
            stream.cancel()  # the browser went away: the model stops with the stream

    return EventSourceResponse(_ending_cleanly(task_id, relay()), ping=PING_SECONDS)


@router.delete("/tasks/{task_id}/chat", tags=["chat"], summary="Close the task's chat session (frees its device)",
               responses=error_responses(400, 401, 404, 503, e404="unknown task (or somebody else's)"))
async def close_chat(task_id: str, call: CP) -> api.ChatClosed:
    reply = await call("CloseChat", cp.CloseChatRequest(task_id=task_id))
    return api.ChatClosed(task_id=task_id, closed=reply.closed)
