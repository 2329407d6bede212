"""gRPC channels to the registered agents, one per address, reused."""

from __future__ import annotations

import grpc

from protos import agent_pb2_grpc


class AgentClients:
    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, address: str) -> agent_pb2_grpc.GpuAgentStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        return agent_pb2_grpc.GpuAgentStub(channel)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
