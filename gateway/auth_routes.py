"""Accounts over REST: login/logout/me, and admin user management. The control plane owns users and tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from gateway import api_models as api, serializers as ser
from gateway.client import ControlPlane, control_plane
from gateway.inputs import json_body_doc, parse_body
from gateway.openapi_doc import error_responses
from protos import control_plane_pb2 as cp

router = APIRouter(prefix="/api")
CP = Annotated[ControlPlane, Depends(control_plane)]
_ADMIN_ERRORS = error_responses(400, 401, 403, 503, e403="admins only")


@router.post("/auth/login", tags=["auth"], summary="Log in; returns a bearer token",
             responses=error_responses(400, 401, 429, 503, e401="wrong credentials",
                                       e429="too many login attempts for this user; `Retry-After` says when to retry"),
             openapi_extra=json_body_doc(api.LoginBody))
async def login(request: Request, call: CP) -> api.LoginReply:
    body = parse_body(await request.body(), api.LoginBody)
    reply = await call("AuthService.Login", cp.LoginRequest(username=body["username"], password=body["password"]))
    return api.LoginReply(token=reply.token, expires_at=ser.timestamp(reply, "expires_at"), user=ser.user_model(reply.user))


@router.post("/auth/logout", tags=["auth"], summary="Revoke the token this request carries",
             responses=error_responses(400, 401, 503))
async def logout(call: CP) -> api.OkReply:
    await call("AuthService.Logout", cp.LogoutRequest())
    return api.OkReply(ok=True)


@router.get("/auth/me", tags=["auth"], summary="Who the token belongs to", responses=error_responses(400, 401, 503))
async def who_am_i(call: CP) -> api.CurrentUser:
    user = await call("AuthService.WhoAmI", cp.WhoAmIRequest())
    return api.CurrentUser(username=user.username, role=user.role)


@router.get("/users", tags=["users"], summary="List users (admins)", responses=_ADMIN_ERRORS)
async def list_users(call: CP) -> api.UserList:
    reply = await call("AuthService.ListUsers", cp.ListUsersRequest())
    return api.UserList(users=[ser.user_model(u) for u in reply.users])


@router.post("/users", status_code=201, tags=["users"], summary="Create a user (admins)",
             responses=error_responses(400, 401, 403, 409, 503, e403="admins only", e409="the username is taken"),
             openapi_extra=json_body_doc(api.CreateUserBody))
async def create_user(request: Request, call: CP) -> api.User:
    body = parse_body(await request.body(), api.CreateUserBody)
    user = await call(
        "AuthService.CreateUser", cp.CreateUserRequest(username=body["username"], password=body["password"], role=body.get("role", "user"))
    )
    return ser.user_model(user)


@router.delete("/users/{username}", tags=["users"], summary="Delete a user (admins)",
               responses=error_responses(400, 401, 403, 404, 409, 503, e403="admins only", e404="unknown user",
                                         e409="an admin cannot delete their own account"))
async def delete_user(username: str, call: CP) -> api.Deleted:
    reply = await call("AuthService.DeleteUser", cp.DeleteUserRequest(username=username))
    return api.Deleted(deleted=reply.username)
