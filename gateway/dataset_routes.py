"""Datasets and models over REST, each one FinetuneService call. The upload streams: the multipart body is parsed as
it arrives and its file relayed to UploadDataset's client stream chunk by chunk, never held whole in memory or on
the gateway's disk."""

from __future__ import annotations

from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Query, Request
from starlette.requests import ClientDisconnect

from gateway import serializers as ser
from gateway.body_limit import max_body_bytes
from gateway.client import ControlPlane, control_plane
from gateway.dataset_upload import FILE_FIELD, TYPE_FIELD, DatasetUploadForm
from gateway.errors import ApiError, api_error_from_rpc, error_response
from protos import control_plane_pb2 as cp

router = APIRouter(prefix="/api/finetune")
CP = Annotated[ControlPlane, Depends(control_plane)]
# Room for the multipart framing around the file: boundaries, part headers and the `type` field.
MULTIPART_OVERHEAD_BYTES = 64 * 1024

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad input; `error.field` names it (for a bad row: `file`, with the line in the message)"},
    401: {"description": "missing, invalid or expired token"},
    404: {"description": "unknown dataset (or another user's)"},
    409: {"description": "a queued or running task uses the dataset"},
    413: {"description": "the file is larger than the dataset size limit (BUGAGARIC_MAX_DATASET_BYTES)"},
    503: {"description": "control plane unavailable"},
}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [TYPE_FIELD, FILE_FIELD],
                    "additionalProperties": False,
                    "properties": {
                        TYPE_FIELD: {"type": "string", "description": "the task type whose rows the file holds: "
                                     "sft, dpo, embedding, kbalign. Must come before `file`."},
                        FILE_FIELD: {"type": "string", "format": "binary",
                                     "description": "JSONL (one row a line) or a JSON list (.json)"},
                    },
                },
                "encoding": {FILE_FIELD: {"contentType": "application/octet-stream"}},
            }
        },
    }
}


def _upload_limit(app: Any) -> int:
    return app.state.settings.max_dataset_bytes + MULTIPART_OVERHEAD_BYTES


def _upload_error(exc: grpc.aio.AioRpcError) -> ApiError:
    err = api_error_from_rpc(exc)
    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # past the size limit, not a rate limit
        return ApiError(413, "payload_too_large", err.message, err.field)
    return err


@router.post(
    "/datasets",
    status_code=201,
    tags=["datasets"],
    summary="Upload a dataset (multipart: `type`, then `file`)",
    description="Streamed to the control plane, which checks every row with the type's own validator as it arrives: "
    "a bad row is a 400 naming its line, and nothing is kept. The same bytes uploaded twice are stored once.",
    responses=_ERRORS,
    openapi_extra=_UPLOAD_BODY,
)
@max_body_bytes(_upload_limit)
async def upload_dataset(request: Request, call: CP) -> Any:
    form = DatasetUploadForm(request.headers.get("content-type"))
    upload = None  # opened at the form's first message (the header), so a form refused before its file makes no call

    async def send(messages: list[cp.UploadDatasetRequest]) -> None:
        nonlocal upload
        for message in messages:
            upload = upload or call.upload("UploadDataset")
            await upload.write(message)

    try:
        async for chunk in request.stream():
            await send(form.feed(chunk))
        await send(form.finish())  # raises unless the form had its file, so the call is open
        reply = await upload.finish()
    except grpc.aio.AioRpcError as exc:
        raise _upload_error(exc) from None
    except ClientDisconnect:
        # The client went away, or the size limit refused the body (its 413 is sent already): nobody reads this.
        return error_response(400, "invalid_argument", "the request body ended early: the client went away")
    finally:
        if upload is not None:
            upload.cancel()  # a no-op once answered; else the body broke off or was refused: nothing is kept
    return ser.dataset_to_dict(reply)


@router.get("/datasets", tags=["datasets"], summary="Your datasets, newest first", responses=_ERRORS)
async def list_datasets(
    call: CP,
    task_type: Annotated[str | None, Query(alias="type", description="only this task type: sft, dpo, ...")] = None,
) -> dict[str, Any]:
    reply = await call("ListDatasets", cp.ListDatasetsRequest(type=(task_type or "").strip()))
    return {"datasets": [ser.dataset_to_dict(d) for d in reply.datasets]}


@router.get("/datasets/{dataset_id}", tags=["datasets"], summary="One dataset with its stats and first rows",
            responses=_ERRORS)
async def get_dataset(dataset_id: str, call: CP) -> dict[str, Any]:
    reply = await call("GetDataset", cp.GetDatasetRequest(dataset_id=dataset_id))
    return ser.dataset_to_dict(reply, details=True)


@router.delete("/datasets/{dataset_id}", tags=["datasets"], summary="Delete a dataset no active task uses",
               responses=_ERRORS)
async def delete_dataset(dataset_id: str, call: CP) -> dict[str, Any]:
    reply = await call("DeleteDataset", cp.DeleteDatasetRequest(dataset_id=dataset_id))
    return {"deleted": reply.dataset_id or dataset_id}


@router.get("/models", tags=["models"], summary="The models the agents hold, with the agents that hold each",
            responses={401: _ERRORS[401], 503: _ERRORS[503]})
async def list_models(call: CP) -> dict[str, Any]:
    reply = await call("ListModels", cp.ListModelsRequest())
    return {"models": [ser.model_entry_to_dict(m) for m in reply.models]}
