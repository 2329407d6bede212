"""Registers the agent with the control plane and keeps it informed by heartbeats.

Registration carries the agent's devices (slots = their number), the models it holds, whether it may download from a
model hub, and the tasks it runs (adopted ones included, so the control plane resumes following them); every
heartbeat carries the running tasks, fresh device readings, the models again and the warm pool's memory.

Runs as a background task: while the control plane is unreachable it retries with backoff, and the agent's own
server keeps serving meanwhile. A heartbeat answered `known=false` (a restarted control plane) registers again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Sequence

import grpc

from protos.auth import bearer_channel
from protos.tls import PLAINTEXT, Tls

from protos import common_pb2, control_plane_pb2, control_plane_pb2_grpc

log = logging.getLogger(__name__)

_CALL_TIMEOUT = 5.0
_BACKOFF_START = 0.5
# Below the control plane's default agent timeout (10 s), so that a restarted control plane hears from us in time.
_BACKOFF_MAX = 5.0
# gRPC's own reconnect backoff grows to 120 s; keep it near ours so a returning control plane is found soon.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", int(_BACKOFF_START * 1000)),
    ("grpc.min_reconnect_backoff_ms", int(_BACKOFF_START * 1000)),
    ("grpc.max_reconnect_backoff_ms", int(_BACKOFF_MAX * 1000)),
]


class Registrar:
    def __init__(self, *, control_plane_address: str, agent_id: str, address: str, hostname: str,
                 running_task_ids: Callable[[], list[str]], heartbeat_seconds: float, cluster_token: str = "",
                 devices: Callable[[], Sequence[common_pb2.Device]] = list,
                 models: Callable[[], Sequence[common_pb2.ModelInfo]] = list, hub_access: Callable[[], bool] = bool,
                 warm_pool_memory_bytes: Callable[[], int] = int, tls: Tls = PLAINTEXT):
        self.control_plane_address = control_plane_address
        self.agent_id = agent_id
        self.address = address
        self.hostname = hostname
        self.running_task_ids = running_task_ids
        self.devices = devices  # the inventory with fresh readings, read on every registration and heartbeat
        self.models = models  # the models this agent holds (a scan of the models directory: run off the loop)
        self.hub_access = hub_access
        self.warm_pool_memory_bytes = warm_pool_memory_bytes  # a local round trip to the pool: run off the loop
        self.heartbeat_seconds = heartbeat_seconds
        self.cluster_token = cluster_token
        self.tls = tls
        self.registered = asyncio.Event()  # set while the control plane knows us (tests wait on it)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="agent-registration")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                async with bearer_channel(self.control_plane_address, self.cluster_token, _CHANNEL_OPTIONS,
                                          self.tls) as channel:
                    stub = control_plane_pb2_grpc.AgentRegistryStub(channel)
                    while True:
                        interval = await self._register(stub)
                        await self._heartbeat_until_forgotten(stub, interval)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never let a surprise end registration for good: the control plane would call us lost.
                log.exception("registration loop failed; starting over")
                await asyncio.sleep(_BACKOFF_MAX)

    async def _register(self, stub: control_plane_pb2_grpc.AgentRegistryStub) -> float:
        """Registers, retrying with backoff; returns the heartbeat interval to use."""
        delay = _BACKOFF_START
        while True:
            devices = list(self.devices())
            request = control_plane_pb2.RegisterAgentRequest(
                agent_id=self.agent_id, address=self.address, hostname=self.hostname, slots=len(devices),
                running_task_ids=self.running_task_ids(), devices=devices,
                models=await asyncio.to_thread(self.models), hub_access=self.hub_access())
            try:
                response = await stub.RegisterAgent(request, timeout=_CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                log.warning("registering with the control plane at %s failed (%s: %s); retrying in %.1f s",
                            self.control_plane_address, exc.code().name, exc.details(), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            # The control plane's interval wins: it decides when an agent counts as lost.
            interval = response.heartbeat_interval_seconds or self.heartbeat_seconds
            log.info("registered with the control plane at %s as %s (%s); heartbeat every %.1f s",
                     self.control_plane_address, self.agent_id, self.address, interval)
            self.registered.set()
            return interval

    async def _heartbeat_until_forgotten(self, stub: control_plane_pb2_grpc.AgentRegistryStub,
                                         interval: float) -> None:
        failing = False
        while True:
            await asyncio.sleep(interval)
            request = control_plane_pb2.HeartbeatRequest(agent_id=self.agent_id,
                                                         running_task_ids=self.running_task_ids(),
                                                         devices=list(self.devices()),
                                                         models=await asyncio.to_thread(self.models),
                                                         hub_access=self.hub_access(),
                                                         warm_pool_memory_bytes=await asyncio.to_thread(
                                                             self.warm_pool_memory_bytes))
            try:
                response = await stub.Heartbeat(request, timeout=_CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                if not failing:
                    log.warning("heartbeat to %s failed (%s); will keep trying", self.control_plane_address,
                                exc.code().name)
                failing = True
                continue
            if failing:
                log.info("heartbeat to %s works again", self.control_plane_address)
                failing = False
            if not response.known:
                log.info("the control plane does not know this agent; registering again")
                self.registered.clear()
                return
