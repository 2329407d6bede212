"""The task store and status machine, on SQLite and on the PostgreSQL server at 127.0.0.1:5432."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from control_plane.db import make_engine
from control_plane.state_machine import TRANSITIONS, IllegalTransition, TaskStatus
from control_plane.task_store import NewLine, NewMetric, TaskNotFound, TaskStillActive, TaskStore

@pytest.fixture
def store(engine):
    return TaskStore(engine)


def _new_task(store: TaskStore, task_id: str | None = None):
    return store.create_task(task_id or uuid.uuid4().hex, "sft", '{"a": 1}', "/tmp/out")


def _lines(seqs, start=datetime(2026, 1, 1, tzinfo=UTC)):
    return [NewLine(seq, start + timedelta(seconds=seq), "stdout", f"line {seq}") for seq in seqs]


def test_create_get_and_submit_event(store):
    task = _new_task(store)
    got = store.get_task(task.id)
    assert got.status == "queued" and got.config_json == '{"a": 1}'
    events = store.events(task.id)
    assert [(e.from_status, e.to_status, e.reason) for e in events] == [("", "queued", "submitted")]


def test_unknown_task_raises(store):
    with pytest.raises(TaskNotFound):
        store.get_task("nope")
    with pytest.raises(TaskNotFound):
        store.transition("nope", TaskStatus.STARTING, "placed")


def test_full_lifecycle_records_every_transition(store):
    task = _new_task(store)
    store.transition(task.id, TaskStatus.STARTING, "placed", agent_id="agent-1")
    running = store.transition(task.id, TaskStatus.RUNNING, "started", pid=1234)
    assert running.started_at is not None and running.pid == 1234 and running.agent_id == "agent-1"
    done = store.transition(task.id, TaskStatus.SUCCEEDED, "exited", exit_code=0)
    assert done.finished_at is not None
    assert [e.to_status for e in store.events(task.id)] == ["queued", "starting", "running", "succeeded"]
    assert all(e.time is not None for e in store.events(task.id))


@pytest.mark.parametrize(
    "path, illegal",
    [
        ([], TaskStatus.RUNNING),  # queued cannot skip starting
        ([], TaskStatus.SUCCEEDED),
        ([TaskStatus.STARTING, TaskStatus.RUNNING, TaskStatus.SUCCEEDED], TaskStatus.RUNNING),
        ([TaskStatus.STOPPED], TaskStatus.STARTING),
        ([TaskStatus.STARTING, TaskStatus.RUNNING, TaskStatus.STOPPING], TaskStatus.RUNNING),
    ],
)
def test_illegal_transition_raises_and_changes_nothing(store, path, illegal):
    task = _new_task(store)
    for status in path:
        store.transition(task.id, status, "test")
    before = store.get_task(task.id)
    with pytest.raises(IllegalTransition):
        store.transition(task.id, illegal, "test")
    after = store.get_task(task.id)
    assert after.status == before.status
    assert len(store.events(task.id)) == len(path) + 1


def test_ended_statuses_lead_only_back_to_the_queue():
    assert TRANSITIONS[TaskStatus.SUCCEEDED] == frozenset()
    for status in (TaskStatus.FAILED, TaskStatus.STOPPED):  # resume
        assert TRANSITIONS[status] == frozenset({TaskStatus.QUEUED})


def test_list_newest_first_with_filters_and_paging(store):
    ids = [_new_task(store, f"task-{i}").id for i in range(5)]
    store.transition(ids[1], TaskStatus.STOPPED, "user_stop")
    tasks, total = store.list_tasks(limit=2)
    assert total == 5 and [t.id for t in tasks] == ["task-4", "task-3"]
    tasks, _ = store.list_tasks(limit=2, offset=2)
    assert [t.id for t in tasks] == ["task-2", "task-1"]
    stopped, total = store.list_tasks(status="stopped")
    assert total == 1 and stopped[0].id == "task-1"
    assert store.list_tasks(task_type="dpo") == ([], 0)
    assert [t.id for t in store.tasks_with_status([TaskStatus.QUEUED])] == ["task-0", "task-2", "task-3", "task-4"]


def test_ingest_is_idempotent_and_pages(store):
    task = _new_task(store)
    store.ingest(task.id, _lines(range(1, 11)), [])
    store.ingest(task.id, _lines(range(8, 16)), [])  # a replay overlapping what is stored
    assert [l.seq for l in store.log_lines_after(task.id, 0, 100)] == list(range(1, 16))
    assert store.get_task(task.id).last_log_seq == 15
    assert [l.seq for l in store.log_lines_tail(task.id, 3)] == [13, 14, 15]
    assert [l.seq for l in store.log_lines_tail(task.id, 3, before_seq=5)] == [2, 3, 4]
    assert [l.seq for l in store.log_lines_after(task.id, 12, 2)] == [13, 14]


def test_metrics_drive_progress(store):
    task = _new_task(store)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    store.ingest(
        task.id,
        [],
        [
            NewMetric(1, t0, {"step": 1, "total_steps": 10, "loss": 2.5, "learning_rate": 1e-3, "eta_seconds": 9.0}),
            NewMetric(2, t0, {"step": 5, "total_steps": 10, "loss": 1.5, "epoch": 0.5}),
        ],
    )
    got = store.get_task(task.id)
    assert (got.step, got.total_steps, got.percent, got.loss, got.epoch) == (5, 10, 50.0, 1.5, 0.5)
    assert got.learning_rate == 1e-3 and got.last_metric_seq == 2
    assert [p.seq for p in store.metric_points(task.id)] == [1, 2]


def test_delete_refused_while_active_then_removes_everything(store):
    task = _new_task(store)
    store.transition(task.id, TaskStatus.STARTING, "placed")
    store.ingest(task.id, _lines([1, 2]), [NewMetric(1, datetime(2026, 1, 1, tzinfo=UTC), {"step": 1})])
    with pytest.raises(TaskStillActive):
        store.delete_task(task.id)
    store.transition(task.id, TaskStatus.FAILED, "trainer_error")
    store.delete_task(task.id)
    with pytest.raises(TaskNotFound):
        store.get_task(task.id)
    assert store.log_lines_after(task.id, 0, 10) == [] and store.metric_points(task.id) == [] and store.events(task.id) == []


def test_agents_register_and_heartbeat(store):
    assert store.touch_agent("a1") is False
    store.upsert_agent("a1", "127.0.0.1:1", "host", 2)
    assert store.touch_agent("a1") is True
    store.upsert_agent("a1", "127.0.0.1:2", "host", 3)
    [agent] = store.agents()
    assert (agent.address, agent.slots) == ("127.0.0.1:2", 3)
    task = _new_task(store)
    store.transition(task.id, TaskStatus.STARTING, "placed", agent_id="a1", devices="0,2", attempt=1)
    assert store.held_devices() == {"a1": {0, 2}}
    store.transition(task.id, TaskStatus.FAILED, "trainer_error")
    assert store.held_devices() == {}


def test_queue_order_is_priority_then_age(store):
    low = store.create_task("low", "sft", "{}", "", priority=0)
    high = store.create_task("high", "sft", "{}", "", priority=5)
    low2 = store.create_task("low2", "sft", "{}", "", priority=0)
    assert [t.id for t in store.queue()] == [high.id, low.id, low2.id]
    assert store.queue_positions() == {"high": 1, "low": 2, "low2": 3}


def test_attempts_and_checkpoints_are_recorded(store):
    task = _new_task(store)
    store.transition(task.id, TaskStatus.STARTING, "placed", agent_id="a1", devices="0", attempt=1)
    store.transition(task.id, TaskStatus.RUNNING, "started")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    checkpoint = {"event": "checkpoint", "path": "/out/checkpoint-4", "step": 4}
    store.ingest(task.id, [], [NewMetric(1, t0, checkpoint), NewMetric(2, t0, checkpoint)])  # a replay stores it once
    store.transition(task.id, TaskStatus.QUEUED, "retry", agent_id="", devices="", resume_from="/out/checkpoint-4", retries=1)
    store.transition(task.id, TaskStatus.STARTING, "placed", agent_id="a2", devices="1", attempt=2)
    store.transition(task.id, TaskStatus.SUCCEEDED, "exited")
    first, second = store.attempts(task.id)
    assert (first.number, first.agent_id, first.status, first.reason) == (1, "a1", "queued", "retry")
    assert (second.number, second.agent_id, second.devices, second.resumed_from, second.status) == (2, "a2", "1", "/out/checkpoint-4", "succeeded")
    assert first.ended_at and second.ended_at
    assert [(c.path, c.step, c.attempt) for c in store.checkpoints(task.id)] == [("/out/checkpoint-4", 4, 1)]


def test_a_store_from_an_older_schema_is_refused_with_a_clear_message(tmp_path):
    from control_plane.db import SchemaOutOfDate

    url = f"sqlite:///{tmp_path / 'old.db'}"
    make_engine(url).dispose()
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_task_owner"))
        conn.execute(text("DROP INDEX ix_task_owner_list"))  # an older store has neither index on the column
        conn.execute(text("ALTER TABLE task DROP COLUMN owner"))
        conn.execute(text("DROP TABLE alembic_version"))  # older than the first release: no migrations either
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match=r"missing column\(s\) task.owner"):
        make_engine(url)


# --- data checks and attempts ----------------------------------------------------------------------------------------

def test_a_task_whose_data_are_being_checked_waits_outside_the_queue(store):
    from control_plane.models import TaskValidation

    checking = store.create_task(uuid.uuid4().hex, "sft", "{}", "/tmp/a", validation=TaskValidation(state="pending"))
    checked = store.create_task(uuid.uuid4().hex, "sft", "{}", "/tmp/b", validation=TaskValidation(state="passed", rows=3))
    legacy = _new_task(store)  # from before data checks were recorded: counts as checked
    assert [t.id for t in store.queue()] == [checked.id, legacy.id]
    assert [t.id for t, _ in store.pending_validations()] == [checking.id]

    assert store.finish_validation(checking.id, True, 7)
    assert not store.finish_validation(checking.id, False, 0, "late")  # recorded once: compare-and-set on pending
    assert store.validation(checking.id).state == "passed" and store.validation(checking.id).rows == 7
    assert [t.id for t in store.queue()] == [checking.id, checked.id, legacy.id]
    assert store.pending_validations() == []


def test_a_report_about_an_attempt_the_task_left_is_never_applied(store):
    from control_plane.state_machine import StaleAttempt

    task = _new_task(store)
    store.transition(task.id, TaskStatus.STARTING, "placed", attempt=1, agent_id="a1")
    store.transition(task.id, TaskStatus.QUEUED, "retry", only_attempt=1, agent_id="")
    store.transition(task.id, TaskStatus.STARTING, "placed", attempt=2, agent_id="a2")
    with pytest.raises(StaleAttempt):  # attempt 1's agent came back and reported its end
        store.transition(task.id, TaskStatus.SUCCEEDED, "exited", only_attempt=1)
    store.ingest(task.id, _lines([1, 2]), [], attempt=1)  # its lines would take attempt 2's seqs
    assert store.log_lines_after(task.id, 0, 10) == []
    store.ingest(task.id, _lines([1, 2]), [], attempt=2)
    assert [line.seq for line in store.log_lines_after(task.id, 0, 10)] == [1, 2]
    assert store.transition(task.id, TaskStatus.RUNNING, "started", only_attempt=2).status == "running"
