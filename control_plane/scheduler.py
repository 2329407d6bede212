"""Places queued tasks on live agents (best fit, queue order), launches them, and recovers tasks of lost agents."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Callable

import grpc

from control_plane.agent_clients import AgentClients
from control_plane.db_calls import in_db_thread
from control_plane.gang import checkpoint_subpath, rendezvous_host, stop_everywhere, task_agents
from control_plane.ingestion import Ingestion
from control_plane.metrics import ControlPlaneMetrics
from control_plane.model_catalog import ModelCatalog, config_holders
from control_plane.models import Agent, Task, utcnow
from control_plane.placement import Placement, device_indices, pinned_devices, place, reservation
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


@dataclass(frozen=True)
class _Round:
    """What one scheduling round read from the store (on a store thread)."""

    agents: list[Agent]
    live: list[Agent]
    held: dict[str, set[int]]
    queue: list[Task]  # its head only: no more tasks than there are free devices
    inventories: list
    # A gang resuming from a checkpoint: the agents of its attempt before, which hold their copies of it.
    resuming_on: dict[str, set[str]]


class Scheduler:
    """Runs a round (store reads, placements) when something may have made a placement possible: a submit, a task
    that ended, an agent that registered or came back, a launch to retry. In between it reads nothing: its timer only
    checks, in memory, whether an agent holding devices has been silent long enough to be given up."""

    def __init__(self, store: TaskStore, clients: AgentClients, ingestion: Ingestion, *, agent_timeout_seconds: float,
                 interval_seconds: float, agent_gone_seconds: float | None = None, catalog: ModelCatalog,
                 inputs: TaskInputs, metrics: ControlPlaneMetrics | None = None):
        self._store = store
        self._metrics = metrics or ControlPlaneMetrics()
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
        self._due = True  # a round is owed (the first one, a wake-up, a launch to retry)
        # What the last round saw, kept up to date by heartbeats: agent id -> last heard, device count, held count.
        self._heard: dict[str, object] = {}
        self._device_count: dict[str, int] = {}
        self._held_count: dict[str, int] = {}
        self.rounds = 0  # rounds run (store reads), for tests and benchmarks
        self._joined = 0  # tasks that joined the queue (counted on the event loop), to catch one a round missed
        # Devices held outside the store's tasks (chat sessions): agent id -> indices. Set by the server.
        self.extra_held: Callable[[], dict[str, set[int]]] = dict
        # Gangs requeued because one node's agent is gone: (task id, that agent); their other nodes are stopped.
        self._gangs_to_stop: list[tuple[str, str]] = []

    def wake(self) -> None:
        """Something changed what a round could do (a task ended, an agent came): run one."""
        self._due = True
        self._wake.set()

    def task_joined_queue(self) -> None:
        """A task was submitted, resumed or passed its data check: a round only when the last one left a live agent
        with a free device. Devices come free only through `wake` (a task ended, an agent came back or changed)."""
        self._joined += 1
        if self._may_have_free_device():
            self.wake()

    def _may_have_free_device(self) -> bool:
        now = utcnow()
        return any(self._device_count.get(agent_id, 0) > self._held_count.get(agent_id, 0)
                   and now - max(last, self._started) <= self._agent_timeout
                   for agent_id, last in self._heard.items())

    def agent_registered(self, agent_id: str) -> None:
        self.wake()

    def agent_heard(self, agent_id: str, reported_devices: int) -> None:
        """A heartbeat: wakes the scheduler when it changes what a round could do: the agent was unknown or silent
        (it was not offered work), or reports another number of devices."""
        now = utcnow()
        last = self._heard.get(agent_id)
        was_alive = last is not None and now - max(last, self._started) <= self._agent_timeout
        self._heard[agent_id] = now
        if not was_alive or (reported_devices and reported_devices != self._device_count.get(agent_id)):
            self.wake()

    def is_alive(self, agent: Agent) -> bool:
        return self._silence(agent) <= self._agent_timeout

    def is_gone(self, agent: Agent) -> bool:
        return self._silence(agent) > self._agent_gone

    def _silence(self, agent: Agent) -> timedelta:
        return utcnow() - max(agent.last_heartbeat, self._started)

    def held_devices(self) -> dict[str, set[int]]:
        """agent id -> the devices active tasks and chat sessions hold. Reads the store: call it on a store thread."""
        held = self._store.held_devices()
        for agent_id, devices in self.extra_held().items():
            held.setdefault(agent_id, set()).update(devices)
        return held

    def live_agents(self) -> list[Agent]:
        """Reads the store: call it on a store thread."""
        return [agent for agent in self._store.agents() if self.is_alive(agent)]

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if not (self._due or self._agent_to_give_up()):
                continue
            self._due = False
            try:
                await self.place_queued()
            except Exception:  # keep scheduling whatever one round hit
                log.exception("scheduling round failed")

    def _agent_to_give_up(self) -> bool:
        """Whether an agent holding devices has been silent past the gone timeout (as far as heartbeats tell)."""
        now = utcnow()
        return any(now - max(last, self._started) > self._agent_gone
                   for agent_id, last in self._heard.items() if self._held_count.get(agent_id))

    async def place_queued(self) -> None:
        """Places queued tasks in queue order. The first that cannot be placed now reserves the agents it waits for
        (placement.reservation): the tasks behind it may only use the others, so that a big task or a gang is not
        overtaken forever by smaller ones. A pinned task that cannot be placed stops the round."""
        joined = self._joined
        facts = await in_db_thread(self._read_round)
        self.rounds += 1
        while self._gangs_to_stop:
            task_id, lost = self._gangs_to_stop.pop()
            await stop_everywhere(self._clients, self._store, task_id, skip_agent=lost)
        held = facts.held
        reserved: set[str] | None = None
        for task in facts.queue:
            # A task naming held models goes where they are.
            allowed = config_holders(json.loads(task.config_json), facts.inventories)
            eligible = [a for a in facts.live if allowed is None or a.id in allowed]
            holders = facts.resuming_on.get(task.id, set())
            if holders and holders <= {a.id for a in eligible}:
                eligible = [a for a in eligible if a.id in holders]  # they hold its checkpoint: wait for them
            placement = place(task, [a for a in eligible if a.id not in (reserved or ())], held, prefer=holders)
            if placement is None:
                if reserved is not None:
                    continue  # only the first waiting task reserves; the others wait their turn
                reserved = set() if pinned_devices(task) else reservation(task, eligible, held)
                if not reserved:
                    break
                continue
            for node in placement:
                held.setdefault(node.agent.id, set()).update(node.devices)
            if len(placement) == 1:
                await self._launch(task, placement[0])
            else:
                await self._launch_gang(task, placement)
        for agent in facts.agents:
            self._heard[agent.id] = max(agent.last_heartbeat, self._heard.get(agent.id, agent.last_heartbeat))
            self._device_count[agent.id] = len(device_indices(agent))
            self._held_count[agent.id] = len(held.get(agent.id, ()))
        if self._joined != joined and self._may_have_free_device():
            self.wake()  # a task joined after this round read the queue, and it left a device free

    def _read_round(self) -> _Round:
        self.recover_lost_agents()
        agents = self._store.agents()
        live = [agent for agent in agents if self.is_alive(agent)]
        held = self.held_devices()
        free = sum(len(set(device_indices(agent)) - held.get(agent.id, set())) for agent in live)
        queue = self._store.queue(limit=free) if free else []
        inventories = self._catalog.inventories({agent.id for agent in live}) if queue else []
        resuming_on = {task.id: {node.agent_id for node in self._store.task_nodes(task.id, task.attempt)}
                       for task in queue if task.nodes > 1 and task.resume_from}
        return _Round(agents, live, held, queue, inventories, resuming_on)

    def recover_lost_agents(self) -> None:
        """Tasks on an agent silent for longer than the gone timeout are requeued (retries left) or failed with
        agent_lost. A shorter silence (a restart, a network blip) only stops new placements there: the agent's runs
        go on, and ingestion catches up with them when it is back. Reads the store: call it on a store thread."""
        gone = [agent for agent in self._store.agents() if self.is_gone(agent)]
        if not gone:
            return
        active = self._store.tasks_with_status(ACTIVE)
        for agent in gone:
            for task in active:
                if agent.id in task_agents(self._store, task):  # a gang is lost with any of its nodes
                    silent = (utcnow() - agent.last_heartbeat).total_seconds()
                    message = f"agent {agent.id} lost: no heartbeat for {silent:.0f}s"
                    if requeue_or_fail(self._store, task.id, "agent_lost", message, attempt=task.attempt) is not None:
                        log.warning("task %s: %s", task.id, message)
                        self._due = True  # requeued: place it elsewhere
                        if task.nodes > 1:  # its other nodes must not hang on a collective with the lost one
                            self._gangs_to_stop.append((task.id, agent.id))

    async def _launch(self, task: Task, placement: Placement) -> None:
        agent, devices = placement.agent, placement.devices
        attempt = task.attempt + 1
        where = f"agent {agent.id}, device(s) {','.join(map(str, devices))}"
        try:
            launch = await in_db_thread(self._placed, task, attempt, where, devices, agent)
        except (IllegalTransition, TaskNotFound):
            return  # stopped or deleted since it was read
        if launch is None:
            return  # failed: its inputs are no longer there
        inputs, env = launch
        request = agent_pb2.LaunchTaskRequest(
            task_id=task.id, type=task.type, config_json=task.config_json, devices=devices, attempt=attempt,
            log_seq_base=task.last_log_seq, metric_seq_base=task.last_metric_seq, resume_from_checkpoint=task.resume_from,
            env=env, inputs=inputs,
        )
        try:
            response = await self._clients.stub(agent.address).LaunchTask(request, timeout=LAUNCH_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            await in_db_thread(self._launch_failed, task.id, attempt, agent, exc)
            return

        def launched() -> str:
            self._store.set_fields(task.id, pid=response.pid, output_dir=response.output_dir)
            return self._store.get_task(task.id).status

        status = await in_db_thread(launched)
        self._ingestion.follow(task.id)
        if status == TaskStatus.STOPPING:
            # A stop arrived while the launch was in flight; the agent did not know the task then.
            await self._clients.stub(agent.address).StopTask(agent_pb2.AgentStopTaskRequest(task_id=task.id))

    async def _launch_gang(self, task: Task, placement: list[Placement]) -> None:
        """Every node of a multi-node attempt: node 0 first (its agent chooses the rendezvous port), then the others
        with that port. A node that cannot be launched stops the nodes already launched, and the attempt goes back to
        the queue or fails as a one-node launch would."""
        attempt = task.attempt + 1
        where = "; ".join(f"node {number}: agent {node.agent.id}, device(s) {','.join(map(str, node.devices))}"
                          for number, node in enumerate(placement))
        gang = [(node.agent.id, ",".join(map(str, node.devices))) for node in placement]
        try:
            launch = await in_db_thread(self._placed, task, attempt, where, placement[0].devices, placement[0].agent,
                                        gang)
        except (IllegalTransition, TaskNotFound):
            return
        if launch is None:
            return
        inputs, env = launch
        rendezvous = agent_pb2.GangLaunch(nnodes=len(placement), rdzv_id=f"{task.id}-{attempt}",
                                          rdzv_host=rendezvous_host(placement[0].agent.address),
                                          resume_subpath=checkpoint_subpath(task.resume_from, task.output_dir))
        for number, node in enumerate(placement):
            rendezvous.node_rank = number
            request = agent_pb2.LaunchTaskRequest(
                task_id=task.id, type=task.type, config_json=task.config_json, devices=node.devices, attempt=attempt,
                resume_from_checkpoint=task.resume_from, env=env, inputs=inputs, gang=rendezvous,
            )  # seqs start at 0 on every node: ingestion gives the task's seqs (TaskStore.ingest_node)
            try:
                response = await self._clients.stub(node.agent.address).LaunchTask(request,
                                                                                   timeout=LAUNCH_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as exc:
                if number:
                    await stop_everywhere(self._clients, self._store, task.id, skip_agent=node.agent.id)
                await in_db_thread(self._launch_failed, task.id, attempt, node.agent, exc)
                return
            if number == 0:
                rendezvous.rdzv_port = response.rdzv_port
                first = response
            await in_db_thread(self._store.set_node, task.id, attempt, number, pid=response.pid,
                               output_dir=response.output_dir)

        def launched() -> str:
            self._store.set_fields(task.id, pid=first.pid, output_dir=first.output_dir)
            return self._store.get_task(task.id).status

        status = await in_db_thread(launched)
        self._ingestion.follow(task.id)
        if status == TaskStatus.STOPPING:
            await stop_everywhere(self._clients, self._store, task.id)

    def _placed(self, task: Task, attempt: int, where: str, devices: list[int], agent: Agent,
                gang: list[tuple[str, str]] | None = None):
        """On a store thread: the task moves to starting (with its nodes, for a gang); returns what its launch sends
        (inputs, environment), or None when it failed instead (its inputs are gone)."""
        # A split_gpus task runs in the shape it got this time (one agent, or equal shares over several).
        shape = {"nodes": max(1, len(gang or ())), "gpus_per_node": len(devices) if gang else 0} if task.split_gpus else {}
        placed = self._store.transition(
            task.id, TaskStatus.STARTING, "placed", f"attempt {attempt} placed on {where}",
            agent_id=agent.id, devices=",".join(map(str, devices)), attempt=attempt, gang=gang or (), **shape,
        )
        self._observe_wait(task.id, placed.updated_at)
        try:
            inputs = self._inputs.for_task(task)
        except ConfigError as exc:  # e.g. its owner's account, and with it the dataset, is gone
            self._store.transition(task.id, TaskStatus.FAILED, "invalid_data", exc.message, error=exc.message,
                                   error_reason="invalid_data", only_attempt=attempt)
            return None
        return inputs, self._path_scope_env(task)

    def _observe_wait(self, task_id: str, placed_at) -> None:
        """Scheduling latency: from the task's latest entry into `queued` (submit, retry, resume) to its placement.
        On a store thread."""
        queued = [event.time for event in self._store.events(task_id) if event.to_status == TaskStatus.QUEUED]
        if queued:
            since, until = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (queued[-1], placed_at))
            self._metrics.scheduling_latency.observe(max(0.0, (until - since).total_seconds()))

    def _path_scope_env(self, task: Task) -> dict[str, str]:
        """Whose paths the trainer may read (trainers.paths): its owner's, and admins' extra roots if the owner was an
        admin when submitting."""
        validation = self._store.validation(task.id)
        admin = validation is not None and validation.admin_paths
        return {"BUGAGARIC_TASK_OWNER": task.owner, "BUGAGARIC_PATH_SCOPE": "admin" if admin else "user"}

    def _launch_failed(self, task_id: str, attempt: int, agent: Agent, exc: grpc.aio.AioRpcError) -> None:
        """On a store thread."""
        message = f"agent {agent.id} refused the launch: {exc.code().name}: {exc.details()}"
        log.warning("task %s: %s", task_id, message)
        current = self._store.get_task(task_id).status
        if current == TaskStatus.STOPPING:
            target, reason = TaskStatus.STOPPED, "user_stop"
        elif exc.code() in _RETRYABLE:
            target, reason = TaskStatus.QUEUED, "launch_retry"
            self._due = True  # try again on the next tick
        else:
            target, reason = TaskStatus.FAILED, "launch_failed"
        fields = {"error": message, "error_reason": reason} if target == TaskStatus.FAILED else {}
        if target == TaskStatus.QUEUED:
            fields.update(agent_id="", devices="")
        try:
            self._store.transition(task_id, target, reason, message, only_attempt=attempt, **fields)
        except IllegalTransition as error:
            log.info("task %s: %s", task_id, error)
