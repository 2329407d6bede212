"""The control plane's grpc.health.v1 answer follows its store: NOT_SERVING (for the server and each service) while
the PostgreSQL store is unreachable, SERVING again once it is back. A real control plane in this process, its store
the PostgreSQL server at 127.0.0.1:5432 reached through a TCP proxy the test closes and opens again."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text

from control_plane.server import SERVICE_NAMES, start_control_plane
from control_plane.settings import ControlPlaneSettings
from protos import control_plane_pb2 as cp, control_plane_pb2_grpc
from tests.conftest import POSTGRES_URL
from tests.helpers.tcp_proxy import TcpProxy

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def statuses(stub: health_pb2_grpc.HealthStub) -> set[int]:
    """The status of the server ("") and of every service."""
    replies = [await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5) for name in ("", *SERVICE_NAMES)]
    return {reply.status for reply in replies}


async def until(stub: health_pb2_grpc.HealthStub, wanted: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while time.monotonic() < deadline:
        seen = await statuses(stub)
        if seen == {wanted}:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"health is {seen}, not {{{wanted}}}, after {timeout} s")


def test_health_is_not_serving_while_the_store_is_unreachable_and_serving_once_it_is_back(tmp_path):
    schema = f"bugagaric_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    proxy = TcpProxy("127.0.0.1", 5432)
    proxy.open()
    settings = ControlPlaneSettings(
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/test?options=-csearch_path%3D{schema}",
        control_plane_host="127.0.0.1", control_plane_port=0, cluster_token="cluster-secret",
        admin_password="admin-password", workspace=tmp_path, store_probe_seconds=0.5,
    )

    async def scenario() -> None:
        running = await start_control_plane(settings)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                finetune = control_plane_pb2_grpc.FinetuneServiceStub(channel)
                assert await statuses(health) == {SERVING}

                proxy.close()  # the store goes away: its connections cut, new ones refused
                await until(health, NOT_SERVING)
                report = await finetune.GetSystemHealth(cp.GetSystemHealthRequest(), timeout=30)
                assert report.status == "unavailable" and report.database.startswith("error"), report

                proxy.open()
                await until(health, SERVING)
                report = await finetune.GetSystemHealth(cp.GetSystemHealthRequest(), timeout=30)
                assert report.database == "ok", report
        finally:
            proxy.open()  # the control plane's own shutdown may want its store
            await running.stop(grace=0.5)

    try:
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.run(scenario())
    finally:
        proxy.shutdown()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
