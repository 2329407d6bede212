"""Accounts over REST: login/logout/me, and admin user management. The control plane owns users and tokens."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from gateway import serializers as ser
from gateway.client import ControlPlane, control_plane
from gateway.inputs import object_schema, openapi_json_body, parse_object_body
from protos import control_plane_pb2 as cp

router = APIRouter(prefix="/api")
CP = Annotated[ControlPlane, Depends(control_plane)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad input; `error.field` names it"},
    401: {"description": "wrong credentials, or a missing/expired token"},
    403: {"description": "admins only"},
    429: {"description": "too many login attempts for this user"},
}


def _body_schema(**fields: str) -> dict[str, Any]:
    return openapi_json_body(object_schema(**fields))


@router.post("/auth/login", tags=["auth"], summary="Log in; returns a bearer token", responses=_ERRORS,
             openapi_extra=_body_schema(username="string", password="string"))
async def login(request: Request, call: CP) -> dict[str, Any]:
    body = parse_object_body(await request.body(), {"username": str, "password": str})
    reply = await call("AuthService.Login", cp.LoginRequest(username=body["username"], password=body["password"]))
    return {"token": reply.token, "expires_at": ser.timestamp(reply, "expires_at"), "user": ser.user_to_dict(reply.user)}


@router.post("/auth/logout", tags=["auth"], summary="Revoke the token this request carries", responses=_ERRORS)
async def logout(call: CP) -> dict[str, Any]:
    await call("AuthService.Logout", cp.LogoutRequest())
    return {"ok": True}


@router.get("/auth/me", tags=["auth"], summary="Who the token belongs to", responses=_ERRORS)
async def me(call: CP) -> dict[str, Any]:
    user = await call("AuthService.WhoAmI", cp.WhoAmIRequest())
    return {"username": user.username, "role": user.role}


@router.get("/users", tags=["users"], summary="List users (admins)", responses=_ERRORS)
async def list_users(call: CP) -> dict[str, Any]:
    reply = await call("AuthService.ListUsers", cp.ListUsersRequest())
    return {"users": [ser.user_to_dict(u) for u in reply.users]}


@router.post("/users", status_code=201, tags=["users"], summary="Create a user (admins)", responses=_ERRORS,
             openapi_extra=_body_schema(username="string", password="string", role="string"))
async def create_user(request: Request, call: CP) -> dict[str, Any]:
    body = parse_object_body(await request.body(), {"username": str, "password": str, "role": str}, optional=("role",))
    user = await call(
        "AuthService.CreateUser", cp.CreateUserRequest(username=body["username"], password=body["password"], role=body.get("role", "user"))
    )
    return ser.user_to_dict(user)


@router.delete("/users/{username}", tags=["users"], summary="Delete a user (admins)", responses=_ERRORS)
async def delete_user(username: str, call: CP) -> dict[str, Any]:
    reply = await call("AuthService.DeleteUser", cp.DeleteUserRequest(username=username))
    return {"deleted": reply.username}
