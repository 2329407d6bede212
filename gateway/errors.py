"""The error JSON of DESIGN.md and the gRPC status -> HTTP status mapping.

Every error the gateway returns has the body {"error": {"code", "message", "field"}}.
"""

from __future__ import annotations

from typing import Any

import grpc
from fastapi.responses import JSONResponse

# The control plane names the offending input field in this trailing-metadata key.
ERROR_FIELD_METADATA_KEY = "bugagaric-error-field"

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class ApiError(Exception):
    """An error the gateway answers with directly (bad input found before any gRPC call, or a translated one)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status)


def bad_request(message: str, field: str | None = None) -> ApiError:
    return ApiError(400, "invalid_argument", message, field)


def http_status_for(code: grpc.StatusCode) -> int:
    return _HTTP_STATUS.get(code, 500)


def grpc_code_name(code: grpc.StatusCode) -> str:
    # StatusCode.INVALID_ARGUMENT.name == "INVALID_ARGUMENT" -> "invalid_argument"
    return code.name.lower()


def error_field_from_metadata(metadata: Any) -> str | None:
    """The field named in trailing metadata; accepts grpc.aio.Metadata or a sequence of (key, value) pairs."""
    if not metadata:
        return None
    for key, value in metadata:
        if key == ERROR_FIELD_METADATA_KEY:
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            return value or None
    return None


def api_error_from_rpc(err: grpc.aio.AioRpcError) -> ApiError:
    code = err.code()
    field = error_field_from_metadata(err.trailing_metadata())
    message = err.details() or code.name.replace("_", " ").lower()
    return ApiError(http_status_for(code), grpc_code_name(code), message, field)
