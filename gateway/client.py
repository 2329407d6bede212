"""The gateway's one gRPC channel to the control plane's FinetuneService."""

from __future__ import annotations

import re
from typing import Any

import grpc
from fastapi import Request

from gateway.threaded_upload import ThreadedUpload
from protos import control_plane_pb2_grpc
from protos.auth import AUTHORIZATION_KEY, CLIENT_ADDRESS_KEY
from protos.tls import PLAINTEXT, Tls

Metadata = tuple[tuple[str, str], ...]
# RFC 6750's token68, of a sane length: anything else (non-ASCII, control characters, kilobytes) could not even be
# sent as gRPC metadata, so it is no credential at all.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{1,1024}=*")
_MAX_ADDRESS = 256


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

    def __init__(self, address: str, timeout_seconds: float, tls: Tls = PLAINTEXT) -> None:
        self.address = address
        self.timeout_seconds = timeout_seconds
        self.tls = tls  # both channels use it
        self._channel: grpc.aio.Channel | None = None
        self._stub: control_plane_pb2_grpc.FinetuneServiceStub | None = None
        self._auth_stub: control_plane_pb2_grpc.AuthServiceStub | None = None
        self._webhook_stub: control_plane_pb2_grpc.WebhookServiceStub | None = None
        # Uploads only (gateway.threaded_upload says why): a channel of grpc's threaded API, made on first use.
        self._threaded_channel: grpc.Channel | None = None
        self._threaded_stub: control_plane_pb2_grpc.FinetuneServiceStub | None = None

    async def open(self) -> None:
        if self._channel is None:
            # Created inside the running event loop: grpc.aio channels are bound to it.
            self._channel = self.tls.aio_channel(self.address, options=_CHANNEL_OPTIONS)
            self._stub = control_plane_pb2_grpc.FinetuneServiceStub(self._channel)
            self._auth_stub = control_plane_pb2_grpc.AuthServiceStub(self._channel)
            self._webhook_stub = control_plane_pb2_grpc.WebhookServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel, self._stub, self._auth_stub = self._channel, None, None, None
            await channel.close()
        if self._threaded_channel is not None:
            threaded, self._threaded_channel, self._threaded_stub = self._threaded_channel, None, None
            threaded.close()

    @property
    def threaded_stub(self) -> control_plane_pb2_grpc.FinetuneServiceStub:
        if self._threaded_stub is None:
            self._threaded_channel = self.tls.channel(self.address, options=_CHANNEL_OPTIONS)
            self._threaded_stub = control_plane_pb2_grpc.FinetuneServiceStub(self._threaded_channel)
        return self._threaded_stub

    @property
    def stub(self) -> control_plane_pb2_grpc.FinetuneServiceStub:
        """For streaming RPCs (the later SSE routes), which manage their own deadlines."""
        if self._stub is None:
            raise RuntimeError("control plane channel is not open")
        return self._stub

    async def unary(self, rpc: str, request: Any, metadata: Metadata = (), timeout: float | None = None) -> Any:
        """Call one unary method with the gateway's deadline (or `timeout`). `rpc` is a FinetuneService method name,
        or "AuthService.<method>" / "WebhookService.<method>". AioRpcError propagates."""
        await self.open()
        service, _, name = rpc.rpartition(".")
        stub = {"AuthService": self._auth_stub, "WebhookService": self._webhook_stub}.get(service, self.stub)
        method = getattr(stub, name)
        return await method(request, timeout=timeout or self.timeout_seconds, metadata=metadata or None)


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header value, or "" when there is none or it is malformed."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and _TOKEN.fullmatch(token) else ""


def call_metadata(authorization: str | None, client_address: str | None = None) -> Metadata:
    # Auth pass-through: the control plane decides; the gateway only forwards the token, and names the end client
    # (the control plane limits logins per address, and would otherwise only ever see the gateway's). Only values
    # gRPC metadata can carry: a malformed header is dropped here (protected routes refused it already).
    token = bearer_token(authorization)
    if client_address and not (client_address.isascii() and client_address.isprintable()
                               and len(client_address) <= _MAX_ADDRESS):
        client_address = None
    pairs = ((AUTHORIZATION_KEY, f"Bearer {token}" if token else None), (CLIENT_ADDRESS_KEY, client_address))
    return tuple((key, value) for key, value in pairs if value)


class ControlPlane:
    """A request-scoped handle: the shared client plus this request's Authorization header and client address."""

    def __init__(self, client: ControlPlaneClient, authorization: str | None, client_address: str | None = None) -> None:
        self.client = client
        self.metadata = call_metadata(authorization, client_address)

    async def __call__(self, rpc: str, request: Any, timeout: float | None = None) -> Any:
        return await self.client.unary(rpc, request, self.metadata, timeout)

    async def stream(self, rpc: str, request: Any) -> Any:
        """A server-streaming FinetuneService call (no deadline: it lives as long as its reader)."""
        await self.client.open()
        return getattr(self.client.stub, rpc)(request, metadata=self.metadata or None)

    def upload(self, rpc: str) -> ThreadedUpload:
        """A client-streaming FinetuneService call to write() to (no deadline: an upload takes as long as its body)."""
        return ThreadedUpload(getattr(self.client.threaded_stub, rpc), self.metadata or None)


def control_plane(request: Request) -> ControlPlane:
    """FastAPI dependency. The token comes only from the Authorization header (never the URL, which ends up in
    access logs); request.client is the end client (uvicorn applies X-Forwarded-For from trusted proxies)."""
    client_address = request.client.host if request.client else None
    return ControlPlane(request.app.state.control_plane, request.headers.get("authorization"), client_address)
