"""What the control plane does with the agents of a task, one or several (a multi-node gang): which agents run it,
stopping it on all of them, and the address node 0 advertises for the rendezvous."""

from __future__ import annotations

import asyncio
import logging
import posixpath

import grpc

from control_plane.agent_clients import AgentClients
from control_plane.db_calls import in_db_thread
from control_plane.models import Task
from control_plane.task_store import TaskNotFound, TaskStore
from protos import agent_pb2

log = logging.getLogger(__name__)

STOP_RPC_TIMEOUT_SECONDS = 10.0


def task_agents(store: TaskStore, task: Task) -> dict[str, int | None]:
    """agent id -> node number (None for a one-node task) of the agents the task's current attempt runs on. On a
    store thread."""
    if task.nodes > 1:
        nodes = store.task_nodes(task.id, task.attempt)
        if nodes:
            return {node.agent_id: node.node for node in nodes}
    return {task.agent_id: None} if task.agent_id else {}


def runs_on(store: TaskStore, task: Task, agent_id: str) -> bool:
    """Whether the task's current attempt runs on the agent (as its one agent or as one of its nodes)."""
    return agent_id in task_agents(store, task)


def rendezvous_host(agent_address: str) -> str:
    """The host part of an agent's advertised gRPC address (host:port, [v6]:port): where node 0's torchrun hosts
    the c10d rendezvous, reachable from the other nodes as the agent itself is from the control plane."""
    host, _, _ = agent_address.rpartition(":")
    return host.strip("[]") or agent_address


def checkpoint_subpath(checkpoint: str, output_dir: str) -> str:
    """Where a checkpoint lies inside the task's output directory ("checkpoint-8", "rounds/round_1/checkpoint-8"): every
    node of a gang keeps its own copy there. "" when there is none, or it lies elsewhere (the trainer refuses it)."""
    if not checkpoint or not output_dir:
        return ""
    relative = posixpath.relpath(posixpath.normpath(checkpoint), posixpath.normpath(output_dir))
    return "" if relative == "." or relative.startswith("..") else relative


async def stop_everywhere(clients: AgentClients, store: TaskStore, task_id: str, *, grace_seconds: float = 0.0,
                          skip_agent: str = "") -> None:
    """Stops the task's current attempt on every agent it runs on (but `skip_agent`), at once. An agent that does
    not answer is logged: its run ends when it learns the attempt is no longer its (registration) or is given up."""

    def targets() -> list[tuple[str, str]]:
        try:
            task = store.get_task(task_id)
        except TaskNotFound:
            return []
        found = []
        for agent_id in task_agents(store, task):
            agent = store.get_agent(agent_id)
            if agent is not None and agent_id != skip_agent:
                found.append((agent_id, agent.address))
        return found

    async def stop(agent_id: str, address: str) -> None:
        try:
            await clients.stub(address).StopTask(
                agent_pb2.AgentStopTaskRequest(task_id=task_id, grace_seconds=grace_seconds),
                timeout=STOP_RPC_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            # NOT_FOUND: the launch is still in flight; the scheduler stops it once launched.
            log.warning("task %s: stop on agent %s: %s %s", task_id, agent_id, exc.code().name, exc.details())

    await asyncio.gather(*(stop(agent_id, address) for agent_id, address in await in_db_thread(targets)))
