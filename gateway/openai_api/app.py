"""create_openai_app(): the OpenAI-compatible fine-tuning API under /v1, a FastAPI app of its own that the gateway
process serves on BUGAGARIC_OPENAI_PORT beside the REST gateway (gateway/__main__.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.body_limit import BodySizeLimitMiddleware
from gateway.client import ControlPlaneClient
from gateway.openai_api.auth import RequireApiKeyMiddleware
from gateway.openai_api.errors import install_openai_error_handlers, openai_error_response
from gateway.openai_api.files import router as files_router
from gateway.openai_api.jobs import router as jobs_router
from gateway.settings import GatewaySettings
from protos.tls import Tls


def _too_large(message: str):
    return openai_error_response(413, message, code="request_too_large")


def create_openai_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    client = ControlPlaneClient(settings.control_plane_address, settings.grpc_timeout_seconds,
                                Tls.from_settings(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await client.open()
        try:
            yield
        finally:
            await client.close()

    app = FastAPI(
        title="BugAgaric Finetune: OpenAI-compatible fine-tuning API",
        description="OpenAI's /v1/files and /v1/fine_tuning/jobs over the platform's datasets and sft/dpo tasks. "
        "Every route needs `Authorization: Bearer <API key or token>`.",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        openapi_url="/v1/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.control_plane = client  # gateway.client.control_plane() reads it
    # Outermost first: the catch-all (install_openai_error_handlers), the key requirement, the body size limit.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.gateway_max_body_bytes, refusal=_too_large)
    app.add_middleware(RequireApiKeyMiddleware)
    install_openai_error_handlers(app)
    app.include_router(files_router)
    app.include_router(jobs_router)
    return app
