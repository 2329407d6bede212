"""Authentication comes first: a request to a route that needs a token and carries none is refused with 401 before
its parameters or body are looked at, and before any gRPC call. Whether a token is *valid* is the control plane's to
say; on the bad-input path (a 400 found before any call) the gateway asks it with one WhoAmI call, so an invalid
token always learns 401, never what was wrong with its input."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.client import bearer_token, control_plane
from gateway.errors import error_response
from protos import control_plane_pb2 as cp

# Open without a token: liveness, the login itself, the API docs (with the Swagger UI files they load), and the
# Prometheus metrics (counts and timings by route template: no user data).
PUBLIC_PATHS = frozenset({"/api/health", "/api/auth/login", "/docs", "/docs/oauth2-redirect", "/openapi.json",
                          "/metrics"})
DOCS_ASSETS = "/docs/assets"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(f"{DOCS_ASSETS}/")


class RequireBearerMiddleware:
    """401 for a non-public route without a well-formed `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_public(scope["path"]):
            if not bearer_token(Request(scope).headers.get("authorization")):
                message = "missing or malformed bearer token: send the header 'Authorization: Bearer <token>'"
                response = error_response(401, "unauthenticated", message, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def verify_credential(request: Request) -> None:
    """Before answering a protected route's bad input: the token must be valid. AioRpcError (UNAUTHENTICATED,
    UNAVAILABLE, ...) propagates for the caller to map; public routes are not checked."""
    if not is_public(request.scope["path"]):
        await control_plane(request)("AuthService.WhoAmI", cp.WhoAmIRequest())
