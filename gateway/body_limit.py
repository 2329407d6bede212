"""A request body over its route's limit is refused with 413 `payload_too_large` in the error JSON: at its first read
when Content-Length already says so (before a byte of it is taken), else as soon as a streamed (chunked) body passes
the limit, so no more than the limit is ever buffered.

The limit is BUGAGARIC_GATEWAY_MAX_BODY_BYTES unless the route's endpoint takes more with @max_body_bytes(n) (e.g. a
large upload; n may be a function of the app, for a limit that is a setting); the endpoint is known by the time
anything reads the body, routing being done. Starlette's and FastAPI's own `max_body_size` are not used: they answer
some 413s in plain text, and after the route has run.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response

_LIMIT_ATTRIBUTE = "bugagaric_max_body_bytes"
F = TypeVar("F", bound=Callable)


def max_body_bytes(limit: int | Callable[[Any], int]) -> Callable[[F], F]:
    """Endpoint decorator: this route takes bodies of up to `limit` bytes instead of the gateway's default; a
    callable `limit` is given the app (e.g. to read app.state.settings)."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _LIMIT_ATTRIBUTE, limit)
        return endpoint

    return mark


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, refusal: Callable[[str], ASGIApp] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # The 413 answer for a message (the OpenAI-compatible app answers in OpenAI's error shape).
        self.refusal = refusal or (lambda message: error_response(413, "payload_too_large", message))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received, checked_length, started, refused = 0, False, False, False

        async def refuse(limit: int) -> Message:
            # Answer 413 here and tell the app the client is gone: however it reads the body (our parsers, FastAPI's,
            # an SSE disconnect listener) it stops, and whatever it sends afterwards is dropped.
            nonlocal refused
            refused = True
            if not started:
                await self.refusal(f"request body is larger than this route's limit of {limit} bytes")(
                    scope, receive, send)
            return {"type": "http.disconnect"}

        async def limited_receive() -> Message:
            nonlocal received, checked_length
            if refused:
                return {"type": "http.disconnect"}
            limit = getattr(scope.get("endpoint"), _LIMIT_ATTRIBUTE, self.max_bytes)
            if callable(limit):
                limit = limit(scope["app"])
            if not checked_length:
                checked_length = True
                if _content_length(scope) > limit:
                    return await refuse(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    return await refuse(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:  # else: the app failing on the "disconnect" is expected, and it is answered already
                raise


def _content_length(scope: Scope) -> int:
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value) if value.isdigit() else 0  # a malformed one is the HTTP server's to refuse
    return 0
