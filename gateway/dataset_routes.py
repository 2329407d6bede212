"""Datasets and models over REST, each one FinetuneService call. The upload streams: the multipart body is parsed as
it arrives and its file relayed to UploadDataset's client stream chunk by chunk, never held whole in memory or on
the gateway's disk."""

from __future__ import annotations

from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Query, Request
from starlette.requests import ClientDisconnect

from gateway import api_models as api, serializers as ser
from gateway.body_limit import max_body_bytes
from gateway.client import ControlPlane, control_plane
from gateway.dataset_upload import FILE_FIELD, TYPE_FIELD, DatasetUploadForm, relay_upload
from gateway.errors import ApiError, api_error_from_rpc, error_response
from gateway.openapi_doc import error_responses
from protos import control_plane_pb2 as cp

router = APIRouter(prefix="/api/finetune")
CP = Annotated[ControlPlane, Depends(control_plane)]
# Room for the multipart framing around the file: boundaries, part headers and the `type` field.
MULTIPART_OVERHEAD_BYTES = 64 * 1024

_DESCRIPTIONS = {
    "e400": "bad input; `error.field` names it (for a bad row: `file`, with the line in the message)",
    "e404": "unknown dataset (or another user's)",
    "e409": "a queued or running task uses the dataset",
    "e413": "the file is larger than the dataset size limit (BUGAGARIC_MAX_DATASET_BYTES)",
}
_UPLOAD_ERRORS = error_responses(400, 401, 413, 503, **_DESCRIPTIONS)
_LIST_ERRORS = error_responses(400, 401, 503)
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
    responses=_UPLOAD_ERRORS,
    openapi_extra=_UPLOAD_BODY,
)
@max_body_bytes(_upload_limit)
async def upload_dataset(request: Request, call: CP) -> api.Dataset:
    form = DatasetUploadForm(request.headers.get("content-type"))
    try:
        reply = await relay_upload(request, call, form)
    except grpc.aio.AioRpcError as exc:
        raise _upload_error(exc) from None
    except ClientDisconnect:
        # The client went away, or the size limit refused the body (its 413 is sent already): nobody reads this.
        return error_response(400, "invalid_argument", "the request body ended early: the client went away")
    return ser.dataset_model(reply)


@router.get("/datasets", tags=["datasets"], summary="Your datasets, newest first", responses=_LIST_ERRORS)
async def list_datasets(
    call: CP,
    task_type: Annotated[str | None, Query(alias="type", description="only this task type: sft, dpo, ...")] = None,
) -> api.DatasetList:
    reply = await call("ListDatasets", cp.ListDatasetsRequest(type=(task_type or "").strip()))
    return api.DatasetList(datasets=[ser.dataset_model(d) for d in reply.datasets])


@router.get("/datasets/{dataset_id}", tags=["datasets"], summary="One dataset with its stats and first rows",
            responses=error_responses(400, 401, 404, 503, **_DESCRIPTIONS))
async def get_dataset(dataset_id: str, call: CP) -> api.DatasetDetail:
    reply = await call("GetDataset", cp.GetDatasetRequest(dataset_id=dataset_id))
    return ser.dataset_detail_model(reply)


@router.delete("/datasets/{dataset_id}", tags=["datasets"], summary="Delete a dataset no active task uses",
               responses=error_responses(400, 401, 404, 409, 503, **_DESCRIPTIONS))
async def delete_dataset(dataset_id: str, call: CP) -> api.Deleted:
    reply = await call("DeleteDataset", cp.DeleteDatasetRequest(dataset_id=dataset_id))
    return api.Deleted(deleted=reply.dataset_id or dataset_id)


@router.get("/models", tags=["models"], summary="The models the agents hold, with the agents that hold each",
            responses=_LIST_ERRORS)
async def list_models(call: CP) -> api.ModelList:
    reply = await call("ListModels", cp.ListModelsRequest())
    return api.ModelList(models=[ser.model_entry_model(m) for m in reply.models])
