"""The agent-facing AgentRegistry: registration and heartbeats."""

from __future__ import annotations

import logging

from control_plane.ingestion import Ingestion
from control_plane.scheduler import Scheduler
from control_plane.task_store import TaskStore
from protos import control_plane_pb2, control_plane_pb2_grpc

log = logging.getLogger(__name__)


class AgentRegistryService(control_plane_pb2_grpc.AgentRegistryServicer):
    def __init__(self, store: TaskStore, scheduler: Scheduler, ingestion: Ingestion, heartbeat_seconds: int):
        self._store = store
        self._scheduler = scheduler
        self._ingestion = ingestion
        self._heartbeat_seconds = heartbeat_seconds

    async def RegisterAgent(self, request, context):
        self._store.upsert_agent(request.agent_id, request.address, request.hostname, request.slots)
        log.info("agent %s registered at %s with %d slot(s)", request.agent_id, request.address, request.slots)
        # A (re)registered agent may be running tasks whose streams broke: make sure they are followed.
        self._ingestion.resume_active()
        self._scheduler.wake()
        return control_plane_pb2.RegisterAgentResponse(heartbeat_interval_seconds=self._heartbeat_seconds)

    async def Heartbeat(self, request, context):
        known = self._store.touch_agent(request.agent_id)
        if known:
            self._scheduler.wake()
        return control_plane_pb2.HeartbeatResponse(known=known)
