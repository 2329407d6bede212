"""The agent-facing AgentRegistry: registration, heartbeats (devices, models), and blobs for agents to fetch."""

from __future__ import annotations

import json
import logging

import grpc
from google.protobuf.json_format import MessageToDict

from control_plane.agent_clients import AgentClients
from control_plane.agent_reports import AgentReadings
from control_plane.blob_store import BlobNotFound, BlobStore
from control_plane.db_calls import in_db_thread
from control_plane.gang import runs_on
from control_plane.model_catalog import ModelCatalog
from control_plane.ingestion import Ingestion
from control_plane.scheduler import Scheduler
from control_plane.state_machine import ACTIVE
from control_plane.task_store import TaskNotFound, TaskStore
from protos import agent_pb2, common_pb2, control_plane_pb2, control_plane_pb2_grpc
from protos.blocking_streams import off_the_loop

log = logging.getLogger(__name__)


class AgentRegistryService(control_plane_pb2_grpc.AgentRegistryServicer):
    def __init__(self, store: TaskStore, scheduler: Scheduler, ingestion: Ingestion, clients: AgentClients,
                 heartbeat_seconds: int, catalog: ModelCatalog, blobs: BlobStore, readings: AgentReadings):
        self._catalog = catalog
        self._readings = readings
        self._blobs = blobs
        self._reported: dict[str, tuple] = {}  # agent id -> its last model report, to write only changes
        self._clients = clients
        self._store = store
        self._scheduler = scheduler
        self._ingestion = ingestion
        self._heartbeat_seconds = heartbeat_seconds

    async def RegisterAgent(self, request, context):
        slots = len(request.devices) or request.slots

        def register() -> None:
            self._store.upsert_agent(request.agent_id, request.address, request.hostname, slots,
                                     devices_json(request.devices))
            self._record_models(request.agent_id, request.models, request.hub_access, force=True)

        await in_db_thread(register)
        log.info("agent %s registered at %s with %d device(s)", request.agent_id, request.address, slots)
        # A (re)registered agent may be running tasks whose streams broke: make sure they are followed.
        self._ingestion.resume_active()
        await self._stop_orphans(request.agent_id, request.address, request.running_task_ids)
        self._scheduler.agent_registered(request.agent_id)
        return control_plane_pb2.RegisterAgentResponse(heartbeat_interval_seconds=self._heartbeat_seconds)

    async def Heartbeat(self, request, context):
        def beat() -> bool:
            known = self._store.touch_agent(request.agent_id, devices_json(request.devices) if request.devices else None)
            if known:
                self._record_models(request.agent_id, request.models, request.hub_access)
            return known

        known = await in_db_thread(beat)
        if known:
            self._readings.heard(request.agent_id, request.warm_pool_memory_bytes)
            # Wakes the scheduler only when this agent may have a free device: busy agents' beats cost nothing.
            self._scheduler.agent_heard(request.agent_id, len(request.devices))
        return control_plane_pb2.HeartbeatResponse(known=known)

    def _record_models(self, agent_id: str, models, hub_access: bool, force: bool = False) -> None:
        """On a store thread (its cache is only touched there, one agent's beats one after the other)."""
        report = (tuple(m.SerializeToString(deterministic=True) for m in models), hub_access)
        if force or self._reported.get(agent_id) != report:
            self._catalog.record(agent_id, models, hub_access)
            self._reported[agent_id] = report

    async def FetchBlob(self, request, context):
        """Streams a blob from `offset` in chunks, read off the event loop."""
        try:
            total = self._blobs.size(request.sha256)
            chunks = self._blobs.read(request.sha256, request.offset)
        except BlobNotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"blob {request.sha256!r} not found")
        if request.offset > total:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"offset {request.offset} is past the blob's end ({total})")
        offset = request.offset
        async for data in off_the_loop(chunks):
            yield common_pb2.FileChunk(data=data, offset=offset, total_size=total)
            offset += len(data)

    async def _stop_orphans(self, agent_id: str, address: str, running_task_ids) -> None:
        """Runs the agent still has that the control plane gave up on (requeued elsewhere after the agent was lost,
        stopped, or deleted) must not go on training: stop them."""

        def orphans() -> list[str]:
            found = []
            for task_id in running_task_ids:
                try:
                    task = self._store.get_task(task_id)
                    if task.status not in ACTIVE or not runs_on(self._store, task, agent_id):
                        found.append(task_id)
                except TaskNotFound:
                    found.append(task_id)
            return found

        for task_id in await in_db_thread(orphans) if running_task_ids else []:
            log.warning("agent %s still runs task %s, which is no longer its: stopping it", agent_id, task_id)
            try:
                await self._clients.stub(address).StopTask(agent_pb2.AgentStopTaskRequest(task_id=task_id), timeout=10)
            except grpc.aio.AioRpcError as exc:
                log.warning("stopping orphan %s on %s: %s", task_id, agent_id, exc.details())


def devices_json(devices) -> str:
    return json.dumps([MessageToDict(d, preserving_proto_field_name=True, always_print_fields_with_no_presence=True) for d in devices])
