"""What a task reads: its input fields' values as platform objects (`dataset:<id>`, `task:<id>`) or agent paths.

Platform objects are checked here, at submit, for the caller (a dataset of theirs, of the task's type; a task of
theirs with a published model) and become the BlobRefs the placed agent fetches before the trainer starts. Paths are
the agent's: whether a task has any decides if its submit check needs an agent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from control_plane.dataset_store import DatasetStore
from control_plane.model_catalog import is_agent_path
from control_plane.models import Task
from control_plane.published_models import PublishedModels
from control_plane.task_store import TaskNotFound, TaskStore
from protos import common_pb2
from trainers import registry
from trainers.errors import ConfigError
from trainers.paths import is_ref

# Config keys naming a file on the agent besides the type's input fields (extra training arguments and the files
# they name are read there too).
_OTHER_PATH_FIELDS = ("config_file",)


@dataclass(frozen=True)
class Caller:
    username: str
    is_admin: bool


def input_values(type_name: str, config: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, value) of every input field the config sets."""
    task_type = registry.get(type_name)
    return [(name, config[name]) for name in task_type.input_fields if isinstance(config.get(name), str)]


def dataset_ids(type_name: str, config: dict[str, Any]) -> set[str]:
    return {value.split(":", 1)[1] for _, value in input_values(type_name, config) if value.startswith("dataset:")}


def reads_agent_paths(type_name: str, config: dict[str, Any]) -> bool:
    """Whether the task names a file on the agent (so that only an agent can check it)."""
    if any(not is_ref(value) for _, value in input_values(type_name, config)):
        return True
    if any(config.get(name) for name in _OTHER_PATH_FIELDS):
        return True
    return any(is_agent_path(value) for _, value in registry.model_values(config))  # a model there: the check's too


class TaskInputs:
    def __init__(self, datasets: DatasetStore, published: PublishedModels, tasks: TaskStore) -> None:
        self._datasets = datasets
        self._published = published
        self._tasks = tasks

    def check(self, type_name: str, config: dict[str, Any], caller: Caller) -> list[common_pb2.BlobRef]:
        """The BlobRefs of the config's platform objects; ConfigError naming the field for one the caller may not
        use (unknown, someone else's, of another type, a task with no published model)."""
        refs = []
        for field, value in input_values(type_name, config):
            if not is_ref(value):
                continue
            kind, _, object_id = value.partition(":")
            if kind == "dataset":
                refs.append(self._dataset_ref(field, value, object_id, type_name, caller))
            else:
                refs.append(self._task_ref(field, value, object_id, caller))
        return refs

    def for_task(self, task: Task) -> list[common_pb2.BlobRef]:
        """At launch: the refs of a stored task, for its owner (as checked when it was submitted)."""
        return self.check(task.type, json.loads(task.config_json), Caller(task.owner, is_admin=True))

    def _dataset_ref(self, field: str, value: str, dataset_id: str, type_name: str, caller: Caller):
        dataset = self._datasets.by_ids([dataset_id]).get(dataset_id)
        if dataset is None or (dataset.owner != caller.username and not caller.is_admin):
            raise ConfigError(field, f"{field}: {value} is not one of your datasets (GET /api/finetune/datasets)")
        if dataset.type != type_name:
            raise ConfigError(field, f"{field}: {value} ({dataset.name}) was uploaded as {dataset.type} data; a "
                                     f"{type_name} task needs a dataset uploaded with type {type_name}")
        return common_pb2.BlobRef(ref=value, sha256=dataset.sha256, size=dataset.size_bytes, suffix=dataset.suffix)

    def _task_ref(self, field: str, value: str, task_id: str, caller: Caller):
        try:
            task = self._tasks.get_task(task_id)
        except TaskNotFound:
            task = None
        if task is None or (task.owner != caller.username and not caller.is_admin):
            raise ConfigError(field, f"{field}: {value}: no such task of yours")
        published = self._published.get(task_id)
        if published is None:
            raise ConfigError(field, f"{field}: task {task_id} has no published model (only a succeeded task's "
                                     "final model is published)")
        return common_pb2.BlobRef(ref=value, sha256=published.sha256, size=published.size_bytes, archive=True)
