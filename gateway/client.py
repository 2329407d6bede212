"""The gateway's one gRPC channel to the control plane's FinetuneService."""

from __future__ import annotations

from typing import Any

import grpc
from fastapi import Request

from protos import control_plane_pb2_grpc


# gRPC's default reconnect backoff grows to 120 s: a gateway started before the control plane (or across its restart)
# would keep answering 503 for minutes after it is back. Cap it at a few seconds.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 3000),
)


class ControlPlaneClient:
    """Owns the grpc.aio channel. The app's lifespan opens and closes it; a call made without a lifespan
    (e.g. an ASGI test transport that skips it) opens it lazily so the app still works."""

    def __init__(self, address: str, timeout_seconds: float) -> None:
        self.address = address
        self.timeout_seconds = timeout_seconds
        self._channel: grpc.aio.Channel | None = None
        self._stub: control_plane_pb2_grpc.FinetuneServiceStub | None = None
        self._auth_stub: control_plane_pb2_grpc.AuthServiceStub | None = None

    async def open(self) -> None:
        if self._channel is None:
            # Created inside the running event loop: grpc.aio channels are bound to it.
            self._channel = grpc.aio.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
            self._stub = control_plane_pb2_grpc.FinetuneServiceStub(self._channel)
            self._auth_stub = control_plane_pb2_grpc.AuthServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel, self._stub, self._auth_stub = self._channel, None, None, None
            await channel.close()

    @property
    def stub(self) -> control_plane_pb2_grpc.FinetuneServiceStub:
        """For streaming RPCs (the later SSE routes), which manage their own deadlines."""
        if self._stub is None:
            raise RuntimeError("control plane channel is not open")
        return self._stub

    async def unary(self, rpc: str, request: Any, authorization: str | None = None, timeout: float | None = None) -> Any:
        """Call one unary method with the gateway's deadline (or `timeout`). `rpc` is a FinetuneService method name,
        or "AuthService.<method>". AioRpcError propagates."""
        await self.open()
        service, _, name = rpc.rpartition(".")
        method = getattr(self._auth_stub if service == "AuthService" else self.stub, name)
        return await method(request, timeout=timeout or self.timeout_seconds, metadata=call_metadata(authorization))


def call_metadata(authorization: str | None) -> tuple[tuple[str, str], ...] | None:
    # Auth pass-through: the control plane (a later issue) decides; the gateway only forwards.
    return (("authorization", authorization),) if authorization else None


class ControlPlane:
    """A request-scoped handle: the shared client plus this request's Authorization header."""

    def __init__(self, client: ControlPlaneClient, authorization: str | None) -> None:
        self.client = client
        self.authorization = authorization

    async def __call__(self, rpc: str, request: Any, timeout: float | None = None) -> Any:
        return await self.client.unary(rpc, request, self.authorization, timeout)

    async def stream(self, rpc: str, request: Any) -> Any:
        """A server-streaming FinetuneService call (no deadline: it lives as long as its reader)."""
        await self.client.open()
        return getattr(self.client.stub, rpc)(request, metadata=call_metadata(self.authorization))


def control_plane(request: Request) -> ControlPlane:
    """FastAPI dependency. The token comes from the Authorization header, or from `access_token` in the query for
    the SSE routes (a browser's EventSource cannot set headers)."""
    authorization = request.headers.get("authorization")
    if not authorization and request.query_params.get("access_token"):
        authorization = f"Bearer {request.query_params['access_token']}"
    return ControlPlane(request.app.state.control_plane, authorization)
