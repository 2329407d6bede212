"""AuthService: login/logout, who am I, and admin user management; and the token check every other call passes."""

from __future__ import annotations

import asyncio

import grpc

from control_plane.accounts import AccountError, AccountStore, BadCredentials, Principal, TooManyAttempts
from control_plane.converters import timestamp
from control_plane.grpc_errors import abort
from protos import control_plane_pb2, control_plane_pb2_grpc
from protos.auth import current_principal, token_from_metadata, tokens_equal

FULL_NAME = "bugagaric.finetune.v1"
LOGIN_METHOD = f"/{FULL_NAME}.AuthService/Login"
# Login, and the system health behind GET /api/health (liveness probes carry no token).
PUBLIC_METHODS = (LOGIN_METHOD, f"/{FULL_NAME}.FinetuneService/GetSystemHealth")
AGENT_METHOD_PREFIX = f"/{FULL_NAME}.AgentRegistry/"
CLUSTER = Principal("cluster", "agent")


def make_token_check(accounts: AccountStore, cluster_token: str):
    """Agents' calls (AgentRegistry) take the cluster token; every other call a user's token."""

    async def check(method: str, token: str) -> Principal | None:
        if method.startswith(AGENT_METHOD_PREFIX):
            return CLUSTER if tokens_equal(token, cluster_token) else None
        return await asyncio.to_thread(accounts.authenticate, token)

    return check


def caller() -> Principal:
    """The authenticated caller of the current call (set by the interceptor)."""
    principal = current_principal.get()
    if principal is None:  # pragma: no cover - the interceptor guarantees it
        raise RuntimeError("no authenticated caller")
    return principal


def _user_to_proto(user) -> control_plane_pb2.User:
    return control_plane_pb2.User(username=user.username, role=user.role, created_at=timestamp(user.created_at))


class AuthService(control_plane_pb2_grpc.AuthServiceServicer):
    def __init__(self, accounts: AccountStore):
        self._accounts = accounts

    async def Login(self, request, context):
        try:
            token, expires_at, user = await asyncio.to_thread(self._accounts.login, request.username, request.password)
        except BadCredentials as exc:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc), "password")
        except TooManyAttempts as exc:
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), "username")
        return control_plane_pb2.LoginResponse(token=token, expires_at=timestamp(expires_at), user=_user_to_proto(user))

    async def Logout(self, request, context):
        self._accounts.logout(token_from_metadata(context.invocation_metadata()))
        return control_plane_pb2.LogoutResponse()

    async def WhoAmI(self, request, context):
        principal = caller()
        return control_plane_pb2.User(username=principal.username, role=principal.role)

    async def ListUsers(self, request, context):
        await self._require_admin(context)
        return control_plane_pb2.ListUsersResponse(users=[_user_to_proto(u) for u in self._accounts.users()])

    async def CreateUser(self, request, context):
        await self._require_admin(context)
        try:
            user = await asyncio.to_thread(self._accounts.create_user, request.username, request.password, request.role or "user")
        except AccountError as exc:
            code = grpc.StatusCode.ALREADY_EXISTS if "already exists" in str(exc) else grpc.StatusCode.INVALID_ARGUMENT
            await abort(context, code, str(exc))
        return _user_to_proto(user)

    async def DeleteUser(self, request, context):
        principal = await self._require_admin(context)
        if request.username == principal.username:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, "an admin cannot delete their own account", "username")
        if not self._accounts.delete_user(request.username):
            await abort(context, grpc.StatusCode.NOT_FOUND, f"user {request.username!r} not found", "username")
        return control_plane_pb2.DeleteUserResponse(username=request.username)

    async def _require_admin(self, context) -> Principal:
        principal = caller()
        if not principal.is_admin:
            await abort(context, grpc.StatusCode.PERMISSION_DENIED, "only admins manage users")
        return principal
