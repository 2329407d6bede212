"""OpenAI's error shape `{"error": {"message", "type", "param", "code"}}` for every failure of the /v1 app: its own
checks, the control plane's gRPC statuses, FastAPI's parameter checks, unknown routes and unexpected exceptions.

The control plane names the config key at fault (e.g. `num_train_epochs`); `param` names what the caller sent
instead (`hyperparameters.n_epochs`), through the request's own field map (OpenAIError.from_rpc)."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.authn import verify_credential
from gateway.errors import ApiError, api_error_from_rpc, printable
from gateway.handlers import CatchAllMiddleware

log = logging.getLogger("gateway.openai")

_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "rate_limit_error"}


def error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return _TYPES.get(status, "invalid_request_error")


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    @classmethod
    def from_api_error(cls, err: ApiError, params: Mapping[str, str] | None = None) -> "OpenAIError":
        """Our error (a gateway check, or a translated gRPC status) with its field renamed to the caller's param."""
        param = (params or {}).get(err.field or "", err.field) if err.field else None
        return cls(err.status, err.message, param=param, code=err.code, headers=err.headers)

    @classmethod
    def from_rpc(cls, exc: grpc.aio.AioRpcError, params: Mapping[str, str] | None = None) -> "OpenAIError":
        return cls.from_api_error(api_error_from_rpc(exc), params)

    def response(self) -> JSONResponse:
        return openai_error_response(self.status, self.message, param=self.param, code=self.code, headers=self.headers)


def invalid_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def not_found(message: str, param: str, code: str) -> OpenAIError:
    return OpenAIError(404, message, param=param, code=code)


def openai_error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": printable(message), "type": error_type(status), "param": printable(param),
                      "code": code}}


def openai_error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                          headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(openai_error_body(status, message, param=param, code=code), status_code=status,
                        headers=headers or None)


async def _answer_bad_input(request: Request, err: OpenAIError) -> JSONResponse:
    """A 400 the gateway found itself goes out only to a valid credential (authentication comes first, as on the
    REST gateway: an invalid key learns 401, never what was wrong with its input)."""
    if err.status == 400:
        try:
            await verify_credential(request)
        except grpc.aio.AioRpcError as exc:
            return OpenAIError.from_rpc(exc).response()
    return err.response()


async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
    return await _answer_bad_input(request, exc)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return await _answer_bad_input(request, OpenAIError.from_api_error(exc))


async def _rpc_error(request: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
    err = OpenAIError.from_rpc(exc)
    if err.status >= 500:
        log.warning("%s %s: control plane answered %s: %s", request.method, request.url.path, err.code, err.message)
    return err.response()


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    names = [str(p) for p in tuple(first.get("loc", ()))[1:] if not isinstance(p, int)]
    param = ".".join(names) or None
    message = f"{param}: {first.get('msg', 'invalid value')}" if param else first.get("msg", "invalid request")
    return await _answer_bad_input(request, invalid_request(message, param))


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    response = openai_error_response(exc.status_code, str(exc.detail), code=code)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def install_openai_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OpenAIError, _openai_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(grpc.aio.AioRpcError, _rpc_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(CatchAllMiddleware, respond=lambda message: openai_error_response(500, message, code="internal"))
