"""AuthService: login/logout, who am I, and admin user management; and the token check every other call passes.

Password hashing (argon2: slow and memory-hungry on purpose) runs in a small pool of its own, and token checks in
another: a flood of logins, or anything else queued on asyncio's default executor, cannot make authenticated calls
wait behind it.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import grpc

from control_plane.accounts import AccountError, AccountStore, BadCredentials, Principal, TooManyAttempts
from control_plane.api_key_rpcs import ApiKeyRpcs
from control_plane.api_key_scopes import allows, scope_needed
from control_plane.converters import timestamp
from control_plane.db_calls import in_db_thread
from control_plane.grpc_errors import ERROR_FIELD_KEY, abort
from control_plane.login_throttle import TrustedProxies, client_address
from protos import control_plane_pb2, control_plane_pb2_grpc
from protos.auth import PermissionRefused, current_principal, token_from_metadata, tokens_equal

FULL_NAME = "bugagaric.finetune.v1"
LOGIN_METHOD = f"/{FULL_NAME}.AuthService/Login"
# Login, and the system health behind GET /api/health (liveness probes carry no token).
PUBLIC_METHODS = (LOGIN_METHOD, f"/{FULL_NAME}.FinetuneService/GetSystemHealth")
AGENT_METHOD_PREFIX = f"/{FULL_NAME}.AgentRegistry/"
CLUSTER = Principal("cluster", "agent")
# Trailing metadata of a refused login: whole seconds until the next attempt may be made (the gateway's Retry-After).
RETRY_AFTER_KEY = "retry-after"


class _Pool:
    """A bounded thread pool that coroutines await."""

    def __init__(self, threads: int, name: str):
        self._executor = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix=name)

    async def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        job = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    async def probe(self, timeout: float) -> bool:
        """Whether a trivial job gets a thread within `timeout` seconds (a job still queued then is dropped)."""
        try:
            await asyncio.wait_for(self.run(_nothing), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _nothing() -> None:
    return None


class TokenCheck:
    """The interceptor's check(method, token): agents' calls (AgentRegistry) take the cluster token, every other call
    a user's token or API key, looked up on a thread pool of its own; an API key only within its scopes."""

    def __init__(self, accounts: AccountStore, cluster_token: str, threads: int = 4):
        self._accounts = accounts
        self._cluster_token = cluster_token
        self._pool = _Pool(threads, "token-check")

    async def __call__(self, method: str, token: str) -> Principal | None:
        if method.startswith(AGENT_METHOD_PREFIX):
            return CLUSTER if tokens_equal(token, self._cluster_token) else None
        principal = await self._pool.run(self._accounts.authenticate, token)
        if principal is not None and principal.scopes is not None:
            needed = scope_needed(method)
            if not allows(principal.scopes, needed):
                name = method.rsplit("/", 1)[-1]
                raise PermissionRefused(f"this API key lacks the '{needed}' scope that {name} needs "
                                        f"(it has: {', '.join(sorted(principal.scopes))})")
        return principal

    async def probe(self, timeout: float = 1.0) -> bool:
        """For the health check: False when token checks are not being served (no thread free within `timeout`)."""
        return await self._pool.probe(timeout)

    async def logout(self, token: str) -> None:
        await self._pool.run(self._accounts.logout, token)

    def close(self) -> None:
        self._pool.close()


def make_token_check(accounts: AccountStore, cluster_token: str, threads: int = 4) -> TokenCheck:
    return TokenCheck(accounts, cluster_token, threads)


def caller() -> Principal:
    """The authenticated caller of the current call (set by the interceptor)."""
    principal = current_principal.get()
    if principal is None:  # pragma: no cover - the interceptor guarantees it
        raise RuntimeError("no authenticated caller")
    return principal


def _user_to_proto(user) -> control_plane_pb2.User:
    return control_plane_pb2.User(username=user.username, role=user.role, created_at=timestamp(user.created_at))


class AuthService(ApiKeyRpcs, control_plane_pb2_grpc.AuthServiceServicer):
    def __init__(
        self, accounts: AccountStore, token_check: TokenCheck, trusted_proxies: TrustedProxies | None = None,
        password_threads: int = 2,
    ):
        self._accounts = accounts
        self._token_check = token_check
        self._trusted = trusted_proxies if trusted_proxies is not None else TrustedProxies.parse("127.0.0.1,::1")
        self._passwords = _Pool(password_threads, "password")

    async def Login(self, request, context):
        address = client_address(context.peer(), context.invocation_metadata(), self._trusted)
        try:
            token, expires_at, user = await self._passwords.run(
                self._accounts.login, request.username, request.password, client_address=address
            )
        except BadCredentials as exc:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc), "password")
        except TooManyAttempts as exc:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc),
                trailing_metadata=((ERROR_FIELD_KEY, "username"), (RETRY_AFTER_KEY, str(exc.retry_after))),
            )
        return control_plane_pb2.LoginResponse(token=token, expires_at=timestamp(expires_at), user=_user_to_proto(user))

    async def Logout(self, request, context):
        await self._token_check.logout(token_from_metadata(context.invocation_metadata()))
        return control_plane_pb2.LogoutResponse()

    async def WhoAmI(self, request, context):
        principal = caller()
        return control_plane_pb2.User(username=principal.username, role=principal.role)

    async def ListUsers(self, request, context):
        await self._require_admin(context)
        users = await in_db_thread(self._accounts.users)
        return control_plane_pb2.ListUsersResponse(users=[_user_to_proto(u) for u in users])

    async def CreateUser(self, request, context):
        await self._require_admin(context)
        try:
            user = await self._passwords.run(
                self._accounts.create_user, request.username, request.password, request.role or "user"
            )
        except AccountError as exc:
            code = grpc.StatusCode.ALREADY_EXISTS if "already exists" in str(exc) else grpc.StatusCode.INVALID_ARGUMENT
            await abort(context, code, str(exc))
        return _user_to_proto(user)

    async def DeleteUser(self, request, context):
        principal = await self._require_admin(context)
        if request.username == principal.username:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, "an admin cannot delete their own account", "username")
        if not await self._passwords.run(self._accounts.delete_user, request.username):
            await abort(context, grpc.StatusCode.NOT_FOUND, f"user {request.username!r} not found", "username")
        return control_plane_pb2.DeleteUserResponse(username=request.username)

    def close(self) -> None:
        self._passwords.close()

    async def _require_admin(self, context) -> Principal:
        principal = caller()
        if not principal.is_admin:
            await abort(context, grpc.StatusCode.PERMISSION_DENIED, "only admins manage users")
        return principal
