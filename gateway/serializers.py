"""Proto messages -> the REST API's models (gateway/api_models.py), the one mapping between the two.

JSON-carrying string fields (config_json, latest_metrics_json, values_json, ...) are parsed so clients get objects
with their integer/float/string types intact; statuses become lowercase names; timestamps ISO-8601 UTC or null. `to_json` is the JSON of any of the models, for
answers FastAPI does not serialize itself (the SSE streams' events).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel

from gateway import api_models as api
from protos import common_pb2, control_plane_pb2 as cp

_STATUS_PREFIX = "TASK_STATUS_"


def status_name(value: int) -> str:
    """TASK_STATUS_RUNNING -> "running"; an unknown number (newer control plane) -> "unknown"."""
    try:
        name = common_pb2.TaskStatus.Name(value)
    except ValueError:
        return "unknown"
    return name.removeprefix(_STATUS_PREFIX).lower()


# The filter values ListTasks accepts, derived from the enum so a new status needs no gateway change.
TASK_STATUSES = tuple(
    status_name(v) for v in common_pb2.TaskStatus.values() if v != common_pb2.TASK_STATUS_UNSPECIFIED
)


def timestamp(msg: Message, field: str) -> datetime | None:
    """The UTC time when the field is set, else None (an unset Timestamp is not 1970); JSON: ISO-8601 "...Z"."""
    if not msg.HasField(field):
        return None
    ts: Timestamp = getattr(msg, field)
    return ts.ToDatetime(tzinfo=timezone.utc)


def to_json(model: BaseModel, **options: Any) -> dict[str, Any]:
    """The model as the JSON-ready dict the API sends."""
    return model.model_dump(mode="json", **options)


def json_value(text: str, default: Any = None) -> Any:
    """Parse a JSON string field; an empty string means "not set"."""
    if not text:
        return {} if default is None else default
    return json.loads(text)


def _optional(msg: Message, field: str) -> Any:
    return getattr(msg, field) if msg.HasField(field) else None


def _or_none(text: str) -> str | None:
    # Empty proto strings mean "not set"; null reads better in JSON than "".
    return text or None


def progress_model(p: cp.Progress) -> api.Progress:
    return api.Progress(
        step=p.step,
        total_steps=p.total_steps,
        percent=p.percent,
        eta_seconds=_optional(p, "eta_seconds"),
        epoch=_optional(p, "epoch"),
        loss=_optional(p, "loss"),
        learning_rate=_optional(p, "learning_rate"),
        stage=_or_none(p.stage),
        stage_done=p.stage_done,
        stage_total=p.stage_total,
    )


def event_model(e: cp.TaskEvent) -> api.TaskEvent:
    return api.TaskEvent(time=timestamp(e, "time"), from_status=status_name(e.from_status),
                         to_status=status_name(e.to_status), reason=e.reason, message=e.message)


def attempt_model(a: cp.TaskAttempt) -> api.TaskAttempt:
    return api.TaskAttempt(
        number=a.number,
        agent_id=_or_none(a.agent_id),
        devices=list(a.devices),
        started_at=timestamp(a, "started_at"),
        ended_at=timestamp(a, "ended_at"),
        status=status_name(a.status) if a.status else None,
        reason=_or_none(a.reason),
        resumed_from=_or_none(a.resumed_from),
    )


def checkpoint_model(c: cp.Checkpoint) -> api.Checkpoint:
    return api.Checkpoint(path=c.path, step=c.step, time=timestamp(c, "time"), attempt=c.attempt)


def task_model(t: cp.Task) -> api.Task:
    return api.Task(
        id=t.id,
        type=t.type,
        status=status_name(t.status),
        config=json_value(t.config_json),
        created_at=timestamp(t, "created_at"),
        updated_at=timestamp(t, "updated_at"),
        started_at=timestamp(t, "started_at"),
        finished_at=timestamp(t, "finished_at"),
        agent_id=_or_none(t.agent_id),
        error=_or_none(t.error),
        error_details=_or_none(t.error_details),
        error_reason=_or_none(t.error_reason),
        exit_code=t.exit_code,
        pid=t.pid or None,
        owner=_or_none(t.owner),
        progress=progress_model(t.progress),
        latest_metrics=json_value(t.latest_metrics_json),
        output_dir=_or_none(t.output_dir),
        last_log_seq=t.last_log_seq,
        events=[event_model(e) for e in t.events],
        priority=t.priority,
        queue_position=t.queue_position or None,
        devices=list(t.devices),
        attempt=t.attempt,
        max_retries=t.max_retries,
        checkpoints=[checkpoint_model(c) for c in t.checkpoints],
        attempts=[attempt_model(a) for a in t.attempts],
        validation=api.DataValidation(state=t.validation.state, rows=t.validation.rows, message=t.validation.message)
        if t.HasField("validation") else None,
        published_model_sha256=t.published_model_sha256,
        nodes=t.nodes or 1,
        gpus_per_node=t.gpus_per_node,
        node_placements=[
            api.TaskNodePlacement(node=n.node, agent_id=n.agent_id, devices=list(n.devices), rank0=n.rank0,
                                  status=n.status or None)
            for n in t.node_placements
        ],
    )


def log_line_model(line: common_pb2.LogLine) -> api.LogLine:
    return api.LogLine(seq=line.seq, time=timestamp(line, "time"), stream=line.stream, text=line.text)


def metric_point_model(point: common_pb2.MetricPoint) -> api.MetricPoint:
    own: dict[str, Any] = {"seq": point.seq, "time": timestamp(point, "time")}
    values = json_value(point.values_json)
    if isinstance(values, dict):
        # seq/time are the point's own; a value with the same name must not overwrite them.
        own.update((k, v) for k, v in values.items() if k not in own)
    return api.MetricPoint.model_validate(own)


def template_model(t: cp.Template) -> api.Template:
    return api.Template(
        id=_or_none(t.id),
        builtin=t.builtin,
        owner=_or_none(t.owner),
        type=t.type,
        name=t.name,
        description=t.description,
        default_config=json_value(t.default_config_json),
        json_schema=json_value(t.json_schema),
        data_example=json_value(t.data_example_json),
    )


def validation_report_model(r: common_pb2.ValidationReport) -> api.ValidationReport:
    return api.ValidationReport(
        ok=r.ok,
        type=r.type,
        rows=r.rows,
        problems=[api.ValidationProblem(line=p.line, field=p.field, message=p.message) for p in r.problems],
        stats=json_value(r.stats_json),
        error=api.ValidationFailure(field=r.error_field or None, message=r.error_message) if r.error_message else None,
        warnings=list(r.warnings),
        agent_id=r.agent_id or None,
    )


def user_model(u: cp.User) -> api.User:
    return api.User(username=u.username, role=u.role, created_at=timestamp(u, "created_at"))


def agent_model(a: cp.AgentInfo) -> api.AgentInfo:
    return api.AgentInfo(
        agent_id=a.agent_id,
        address=a.address,
        hostname=a.hostname,
        slots=a.slots,
        free_slots=a.free_slots,
        alive=a.alive,
        last_heartbeat=timestamp(a, "last_heartbeat"),
        devices=[device_model(d) for d in a.devices],
        warm_pool_memory_bytes=a.warm_pool_memory_bytes,
        # Held by active tasks, whoever owns them: the console shows others' as occupied without naming them.
        busy_devices=list(a.busy_devices),
    )


def device_model(d: common_pb2.Device) -> api.AgentDevice:
    return api.AgentDevice(
        index=d.index, kind=d.kind, uuid=d.uuid or None, name=d.name or None,
        memory_total_bytes=d.memory_total_bytes, memory_free_bytes=d.memory_free_bytes,
        utilization_percent=d.utilization_percent,
    )


def health_model(h: cp.SystemHealth) -> api.SystemHealth:
    return api.SystemHealth(
        status=h.status or "ok",
        serving=h.serving,
        gateway=api.GatewayHealth(status="ok"),
        control_plane=api.ControlPlaneHealth(status=h.status or "ok", database=h.database, serving=h.serving,
                                             queued_tasks=h.queued_tasks, running_tasks=h.running_tasks),
        agents=[agent_model(a) for a in h.agents],
    )


def _json_or_text(text: str) -> Any:
    # A preview row is JSON the control plane has parsed already; should one not be, show it rather than fail.
    try:
        return json.loads(text)
    except ValueError:
        return text


def _dataset_fields(d: cp.Dataset) -> dict[str, Any]:
    return {"id": d.id, "name": d.name, "type": d.type, "sha256": d.sha256, "size": d.size_bytes, "rows": d.rows,
            "created_at": timestamp(d, "created_at"), "owner": _or_none(d.owner)}


def dataset_model(d: cp.Dataset) -> api.Dataset:
    return api.Dataset(**_dataset_fields(d))


def dataset_detail_model(d: cp.Dataset) -> api.DatasetDetail:
    """GetDataset's answer: the dataset with its row statistics and the first rows as a preview."""
    return api.DatasetDetail(**_dataset_fields(d), stats=json_value(d.stats_json),
                             preview=[_json_or_text(row) for row in d.preview_json])


def model_entry_model(m: cp.ModelEntry) -> api.ModelEntry:
    return api.ModelEntry(name=m.name, kind=m.kind, size=m.size_bytes, agents=list(m.agent_ids))


def artifact_model(a: common_pb2.Artifact) -> api.Artifact:
    return api.Artifact(path=a.path, size=a.size, kind=a.kind)


def chat_event_model(event: common_pb2.ChatEvent) -> api.ChatToken | api.ChatDone:
    if event.WhichOneof("event") == "token":
        return api.ChatToken(text=event.token)
    done = event.done
    ranking = [api.RankedPassage(index=item.index, score=item.score) for item in done.ranking]
    # `ranking` only where there is one (an embedding task's answer): to_json(..., exclude_unset=True) leaves it out.
    return api.ChatDone(text=done.text, model=done.model, **({"ranking": ranking} if ranking else {}))
