"""What happens to a task whose run was lost (its agent stopped heart-beating, or no longer knows the task):
requeued from its latest checkpoint while `max_retries` allows, else failed. One policy for every way a run is lost."""

from __future__ import annotations

import logging

from control_plane.state_machine import ACTIVE, IllegalTransition, TaskStatus
from control_plane.task_store import TaskNotFound, TaskStore

log = logging.getLogger(__name__)


def requeue_or_fail(store: TaskStore, task_id: str, reason: str, message: str) -> TaskStatus | None:
    """Returns the status the task moved to, or None when it had already moved on."""
    try:
        task = store.get_task(task_id)
        if task.status not in ACTIVE:
            return None
        if task.status == TaskStatus.STOPPING:  # the user wanted it stopped anyway
            store.transition(task_id, TaskStatus.STOPPED, "user_stop", f"{message}; it was being stopped")
            return TaskStatus.STOPPED
        if task.retries < task.max_retries:
            checkpoints = store.checkpoints(task_id)
            resume_from = checkpoints[-1].path if checkpoints else ""
            store.transition(
                task_id, TaskStatus.QUEUED, "retry",
                f"{message}; retry {task.retries + 1} of {task.max_retries}, from {resume_from or 'the start'}",
                agent_id="", devices="", pid=0, resume_from=resume_from, retries=task.retries + 1,
            )
            return TaskStatus.QUEUED
        store.transition(task_id, TaskStatus.FAILED, reason, message, error=message, error_reason=reason)
        return TaskStatus.FAILED
    except (TaskNotFound, IllegalTransition) as exc:
        log.info("task %s: not requeued or failed: %s", task_id, exc)
        return None
