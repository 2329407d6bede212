"""How the control plane's gRPC methods report errors: a status code, a message, and the offending field."""

from __future__ import annotations

import grpc

# Trailing-metadata key carrying the config key or request field an INVALID_ARGUMENT is about.
ERROR_FIELD_KEY = "bugagaric-error-field"


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, field: str = "") -> None:
    """Ends the call with `code`; never returns. A message or field holding a lone surrogate (echoed from a hostile
    input) is escaped: gRPC cannot send text that is not valid UTF-8."""
    metadata = ((ERROR_FIELD_KEY, _utf8(field)),) if field else ()
    await context.abort(code, _utf8(message), trailing_metadata=metadata)


def _utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
