"""A task's outputs over REST: its files, one file or the final model as a download, and an export task.

Downloads relay the control plane's FileChunk stream as it arrives (never buffered whole). The first message is read
before the response starts, so an unknown task, a path outside the task's directory or a gone agent is still a plain
error JSON with its status; a failure after that can only break the transfer off, which the client sees as an
incomplete download (the connection closes without the chunked body's end).
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, AsyncIterator
from urllib.parse import quote

import grpc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from gateway import api_models as api, serializers as ser
from gateway.client import ControlPlane, control_plane
from gateway.errors import bad_request
from gateway.inputs import json_body_doc, parse_body
from gateway.openapi_doc import download_response, error_responses
from protos import control_plane_pb2 as cp

log = logging.getLogger("gateway")
router = APIRouter(prefix="/api/finetune")
CP = Annotated[ControlPlane, Depends(control_plane)]
_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]")

_ERRORS = error_responses(
    400, 401, 404, 409, 503,
    e400="bad input; `error.field` names it (a path leaving the task's directory: `path`)",
    e404="unknown task or file",
    e409="the task is in the wrong state (e.g. no final model yet)",
    e503="control plane or the task's agent unavailable",
)


def attachment(filename: str) -> str:
    """A Content-Disposition naming the download: an ASCII-only fallback, and the exact name in RFC 5987 form."""
    fallback = _UNSAFE_IN_FILE_NAME.sub("_", filename).strip(".") or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def _download(call: ControlPlane, rpc: str, request: Any, media_type: str, filename: str) -> StreamingResponse:
    stream = await call.stream(rpc, request)
    try:
        first = await stream.read()  # an error here is the error JSON (the handlers map AioRpcError)
    except BaseException:
        stream.cancel()
        raise

    async def body() -> AsyncIterator[bytes]:
        message = first
        try:
            while message is not grpc.aio.EOF:
                if message.data:
                    yield message.data
                message = await stream.read()
        except grpc.aio.AioRpcError as exc:
            log.warning("download %s %s broke off: %s: %s", rpc, filename, exc.code().name, exc.details())
            raise  # the response has started: only closing the connection tells the client it is incomplete
        finally:
            stream.cancel()  # the client went away: end the gRPC stream too

    return StreamingResponse(body(), media_type=media_type, headers={"Content-Disposition": attachment(filename)})


@router.get("/tasks/{task_id}/artifacts", tags=["artifacts"], summary="The files of a task's output directory",
            description="`source` says where they come from: the task's agent, or the published model once the "
            "agent is gone.", responses=_ERRORS)
async def list_artifacts(task_id: str, call: CP) -> api.ArtifactList:
    reply = await call("ListArtifacts", cp.ListArtifactsRequest(task_id=task_id))
    return api.ArtifactList(artifacts=[ser.artifact_model(a) for a in reply.artifacts], source=reply.source)


@router.get(
    "/tasks/{task_id}/artifacts/{path:path}",
    tags=["artifacts"],
    summary="Download one file of a task's output directory",
    description="`path` is relative to the task's output directory and may contain `/`; one that leaves it is a 400.",
    responses={**_ERRORS, **download_response("application/octet-stream", "the file")},
    response_class=StreamingResponse,
)
async def download_artifact(task_id: str, path: str, call: CP) -> StreamingResponse:
    if not path.strip("/"):
        raise bad_request("path parameter 'path' must name a file of the task (see its artifacts)", "path")
    name = path.rstrip("/").rsplit("/", 1)[-1]
    request = cp.DownloadArtifactRequest(task_id=task_id, path=path)
    return await _download(call, "DownloadArtifact", request, "application/octet-stream", name)


@router.get(
    "/tasks/{task_id}/model",
    tags=["artifacts"],
    summary="Download the task's final model directory as one tar",
    description="Without the checkpoints; from the blob store once published, else from the task's agent.",
    responses={**_ERRORS, **download_response("application/x-tar", "a tar archive")},
    response_class=StreamingResponse,
)
async def download_model(task_id: str, call: CP) -> StreamingResponse:
    request = cp.DownloadModelRequest(task_id=task_id)
    return await _download(call, "DownloadModel", request, "application/x-tar", f"{task_id}-model.tar")


@router.post(
    "/tasks/{task_id}/export",
    status_code=201,
    tags=["artifacts"],
    summary="Queue an export task: the LoRA adapter merged into its base model, or the model packaged as it is",
    description="Optional body `{\"merge_lora\": true, \"dtype\": \"auto\"}`; answers the new task (type `export`).",
    responses=_ERRORS,
    openapi_extra=json_body_doc(api.ExportBody, required=False),
)
async def export_task(task_id: str, request: Request, call: CP) -> api.Task:
    raw = await request.body()
    body = parse_body(raw, api.ExportBody) if raw.strip() else {}
    export = cp.ExportTaskRequest(task_id=task_id, dtype=body.get("dtype", ""))
    if "merge_lora" in body:
        export.merge_lora = body["merge_lora"]
    return ser.task_model(await call("ExportTask", export))
