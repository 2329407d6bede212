"""What a chat loads (control_plane.chat_sessions.chat_subject), on the real store (SQLite and PostgreSQL): a task's
own type and config; an export's source task's, with the export's base model; a clear refusal (naming why) for a task
that has not succeeded, a type without a model, and an export whose source task was deleted."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest

from control_plane.chat_sessions import OpenFailed, chat_subject
from control_plane.state_machine import TaskStatus
from control_plane.task_store import TaskStore

SOURCE_CONFIG = {"model_name_or_path": "tiny-llama", "train_data_path": "data/train.jsonl", "max_length": 96}


@pytest.fixture
def store(engine):
    return TaskStore(engine)


def _succeeded(store: TaskStore, task_type: str, config: dict) -> str:
    task_id = uuid.uuid4().hex
    store.create_task(task_id, task_type, json.dumps(config), f"/tmp/{task_id}")
    for status, reason in ((TaskStatus.STARTING, "placed"), (TaskStatus.RUNNING, "started"),
                           (TaskStatus.SUCCEEDED, "exited")):
        store.transition(task_id, status, reason)
    return task_id


def test_a_task_chats_as_itself(store):
    source = _succeeded(store, "sft", SOURCE_CONFIG)
    subject = chat_subject(store, store.get_task(source))
    assert (subject.task_id, subject.type, json.loads(subject.config_json)) == (source, "sft", SOURCE_CONFIG)


def test_an_export_chats_as_its_source_trained_with_its_own_model(store):
    source = _succeeded(store, "sft", SOURCE_CONFIG)
    export = _succeeded(store, "export", {"source": f"task:{source}", "merge_lora": True,
                                          "model_name_or_path": "renamed-base"})
    subject = chat_subject(store, store.get_task(export))
    assert subject.task_id == export  # the export's published model is the one loaded
    assert subject.type == "sft"
    assert json.loads(subject.config_json) == {**SOURCE_CONFIG, "model_name_or_path": "renamed-base"}

    packaged = _succeeded(store, "export", {"source": f"task:{source}", "merge_lora": False})
    assert json.loads(chat_subject(store, store.get_task(packaged)).config_json) == SOURCE_CONFIG


def test_an_export_whose_source_was_deleted_is_refused(store):
    source = _succeeded(store, "sft", SOURCE_CONFIG)
    export = _succeeded(store, "export", {"source": f"task:{source}", "merge_lora": True})
    store.delete_task(source)
    with pytest.raises(OpenFailed) as refused:
        chat_subject(store, store.get_task(export))
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"source task {source} was deleted" in refused.value.message


def test_unfinished_tasks_and_types_without_a_model_are_refused(store):
    queued = store.create_task(uuid.uuid4().hex, "sft", json.dumps(SOURCE_CONFIG), "/tmp/q")
    with pytest.raises(OpenFailed, match="is queued; only a succeeded task"):
        chat_subject(store, queued)
    # An export of an export has no training prompt of its own to use (its source is an export).
    source = _succeeded(store, "sft", SOURCE_CONFIG)
    first = _succeeded(store, "export", {"source": f"task:{source}"})
    second = _succeeded(store, "export", {"source": f"task:{first}"})
    with pytest.raises(OpenFailed, match="task type export has no model to chat with"):
        chat_subject(store, store.get_task(second))
