"""What happens to a task whose run was lost (its agent stopped heart-beating, or no longer knows the task):
requeued from its latest checkpoint while `max_retries` allows, else failed. One policy for every way a run is lost."""

from __future__ import annotations

import logging

from control_plane.state_machine import ACTIVE, IllegalTransition, TaskStatus
from control_plane.task_store import TaskNotFound, TaskStore

log = logging.getLogger(__name__)


def requeue_or_fail(store: TaskStore, task_id: str, reason: str, message: str, *, attempt: int) -> TaskStatus | None:
    """Gives up `attempt` of the task. Returns the status the task moved to, or None when it had already moved on
    (another status, or another attempt: a lost attempt never touches the one that replaced it)."""
    try:
        task = store.get_task(task_id)
        if task.status not in ACTIVE or task.attempt != attempt:
            return None
        if task.status == TaskStatus.STOPPING:  # the user wanted it stopped anyway
            store.transition(task_id, TaskStatus.STOPPED, "user_stop", f"{message}; it was being stopped",
                             only_attempt=attempt)
            return TaskStatus.STOPPED
        if task.retries < task.max_retries:
            checkpoints = store.checkpoints(task_id)
            resume_from = checkpoints[-1].path if checkpoints else ""
            store.transition(
                task_id, TaskStatus.QUEUED, "retry",
                f"{message}; retry {task.retries + 1} of {task.max_retries}, from {resume_from or 'the start'}",
                agent_id="", devices="", pid=0, resume_from=resume_from, retries=task.retries + 1, only_attempt=attempt,
            )
            return TaskStatus.QUEUED
        store.transition(task_id, TaskStatus.FAILED, reason, message, error=message, error_reason=reason,
                         only_attempt=attempt)
        return TaskStatus.FAILED
    except (TaskNotFound, IllegalTransition) as exc:
        log.info("task %s: not requeued or failed: %s", task_id, exc)
        return None
