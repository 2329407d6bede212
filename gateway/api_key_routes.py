"""The caller's API keys over REST, each one AuthService call: create (the key shown in this answer only), list,
revoke. The control plane checks the name and scopes; the gateway only checks the body's JSON types."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from gateway import serializers as ser
from gateway.api_models import ApiModel, Deleted, ErrorResponse, Timestamp
from gateway.client import ControlPlane, control_plane
from gateway.errors import bad_request
from gateway.inputs import json_body_doc, parse_body
from protos import control_plane_pb2 as cp

router = APIRouter(prefix="/api/auth/keys", tags=["auth"])
CP = Annotated[ControlPlane, Depends(control_plane)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad input; `error.field` names it (`name` or `scopes`)"},
    401: {"model": ErrorResponse, "description": "missing, invalid or expired token (or a revoked key)"},
    403: {"model": ErrorResponse, "description": "an API key without the scope this needs (`admin` to create or "
          "revoke keys)"},
    404: {"model": ErrorResponse, "description": "no such key of the caller's"},
    503: {"model": ErrorResponse, "description": "control plane unavailable"},
}
SCOPES_TEXT = "a non-empty subset of read (get, list, logs, downloads), submit (read + start, stop, resume, delete, " \
    "export tasks, datasets, templates, chat) and admin (everything the owner may do, keys included)"


class CreateApiKeyBody(ApiModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"\S", description="what the key is for (1..100 "
                      "characters)")
    scopes: list[str] = Field(min_length=1, description=SCOPES_TEXT)


class ApiKeyInfo(ApiModel):
    """A key as listed: never the key itself, nor its hash."""

    id: str
    name: str
    scopes: list[str]
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    created_at: Timestamp
    last_used_at: Timestamp = Field(description="null until first used; updated at most once a minute")


class CreatedApiKey(ApiKeyInfo):
    key: str = Field(description="the bearer credential (`Authorization: Bearer <key>`), shown this once")


class ApiKeyList(ApiModel):
    keys: list[ApiKeyInfo] = Field(description="newest first")


def _info(key: cp.ApiKey) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "scopes": list(key.scopes), "prefix": key.prefix,
            "created_at": ser.timestamp(key, "created_at"), "last_used_at": ser.timestamp(key, "last_used_at")}


@router.post("", status_code=201, summary="Create an API key (the key is in this answer only)", responses=_ERRORS,
             response_model=CreatedApiKey, openapi_extra=json_body_doc(CreateApiKeyBody))
async def create_api_key(request: Request, call: CP) -> Any:
    body = parse_body(await request.body(), CreateApiKeyBody)
    if not all(isinstance(scope, str) for scope in body["scopes"]):
        raise bad_request("'scopes' must be a list of strings", field="scopes")
    reply = await call("AuthService.CreateApiKey", cp.CreateApiKeyRequest(name=body["name"], scopes=body["scopes"]))
    return {**_info(reply.api_key), "key": reply.key}


@router.get("", summary="The caller's API keys", responses=_ERRORS, response_model=ApiKeyList)
async def list_api_keys(call: CP) -> Any:
    reply = await call("AuthService.ListApiKeys", cp.ListApiKeysRequest())
    return {"keys": [_info(key) for key in reply.api_keys]}


@router.delete("/{key_id}", summary="Revoke one of the caller's API keys (at once)", responses=_ERRORS,
               response_model=Deleted)
async def delete_api_key(key_id: str, call: CP) -> Any:
    reply = await call("AuthService.DeleteApiKey", cp.DeleteApiKeyRequest(id=key_id))
    return {"deleted": reply.id}
