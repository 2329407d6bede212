"""Places queued tasks on live agents (best fit, queue order), launches them, and recovers tasks of lost agents."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

import grpc

from control_plane.agent_clients import AgentClients
from control_plane.ingestion import Ingestion
from control_plane.model_catalog import ModelCatalog, config_holders
from control_plane.models import Agent, Task, utcnow
from control_plane.placement import Placement, choose
from control_plane.recovery import requeue_or_fail
from control_plane.state_machine import ACTIVE, IllegalTransition, TaskStatus
from control_plane.task_inputs import TaskInputs
from control_plane.task_store import TaskNotFound, TaskStore
from protos import agent_pb2
from trainers.errors import ConfigError

log = logging.getLogger(__name__)

LAUNCH_TIMEOUT_SECONDS = 30.0
# Launch errors that mean "not now" rather than "never": the task goes back to the queue.
# ALREADY_EXISTS: the agent still runs an earlier attempt it is being told to stop.
_RETRYABLE = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.ALREADY_EXISTS}


class Scheduler:
    def __init__(self, store: TaskStore, clients: AgentClients, ingestion: Ingestion, *, agent_timeout_seconds: float,
                 interval_seconds: float, agent_gone_seconds: float | None = None, catalog: ModelCatalog,
                 inputs: TaskInputs):
        self._store = store
        self._catalog = catalog
        self._inputs = inputs
        self._clients = clients
        self._ingestion = ingestion
        # Silent for agent_timeout: no new tasks (it may be restarting). Silent for agent_gone: its runs are given up.
        self._agent_timeout = timedelta(seconds=agent_timeout_seconds)
        self._agent_gone = timedelta(seconds=max(agent_gone_seconds or 0.0, agent_timeout_seconds))
        # Heartbeats could not arrive while this control plane was down: every agent gets a full timeout from now.
        self._started = utcnow()
        self._interval = interval_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def is_alive(self, agent: Agent) -> bool:
        return self._silence(agent) <= self._agent_timeout

    def is_gone(self, agent: Agent) -> bool:
        return self._silence(agent) > self._agent_gone

    def _silence(self, agent: Agent) -> timedelta:
        return utcnow() - max(agent.last_heartbeat, self._started)

    def live_agents(self) -> list[Agent]:
        return [agent for agent in self._store.agents() if self.is_alive(agent)]

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.place_queued()
            except Exception:  # keep scheduling whatever one round hit
                log.exception("scheduling round failed")

    async def place_queued(self) -> None:
        """Places queued tasks in queue order; stops at the first that cannot be placed now, so that a big or pinned
        task is not overtaken forever by smaller ones behind it."""
        self.recover_lost_agents()
        queue = self._store.queue()
        if not queue:
            return
        agents = self.live_agents()
        held = self._store.held_devices()
        inventories = self._catalog.inventories({agent.id for agent in agents})
        for task in queue:
            # A task naming held models goes where they are.
            allowed = config_holders(json.loads(task.config_json), inventories)
            placement = choose(task, [a for a in agents if allowed is None or a.id in allowed], held)
            if placement is None:
                return
            held.setdefault(placement.agent.id, set()).update(placement.devices)
            await self._launch(task, placement)

    def recover_lost_agents(self) -> None:
        """Tasks on an agent silent for longer than the gone timeout are requeued (retries left) or failed with
        agent_lost. A shorter silence (a restart, a network blip) only stops new placements there: the agent's runs
        go on, and ingestion catches up with them when it is back."""
        for agent in self._store.agents():
            if not self.is_gone(agent):
                continue
            for task in self._store.tasks_with_status(ACTIVE):
                if task.agent_id == agent.id:
                    silent = (utcnow() - agent.last_heartbeat).total_seconds()
                    message = f"agent {agent.id} lost: no heartbeat for {silent:.0f}s"
                    if requeue_or_fail(self._store, task.id, "agent_lost", message, attempt=task.attempt) is not None:
                        log.warning("task %s: %s", task.id, message)

    async def _launch(self, task: Task, placement: Placement) -> None:
        agent, devices = placement.agent, placement.devices
        attempt = task.attempt + 1
        where = f"agent {agent.id}, device(s) {','.join(map(str, devices))}"
        try:
            self._store.transition(
                task.id, TaskStatus.STARTING, "placed", f"attempt {attempt} placed on {where}",
                agent_id=agent.id, devices=",".join(map(str, devices)), attempt=attempt,
            )
        except (IllegalTransition, TaskNotFound):
            return  # stopped or deleted since it was read
        try:
            inputs = self._inputs.for_task(task)
        except ConfigError as exc:  # e.g. its owner's account, and with it the dataset, is gone
            self._store.transition(task.id, TaskStatus.FAILED, "invalid_data", exc.message, error=exc.message,
                                   error_reason="invalid_data", only_attempt=attempt)
            return
        request = agent_pb2.LaunchTaskRequest(
            task_id=task.id, type=task.type, config_json=task.config_json, devices=devices, attempt=attempt,
            log_seq_base=task.last_log_seq, metric_seq_base=task.last_metric_seq, resume_from_checkpoint=task.resume_from,
            env=self._path_scope_env(task), inputs=inputs,
        )
        try:
            response = await self._clients.stub(agent.address).LaunchTask(request, timeout=LAUNCH_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            self._launch_failed(task.id, attempt, agent, exc)
            return
        self._store.set_fields(task.id, pid=response.pid, output_dir=response.output_dir)
        self._ingestion.follow(task.id)
        if self._store.get_task(task.id).status == TaskStatus.STOPPING:
            # A stop arrived while the launch was in flight; the agent did not know the task then.
            await self._clients.stub(agent.address).StopTask(agent_pb2.AgentStopTaskRequest(task_id=task.id))

    def _path_scope_env(self, task: Task) -> dict[str, str]:
        """Whose paths the trainer may read (trainers.paths): its owner's, and admins' extra roots if the owner was an
        admin when submitting."""
        validation = self._store.validation(task.id)
        admin = validation is not None and validation.admin_paths
        return {"BUGAGARIC_TASK_OWNER": task.owner, "BUGAGARIC_PATH_SCOPE": "admin" if admin else "user"}

    def _launch_failed(self, task_id: str, attempt: int, agent: Agent, exc: grpc.aio.AioRpcError) -> None:
        message = f"agent {agent.id} refused the launch: {exc.code().name}: {exc.details()}"
        log.warning("task %s: %s", task_id, message)
        current = self._store.get_task(task_id).status
        if current == TaskStatus.STOPPING:
            target, reason = TaskStatus.STOPPED, "user_stop"
        elif exc.code() in _RETRYABLE:
            target, reason = TaskStatus.QUEUED, "launch_retry"
        else:
            target, reason = TaskStatus.FAILED, "launch_failed"
        fields = {"error": message, "error_reason": reason} if target == TaskStatus.FAILED else {}
        if target == TaskStatus.QUEUED:
            fields.update(agent_id="", devices="")
        try:
            self._store.transition(task_id, target, reason, message, only_attempt=attempt, **fields)
        except IllegalTransition as error:
            log.info("task %s: %s", task_id, error)
