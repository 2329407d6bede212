"""Chat with a succeeded task's model over REST: `POST /api/finetune/tasks/{id}/chat` answers server-sent events
(`token` events as the model generates them, then one `done` with the whole answer; an embedding task answers `done`
alone, with the passages ranked), `DELETE` closes the task's chat session (frees its device).

The first event is read before the response starts, so a bad task, a task that has not succeeded or no free device is
a plain error JSON with its status (404, 409, 503); a failure after that ends the stream with one `event: error`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, AsyncIterator

import grpc
from fastapi import APIRouter, Depends, Request
from sse_starlette.sse import EventSourceResponse

from gateway.client import ControlPlane, control_plane
from gateway.errors import bad_request
from gateway.inputs import openapi_json_body
from gateway.json_body import load_json
from gateway.stream_routes import PING_SECONDS, _ending_cleanly
from protos import common_pb2
from protos import control_plane_pb2 as cp
from protos.chat_input import ChatInput, ChatInputError, parse_chat_input

router = APIRouter(prefix="/api/finetune")
CP = Annotated[ControlPlane, Depends(control_plane)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad input; `error.field` names it"},
    401: {"description": "missing, invalid or expired token"},
    404: {"description": "unknown task (or somebody else's)"},
    409: {"description": "the task has not succeeded, its type has no model to chat with, or an export's source task "
                         "was deleted"},
    503: {"description": "no free device for a chat session (or the control plane is unavailable)"},
}


def chat_event_to_sse(event: common_pb2.ChatEvent) -> dict[str, str]:
    if event.WhichOneof("event") == "token":
        return {"event": "token", "data": json.dumps({"text": event.token}, ensure_ascii=False)}
    done = event.done
    data: dict[str, Any] = {"text": done.text, "model": done.model}
    if done.ranking:
        data["ranking"] = [{"index": item.index, "score": item.score} for item in done.ranking]
    return {"event": "done", "data": json.dumps(data, ensure_ascii=False)}


@router.post(
    "/tasks/{task_id}/chat",
    tags=["chat"],
    summary="Chat with a succeeded task's model (SSE: token events, then done)",
    description="Body `{\"question\", \"passages\": [...], \"model\": \"tuned\" | \"base\", \"max_new_tokens\"}`. The "
    "first call opens a chat session on an agent's free device; later calls reuse it until it is closed or idle for "
    "`BUGAGARIC_CHAT_IDLE_SECONDS`. The prompt is the task's RAG template. For an embedding task, `done` carries "
    "`ranking`: the passages' indices by cosine similarity to the question, best first.",
    responses={**_ERRORS, 200: {"description": "server-sent events", "content": {"text/event-stream": {}}}},
    openapi_extra=openapi_json_body(ChatInput.model_json_schema()),
)
async def chat(task_id: str, request: Request, call: CP) -> EventSourceResponse:
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
               responses=_ERRORS)
async def close_chat(task_id: str, call: CP) -> dict[str, Any]:
    reply = await call("CloseChat", cp.CloseChatRequest(task_id=task_id))
    return {"task_id": task_id, "closed": reply.closed}
