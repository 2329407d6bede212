"""Store rows -> protobuf messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Iterable

from google.protobuf.json_format import ParseDict
from google.protobuf.timestamp_pb2 import Timestamp

from control_plane.models import (
    Agent, Checkpoint, LogLine, MetricPoint, PublishedModel, Task, TaskAttempt, TaskEvent, TaskNode, TaskValidation,
)
from control_plane.progress import current_stage
from protos import common_pb2, control_plane_pb2
from trainers.errors import split_failure


def status_to_proto(status: str) -> int:
    return common_pb2.TaskStatus.Value(f"TASK_STATUS_{status.upper()}") if status else 0


def status_from_proto(value: int) -> str:
    return common_pb2.TaskStatus.Name(value).removeprefix("TASK_STATUS_").lower()


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return stamp


def datetime_from(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def task_to_proto(
    task: Task,
    events: list[TaskEvent] | None = None,
    *,
    queue_position: int = 0,
    attempts: list[TaskAttempt] | None = None,
    checkpoints: list[Checkpoint] | None = None,
    validation: TaskValidation | None = None,
    published: PublishedModel | None = None,
    nodes: list[TaskNode] | None = None,
) -> control_plane_pb2.Task:
    progress = control_plane_pb2.Progress(step=task.step, total_steps=task.total_steps, percent=task.percent)
    for name in ("eta_seconds", "epoch", "loss", "learning_rate"):
        value = getattr(task, name)
        if value is not None:
            setattr(progress, name, value)
    stage = current_stage(task.latest_metrics_json)
    if stage is not None:
        progress.stage, progress.stage_done, progress.stage_total = stage
    error, error_details = split_failure(task.error)  # stored as the agent reported it; told once, traceback aside
    message = control_plane_pb2.Task(
        id=task.id,
        type=task.type,
        status=status_to_proto(task.status),
        config_json=task.config_json,
        agent_id=task.agent_id,
        error=error,
        error_details=error_details,
        error_reason=task.error_reason,
        progress=progress,
        latest_metrics_json=task.latest_metrics_json,
        output_dir=task.output_dir,
        last_log_seq=task.last_log_seq,
        exit_code=task.exit_code,
        pid=task.pid,
        owner=task.owner,
        priority=task.priority,
        queue_position=queue_position,
        devices=_indices(task.devices),
        attempt=task.attempt,
        max_retries=task.max_retries,
        attempts=[attempt_to_proto(a) for a in attempts or []],
        checkpoints=[
            control_plane_pb2.Checkpoint(path=c.path, step=c.step, time=timestamp(c.time), attempt=c.attempt)
            for c in checkpoints or []
        ],
        events=[event_to_proto(event) for event in events or []],
        published_model_sha256=published.sha256 if published is not None else "",
        nodes=task.nodes or 1,
        gpus_per_node=task.gpus_per_node,
        node_placements=[
            control_plane_pb2.TaskNodePlacement(node=n.node, agent_id=n.agent_id, devices=_indices(n.devices),
                                                rank0=n.rank0, status=n.status)
            for n in nodes or []
        ],
    )
    if validation is not None:
        message.validation.CopyFrom(control_plane_pb2.DataValidation(
            state=validation.state, rows=validation.rows, message=validation.message))
    for name in ("created_at", "updated_at", "started_at", "finished_at"):
        stamp = timestamp(getattr(task, name))
        if stamp is not None:
            getattr(message, name).CopyFrom(stamp)
    return message


def _indices(devices: str) -> list[int]:
    return [int(part) for part in devices.split(",") if part]


def attempt_to_proto(attempt: TaskAttempt) -> control_plane_pb2.TaskAttempt:
    return control_plane_pb2.TaskAttempt(
        number=attempt.number,
        agent_id=attempt.agent_id,
        devices=_indices(attempt.devices),
        started_at=timestamp(attempt.started_at),
        ended_at=timestamp(attempt.ended_at),
        status=status_to_proto(attempt.status),
        reason=attempt.reason,
        resumed_from=attempt.resumed_from,
    )


def event_to_proto(event: TaskEvent) -> control_plane_pb2.TaskEvent:
    return control_plane_pb2.TaskEvent(
        time=timestamp(event.time),
        from_status=status_to_proto(event.from_status),
        to_status=status_to_proto(event.to_status),
        reason=event.reason,
        message=split_failure(event.message)[0],  # a failure's event: its message, the traceback is the task's
    )


def line_to_proto(line: LogLine) -> common_pb2.LogLine:
    return common_pb2.LogLine(seq=line.seq, time=timestamp(line.time), stream=line.stream, text=line.text)


def metric_to_proto(point: MetricPoint) -> common_pb2.MetricPoint:
    return common_pb2.MetricPoint(seq=point.seq, time=timestamp(point.time), values_json=point.values_json)


def agent_to_proto(agent: Agent, *, alive: bool, free_slots: int, models: list[dict] | None = None,
                   hub_access: bool = False, warm_pool_memory_bytes: int = 0,
                   busy_devices: Iterable[int] = ()) -> control_plane_pb2.AgentInfo:
    return control_plane_pb2.AgentInfo(
        agent_id=agent.id,
        address=agent.address,
        hostname=agent.hostname,
        slots=agent.slots,
        free_slots=free_slots,
        alive=alive,
        last_heartbeat=timestamp(agent.last_heartbeat),
        devices=[ParseDict(device, common_pb2.Device()) for device in json.loads(agent.devices_json or "[]")],
        models=[ParseDict(model, common_pb2.ModelInfo(), ignore_unknown_fields=True) for model in models or []],
        hub_access=hub_access,
        warm_pool_memory_bytes=warm_pool_memory_bytes,
        busy_devices=sorted(busy_devices),
    )
