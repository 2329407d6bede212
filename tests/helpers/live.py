"""The real control plane and the real gateway in this test process (each on an event loop or thread of its own, on
loopback ports), for tests of the gateway that need no agent; and a spy that records the gRPC calls the gateway makes
while letting them through."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from pathlib import Path

from control_plane.server import RunningControlPlane, start_control_plane
from control_plane.settings import ControlPlaneSettings
from gateway.__main__ import build_server
from gateway.settings import GatewaySettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveControlPlane:
    """The real control plane (gRPC server, store, scheduler; no agent) on a loopback port, running on an event loop
    of its own in a thread, so the gateway under test (TestClient, or uvicorn in a thread) can call it."""

    def __init__(self, workspace: Path, port: int | None = None, **settings) -> None:
        workspace.mkdir(parents=True, exist_ok=True)
        self.admin_password = secrets.token_urlsafe(12)
        self.settings = ControlPlaneSettings(
            control_plane_host="127.0.0.1", control_plane_port=port or free_port(),
            database_url=f"sqlite:///{workspace / 'bugagaric.db'}", workspace=workspace,
            cluster_token=secrets.token_urlsafe(24), admin_user="admin", admin_password=self.admin_password,
            admin_password_file=workspace / "admin_password", **settings,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="control-plane", daemon=True)
        self._running: RunningControlPlane | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.control_plane_port}"

    def start(self) -> "LiveControlPlane":
        self._thread.start()
        self._running = asyncio.run_coroutine_threadsafe(start_control_plane(self.settings), self._loop).result(60)
        return self

    def stop(self) -> None:
        """Idempotent: a test may stop it on purpose before its fixture does."""
        if self._running is None:
            return
        running, self._running = self._running, None
        asyncio.run_coroutine_threadsafe(running.stop(grace=0.5), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


class RpcLog(list):
    """The names of the unary gRPC calls the gateway made, in order; `.metadata` holds each call's metadata."""

    def __init__(self) -> None:
        super().__init__()
        self.metadata: list[dict[str, str]] = []


def spy_on(app, monkeypatch) -> RpcLog:
    """Records every unary gRPC call the gateway makes and lets it through (to the real control plane)."""
    calls = RpcLog()
    cp_client = app.state.control_plane
    original = cp_client.unary

    async def spy(rpc, request, metadata=(), timeout=None):
        calls.append(rpc)
        calls.metadata.append(dict(metadata))
        return await original(rpc, request, metadata, timeout)

    monkeypatch.setattr(cp_client, "unary", spy)
    return calls


class LiveGateway:
    """uvicorn serving the gateway app in a thread, configured as `python -m gateway` configures it."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.server = build_server(settings)
        self.app = self.server.config.app
        self._thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.gateway_port}"

    def start(self) -> "LiveGateway":
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)


def start_gateway(control_plane: LiveControlPlane, **settings) -> LiveGateway:
    return LiveGateway(GatewaySettings(control_plane_address=control_plane.address, gateway_port=free_port(),
                                       **settings)).start()
