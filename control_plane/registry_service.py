"""The agent-facing AgentRegistry: registration and heartbeats."""

from __future__ import annotations

import json
import logging

import grpc
from google.protobuf.json_format import MessageToDict

from control_plane.agent_clients import AgentClients
from control_plane.ingestion import Ingestion
from control_plane.scheduler import Scheduler
from control_plane.state_machine import ACTIVE
from control_plane.task_store import TaskNotFound, TaskStore
from protos import agent_pb2, control_plane_pb2, control_plane_pb2_grpc

log = logging.getLogger(__name__)


class AgentRegistryService(control_plane_pb2_grpc.AgentRegistryServicer):
    def __init__(self, store: TaskStore, scheduler: Scheduler, ingestion: Ingestion, clients: AgentClients, heartbeat_seconds: int):
        self._clients = clients
        self._store = store
        self._scheduler = scheduler
        self._ingestion = ingestion
        self._heartbeat_seconds = heartbeat_seconds

    async def RegisterAgent(self, request, context):
        slots = len(request.devices) or request.slots
        self._store.upsert_agent(request.agent_id, request.address, request.hostname, slots, devices_json(request.devices))
        log.info("agent %s registered at %s with %d device(s)", request.agent_id, request.address, slots)
        # A (re)registered agent may be running tasks whose streams broke: make sure they are followed.
        self._ingestion.resume_active()
        await self._stop_orphans(request.agent_id, request.address, request.running_task_ids)
        self._scheduler.wake()
        return control_plane_pb2.RegisterAgentResponse(heartbeat_interval_seconds=self._heartbeat_seconds)

    async def Heartbeat(self, request, context):
        known = self._store.touch_agent(request.agent_id, devices_json(request.devices) if request.devices else None)
        if known:
            self._scheduler.wake()
        return control_plane_pb2.HeartbeatResponse(known=known)

    async def _stop_orphans(self, agent_id: str, address: str, running_task_ids) -> None:
        """Runs the agent still has that the control plane gave up on (requeued elsewhere after the agent was lost,
        stopped, or deleted) must not go on training: stop them."""
        for task_id in running_task_ids:
            try:
                task = self._store.get_task(task_id)
                orphan = task.agent_id != agent_id or task.status not in ACTIVE
            except TaskNotFound:
                orphan = True
            if orphan:
                log.warning("agent %s still runs task %s, which is no longer its: stopping it", agent_id, task_id)
                try:
                    await self._clients.stub(address).StopTask(agent_pb2.AgentStopTaskRequest(task_id=task_id), timeout=10)
                except grpc.aio.AioRpcError as exc:
                    log.warning("stopping orphan %s on %s: %s", task_id, agent_id, exc.details())


def devices_json(devices) -> str:
    return json.dumps([MessageToDict(d, preserving_proto_field_name=True, always_print_fields_with_no_presence=True) for d in devices])
