"""Follows each active task's event stream on its agent: stores log lines and metric points in batches, keeps the
task's progress current, applies the agent's status reports, and wakes the task's log readers.

The agent sends its output in batches (`max_batch` lines and metric points per event). What arrives while the store
is busy with the previous write is stored by the next one, in one statement per table, and readers are woken as soon
as each write is committed: a quiet task's line is stored at once, a flood goes in big batches.
A broken stream is re-opened from the last persisted seqs, so no line is lost or stored twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from typing import Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from control_plane.agent_clients import AgentClients
from control_plane.converters import datetime_from, status_from_proto
from control_plane.db_calls import in_db_thread
from control_plane.gang_ingestion import GangFollower
from control_plane.metrics import ControlPlaneMetrics
from control_plane.notifier import TaskChangeNotifier
from control_plane.recovery import requeue_or_fail
from control_plane.state_machine import ACTIVE, TERMINAL, IllegalTransition, TaskStatus
from control_plane.task_store import NewLine, NewMetric, TaskNotFound, TaskStore
from protos import agent_pb2, common_pb2

log = logging.getLogger(__name__)

AGENT_MAX_BATCH = 5000  # lines (and metric points) per stream event
STORE_MAX_BATCH = 20000  # rows per store call
PENDING_MAX = 50000  # received but not stored yet: past this the stream is not read further (gRPC flow control)
RECONNECT_MAX_DELAY_SECONDS = 5.0


class _Batch:
    def __init__(self) -> None:
        self.lines: list[NewLine] = []
        self.metrics: list[NewMetric] = []

    def __len__(self) -> int:
        return len(self.lines) + len(self.metrics)


class _BatchWriter:
    """Stores what one stream brings, in order, one store call at a time while the stream goes on being read."""

    def __init__(self, store: TaskStore, notifier: TaskChangeNotifier, task_id: str, attempt: int,
                 metrics: ControlPlaneMetrics, node: int | None = None):
        self._store, self._notifier, self._metrics = store, notifier, metrics
        self._node = node  # one node of a multi-node attempt: its seqs are its own, the store gives the task's
        self._pending_since: float | None = None  # when the oldest line waiting to be stored arrived (monotonic)
        self._task_id, self._attempt = task_id, attempt
        self._pending = _Batch()
        self._has_pending = asyncio.Event()
        self._stored = asyncio.Condition()  # notified after each write (or when the writer fails)
        self._writing = False
        self._failure: BaseException | None = None
        self._task = asyncio.create_task(self._run(), name=f"store-{task_id}-{attempt}")

    def add(self, lines: list[NewLine], metrics: list[NewMetric]) -> None:
        self._raise_failure()
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        self._pending.lines.extend(lines)
        self._pending.metrics.extend(metrics)
        self._has_pending.set()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def wait_below(self, limit: int) -> None:
        async with self._stored:
            await self._stored.wait_for(lambda: self._failure is not None or len(self._pending) < limit)
        self._raise_failure()

    async def drain(self) -> None:
        """Until everything added so far is stored."""
        async with self._stored:
            await self._stored.wait_for(
                lambda: self._failure is not None or (not len(self._pending) and not self._writing))
        self._raise_failure()

    async def close(self) -> None:
        try:
            await self.drain()
        finally:
            self._task.cancel()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _run(self) -> None:
        try:
            while True:
                await self._has_pending.wait()
                arrived = self._pending_since
                batch = self._take()
                self._writing = True
                try:
                    if self._node is None:
                        await in_db_thread(self._store.ingest, self._task_id, batch.lines, batch.metrics,
                                           attempt=self._attempt)
                    else:
                        await in_db_thread(self._store.ingest_node, self._task_id, self._node, batch.lines,
                                           batch.metrics, attempt=self._attempt)
                finally:
                    self._writing = False
                self._count(batch, arrived)
                self._notifier.notify(self._task_id)
                async with self._stored:
                    self._stored.notify_all()
        except Exception as exc:
            self._failure = exc
            async with self._stored:
                self._stored.notify_all()

    def _count(self, batch: _Batch, arrived: float | None) -> None:
        """Lines per second and the lag this process owns: from the arrival of the batch's oldest line to its
        commit (the agent's clock, which stamped the lines, is not this host's)."""
        self._metrics.ingested_lines.inc(len(batch.lines))
        self._metrics.ingested_metric_points.inc(len(batch.metrics))
        if arrived is not None:
            self._metrics.ingestion_lag.observe(time.monotonic() - arrived)

    def _take(self) -> _Batch:
        batch, pending = _Batch(), self._pending
        batch.lines, pending.lines = pending.lines[:STORE_MAX_BATCH], pending.lines[STORE_MAX_BATCH:]
        batch.metrics, pending.metrics = pending.metrics[:STORE_MAX_BATCH], pending.metrics[STORE_MAX_BATCH:]
        if not len(pending):
            self._has_pending.clear()
            self._pending_since = None  # else the rest keeps the oldest arrival time (its lag an upper bound)
        return batch


class Ingestion:
    def __init__(self, store: TaskStore, clients: AgentClients, notifier: TaskChangeNotifier, on_task_ended: Callable[[], None],
                 on_succeeded: Callable[[str], None] = lambda task_id: None,
                 metrics: ControlPlaneMetrics | None = None):
        self._on_succeeded = on_succeeded  # e.g. publish its model
        self._metrics = metrics or ControlPlaneMetrics()
        self._store = store
        self._clients = clients
        self._notifier = notifier
        self._on_task_ended = on_task_ended
        # task id -> (the attempt followed, its follower)
        self._followers: dict[str, tuple[int, asyncio.Task]] = {}
        self._starting: set[asyncio.Task] = set()
        self._gang = GangFollower(self, store, clients, notifier)

    def follow(self, task_id: str) -> None:
        """Follows the task's current attempt, unless already following it; a follower of an earlier attempt is
        cancelled (that attempt no longer counts). The task is read off the event loop, so this returns at once."""
        self._spawn(self._follow_current(task_id), f"follow-{task_id}")

    def resume_active(self) -> None:
        """After a control-plane start: follow every task an agent may still be running."""
        self._spawn(self._resume_active(), "resume-active")

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _resume_active(self) -> None:
        for task in await in_db_thread(self._store.tasks_with_status, ACTIVE):
            if task.agent_id or task.nodes > 1:
                await self._follow_current(task.id)

    async def _follow_current(self, task_id: str) -> None:
        try:
            attempt = (await in_db_thread(self._store.get_task, task_id)).attempt
        except TaskNotFound:
            return
        current = self._followers.get(task_id)
        if current is not None and not current[1].done():
            if current[0] >= attempt:  # already followed, or this lookup is older than the one that started it
                return
            current[1].cancel()
        gang = (await in_db_thread(self._store.get_task, task_id)).nodes > 1
        follow = self._gang.follow(task_id, attempt) if gang else self.follow_stream(task_id, attempt)
        follower = asyncio.create_task(follow, name=f"ingest-{task_id}-{attempt}")
        self._followers[task_id] = (attempt, follower)

    async def close(self) -> None:
        starting = list(self._starting)
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        followers = [follower for _, follower in self._followers.values()]
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        self._followers.clear()

    async def follow_stream(self, task_id: str, attempt: int, node: int | None = None) -> None:
        """Until the attempt's final status (`node`: that node's, of a multi-node attempt). An unreachable agent is
        retried for as long as the attempt counts: the scheduler decides when an agent is gone for good (then the
        task is requeued or failed, and this ends)."""
        delay = 0.2
        while True:
            try:
                task = await in_db_thread(self._store.get_task, task_id)
            except TaskNotFound:
                return
            if task.status in TERMINAL or task.status == TaskStatus.QUEUED or task.attempt != attempt:
                return
            source = await in_db_thread(self._stream_source, task, node)
            if source is None:
                return  # the node's end is already recorded
            agent_id, after_log_seq, after_metric_seq = source
            agent = await in_db_thread(self._store.get_agent, agent_id)
            if agent is None:
                await self._stream_lost(task_id, attempt, node, f"agent {agent_id!r} is not registered")
                return
            try:
                if await self.stream_once(task_id, attempt, agent.address, after_log_seq, after_metric_seq, node):
                    return
                delay = 0.2  # the stream ended without a final status (agent shutting down): reconnect
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    await self._stream_lost(task_id, attempt, node,
                                            f"agent {agent.id} no longer knows attempt {attempt}: {exc.details()}")
                    return
                log.warning("task %s%s: stream from agent %s broke (%s); retrying in %.1fs", task_id,
                            "" if node is None else f" node {node}", agent.id, exc.code().name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    def _stream_source(self, task, node: int | None) -> tuple[str, int, int] | None:
        """(agent id, seqs persisted) of the stream to read: the task's, or one node's; None when that node ended."""
        if node is None:
            return task.agent_id, task.last_log_seq, task.last_metric_seq
        row = next((n for n in self._store.task_nodes(task.id, task.attempt) if n.node == node), None)
        return None if row is None or row.status else (row.agent_id, row.last_log_seq, row.last_metric_seq)

    async def _stream_lost(self, task_id: str, attempt: int, node: int | None, message: str) -> None:
        if node is None:
            await self._lost(task_id, attempt, message)
        else:
            await self._gang.node_lost(task_id, attempt, node, message)

    async def stream_once(self, task_id: str, attempt: int, address: str, after_log_seq: int,
                           after_metric_seq: int, node: int | None = None) -> bool:
        """Reads one stream until the attempt's final status (returns True) or until the stream ends (False).
        Whatever was received is stored before this returns, so the next stream resumes after it. `node`: the stream
        of one node of a multi-node attempt (its status reports go to the gang's rules)."""
        request = agent_pb2.StreamTaskEventsRequest(
            task_id=task_id, after_log_seq=after_log_seq, after_metric_seq=after_metric_seq, follow=True,
            attempt=attempt, max_batch=AGENT_MAX_BATCH,
        )
        writer = _BatchWriter(self._store, self._notifier, task_id, attempt, self._metrics, node)
        times = _TimeCache()
        try:
            async for event in self._clients.stub(address).StreamTaskEvents(request):
                kind = event.WhichOneof("event")
                if kind == "batch":
                    writer.add([NewLine(l.seq, times.of(l.time), l.stream, l.text) for l in event.batch.lines],
                               [NewMetric(m.seq, times.of(m.time), _parse_values(m.values_json))
                                for m in event.batch.metrics])
                elif kind == "log":  # an agent that does not batch
                    line = event.log
                    writer.add([NewLine(line.seq, times.of(line.time), line.stream, line.text)], [])
                elif kind == "metric":
                    point = event.metric
                    writer.add([], [NewMetric(point.seq, times.of(point.time), _parse_values(point.values_json))])
                elif kind == "status":
                    await writer.drain()  # every line before the status it explains
                    if node is not None:
                        if await self._gang.node_status(task_id, attempt, node, event.status):
                            return True
                    elif await self._apply_status(task_id, attempt, event.status):
                        return True
                if writer.backlog >= PENDING_MAX:
                    await writer.wait_below(PENDING_MAX)
            return False
        finally:
            await writer.close()

    async def _apply_status(self, task_id: str, attempt: int, update: common_pb2.TaskStatusUpdate) -> bool:
        """Applies an agent status report about `attempt`; True when it was the attempt's final status."""
        if update.attempt and update.attempt != attempt:
            log.warning("task %s: a report about attempt %d on the stream of attempt %d: not applied", task_id,
                        update.attempt, attempt)
            return False
        status = TaskStatus(status_from_proto(update.status))
        if status == TaskStatus.RUNNING:
            await in_db_thread(self.mark_running, task_id, attempt, update)
            self._notifier.notify(task_id)
            return False
        if status in TERMINAL:
            await self.end_attempt(task_id, attempt, status, update.reason, update.error, exit_code=update.exit_code)
            return True
        return False

    def task_ended(self) -> None:
        """A task left the active statuses (its devices are free): tell the scheduler."""
        self._on_task_ended()

    def mark_running(self, task_id: str, attempt: int, update: common_pb2.TaskStatusUpdate) -> None:
        try:
            if self._store.get_task(task_id).status == TaskStatus.STARTING:
                self._store.transition(task_id, TaskStatus.RUNNING, update.reason or "started", pid=update.pid,
                                       only_attempt=attempt)
        except (IllegalTransition, TaskNotFound) as exc:
            log.info("task %s: running report not applied: %s", task_id, exc)

    async def _lost(self, task_id: str, attempt: int, message: str) -> None:
        await in_db_thread(requeue_or_fail, self._store, task_id, "agent_lost", message, attempt=attempt)
        self._notifier.notify(task_id)
        self._on_task_ended()

    async def end_attempt(self, task_id: str, attempt: int, status: TaskStatus, reason: str, error: str, *,
                   exit_code: int = 0) -> None:
        fields: dict = {"exit_code": exit_code}
        if status == TaskStatus.FAILED:
            fields.update(error=error, error_reason=reason)
        if status == TaskStatus.SUCCEEDED:
            fields["percent"] = 100.0
        try:
            await in_db_thread(self._store.transition, task_id, status, reason, error, only_attempt=attempt, **fields)
            if status == TaskStatus.SUCCEEDED:
                self._on_succeeded(task_id)
        except (IllegalTransition, TaskNotFound) as exc:
            log.info("task %s: final report not applied: %s", task_id, exc)
        self._notifier.notify(task_id)
        self._on_task_ended()


class _TimeCache:
    """Timestamp -> datetime; the lines of one agent read share a time, so most conversions are a lookup."""

    def __init__(self) -> None:
        self._key: tuple[int, int] = (-1, -1)
        self._value: datetime | None = None

    def of(self, stamp: Timestamp) -> datetime:
        key = (stamp.seconds, stamp.nanos)
        if key != self._key:
            self._key, self._value = key, datetime_from(stamp)
        return self._value


def _parse_values(values_json: str) -> dict:
    try:
        values = json.loads(values_json)
    except json.JSONDecodeError:
        return {"raw": values_json}
    return values if isinstance(values, dict) else {"value": values}
