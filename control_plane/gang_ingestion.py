"""Following a multi-node attempt: one stream per node (each node's agent numbers its own lines; the store gives them
the task's seqs), and the gang's rules for how the nodes' ends make the task's.

- Every node succeeded: the task succeeded (rank 0 wrote the model; the others waited for it at the end).
- A node failed or was lost while the task runs: the others are stopped at once (no rank is left hanging on a
  collective), and the task is requeued from its latest checkpoint while max_retries allows, else failed
  (`node_failed`; a data or config error fails it at once, as on one node).
- The user stopped it: every node is stopped; the task is stopped once every node has ended.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from control_plane.agent_clients import AgentClients
from control_plane.converters import status_from_proto
from control_plane.db_calls import in_db_thread
from control_plane.gang import stop_everywhere
from control_plane.notifier import TaskChangeNotifier
from control_plane.recovery import requeue_or_fail
from control_plane.state_machine import TERMINAL, IllegalTransition, TaskStatus
from control_plane.task_store import TaskNotFound, TaskStore
from protos import common_pb2

if TYPE_CHECKING:
    from control_plane.ingestion import Ingestion

log = logging.getLogger(__name__)

NODE_FAILED = "node_failed"
# A failure every node would hit again: the task fails at once instead of being retried.
_NOT_RETRIED = {"invalid_data"}
# How long a node stopped because another failed gets to save and exit before it is killed.
GANG_STOP_GRACE_SECONDS = 5.0
# How long past that grace the other nodes' ends are awaited before the task is requeued anyway (an agent that does
# not answer: its run is told to stop when it registers again, or given up with it).
STOP_REPORT_SLACK_SECONDS = 10.0


class GangFollower:
    def __init__(self, ingestion: Ingestion, store: TaskStore, clients: AgentClients, notifier: TaskChangeNotifier):
        self._ingestion, self._store, self._clients, self._notifier = ingestion, store, clients, notifier
        self._broken: set[tuple[str, int]] = set()  # attempts a node's end broke: later ends are only recorded

    async def follow(self, task_id: str, attempt: int) -> None:
        """Until every node's stream has ended or the attempt no longer counts."""
        nodes = await in_db_thread(self._store.task_nodes, task_id, attempt)
        await asyncio.gather(*(self._ingestion.follow_stream(task_id, attempt, node.node) for node in nodes))

    async def node_status(self, task_id: str, attempt: int, number: int,
                          update: common_pb2.TaskStatusUpdate) -> bool:
        """Applies one node's status report; True when it was that node's final status."""
        if update.attempt and update.attempt != attempt:
            return False
        status = TaskStatus(status_from_proto(update.status))
        if status == TaskStatus.RUNNING:
            await in_db_thread(self._ingestion.mark_running, task_id, attempt, update)
            self._notifier.notify(task_id)
            return False
        if status not in TERMINAL:
            return False
        await in_db_thread(self._store.set_node, task_id, attempt, number, status=status.value,
                           exit_code=update.exit_code, error=update.error)
        if (task_id, attempt) in self._broken:
            return True
        if status == TaskStatus.SUCCEEDED:
            await self._maybe_all_ended(task_id, attempt)
        elif status == TaskStatus.STOPPED and await self._task_status(task_id) == TaskStatus.STOPPING:
            await self._maybe_all_ended(task_id, attempt)
        else:  # failed, or stopped while nobody asked for it
            reason = update.reason if update.reason in _NOT_RETRIED else NODE_FAILED
            how = f"exit code {update.exit_code}" if update.exit_code else status.value
            await self._gang_broken(task_id, attempt, number, reason, f"node {number} ended ({how}, "
                                    f"{update.reason or 'no reason given'}): {update.error or 'no error reported'}")
        return True

    async def _task_status(self, task_id: str) -> str | None:
        try:
            return (await in_db_thread(self._store.get_task, task_id)).status
        except TaskNotFound:
            return None

    async def _maybe_all_ended(self, task_id: str, attempt: int) -> None:
        """Once every node has ended: the task ends succeeded (all succeeded) or stopped (it was being stopped)."""
        nodes = await in_db_thread(self._store.task_nodes, task_id, attempt)
        if not nodes or any(not node.status for node in nodes):
            return
        if all(node.status == TaskStatus.SUCCEEDED for node in nodes):
            await self._ingestion.end_attempt(task_id, attempt, TaskStatus.SUCCEEDED, "exited", "")
        else:
            await self._ingestion.end_attempt(task_id, attempt, TaskStatus.STOPPED, "user_stop", "")

    async def node_lost(self, task_id: str, attempt: int, number: int, message: str) -> None:
        await in_db_thread(self._store.set_node, task_id, attempt, number, status=TaskStatus.FAILED.value,
                           error=message)
        await self._gang_broken(task_id, attempt, number, NODE_FAILED, f"node {number} lost: {message}")

    async def _gang_broken(self, task_id: str, attempt: int, number: int, reason: str, message: str) -> None:
        """One node is gone: the others are stopped, then the task is requeued (retries left) or failed. The others'
        ends are awaited first (as their streams report them), so that the next attempt is not placed beside ranks of
        this one still hanging."""
        self._broken.add((task_id, attempt))
        log.warning("task %s attempt %d: %s; stopping the other nodes", task_id, attempt, message)
        await stop_everywhere(self._clients, self._store, task_id, grace_seconds=GANG_STOP_GRACE_SECONDS)
        deadline = asyncio.get_running_loop().time() + GANG_STOP_GRACE_SECONDS + STOP_REPORT_SLACK_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            nodes = await in_db_thread(self._store.task_nodes, task_id, attempt)
            if all(node.status for node in nodes):
                break
            await asyncio.sleep(0.2)
        self._broken.discard((task_id, attempt))
        if reason in _NOT_RETRIED:
            try:
                await in_db_thread(self._store.transition, task_id, TaskStatus.FAILED, reason, message,
                                   error=message, error_reason=reason, only_attempt=attempt)
            except (IllegalTransition, TaskNotFound) as exc:
                log.info("task %s: not failed: %s", task_id, exc)
        else:
            await in_db_thread(requeue_or_fail, self._store, task_id, reason, message, attempt=attempt)
        self._notifier.notify(task_id)
        self._ingestion.task_ended()
