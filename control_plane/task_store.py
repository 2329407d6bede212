"""The store: tasks, their events, log lines and metric points, and agents, on SQLite or PostgreSQL.

Every status change goes through `transition`, which checks the transition table and writes compare-and-set
(`WHERE status = <the status it checked>`), so a late report can never overwrite a newer state.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, NamedTuple, Sequence

from sqlalchemy import bindparam, delete, func, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from control_plane import state_machine
from control_plane.models import (
    Agent, Checkpoint, LogLine, MetricPoint, OutputDirClaim, PublishedModel, Task, TaskAttempt, TaskEvent, TaskNode,
    TaskValidation, utcnow,
)
from control_plane.list_cursor import ListCursor
from control_plane.progress import progress_fields
from control_plane.state_machine import ACTIVE, TERMINAL, TaskStatus
from control_plane.webhook_events import enqueue_deliveries


class TaskNotFound(LookupError):
    def __init__(self, task_id: str):
        super().__init__(f"task {task_id!r} not found")


class OutputDirTaken(Exception):
    def __init__(self, output_dir: str, task_id: str):
        super().__init__(f"output_dir: {output_dir!r} was already used by task {task_id}; give a new directory, or "
                         "leave output_dir empty for one of the task's own (output/<type>/<task id>)")
        self.output_dir = output_dir
        self.task_id = task_id


class TaskStillActive(Exception):
    def __init__(self, task: Task):
        super().__init__(f"task {task.id} is {task.status}; stop it and wait until it has ended before deleting it")


class TaskNotQueued(Exception):
    def __init__(self, task: Task):
        super().__init__(f"task {task.id} is {task.status}; only a queued task's priority can be changed")


class NewLine(NamedTuple):  # a tuple: ingestion makes hundreds of thousands a second
    seq: int
    time: datetime
    stream: str
    text: str


@dataclass(frozen=True)
class NewMetric:
    seq: int
    time: datetime
    values: dict[str, Any]


@dataclass(frozen=True)
class TaskPage:
    tasks: list[Any]  # rows with a Task's columns as attributes, read-only (cheaper than 50 ORM objects a page)
    total: int  # matching tasks, all pages
    queue_positions: dict[str, int]  # the page's queued tasks (those waiting for a data check have none)
    next_cursor: ListCursor | None  # None on the last page


@dataclass(frozen=True)
class TaskDetail:
    task: Task
    events: list[TaskEvent]
    attempts: list[TaskAttempt]
    checkpoints: list[Checkpoint]
    validation: TaskValidation | None
    published: PublishedModel | None
    queue_position: int
    nodes: list[TaskNode] = field(default_factory=list)  # a multi-node task's nodes, of its current attempt


class TaskStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._gang_ingest = threading.Lock()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # --- tasks -------------------------------------------------------------------------------------------------

    def create_task(
        self, task_id: str, task_type: str, config_json: str, output_dir: str, owner: str = "", *,
        validation: TaskValidation | None = None, claim_output_dir: str | None = None, **scheduling: Any,
    ) -> Task:
        """`scheduling`: priority, gpus, gpu_vis, max_retries. `validation`: its data check, stored with it (a pending
        one keeps the task out of placement until `finish_validation`). `claim_output_dir`: the output_dir the user
        named, claimed for good in the same transaction (OutputDirTaken when another task holds it)."""
        return self.add_task(task_id, task_type, config_json, output_dir, owner, validation=validation,
                             claim_output_dir=claim_output_dir, **scheduling).task

    def add_task(
        self, task_id: str, task_type: str, config_json: str, output_dir: str, owner: str = "", *,
        validation: TaskValidation | None = None, claim_output_dir: str | None = None, **scheduling: Any,
    ) -> TaskDetail:
        """`create_task`, giving back all GetTask shows of the new task (what was written, and its queue position)
        without reading it back."""
        task = Task(
            id=task_id, type=task_type, status=TaskStatus.QUEUED, config_json=config_json, output_dir=output_dir,
            owner=owner, **scheduling,
        )
        submitted = TaskEvent(task_id=task_id, to_status=TaskStatus.QUEUED, reason="submitted", time=task.created_at)
        with self.session() as session:
            session.add(task)
            session.add(submitted)
            if validation is not None:
                validation.task_id = task_id
                session.add(validation)
            if claim_output_dir is not None:
                holder = session.get(OutputDirClaim, claim_output_dir)
                if holder is not None:
                    raise OutputDirTaken(claim_output_dir, holder.task_id)
                session.add(OutputDirClaim(output_dir=claim_output_dir, task_id=task_id))
            try:
                session.commit()
            except IntegrityError:  # claimed by a concurrent submit between the check and the commit
                session.rollback()
                holder = session.get(OutputDirClaim, claim_output_dir) if claim_output_dir else None
                if holder is None:
                    raise
                raise OutputDirTaken(claim_output_dir, holder.task_id) from None
            position = _queue_positions(session, [task]).get(task_id, 0)
        return TaskDetail(task=task, events=[submitted], attempts=[], checkpoints=[], validation=validation,
                          published=None, queue_position=position)

    def output_dir_holder(self, output_dir: str) -> str | None:
        """The task that claimed this output_dir, if one did."""
        with self.session() as session:
            claim = session.get(OutputDirClaim, output_dir)
        return claim.task_id if claim is not None else None

    def validation(self, task_id: str) -> TaskValidation | None:
        with self.session() as session:
            return session.get(TaskValidation, task_id)

    def pending_validations(self) -> list[tuple[Task, TaskValidation]]:
        """Queued tasks whose data check has not finished (e.g. the control plane restarted meanwhile)."""
        with self.session() as session:
            rows = session.exec(
                select(Task, TaskValidation)
                .where(col(TaskValidation.task_id) == col(Task.id), col(TaskValidation.state) == "pending",
                       col(Task.status) == TaskStatus.QUEUED)
                .order_by(col(Task.created_at))
            ).all()
        return [(task, check) for task, check in rows]

    def finish_validation(self, task_id: str, passed: bool, rows: int, message: str = "") -> bool:
        """Records a pending check's result, once (compare-and-set on `pending`); False when it was not pending."""
        with self.session() as session:
            result = session.execute(
                update(TaskValidation)
                .where(col(TaskValidation.task_id) == task_id, col(TaskValidation.state) == "pending")
                .values(state="passed" if passed else "failed", rows=rows, message=message, finished_at=utcnow())
            )
            session.commit()
        return result.rowcount == 1

    def get_task(self, task_id: str) -> Task:
        with self.session() as session:
            task = session.get(Task, task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    def list_tasks(
        self, *, status: str = "", task_type: str = "", owner: str = "", limit: int = 50, offset: int = 0
    ) -> tuple[list[Any], int]:
        """Newest first (rows as in TaskPage), with the count of all matching tasks. `owner` "" means everybody's."""
        page = self.list_page(status=status, task_type=task_type, owner=owner, limit=limit, offset=offset)
        return page.tasks, page.total

    def list_page(
        self, *, status: str = "", task_type: str = "", owner: str = "", limit: int = 50, offset: int = 0,
        after: ListCursor | None = None,
    ) -> TaskPage:
        """One page of the list, newest first (created_at, then id), in one session: the tasks, the count of all
        matching tasks, the queue positions of the page's queued tasks, and the cursor of the next page (None on the
        last). `after` (a cursor from a previous page) is the fast path at any depth; `offset` counts rows past it."""
        filters = []
        if owner:
            filters.append(col(Task.owner) == owner)
        if status:
            filters.append(col(Task.status) == status)
        if task_type:
            filters.append(col(Task.type) == task_type)
        query = select(Task.__table__).where(*filters)
        if after is not None:
            query = query.where(tuple_(col(Task.created_at), col(Task.id)) < tuple_(after.created_at, after.task_id))
        query = query.order_by(col(Task.created_at).desc(), col(Task.id).desc()).offset(offset).limit(limit + 1)
        with self.session() as session:
            total = session.exec(select(func.count()).select_from(Task).where(*filters)).one()
            rows = list(session.execute(query).all())
            more = len(rows) > limit
            rows = rows[:limit]
            positions = _queue_positions(session, rows)
        cursor = ListCursor(rows[-1].created_at, rows[-1].id) if more else None
        return TaskPage(rows, int(total), positions, cursor)

    def task_detail(self, task_id: str) -> TaskDetail:
        """A task with everything GetTask shows (events, attempts, checkpoints, data check, published model, queue
        position), read in one session."""
        with self.session() as session:
            found = session.exec(
                select(Task, TaskValidation, PublishedModel).where(col(Task.id) == task_id)
                .outerjoin(TaskValidation, col(TaskValidation.task_id) == col(Task.id))
                .outerjoin(PublishedModel, col(PublishedModel.task_id) == col(Task.id))
            ).first()
            if found is None:
                raise TaskNotFound(task_id)
            task, validation, published = found
            return TaskDetail(
                task=task,
                events=list(session.exec(select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(col(TaskEvent.id))).all()),
                attempts=list(session.exec(select(TaskAttempt).where(TaskAttempt.task_id == task_id).order_by(col(TaskAttempt.number))).all()),
                checkpoints=list(session.exec(select(Checkpoint).where(Checkpoint.task_id == task_id).order_by(col(Checkpoint.step), col(Checkpoint.time))).all()),
                validation=validation,
                published=published,
                queue_position=_queue_positions(session, [task]).get(task_id, 0),
                nodes=[] if task.status == TaskStatus.QUEUED else list(session.exec(select(TaskNode).where(
                    TaskNode.task_id == task_id, TaskNode.attempt == task.attempt).order_by(col(TaskNode.node))).all()),
            )

    def queue(self, limit: int | None = None) -> list[Task]:
        """Queued tasks in the order they will be placed: higher priority first, then older first (the first `limit`
        of them when given). Tasks whose data are still being checked wait outside it."""
        checking = select(TaskValidation.task_id).where(col(TaskValidation.state) == "pending")
        query = (select(Task).where(Task.status == TaskStatus.QUEUED, col(Task.id).not_in(checking))
                 .order_by(col(Task.priority).desc(), col(Task.created_at), col(Task.id)))
        with self.session() as session:
            rows = session.exec(query if limit is None else query.limit(limit)).all()
        return list(rows)

    def queue_positions(self) -> dict[str, int]:
        return {task.id: position for position, task in enumerate(self.queue(), start=1)}

    def queue_position(self, task_id: str) -> int:
        """1 for the next task to be placed; 0 for a task not in the queue (not queued, or its data being checked)."""
        with self.session() as session:
            task = session.get(Task, task_id)
            return _queue_positions(session, [task]).get(task_id, 0) if task is not None else 0

    def set_priority(self, task_id: str, priority: int) -> Task:
        """A queued task's priority (its column, and its config's key, which a clone copies), compare-and-set on the
        status and config it read: TaskNotQueued once it has left the queue, however close the race."""
        with self.session() as session:
            for _attempt in range(5):
                task = session.get(Task, task_id, populate_existing=True)
                if task is None:
                    raise TaskNotFound(task_id)
                if task.status != TaskStatus.QUEUED:
                    raise TaskNotQueued(task)
                config = json.loads(task.config_json or "{}")
                config["priority"] = priority
                result = session.execute(
                    update(Task)
                    .where(col(Task.id) == task_id, col(Task.status) == TaskStatus.QUEUED,
                           col(Task.config_json) == task.config_json)
                    .values(priority=priority, config_json=json.dumps(config, separators=(",", ":")), updated_at=utcnow())
                )
                if result.rowcount == 1:
                    session.commit()
                    return session.get(Task, task_id, populate_existing=True)
                session.rollback()  # placed, stopped or changed meanwhile: re-read and re-check
            raise RuntimeError(f"task {task_id}: kept changing under a priority change")

    def status_counts(self, statuses: Iterable[str]) -> dict[str, int]:
        """How many tasks have each of these statuses (index-only counts)."""
        wanted = list(statuses)
        with self.session() as session:
            rows = session.exec(select(Task.status, func.count()).where(col(Task.status).in_(wanted)).group_by(col(Task.status))).all()
        found = dict(rows)
        return {status: int(found.get(status, 0)) for status in wanted}

    def tasks_with_status(self, statuses: Iterable[str]) -> list[Task]:
        """Oldest first."""
        with self.session() as session:
            rows = session.exec(
                select(Task).where(col(Task.status).in_(list(statuses))).order_by(col(Task.created_at), col(Task.id))
            ).all()
        return list(rows)

    def held_devices(self) -> dict[str, set[int]]:
        """agent id -> the device indices its active tasks hold."""
        held: dict[str, set[int]] = {}
        gangs: dict[str, int] = {}
        for task in self.tasks_with_status(ACTIVE):
            if task.nodes > 1:
                gangs[task.id] = task.attempt
            elif task.agent_id:
                held.setdefault(task.agent_id, set()).update(int(i) for i in task.devices.split(",") if i)
        if gangs:
            with self.session() as session:
                for node in session.exec(select(TaskNode).where(col(TaskNode.task_id).in_(list(gangs)))):
                    if gangs.get(node.task_id) == node.attempt:
                        held.setdefault(node.agent_id, set()).update(int(i) for i in node.devices.split(",") if i)
        return held

    def transition(
        self,
        task_id: str,
        target: TaskStatus,
        reason: str,
        message: str = "",
        *,
        only_attempt: int | None = None,
        gang: Sequence[tuple[str, str]] = (),
        **fields: Any,
    ) -> Task:
        """Moves a task to `target` (checked against the table) and records the event, atomically.

        Raises TaskNotFound, or IllegalTransition when the task's current status does not allow it (including when
        another writer changed the status first), or StaleAttempt when `only_attempt` is given and the task has moved
        on to another attempt (a late report about an attempt that no longer counts). The write is compare-and-set on
        both the status and the attempt it checked. `gang`: a multi-node placement, (agent id, devices) per node, stored
        with the transition to starting as the attempt's task_node rows.
        """
        with self.session() as session:
            for _attempt in range(5):
                task = session.get(Task, task_id, populate_existing=True)
                if task is None:
                    raise TaskNotFound(task_id)
                if only_attempt is not None and task.attempt != only_attempt:
                    raise state_machine.StaleAttempt(task_id, only_attempt, task.attempt)
                state_machine.check(task_id, task.status, target)
                # The UPDATE below refreshes `task` in the session: keep what it was.
                before = {"status": task.status, "attempt": task.attempt, "agent_id": task.agent_id,
                          "devices": task.devices, "resume_from": task.resume_from}
                now = utcnow()
                values: dict[str, Any] = {"status": target.value, "updated_at": now, **fields}
                if target == TaskStatus.RUNNING and task.started_at is None:
                    values["started_at"] = now
                if target in TERMINAL:
                    values["finished_at"] = now
                if target == TaskStatus.QUEUED:
                    values["finished_at"] = None
                result = session.execute(
                    update(Task)
                    .where(col(Task.id) == task_id, col(Task.status) == task.status, col(Task.attempt) == task.attempt)
                    .values(**values)
                )
                if result.rowcount == 1:
                    event = TaskEvent(task_id=task_id, time=now, from_status=before["status"], to_status=target,
                                      reason=reason, message=message)
                    session.add(event)
                    self._record_attempt(session, task_id, before, target, reason, values, now)
                    for number, (agent_id, devices) in enumerate(gang):
                        session.add(TaskNode(task_id=task_id, attempt=values.get("attempt", before["attempt"]),
                                             node=number, agent_id=agent_id, devices=devices))
                    enqueue_deliveries(session, task, event)  # webhooks: committed with the transition, or not at all
                    session.commit()
                    return session.get(Task, task_id, populate_existing=True)
                session.rollback()  # somebody else moved it first: re-read and re-check
            raise RuntimeError(f"task {task_id}: status kept changing under a transition to {target}")

    @staticmethod
    def _record_attempt(
        session: Session, task_id: str, before: dict[str, Any], target: TaskStatus, reason: str, values: dict[str, Any], now
    ) -> None:
        """Placement opens an attempt; leaving the active statuses (ended, or requeued) closes it."""
        if target == TaskStatus.STARTING:
            session.add(TaskAttempt(
                task_id=task_id, number=values.get("attempt", before["attempt"]),
                agent_id=values.get("agent_id", before["agent_id"]), devices=values.get("devices", before["devices"]),
                resumed_from=before["resume_from"], started_at=now,
            ))
        elif before["status"] in ACTIVE and target not in ACTIVE:
            session.execute(
                update(TaskAttempt)
                .where(col(TaskAttempt.task_id) == task_id, col(TaskAttempt.number) == before["attempt"])
                .values(ended_at=now, status=target.value, reason=reason)
            )

    def attempts(self, task_id: str) -> list[TaskAttempt]:
        with self.session() as session:
            return list(session.exec(select(TaskAttempt).where(TaskAttempt.task_id == task_id).order_by(col(TaskAttempt.number))).all())

    def checkpoints(self, task_id: str) -> list[Checkpoint]:
        """Oldest first (by step, then time)."""
        with self.session() as session:
            query = select(Checkpoint).where(Checkpoint.task_id == task_id).order_by(col(Checkpoint.step), col(Checkpoint.time))
            return list(session.exec(query).all())

    def set_fields(self, task_id: str, **fields: Any) -> None:
        """Non-status fields (e.g. the pid once launched)."""
        with self.session() as session:
            session.execute(update(Task).where(col(Task.id) == task_id).values(updated_at=utcnow(), **fields))
            session.commit()

    def events(self, task_id: str) -> list[TaskEvent]:
        with self.session() as session:
            rows = session.exec(select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(col(TaskEvent.id))).all()
        return list(rows)

    def delete_task(self, task_id: str) -> None:
        """Deletes a finished task with its events, logs and metrics. Its output directory on its agent stays, and so
        does its claim on the output_dir it named (the files are still there)."""
        with self.session() as session:
            task = session.get(Task, task_id)
            if task is None:
                raise TaskNotFound(task_id)
            if task.status not in TERMINAL:
                raise TaskStillActive(task)
            for model in (LogLine, MetricPoint, TaskEvent, TaskAttempt, TaskNode, Checkpoint, TaskValidation):
                session.execute(delete(model).where(col(model.task_id) == task_id))
            session.execute(delete(Task).where(col(Task.id) == task_id, col(Task.status).in_(list(TERMINAL))))
            session.commit()

    # --- logs and metrics --------------------------------------------------------------------------------------

    def ingest(self, task_id: str, lines: list[NewLine], metrics: list[NewMetric], *, attempt: int | None = None) -> None:
        """Stores a batch from the agent's stream in one transaction and moves the task's seqs and progress on.

        Rows already stored (same task and seq) are skipped, so a replayed batch never duplicates a line. A batch of
        an attempt the task has left (`attempt`) is dropped: its seqs would collide with the new attempt's.
        """
        if not lines and not metrics:
            return
        with self.session() as session:
            task = session.get(Task, task_id)
            if task is None or (attempt is not None and task.attempt != attempt):
                return  # deleted, or requeued meanwhile
            self._store_batch(session, task, lines, metrics)
            session.commit()

    def ingest_node(self, task_id: str, node: int, lines: list[NewLine], metrics: list[NewMetric], *,
                    attempt: int) -> None:
        """`ingest` for one node of a multi-node attempt: its lines and points after the node's cursor get the task's
        next seqs (lines marked with the node), and the cursor moves on in the same transaction, so a replayed batch
        is never stored twice. The node that sends metric points runs global rank 0: it becomes the task's agent
        (where the model is written, and read from)."""
        if not lines and not metrics:
            return
        with self._gang_ingest, self.session() as session:  # one writer per task's seqs at a time
            task = session.exec(select(Task).where(col(Task.id) == task_id).with_for_update()).first()
            row = session.get(TaskNode, (task_id, attempt, node))
            if task is None or row is None or task.attempt != attempt:
                return
            lines = [line for line in lines if line.seq > row.last_log_seq]
            metrics = [point for point in metrics if point.seq > row.last_metric_seq]
            if not lines and not metrics:
                return
            cursor: dict[str, Any] = {}
            if lines:
                cursor["last_log_seq"] = lines[-1].seq
                lines = [NewLine(task.last_log_seq + i, line.time, line.stream, f"[node{node}] {line.text}")
                         for i, line in enumerate(lines, 1)]
            if metrics:
                cursor.update(last_metric_seq=metrics[-1].seq, rank0=True)
                metrics = [NewMetric(task.last_metric_seq + i, point.time, point.values)
                           for i, point in enumerate(metrics, 1)]
                if not row.rank0:
                    session.execute(update(Task).where(col(Task.id) == task_id).values(
                        agent_id=row.agent_id, devices=row.devices, output_dir=row.output_dir or task.output_dir))
            session.execute(update(TaskNode).where(
                col(TaskNode.task_id) == task_id, col(TaskNode.attempt) == attempt, col(TaskNode.node) == node,
            ).values(**cursor))
            self._store_batch(session, task, lines, metrics)
            session.commit()

    def task_nodes(self, task_id: str, attempt: int) -> list[TaskNode]:
        with self.session() as session:
            return list(session.exec(select(TaskNode).where(
                TaskNode.task_id == task_id, TaskNode.attempt == attempt).order_by(col(TaskNode.node))).all())

    def set_node(self, task_id: str, attempt: int, node: int, **fields: Any) -> None:
        with self.session() as session:
            session.execute(update(TaskNode).where(
                col(TaskNode.task_id) == task_id, col(TaskNode.attempt) == attempt, col(TaskNode.node) == node,
            ).values(**fields))
            session.commit()

    @staticmethod
    def _store_batch(session: Session, task: Task, lines: list[NewLine], metrics: list[NewMetric]) -> None:
        """Inserts the batch and moves the task's seqs, progress and checkpoints on; the caller commits."""
        task_id = task.id
        values: dict[str, Any] = {}
        if lines:
            _insert_ignoring_duplicates(session, LogLine, ("task_id", "seq", "time", "stream", "text"),
                                        [(task_id, *line) for line in lines])
            values["last_log_seq"] = max(task.last_log_seq, max(l.seq for l in lines))
        if metrics:
            _insert_ignoring_duplicates(session, MetricPoint, ("task_id", "seq", "time", "values_json"),
                                        [(task_id, m.seq, m.time, json.dumps(m.values)) for m in metrics])
            values["last_metric_seq"] = max(task.last_metric_seq, max(m.seq for m in metrics))
            values.update(progress_fields(task.latest_metrics_json, [m.values for m in metrics]))
            saved = [m for m in metrics if m.values.get("event") == "checkpoint" and m.values.get("path")]
            if saved:
                _insert_ignoring_duplicates(session, Checkpoint, ("task_id", "path", "step", "attempt", "time"), [
                    (task_id, str(m.values["path"]), int(m.values.get("step") or 0), task.attempt, m.time)
                    for m in saved
                ])
        session.execute(update(Task).where(col(Task.id) == task_id).values(**values))

    def log_lines_after(self, task_id: str, after_seq: int, limit: int) -> list[LogLine]:
        """The first `limit` lines with seq > after_seq, in order."""
        with self.session() as session:
            rows = session.exec(
                select(LogLine)
                .where(LogLine.task_id == task_id, col(LogLine.seq) > after_seq)
                .order_by(col(LogLine.seq))
                .limit(limit)
            ).all()
        return list(rows)

    def log_lines_tail(self, task_id: str, limit: int, before_seq: int = 0) -> list[LogLine]:
        """The last `limit` lines (before `before_seq` when it is > 0), in order."""
        query = select(LogLine).where(LogLine.task_id == task_id)
        if before_seq > 0:
            query = query.where(col(LogLine.seq) < before_seq)
        with self.session() as session:
            rows = session.exec(query.order_by(col(LogLine.seq).desc()).limit(limit)).all()
        return list(reversed(rows))

    def metric_points(self, task_id: str, *, after_seq: int = 0, limit: int = 10000) -> list[MetricPoint]:
        with self.session() as session:
            rows = session.exec(
                select(MetricPoint)
                .where(MetricPoint.task_id == task_id, col(MetricPoint.seq) > after_seq)
                .order_by(col(MetricPoint.seq))
                .limit(limit)
            ).all()
        return list(rows)

    # --- agents ------------------------------------------------------------------------------------------------

    def upsert_agent(self, agent_id: str, address: str, hostname: str, slots: int, devices_json: str = "[]") -> Agent:
        with self.session() as session:
            agent = session.get(Agent, agent_id) or Agent(id=agent_id, address=address)
            agent.address, agent.hostname, agent.slots, agent.devices_json = address, hostname, slots, devices_json
            agent.last_heartbeat = utcnow()
            session.add(agent)
            session.commit()
        return agent

    def touch_agent(self, agent_id: str, devices_json: str | None = None) -> bool:
        """Records a heartbeat (and fresh device readings); False when the agent is unknown (it must register again)."""
        values: dict[str, Any] = {"last_heartbeat": utcnow()}
        if devices_json is not None:
            values["devices_json"] = devices_json
        with self.session() as session:
            result = session.execute(update(Agent).where(col(Agent.id) == agent_id).values(**values))
            session.commit()
        return result.rowcount == 1

    def agents(self) -> list[Agent]:
        with self.session() as session:
            return list(session.exec(select(Agent).order_by(col(Agent.id))).all())

    def get_agent(self, agent_id: str) -> Agent | None:
        with self.session() as session:
            return session.get(Agent, agent_id)


def _queue_positions(session: Session, tasks: Iterable[Task]) -> dict[str, int]:
    """The queue positions of these tasks (1: placed next), for those in the queue (queued, data checked).

    Never reads the queue: per priority among them, an index count of the queued tasks ahead of the oldest of them
    (higher priority, or the same and older), then the ids of the queued tasks of that priority from the oldest to
    the newest of them (an index range: on a page of the list, about the page); less the tasks ahead still waiting
    for their data check (few: they are loaded)."""
    queued = [task for task in tasks if task.status == TaskStatus.QUEUED]
    if not queued:
        return {}
    checking = _checking_in_queue(session)
    checking_ids = {task_id for task_id, _, _ in checking}
    positions: dict[str, int] = {}
    for priority in sorted({task.priority for task in queued}):
        group = sorted((t for t in queued if t.priority == priority), key=lambda t: _queue_order(t.id, t.priority, t.created_at))
        oldest, newest = group[0], group[-1]
        ahead = session.exec(_QUEUED_AHEAD, params={
            "priority": priority, "created_at": oldest.created_at, "task_id": oldest.id}).one()
        if len(group) == 1:
            rank = {oldest.id: 0}
        else:
            window = session.exec(_QUEUED_WINDOW, params={
                "priority": priority, "lo_created_at": oldest.created_at, "lo_id": oldest.id,
                "hi_created_at": newest.created_at, "hi_id": newest.id}).all()
            rank = {task_id: index for index, task_id in enumerate(window)}
        for task in group:
            if task.id in checking_ids or task.id not in rank:
                continue
            mine = _queue_order(task.id, task.priority, task.created_at)
            positions[task.id] = (int(ahead[0]) + int(ahead[1]) + rank[task.id] + 1
                                  - sum(1 for row in checking if _queue_order(*row) < mine))
    return positions


def _queue_order(task_id: str, priority: int, created_at) -> tuple:
    return (-priority, _naive_utc(created_at), task_id)


# The statements behind queue positions, built once (bound parameters; SQLAlchemy caches their compiled form).
_IN_QUEUE = col(Task.status) == TaskStatus.QUEUED
_KEY = tuple_(col(Task.created_at), col(Task.id))
_PENDING_CHECKS = select(TaskValidation.task_id).where(col(TaskValidation.state) == "pending")


def _checking_in_queue(session: Session) -> list[tuple]:
    """(id, priority, created_at) of the queued tasks whose data check is pending. From the pending checks (few)
    to their tasks, in two index lookups: as one join, SQLite walks every queued task instead."""
    pending = session.exec(_PENDING_CHECKS).all()
    if not pending:
        return []
    return list(session.exec(select(Task.id, Task.priority, Task.created_at)
                             .where(col(Task.id).in_(pending), _IN_QUEUE)).all())
_QUEUED_AHEAD = select(
    select(func.count()).select_from(Task).where(_IN_QUEUE, col(Task.priority) > bindparam("priority"))
    .scalar_subquery(),
    select(func.count()).select_from(Task).where(
        _IN_QUEUE, col(Task.priority) == bindparam("priority"),
        _KEY < tuple_(bindparam("created_at", type_=Task.__table__.c.created_at.type), bindparam("task_id")))
    .scalar_subquery(),
)
_QUEUED_WINDOW = (
    select(Task.id).where(
        _IN_QUEUE, col(Task.priority) == bindparam("priority"),
        _KEY >= tuple_(bindparam("lo_created_at", type_=Task.__table__.c.created_at.type), bindparam("lo_id")),
        _KEY <= tuple_(bindparam("hi_created_at", type_=Task.__table__.c.created_at.type), bindparam("hi_id")))
    .order_by(col(Task.created_at), col(Task.id))
)


def _naive_utc(value):
    """SQLite gives naive UTC datetimes back, PostgreSQL aware ones: comparable either way."""
    return value.replace(tzinfo=None) if value.tzinfo is not None else value


def _insert_ignoring_duplicates(session: Session, model: type, columns: tuple[str, ...],
                                rows: list[tuple[Any, ...]]) -> None:
    """One INSERT ... ON CONFLICT DO NOTHING for all the rows (values in `columns` order), sent as one executemany."""
    if not rows:
        return
    dialect = session.get_bind().dialect
    if dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise RuntimeError(f"unsupported database dialect {dialect.name!r}")
    statement = insert(model.__table__).on_conflict_do_nothing()
    if dialect.name != "sqlite":
        # psycopg: SQLAlchemy sends the rows as multi-row VALUES pages ("insertmanyvalues"), its fastest path here.
        session.execute(statement, [dict(zip(columns, row)) for row in rows])
        return
    # SQLite: SQLAlchemy's per-row parameter processing costs more than sqlite itself. The driver gets plain tuples
    # instead, each value converted as SQLAlchemy would, once per distinct value (a log batch shares a few times).
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    order = [columns.index(name) for name in compiled.positiontup]
    for index, name in enumerate(columns):
        processor = model.__table__.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            rows = _converted(rows, index, processor)
    if order != list(range(len(columns))):
        rows = [tuple(row[i] for i in order) for row in rows]
    session.connection().exec_driver_sql(compiled.string, rows)


def _converted(rows: list[tuple[Any, ...]], index: int, processor: Any) -> list[tuple[Any, ...]]:
    memo: dict[Any, Any] = {None: None}
    out = []
    for row in rows:
        value = row[index]
        if value not in memo:
            memo[value] = processor(value)
        out.append((*row[:index], memo[value], *row[index + 1:]))
    return out
