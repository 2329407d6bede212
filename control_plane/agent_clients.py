"""gRPC channels to the registered agents, one per address, reused."""

from __future__ import annotations

import grpc

from protos import agent_pb2_grpc
from protos.auth import bearer_channel


class AgentClients:
    """Every call carries the cluster token: agents refuse calls without it."""

    def __init__(self, cluster_token: str) -> None:
        self._cluster_token = cluster_token
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, address: str) -> agent_pb2_grpc.GpuAgentStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = bearer_channel(address, self._cluster_token)
        return agent_pb2_grpc.GpuAgentStub(channel)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
