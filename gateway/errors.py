"""The error JSON of DESIGN.md and the gRPC status -> HTTP status mapping.

Every error the gateway returns has the body {"error": {"code", "message", "field"}}.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
from fastapi.responses import JSONResponse

# The control plane names the offending input field in this trailing-metadata key.
ERROR_FIELD_METADATA_KEY = "bugagaric-error-field"
# Seconds until a refused call may be retried (the login limiter sets it on RESOURCE_EXHAUSTED).
RETRY_AFTER_METADATA_KEY = "retry-after"

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

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


def printable(text: str | None) -> str | None:
    """Lone surrogates escaped: they cannot be encoded as UTF-8, so a message or field echoing one would turn the
    error answer itself into a 500."""
    return text if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": printable(message), "field": printable(field)}}


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


def bad_request(message: str, field: str | None = None) -> ApiError:
    return ApiError(400, "invalid_argument", message, field)


def http_status_for(code: grpc.StatusCode) -> int:
    return _HTTP_STATUS.get(code, 500)


def grpc_code_name(code: grpc.StatusCode) -> str:
    # StatusCode.INVALID_ARGUMENT.name == "INVALID_ARGUMENT" -> "invalid_argument"
    return code.name.lower()


def metadata_value(metadata: Any, wanted: str) -> str | None:
    """One key's value from grpc.aio.Metadata or a sequence of (key, value) pairs."""
    for key, value in metadata or ():
        if key == wanted:
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            return value or None
    return None


def error_field_from_metadata(metadata: Any) -> str | None:
    """The field named in trailing metadata; accepts grpc.aio.Metadata or a sequence of (key, value) pairs."""
    return metadata_value(metadata, ERROR_FIELD_METADATA_KEY)


def retry_after_from_metadata(metadata: Any) -> str | None:
    """The Retry-After header value (whole seconds, rounded up), or None when absent or not a number."""
    value = metadata_value(metadata, RETRY_AFTER_METADATA_KEY)
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return str(math.ceil(seconds)) if math.isfinite(seconds) and seconds >= 0 else None


def api_error_from_rpc(err: grpc.aio.AioRpcError) -> ApiError:
    code = err.code()
    trailing = err.trailing_metadata()
    message = err.details() or code.name.replace("_", " ").lower()
    retry_after = retry_after_from_metadata(trailing) if code == grpc.StatusCode.RESOURCE_EXHAUSTED else None
    headers = {"Retry-After": retry_after} if retry_after else None
    return ApiError(http_status_for(code), grpc_code_name(code), message, error_field_from_metadata(trailing), headers)
