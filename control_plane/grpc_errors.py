"""How the control plane's gRPC methods report errors: a status code, a message, and the offending field."""

from __future__ import annotations

import grpc

# Trailing-metadata key carrying the config key or request field an INVALID_ARGUMENT is about.
ERROR_FIELD_KEY = "bugagaric-error-field"


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, field: str = "") -> None:
    """Ends the call with `code`; never returns."""
    metadata = ((ERROR_FIELD_KEY, field),) if field else ()
    await context.abort(code, message, trailing_metadata=metadata)
