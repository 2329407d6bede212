"""gRPC channels to the registered agents, one per address, reused."""

from __future__ import annotations

import grpc

from protos import agent_pb2_grpc
from protos.auth import bearer_channel
from protos.tls import PLAINTEXT, Tls


class AgentClients:
    """Every call carries the cluster token: agents refuse calls without it. With TLS on, the agents are dialed
    with TLS (an agent with TLS on serves nothing else), presenting the control plane's certificate."""

    def __init__(self, cluster_token: str, tls: Tls = PLAINTEXT) -> None:
        self._cluster_token = cluster_token
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, address: str) -> agent_pb2_grpc.GpuAgentStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = bearer_channel(address, self._cluster_token, tls=self._tls)
        return agent_pb2_grpc.GpuAgentStub(channel)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
