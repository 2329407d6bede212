"""Follows each active task's event stream on its agent: stores log lines and metric points in batches, keeps the
task's progress current, applies the agent's status reports, and wakes the task's log readers.

A broken stream is re-opened from the last persisted seqs, so no line is lost or stored twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable

import grpc

from control_plane.agent_clients import AgentClients
from control_plane.converters import datetime_from, status_from_proto
from control_plane.notifier import TaskChangeNotifier
from control_plane.recovery import requeue_or_fail
from control_plane.state_machine import ACTIVE, TERMINAL, IllegalTransition, TaskStatus
from control_plane.task_store import NewLine, NewMetric, TaskNotFound, TaskStore
from protos import agent_pb2, common_pb2

log = logging.getLogger(__name__)

BATCH_MAX_ITEMS = 500
BATCH_MAX_DELAY_SECONDS = 0.1
RECONNECT_MAX_DELAY_SECONDS = 5.0


class _Batch:
    def __init__(self) -> None:
        self.lines: list[NewLine] = []
        self.metrics: list[NewMetric] = []

    def __len__(self) -> int:
        return len(self.lines) + len(self.metrics)


class Ingestion:
    def __init__(self, store: TaskStore, clients: AgentClients, notifier: TaskChangeNotifier, on_task_ended: Callable[[], None],
                 on_succeeded: Callable[[str], None] = lambda task_id: None):
        self._on_succeeded = on_succeeded  # e.g. publish its model
        self._store = store
        self._clients = clients
        self._notifier = notifier
        self._on_task_ended = on_task_ended
        # task id -> (the attempt followed, its follower)
        self._followers: dict[str, tuple[int, asyncio.Task]] = {}

    def follow(self, task_id: str) -> None:
        """Follows the task's current attempt, unless already following it; a follower of an earlier attempt is
        cancelled (that attempt no longer counts)."""
        try:
            attempt = self._store.get_task(task_id).attempt
        except TaskNotFound:
            return
        current = self._followers.get(task_id)
        if current is not None and not current[1].done():
            if current[0] == attempt:
                return
            current[1].cancel()
        follower = asyncio.create_task(self._follow(task_id, attempt), name=f"ingest-{task_id}-{attempt}")
        self._followers[task_id] = (attempt, follower)

    def resume_active(self) -> None:
        """After a control-plane start: follow every task an agent may still be running."""
        for task in self._store.tasks_with_status(ACTIVE):
            if task.agent_id:
                self.follow(task.id)

    async def close(self) -> None:
        followers = [follower for _, follower in self._followers.values()]
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        self._followers.clear()

    async def _follow(self, task_id: str, attempt: int) -> None:
        """Until the attempt's final status. An unreachable agent is retried for as long as the attempt counts: the
        scheduler decides when an agent is gone for good (then the task is requeued or failed, and this ends)."""
        delay = 0.2
        while True:
            try:
                task = self._store.get_task(task_id)
            except TaskNotFound:
                return
            if task.status in TERMINAL or task.status == TaskStatus.QUEUED or task.attempt != attempt:
                return
            agent = self._store.get_agent(task.agent_id)
            if agent is None:
                self._lost(task_id, attempt, f"agent {task.agent_id!r} is not registered")
                return
            try:
                if await self._stream_once(task_id, attempt, agent.address, task.last_log_seq, task.last_metric_seq):
                    return
                delay = 0.2  # the stream ended without a final status (agent shutting down): reconnect
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    self._lost(task_id, attempt, f"agent {agent.id} no longer knows attempt {attempt}: {exc.details()}")
                    return
                log.warning("task %s: stream from agent %s broke (%s); retrying in %.1fs", task_id, agent.id, exc.code().name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    async def _stream_once(self, task_id: str, attempt: int, address: str, after_log_seq: int,
                           after_metric_seq: int) -> bool:
        """Reads one stream until the attempt's final status (returns True) or until the stream ends (False)."""
        request = agent_pb2.StreamTaskEventsRequest(
            task_id=task_id, after_log_seq=after_log_seq, after_metric_seq=after_metric_seq, follow=True,
            attempt=attempt,
        )
        batch = _Batch()
        flusher = asyncio.create_task(self._flush_periodically(task_id, attempt, batch))
        try:
            async for event in self._clients.stub(address).StreamTaskEvents(request):
                kind = event.WhichOneof("event")
                if kind == "log":
                    line = event.log
                    batch.lines.append(NewLine(line.seq, datetime_from(line.time), line.stream, line.text))
                elif kind == "metric":
                    point = event.metric
                    batch.metrics.append(NewMetric(point.seq, datetime_from(point.time), _parse_values(point.values_json)))
                elif kind == "status":
                    self._flush(task_id, attempt, batch)  # every line before the status it explains
                    if self._apply_status(task_id, attempt, event.status):
                        return True
                if len(batch) >= BATCH_MAX_ITEMS:
                    self._flush(task_id, attempt, batch)
            return False
        finally:
            flusher.cancel()
            self._flush(task_id, attempt, batch)

    async def _flush_periodically(self, task_id: str, attempt: int, batch: _Batch) -> None:
        while True:
            await asyncio.sleep(BATCH_MAX_DELAY_SECONDS)
            self._flush(task_id, attempt, batch)

    def _flush(self, task_id: str, attempt: int, batch: _Batch) -> None:
        if not len(batch):
            return
        lines, metrics = batch.lines, batch.metrics
        batch.lines, batch.metrics = [], []
        self._store.ingest(task_id, lines, metrics, attempt=attempt)
        self._notifier.notify(task_id)

    def _apply_status(self, task_id: str, attempt: int, update: common_pb2.TaskStatusUpdate) -> bool:
        """Applies an agent status report about `attempt`; True when it was the attempt's final status."""
        if update.attempt and update.attempt != attempt:
            log.warning("task %s: a report about attempt %d on the stream of attempt %d: not applied", task_id,
                        update.attempt, attempt)
            return False
        status = TaskStatus(status_from_proto(update.status))
        if status == TaskStatus.RUNNING:
            try:
                if self._store.get_task(task_id).status == TaskStatus.STARTING:
                    self._store.transition(task_id, TaskStatus.RUNNING, update.reason or "started", pid=update.pid,
                                           only_attempt=attempt)
            except (IllegalTransition, TaskNotFound) as exc:
                log.info("task %s: running report not applied: %s", task_id, exc)
            self._notifier.notify(task_id)
            return False
        if status in TERMINAL:
            self._end(task_id, attempt, status, update.reason, update.error, exit_code=update.exit_code)
            return True
        return False

    def _lost(self, task_id: str, attempt: int, message: str) -> None:
        requeue_or_fail(self._store, task_id, "agent_lost", message, attempt=attempt)
        self._notifier.notify(task_id)
        self._on_task_ended()

    def _end(self, task_id: str, attempt: int, status: TaskStatus, reason: str, error: str, *,
             exit_code: int = 0) -> None:
        fields: dict = {"exit_code": exit_code}
        if status == TaskStatus.FAILED:
            fields.update(error=error, error_reason=reason)
        if status == TaskStatus.SUCCEEDED:
            fields["percent"] = 100.0
        try:
            self._store.transition(task_id, status, reason, error, only_attempt=attempt, **fields)
            if status == TaskStatus.SUCCEEDED:
                self._on_succeeded(task_id)
        except (IllegalTransition, TaskNotFound) as exc:
            log.info("task %s: final report not applied: %s", task_id, exc)
        self._notifier.notify(task_id)
        self._on_task_ended()


def _parse_values(values_json: str) -> dict:
    try:
        values = json.loads(values_json)
    except json.JSONDecodeError:
        return {"raw": values_json}
    return values if isinstance(values, dict) else {"value": values}
