"""Readings agents send with each heartbeat that are worth showing but not storing (today: the memory their warm
trainer pool holds). Kept in memory: a restarted control plane shows them again after the next beat."""

from __future__ import annotations


class AgentReadings:
    def __init__(self) -> None:
        self._warm_pool_memory_bytes: dict[str, int] = {}

    def heard(self, agent_id: str, warm_pool_memory_bytes: int) -> None:
        self._warm_pool_memory_bytes[agent_id] = warm_pool_memory_bytes

    def warm_pool_memory_bytes(self, agent_id: str) -> int:
        """0 when the agent has no pool (size 0) or has not reported since this control plane started."""
        return self._warm_pool_memory_bytes.get(agent_id, 0)
