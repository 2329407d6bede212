"""/v1/files: OpenAI files over the dataset store (UploadDataset, ListDatasets, GetDataset, DeleteDataset). The
upload streams like the REST one (gateway.dataset_routes): the multipart body is relayed to the control plane as it
arrives, whose row validator checks every line; a bad row is a 400 naming the file's line, and nothing is kept."""

from __future__ import annotations

from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Request
from starlette.requests import ClientDisconnect

from gateway.body_limit import max_body_bytes
from gateway.client import ControlPlane, control_plane
from gateway.dataset_routes import MULTIPART_OVERHEAD_BYTES
from gateway.dataset_upload import relay_upload
from gateway.openai_api import ids
from gateway.openai_api.errors import OpenAIError, invalid_request, not_found
from gateway.openai_api.file_upload import FINE_TUNE, FileUploadForm
from gateway.openai_api.objects import file_object
from gateway.openai_api.paging import AfterParam, LimitParam, page_after
from protos import control_plane_pb2 as cp

router = APIRouter(prefix="/v1", tags=["files"])
CP = Annotated[ControlPlane, Depends(control_plane)]
FINE_TUNING_TYPES = ("sft", "dpo")
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["purpose", "file"],
    "properties": {"purpose": {"type": "string", "enum": [FINE_TUNE]},
                   "file": {"type": "string", "format": "binary",
                            "description": "JSONL: chat rows {messages} (supervised) or preference rows {input, "
                            "preferred_output, non_preferred_output} (dpo)"}}}}}}}


def _upload_limit(app: Any) -> int:
    return app.state.settings.max_dataset_bytes + MULTIPART_OVERHEAD_BYTES


def _upload_error(exc: grpc.aio.AioRpcError) -> OpenAIError:
    err = OpenAIError.from_rpc(exc, {"name": "file", "type": "file"})
    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # past the size limit, not a rate limit
        return OpenAIError(413, err.message, param="file", code="file_too_large")
    return err


async def get_dataset(call: ControlPlane, file_id: str, param: str = "file_id") -> cp.Dataset:
    """The file's dataset; 404 (or 400 naming `param` when the file is an input of a request) when unknown."""
    try:
        dataset = await call("GetDataset", cp.GetDatasetRequest(dataset_id=ids.dataset_id(file_id)))
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        dataset = None
    if dataset is None or dataset.type not in FINE_TUNING_TYPES:
        message = f"No such File object: {file_id}"
        if param == "file_id":
            raise not_found(message, param, "file_not_found")
        raise invalid_request(f"{param}: {message} (upload it with POST /v1/files, purpose 'fine-tune')", param,
                              "file_not_found")
    return dataset


@router.post("/files", summary="Upload a fine-tuning file (multipart: purpose=fine-tune, file)",
             openapi_extra=_UPLOAD_BODY)
@max_body_bytes(_upload_limit)
async def create_file(request: Request, call: CP) -> Any:
    form = FileUploadForm(request.headers.get("content-type"))
    try:
        reply = await relay_upload(request, call, form)
    except grpc.aio.AioRpcError as exc:
        raise _upload_error(exc) from None
    except ClientDisconnect:
        raise invalid_request("the request body ended early: the client went away") from None
    return file_object(reply)


async def _fine_tuning_files(call: ControlPlane) -> list[dict[str, Any]]:
    reply = await call("ListDatasets", cp.ListDatasetsRequest())
    return [file_object(d) for d in reply.datasets if d.type in FINE_TUNING_TYPES]


@router.get("/files", summary="Your fine-tuning files, newest first")
async def list_files(call: CP, purpose: str | None = None, limit: Annotated[int, LimitParam] = 100,
                     after: Annotated[str | None, AfterParam] = None) -> dict[str, Any]:
    if purpose not in (None, "", FINE_TUNE):
        return page_after([], None, limit)  # no file of another purpose exists here
    return page_after(await _fine_tuning_files(call), after, limit)


@router.get("/files/{file_id}", summary="One file")
async def retrieve_file(file_id: str, call: CP) -> dict[str, Any]:
    return file_object(await get_dataset(call, file_id))


@router.delete("/files/{file_id}", summary="Delete a file no running job uses")
async def delete_file(file_id: str, call: CP) -> dict[str, Any]:
    await get_dataset(call, file_id)
    try:
        await call("DeleteDataset", cp.DeleteDatasetRequest(dataset_id=ids.dataset_id(file_id)))
    except grpc.aio.AioRpcError as exc:
        raise OpenAIError.from_rpc(exc, {"dataset_id": "file_id"}) from None
    return {"id": file_id, "object": "file", "deleted": True}
