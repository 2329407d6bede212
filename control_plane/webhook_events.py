"""Which task transitions are webhook events, their payload, and the outbox rows they become.

`enqueue_deliveries` runs inside TaskStore.transition's transaction: the delivery rows commit together with the
status change and its TaskEvent, or not at all. So no event is lost between the store and the dispatcher (a cursor
over task_event ids would skip an event whose transaction committed after a later id was read, which PostgreSQL's
concurrent writers allow), and each event gets exactly one delivery row per endpoint.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from control_plane.models import Task, TaskEvent, WebhookDelivery, WebhookEndpoint

# The task status a transition moves to -> the event type an endpoint subscribes to.
EVENT_TYPES_BY_STATUS = {
    "running": "task.started",
    "succeeded": "task.succeeded",
    "failed": "task.failed",
    "stopped": "task.stopped",
}
EVENT_TYPES = tuple(EVENT_TYPES_BY_STATUS.values())


def new_message_id() -> str:
    """The delivery's `webhook-id`: unique, and the same on every try."""
    return f"msg_{secrets.token_hex(12)}"


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite gives naive UTC datetimes back, PostgreSQL aware ones."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_payload(event_type: str, task: Task, event: TaskEvent) -> dict[str, Any]:
    """`{"type", "timestamp", "data": {"task": {...}}}`: the task as the transition left it."""
    data: dict[str, Any] = {
        "id": task.id,
        "type": task.type,
        "status": event.to_status,
        "reason": event.reason,
        "message": event.message,
        "owner": task.owner,
        "attempt": task.attempt,
        "output_dir": task.output_dir,
        "created_at": iso(task.created_at),
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
    }
    if event.to_status == "failed":
        data["error"] = task.error or event.message
        data["exit_code"] = task.exit_code
    return {"type": event_type, "timestamp": iso(event.time), "data": {"task": data}}


def enqueue_deliveries(session: Session, task: Task, event: TaskEvent) -> int:
    """Adds one delivery per endpoint of the task's owner subscribed to this event, in the caller's transaction
    (`task` holds the values the transition wrote). Only the owner's endpoints: an admin's endpoint too gets the
    admin's own tasks, never everybody's. Returns how many were added."""
    event_type = EVENT_TYPES_BY_STATUS.get(str(event.to_status))
    if event_type is None or not task.owner:
        return 0
    endpoints = session.exec(select(WebhookEndpoint).where(col(WebhookEndpoint.owner) == task.owner)).all()
    wanted = [endpoint for endpoint in endpoints if event_type in endpoint.events.split(",")]
    if not wanted:
        return 0
    session.flush()  # the event's id
    payload = json.dumps(event_payload(event_type, task, event), separators=(",", ":"))
    for endpoint in wanted:
        session.add(WebhookDelivery(
            id=new_message_id(), endpoint_id=endpoint.id, task_event_id=event.id, task_id=task.id,
            event_type=event_type, payload_json=payload, next_attempt_at=event.time, created_at=event.time,
        ))
    return len(wanted)
