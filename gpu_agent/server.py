"""Builds and runs the agent's grpc.aio server: GpuAgent, health, reflection, and registration."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc

from protos.auth import BearerTokenInterceptor, tokens_equal
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gpu_agent.agent import Agent
from gpu_agent.metrics import agent_registry
from gpu_agent.registration import Registrar
from gpu_agent.model_inventory import hub_access
from gpu_agent.servicer import GpuAgentServicer, devices_to_proto, models_to_proto
from gpu_agent.settings import AgentSettings
from protos import agent_pb2, agent_pb2_grpc
from protos.metrics_http import MetricsServer

log = logging.getLogger(__name__)

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["GpuAgent"].full_name  # bugagaric.finetune.v1.GpuAgent


def _cluster_check(cluster_token: str):
    """Only the control plane, holding the cluster token, may drive this agent."""

    async def check(method: str, token: str) -> str | None:
        return "control-plane" if tokens_equal(token, cluster_token) else None

    return check


async def start_agent(settings: AgentSettings | None = None) -> tuple[grpc.aio.Server, int, Agent]:
    """Starts the agent in this event loop; returns (server, bound port, agent). Stop it with stop_agent()."""
    settings = settings or AgentSettings()
    if not settings.cluster_token:
        raise SystemExit("BUGAGARIC_CLUSTER_TOKEN is not set: the agent accepts calls only from the control plane holding it")
    agent = Agent(settings)
    agent.agent_dir.mkdir(parents=True, exist_ok=True)
    # Before serving and registering: adopted tasks are running tasks, reported at registration.
    agent.adopt_leftovers()
    # Without SO_REUSEPORT a second agent on the same port fails to bind instead of sharing it (and registering).
    server = grpc.aio.server(interceptors=[BearerTokenInterceptor(_cluster_check(settings.cluster_token))],
                             options=[("grpc.so_reuseport", 0)])
    agent_pb2_grpc.add_GpuAgentServicer_to_server(GpuAgentServicer(agent), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server)
    port = agent.tls.bind(server, settings.agent_host, settings.agent_port, "agent")
    if port == 0:
        raise RuntimeError(f"could not bind {settings.agent_host}:{settings.agent_port}")
    await server.start()
    agent.start_warm_pool()  # its imports take seconds and run meanwhile; attempts start cold until it is ready
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    agent.agent_id = settings.resolved_agent_id(port)
    metrics_host = settings.agent_metrics_host or settings.agent_host
    agent.metrics_server = MetricsServer(agent_registry(agent), metrics_host, settings.agent_metrics_port,
                                         "BUGAGARIC_AGENT_METRICS_PORT")
    agent.health = health_servicer
    address = settings.advertise_address(port)
    log.info("agent %s serving on %s:%d (advertised as %s), %d %s device(s), task dirs under %s, models from %s, "
             "input cache %s", agent.agent_id, settings.agent_host, port, address, agent.slots, agent.inventory.kind,
             agent.agent_dir, agent.models.models_dir, agent.cache_dir)
    log.info("agent metrics on http://%s:%d/metrics", metrics_host, agent.metrics_server.port)
    if settings.control_plane_address:
        registrar = Registrar(
            control_plane_address=settings.control_plane_address, agent_id=agent.agent_id, address=address,
            hostname=agent.hostname, running_task_ids=agent.running_task_ids,
            heartbeat_seconds=settings.heartbeat_seconds, cluster_token=settings.cluster_token, tls=agent.tls,
            devices=lambda: devices_to_proto(agent.inventory.refresh()),
            models=lambda: models_to_proto(agent.models.models()), hub_access=hub_access,
            warm_pool_memory_bytes=agent.warm_pool_memory_bytes)
        registrar.start()
        agent.registrar = registrar
    return server, port, agent


async def stop_agent(server: grpc.aio.Server, agent: Agent, grace: float = 5.0) -> None:
    """Stops serving and watching; running trainers are left running (they live in their own sessions)."""
    if agent.health is not None:
        await agent.health.enter_graceful_shutdown()
    if agent.registrar is not None:
        await agent.registrar.close()
    await server.stop(grace)
    if agent.metrics_server is not None:
        await asyncio.to_thread(agent.metrics_server.close)
    await agent.close()


async def serve(settings: AgentSettings | None = None) -> None:
    """Runs until SIGTERM or SIGINT."""
    server, _, agent = await start_agent(settings)
    _ = agent.shallow_checks  # starts the submit-time check workers now, not on the first submit
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await stop_agent(server, agent)
    log.info("agent stopped")
