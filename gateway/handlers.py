"""Exception handlers: every failure leaves the gateway as the error JSON of DESIGN.md, never FastAPI's 422 shape
or a bare 500 text page."""

from __future__ import annotations

import logging
from typing import Any, Callable

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.authn import verify_credential
from gateway.errors import ApiError, api_error_from_rpc, error_response

log = logging.getLogger("gateway")

_HTTP_CODES = {
    404: "not_found", 405: "method_not_allowed", 401: "unauthenticated", 403: "permission_denied",
    413: "payload_too_large",
}


async def _rpc_error(request: Request, exc: grpc.aio.AioRpcError):
    err = api_error_from_rpc(exc)
    if err.status >= 500:
        log.warning("%s %s: control plane answered %s: %s", request.method, request.url.path, err.code, err.message)
    return error_response(err.status, err.code, err.message, err.field, err.headers)


async def _bad_input(request: Request, err: ApiError):
    """A 400 found by the gateway itself goes out only to a valid token (authentication comes first)."""
    try:
        await verify_credential(request)
    except grpc.aio.AioRpcError as exc:
        return await _rpc_error(request, exc)
    return error_response(err.status, err.code, err.message, err.field, err.headers)


async def _api_error(request: Request, exc: ApiError):
    if exc.status == 400:  # the control plane's own 400s arrive as AioRpcError: their token was already checked
        return await _bad_input(request, exc)
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)


def _validation_field(loc: tuple[Any, ...]) -> str | None:
    # loc is ("query", "limit") or ("path", "task_id"); the last str part is the parameter name.
    names = [str(p) for p in loc[1:] if not isinstance(p, int)] if loc else []
    return ".".join(names) or None


async def _validation_error(request: Request, exc: RequestValidationError):
    # FastAPI says 422; bad input is a 400 here (DESIGN.md), naming the first offending parameter.
    first = exc.errors()[0] if exc.errors() else {}
    loc = tuple(first.get("loc", ()))
    field = _validation_field(loc)
    where = f"{loc[0]} parameter {field!r}" if field and loc else "request"
    return await _bad_input(request, ApiError(400, "invalid_argument", f"{where}: {first.get('msg', 'invalid value')}", field))


async def _http_error(_: Request, exc: StarletteHTTPException):
    code = _HTTP_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "invalid_argument")
    response = error_response(exc.status_code, code, str(exc.detail))
    if exc.headers:  # e.g. Allow on 405
        response.headers.update(exc.headers)
    return response


class CatchAllMiddleware:
    """Turns an unexpected exception into a logged 500 with the error JSON. A plain ASGI middleware rather than an
    Exception handler: Starlette re-raises after running an Exception handler, which would surface in servers and
    test clients as a crash."""

    def __init__(self, app: ASGIApp, respond: Callable[[str], Response] | None = None) -> None:
        self.app = app
        # The 500's body from its message: the REST error JSON here; the OpenAI app passes its own error shape.
        self.respond = respond or (lambda message: error_response(500, "internal", message))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def _send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except Exception as exc:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # too late for a JSON body; let the server close the connection
            await self.respond(f"internal gateway error: {type(exc).__name__}")(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(grpc.aio.AioRpcError, _rpc_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(CatchAllMiddleware)
