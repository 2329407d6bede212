"""401 in OpenAI's shape for a /v1 request without `Authorization: Bearer <api key or token>`, before anything else
looks at it. Whether the key is valid is the control plane's to say (gateway.client passes it through)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.client import bearer_token
from gateway.openai_api.errors import openai_error_response

PUBLIC_PATHS = frozenset({"/v1/openapi.json"})


class RequireApiKeyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            if not bearer_token(Request(scope).headers.get("authorization")):
                response = openai_error_response(
                    401, "You didn't provide an API key. Send it as 'Authorization: Bearer <api key>' (the OpenAI "
                    "client does: OpenAI(api_key=...)).", code="missing_api_key",
                    headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
