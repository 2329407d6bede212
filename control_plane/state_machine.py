"""The task status machine of DESIGN.md, as one transition table. Every status change goes through `check`."""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


S = TaskStatus
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.STOPPED})
ACTIVE = frozenset({S.STARTING, S.RUNNING, S.STOPPING})  # holding a slot on an agent

# from -> the statuses it may move to.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    S.QUEUED: frozenset({S.STARTING, S.STOPPED, S.FAILED}),
    # starting/running -> queued: the launch was refused, or the agent was lost and a retry is allowed.
    S.STARTING: frozenset({S.RUNNING, S.QUEUED, S.STOPPING, S.SUCCEEDED, S.FAILED, S.STOPPED}),
    S.RUNNING: frozenset({S.QUEUED, S.STOPPING, S.SUCCEEDED, S.FAILED, S.STOPPED}),
    S.STOPPING: frozenset({S.SUCCEEDED, S.FAILED, S.STOPPED}),
    S.SUCCEEDED: frozenset(),
    # A stopped or failed task can be resumed from a checkpoint: a new attempt, queued again.
    S.FAILED: frozenset({S.QUEUED}),
    S.STOPPED: frozenset({S.QUEUED}),
}


class IllegalTransition(Exception):
    def __init__(self, task_id: str, current: TaskStatus, target: TaskStatus):
        super().__init__(f"task {task_id} cannot go from {current} to {target}")
        self.task_id = task_id
        self.current = current
        self.target = target


class StaleAttempt(IllegalTransition):
    """A report about an attempt the task has left (requeued, resumed): never applied."""

    def __init__(self, task_id: str, reported: int, current: int):
        Exception.__init__(self, f"task {task_id}: attempt {reported} no longer counts (the task is on attempt {current})")
        self.task_id = task_id


def check(task_id: str, current: str, target: str) -> None:
    """Raises IllegalTransition unless current -> target is in the table."""
    if TaskStatus(target) not in TRANSITIONS[TaskStatus(current)]:
        raise IllegalTransition(task_id, TaskStatus(current), TaskStatus(target))
