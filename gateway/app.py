"""create_app(): the stateless REST gateway in front of the control plane's FinetuneService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from gateway.artifact_routes import router as artifact_router
from gateway.api_key_routes import router as api_key_router
from gateway.auth_routes import router as auth_router
from gateway.chat_routes import router as chat_router
from gateway.authn import DOCS_ASSETS, RequireBearerMiddleware
from gateway.body_limit import BodySizeLimitMiddleware
from gateway.client import ControlPlaneClient
from gateway.dataset_routes import router as dataset_router
from gateway.handlers import install_error_handlers
from gateway.metrics import install_metrics
from gateway.openapi_doc import install_openapi, operation_id
from gateway.raw_params import check_raw_parameters
from gateway.routes import router
from gateway.settings import GatewaySettings
from gateway.stream_routes import router as stream_router
from gateway.webhook_routes import router as webhook_router
from protos.tls import Tls


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    client = ControlPlaneClient(settings.control_plane_address, settings.grpc_timeout_seconds,
                                Tls.from_settings(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await client.open()  # lazy: the channel connects on first call, so the gateway starts before the control plane
        try:
            yield
        finally:
            await client.close()

    # The docs page's Swagger UI script and styles come from the fastapi-offline package, served under DOCS_ASSETS:
    # FastAPI's default loads them from a public CDN, and the page stays blank on a host without internet.
    app = FastAPIOffline(
        title="BugAgaric Finetune API",
        description="REST gateway to the fine-tuning control plane (gRPC FinetuneService). Every route but "
        "`/api/health` and `/api/auth/login` needs the header `Authorization: Bearer <token>`.",
        version="0.1.0",
        docs_url="/docs",
        redoc_url=None,
        static_url=DOCS_ASSETS,
        openapi_url="/openapi.json",
        lifespan=lifespan,
        dependencies=[Depends(check_raw_parameters)],
        generate_unique_id_function=operation_id,  # list_tasks -> listTasks
    )
    app.state.settings = settings
    app.state.control_plane = client
    # Starlette runs the last added middleware first: the catch-all (added by install_error_handlers) outermost,
    # then the token requirement (before anything looks at the input), then the body size limit.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.gateway_max_body_bytes)
    app.add_middleware(RequireBearerMiddleware)
    install_error_handlers(app)
    install_metrics(app)  # outermost: counts every answer, the catch-all's 500s included; serves /metrics
    app.include_router(router)
    app.include_router(auth_router)
    app.include_router(api_key_router)
    app.include_router(stream_router)
    app.include_router(dataset_router)
    app.include_router(artifact_router)
    app.include_router(chat_router)
    app.include_router(webhook_router)
    install_openapi(app)  # after the routes: the bearer scheme, the error JSON, clean ids
    return app
