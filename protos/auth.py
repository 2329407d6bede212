"""How credentials travel on the wire, for every gRPC server and client of the platform.

A call carries `authorization: Bearer <token>` metadata: a user's token (issued by AuthService.Login) on
client-facing calls, the shared cluster token on calls between the control plane and its agents.
`BearerTokenInterceptor` checks it on a server before the method runs; the method reads the caller from
`current_principal`.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
from typing import Any, Awaitable, Callable, Iterable

import grpc

from protos.tls import PLAINTEXT, Tls

AUTHORIZATION_KEY = "authorization"
# The end client's address, as the gateway saw it. Trusted only from peers the control plane is told to trust
# (BUGAGARIC_TRUSTED_PROXIES); anyone else's call counts under its own peer address.
CLIENT_ADDRESS_KEY = "bugagaric-client-address"
# Always open: load balancers and `grpc_health_probe` must reach them without credentials.
ALWAYS_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

current_principal: contextvars.ContextVar[Any] = contextvars.ContextVar("current_principal", default=None)

# check(method, token) -> the caller (any object), or None to refuse with UNAUTHENTICATED; it may raise
# PermissionRefused for a valid credential that may not make this call.
TokenCheck = Callable[[str, str], Awaitable[Any]]


class PermissionRefused(Exception):
    """Raised by a check: the credential is valid but not for this method (PERMISSION_DENIED with this message)."""


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),) if token else ()


def token_from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> str:
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def tokens_equal(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every method not in `public_methods` unless `check` accepts the call's bearer token."""

    def __init__(self, check: TokenCheck, public_methods: Iterable[str] = ()):
        self._check = check
        self._public = frozenset(public_methods)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in self._public or method.startswith(ALWAYS_PUBLIC_PREFIXES):
            return handler
        return _guarded(handler, method, self._check)


async def _admit(check: TokenCheck, method: str, context: grpc.aio.ServicerContext) -> Any:
    token = token_from_metadata(context.invocation_metadata())
    try:
        principal = await check(method, token) if token else None
    except PermissionRefused as exc:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
    if principal is None:
        reason = "missing bearer token" if not token else "invalid or expired token"
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{reason}: send 'authorization: Bearer <token>' metadata")
    return principal


def _guarded(handler: grpc.RpcMethodHandler, method: str, check: TokenCheck) -> grpc.RpcMethodHandler:
    if handler.unary_unary:
        behaviour = handler.unary_unary

        async def unary_unary(request, context):
            current_principal.set(await _admit(check, method, context))
            return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
    if handler.unary_stream:
        stream_behaviour = handler.unary_stream

        async def unary_stream(request, context):
            current_principal.set(await _admit(check, method, context))
            async for response in _rechecked(stream_behaviour(request, context), check, method, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
    if handler.stream_unary:  # an upload: admitted once when it opens (it ends with one answer)
        upload_behaviour = handler.stream_unary

        async def stream_unary(request_iterator, context):
            current_principal.set(await _admit(check, method, context))
            return await upload_behaviour(request_iterator, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
    raise NotImplementedError(f"{method}: only unary, server-streaming and client-streaming methods are guarded")


# A stream outlives the check made when it opened: its credential is checked again this often (a logout, an expiry
# or a deleted user ends it within about this long, even while the stream is idle).
STREAM_RECHECK_SECONDS = 2.0


async def _rechecked(responses, check: TokenCheck, method: str, context: grpc.aio.ServicerContext):
    """Yields `responses`, checking the call's token again every STREAM_RECHECK_SECONDS, busy or idle; aborts
    UNAUTHENTICATED once it no longer passes."""
    token = token_from_metadata(context.invocation_metadata())
    loop = asyncio.get_running_loop()
    checked = loop.time()
    iterator = responses.__aiter__()
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            await asyncio.wait({pending}, timeout=max(0.0, checked + STREAM_RECHECK_SECONDS - loop.time()))
            if loop.time() - checked >= STREAM_RECHECK_SECONDS:
                if await check(method, token) is None:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                        "the token was revoked or has expired: log in again")
                checked = loop.time()
            if not pending.done():
                continue
            try:
                response = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield response
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        await iterator.aclose()


def _with_bearer(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    for key, value in bearer_metadata(token):
        metadata[key] = value
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials, details.wait_for_ready)


# grpc.aio files an interceptor under the first call kind it implements, so each kind needs its own class.
class _UnaryBearer(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str):
        self._token = token

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(_with_bearer(client_call_details, self._token), request)


class _StreamBearer(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str):
        self._token = token

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(_with_bearer(client_call_details, self._token), request)


def bearer_channel(address: str, token: str, options: Iterable[tuple[str, Any]] = (),
                   tls: Tls = PLAINTEXT) -> grpc.aio.Channel:
    """A grpc.aio channel (TLS when `tls` is on) whose every call carries `token` (the cluster token between
    services)."""
    return tls.aio_channel(address, options, interceptors=[_UnaryBearer(token), _StreamBearer(token)])
