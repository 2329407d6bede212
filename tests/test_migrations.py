"""Schema migrations (control_plane/migrations, control_plane/store_upgrade.py) on SQLite and on the PostgreSQL server.

A first-release store is built from the DDL that release ran (tests/fixtures/store_0_1_0.*.sql, frozen from its
models), filled through plain SQL, and upgraded through the real paths: the `migrate` command as a subprocess, and
make_engine as the control plane calls it at start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlmodel import Session, SQLModel, select

from control_plane.db import SchemaOutOfDate, make_engine
from control_plane.migrations import alembic_config
from control_plane.models import (Agent, AgentInventory, AuthToken, Dataset, LogLine, MetricPoint, SavedTemplate, Task,
                                  TaskEvent, User)
from control_plane.store_upgrade import head_revision, upgrade_store
from control_plane.task_store import NewMetric, TaskStore
from tests.conftest import POSTGRES_URL, REPO_ROOT

FIXTURES = Path(__file__).parent / "fixtures"
JSON_COLUMNS = {("task", "config_json"), ("task", "latest_metrics_json"), ("metric_point", "values_json"),
                ("agent", "devices_json"), ("saved_template", "config_json"), ("dataset", "stats_json"),
                ("dataset", "preview_json"), ("agent_inventory", "models_json")}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An empty database: a SQLite file, or a schema of its own on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    schema = f"bugagaric_migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def first_release_ddl(dialect: str) -> list[str]:
    sql = (FIXTURES / f"store_0_1_0.{dialect}.sql").read_text()
    sql = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    return [statement.strip() for statement in sql.split(";") if statement.strip()]


def make_first_release_store(url: str, *, skip=lambda statement: False) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in first_release_ddl(engine.dialect.name):
            if not skip(statement):
                conn.exec_driver_sql(statement)
    engine.dispose()


# --- what the first release had in its store, written as that release's SQL would -----------------------------------

T0 = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=UTC)
T1 = datetime(2026, 11, 2, 10, 0, 0, tzinfo=UTC)
CONFIG = {"model_name_or_path": "tiny-llama", "train_data_path": "dataset:abc", "learning_rate": 2e-05,
          "num_train_epochs": 3, "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
          "gradient_checkpointing": True, "eval_data_path": None, "prompt": "答えてください: {question}"}
TASK_DEFAULTS = dict(owner="alice", output_dir="/out/a", started_at=None, finished_at=None, agent_id="", pid=0,
                     exit_code=0, error="", error_reason="", step=0, total_steps=0, percent=0.0, eta_seconds=None,
                     epoch=None, loss=None, learning_rate=None, latest_metrics_json="{}", priority=0, gpus=1,
                     gpu_vis="", devices="", attempt=0, max_retries=0, retries=0, resume_from="", last_log_seq=0,
                     last_metric_seq=0)
ROWS: dict[str, list[dict]] = {
    "task": [
        {**TASK_DEFAULTS, "id": "t-done", "type": "sft", "status": "succeeded", "config_json": json.dumps(CONFIG),
         "created_at": T0, "updated_at": T1, "started_at": T0, "finished_at": T1, "agent_id": "agent-1", "pid": 4242,
         "step": 30, "total_steps": 30, "percent": 100.0, "epoch": 3.0, "loss": 0.125, "learning_rate": 2e-05,
         "latest_metrics_json": json.dumps({"step": 30, "loss": 0.125, "train_runtime": 12.5}), "attempt": 1,
         "devices": "0", "last_log_seq": 3, "last_metric_seq": 2},
        {**TASK_DEFAULTS, "id": "t-queued", "type": "dpo", "status": "queued", "owner": "bob", "output_dir": "/out/b",
         "config_json": json.dumps({"model_name_or_path": "tiny-llama", "beta": 0.1}, separators=(",", ":")),
         "created_at": T1, "updated_at": T1, "priority": 5},
    ],
    "task_event": [
        {"id": 1, "task_id": "t-done", "time": T0, "from_status": "", "to_status": "queued", "reason": "submitted",
         "message": ""},
        {"id": 2, "task_id": "t-done", "time": T1, "from_status": "running", "to_status": "succeeded",
         "reason": "exited", "message": "exit code 0"},
    ],
    "log_line": [
        {"task_id": "t-done", "seq": seq, "time": T0, "stream": stream, "text": line}
        for seq, stream, line in ((1, "stdout", "loading tiny-llama"), (2, "stderr", "warning: ünïcode ✓"),
                                  (3, "stdout", "{'loss': 0.125}"))
    ],
    "metric_point": [
        {"task_id": "t-done", "seq": 1, "time": T0, "values_json": json.dumps({"step": 1, "loss": 2.5, "epoch": 0.1})},
        {"task_id": "t-done", "seq": 2, "time": T1,
         "values_json": json.dumps({"event": "checkpoint", "path": "/out/a/checkpoint-30", "step": 30})},
    ],
    "app_user": [
        {"username": "alice", "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "role": "admin",
         "created_at": T0},
        {"username": "bob", "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdDI$aGFzaDI", "role": "user",
         "created_at": T1},
    ],
    "auth_token": [{"token_hash": "ab" * 32, "username": "alice", "created_at": T0, "expires_at": T1}],
    "agent": [{"id": "agent-1", "address": "127.0.0.1:50061", "hostname": "gpu-box", "slots": 2,
               "devices_json": json.dumps([{"index": 0, "kind": "cuda", "name": "H100", "memory_total": 85899345920}]),
               "registered_at": T0, "last_heartbeat": T1}],
    "saved_template": [{"id": "tpl-1", "owner": "alice", "name": "my sft", "type": "sft",
                        "config_json": json.dumps(CONFIG), "created_at": T0}],
    "dataset": [{"id": "ds-1", "owner": "alice", "name": "train.jsonl", "type": "sft", "sha256": "cd" * 32,
                 "size_bytes": 5_000_000_000, "rows": 3, "suffix": ".jsonl",
                 "stats_json": json.dumps({"rows": 3, "fields": {"instruction": 3}}, ensure_ascii=False),
                 "preview_json": json.dumps([{"instruction": "説明して", "output": "はい"}], ensure_ascii=False),
                 "created_at": T0}],
    "agent_inventory": [{"agent_id": "agent-1", "models_json": json.dumps([{"name": "tiny-llama", "size_bytes": 1}]),
                         "hub_access": False, "updated_at": T1}],
}
MODELS = {"task": (Task, ("id",)), "task_event": (TaskEvent, ("id",)), "log_line": (LogLine, ("task_id", "seq")),
          "metric_point": (MetricPoint, ("task_id", "seq")), "app_user": (User, ("username",)),
          "auth_token": (AuthToken, ("token_hash",)), "agent": (Agent, ("id",)),
          "saved_template": (SavedTemplate, ("id",)), "dataset": (Dataset, ("id",)),
          "agent_inventory": (AgentInventory, ("agent_id",))}


def fill_first_release_store(url: str) -> None:
    """Inserts ROWS with plain SQL, the values as that release's SQLAlchemy types bound them."""
    engine = create_engine(url)
    sqlite = engine.dialect.name == "sqlite"

    def bound(value):
        # SQLite: DateTime as SQLAlchemy writes it there (UTC, no offset).
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite and isinstance(value, datetime) else value

    with engine.begin() as conn:
        for table, rows in ROWS.items():
            columns = list(rows[0])
            statement = text(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})")
            conn.execute(statement, [{c: bound(row[c]) for c in columns} for row in rows])
    engine.dispose()


def assert_every_row_is_there(engine) -> None:
    with Session(engine) as session:
        for table, rows in ROWS.items():
            model, key = MODELS[table]
            assert len(session.exec(select(model)).all()) == len(rows), table
            for row in rows:
                found = session.get(model, tuple(row[k] for k in key) if len(key) > 1 else row[key[0]])
                assert found is not None, (table, row)
                for column, value in row.items():
                    got = getattr(found, column)
                    if (table, column) in JSON_COLUMNS:
                        assert json.loads(got) == json.loads(value), (table, column)
                    else:
                        assert got == value, (table, column)


def json_column_types(engine) -> dict[tuple[str, str], str]:
    inspector = inspect(engine)
    return {(table, column): str(next(c["type"] for c in inspector.get_columns(table) if c["name"] == column))
            for table, column in JSON_COLUMNS}


def migrate_command(url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BUGAGARIC_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "control_plane", "migrate"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


# --- the tests ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["migrate command", "make_engine"])
def test_a_first_release_store_is_upgraded_and_every_row_is_found(database_url, path):
    make_first_release_store(database_url)
    fill_first_release_store(database_url)

    if path == "migrate command":
        done = migrate_command(database_url)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith(f": 0001 (a first-release store, stamped) -> {head_revision()}")
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head_revision()
        assert_every_row_is_there(engine)
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                types = {(r.table_name, r.column_name): r.data_type for r in conn.execute(text(
                    "SELECT table_name, column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = current_schema()"))}
            assert {column: types[column] for column in JSON_COLUMNS} == {column: "jsonb" for column in JSON_COLUMNS}
        else:
            assert set(json_column_types(engine).values()) == {"TEXT"}

        # The migrated store keeps working: new metrics (a JSON column written by the batched insert), progress
        # (a JSON column updated), and a priority change (a compare-and-set on the JSON config).
        store = TaskStore(engine)
        store.ingest("t-done", [], [NewMetric(3, T1, {"step": 31, "loss": 0.1})])
        assert [json.loads(p.values_json) for p in store.metric_points("t-done", after_seq=2)] == [{"step": 31, "loss": 0.1}]
        assert json.loads(store.get_task("t-done").latest_metrics_json)["loss"] == 0.1
        assert json.loads(store.set_priority("t-queued", 9).config_json) == {"model_name_or_path": "tiny-llama",
                                                                            "beta": 0.1, "priority": 9}
    finally:
        engine.dispose()


def test_the_baseline_revision_is_the_first_release_schema(database_url):
    """Revision 0001 makes what the first release's create_all made: same tables, columns, types, keys, indexes."""
    make_first_release_store(database_url)
    released = create_engine(database_url)
    migrated_url = database_url
    if released.dialect.name == "sqlite":
        migrated_url = database_url.replace("store.db", "baseline.db")
    else:  # a second schema beside the first
        schema = f"bugagaric_baseline_{uuid.uuid4().hex[:12]}"
        with released.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        migrated_url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    baseline = create_engine(migrated_url)
    try:
        with baseline.begin() as conn:
            command.upgrade(alembic_config(connection=conn), "0001")
        assert _schema_of(baseline) == _schema_of(released)
    finally:
        baseline.dispose()
        if released.dialect.name == "postgresql":
            with released.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        released.dispose()


def _schema_of(engine) -> dict:
    inspector = inspect(engine)
    return {
        table: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            inspector.get_pk_constraint(table)["constrained_columns"],
            sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)),
        )
        for table in sorted(set(inspector.get_table_names()) - {"alembic_version"})
    }


def test_the_migrations_make_exactly_the_models_schema(database_url):
    """A change to control_plane/models.py without a migration fails here (what `alembic check` reports)."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    SQLModel.metadata) == []
    finally:
        engine.dispose()


def test_a_new_store_is_made_at_head_and_a_second_upgrade_changes_nothing(database_url):
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert tables == set(SQLModel.metadata.tables) | {"alembic_version"}
        schema = _schema_of(engine)
        again = upgrade_store(engine)
        assert (again.before, again.after, again.adopted) == (head_revision(), head_revision(), False)
        assert _schema_of(engine) == schema
    finally:
        engine.dispose()
    make_engine(database_url).dispose()  # a restart: still nothing to do
    done = migrate_command(database_url)
    assert done.returncode == 0 and done.stdout.strip().endswith(f": {head_revision()} (up to date)"), done.stderr


def test_stores_upgraded_by_processes_starting_together_end_up_at_head_once(database_url):
    """Three `migrate` commands at once on one empty store: one makes it, the others find it made (without the lock
    the others would fail creating tables that exist, or stamp twice)."""
    env = {**os.environ, "BUGAGARIC_DATABASE_URL": database_url}
    runs = [subprocess.Popen([sys.executable, "-m", "control_plane", "migrate"], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [run.communicate(timeout=120) + (run.returncode,) for run in runs]
    assert [rc for _out, _err, rc in outputs] == [0, 0, 0], [err for _out, err, _rc in outputs]
    said = sorted(out.strip().split(": ", 1)[1] for out, _err, _rc in outputs)
    head = head_revision()
    assert said == sorted([f"empty -> {head}", f"{head} (up to date)", f"{head} (up to date)"])
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
    engine.dispose()


def test_a_first_release_store_without_the_composite_indexes_gets_them(database_url):
    """A store from before the composite task indexes (all its columns there) is adopted, and given them."""
    make_first_release_store(database_url, skip=lambda statement: "_list ON" in statement or "queue_order" in statement)
    engine = make_engine(database_url)
    try:
        indexes = {i["name"] for i in inspect(engine).get_indexes("task")}
        assert {"ix_task_list", "ix_task_status_list", "ix_task_type_list", "ix_task_owner_list",
                "ix_task_queue_order"} <= indexes
    finally:
        engine.dispose()


def test_a_store_older_than_the_first_release_is_refused_by_name(database_url):
    make_first_release_store(database_url)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE published_model"))
        conn.execute(text("DROP INDEX ix_task_owner_list"))
        conn.execute(text("DROP INDEX ix_task_owner"))
        conn.execute(text("ALTER TABLE task DROP COLUMN owner"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match=r"missing table\(s\) published_model; missing column\(s\) task.owner"):
        make_engine(database_url)
    done = migrate_command(database_url)
    assert done.returncode == 1 and "cannot migrate:" in done.stderr and "task.owner" in done.stderr
    engine = create_engine(database_url)
    assert "alembic_version" not in inspect(engine).get_table_names()  # refused before anything was written
    engine.dispose()


def test_the_jsonb_revision_goes_down_and_up_again_keeping_the_documents(database_url):
    """Downgrading 0002 (jsonb back to text) is supported, not needed: the documents survive both ways."""
    make_first_release_store(database_url)
    fill_first_release_store(database_url)
    make_engine(database_url).dispose()
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(connection=conn), "0001")
        assert set(json_column_types(engine).values()) == {"TEXT"}
        with engine.begin() as conn:
            command.upgrade(alembic_config(connection=conn), "head")
        expected = "JSONB" if engine.dialect.name == "postgresql" else "TEXT"
        assert set(json_column_types(engine).values()) == {expected}
        assert_every_row_is_there(engine)
    finally:
        engine.dispose()


def test_a_metric_that_is_not_strict_json_is_stored_not_refused(engine):
    """NaN is not JSON and jsonb refuses it: on PostgreSQL it is stored as null instead of failing the whole batch."""
    store = TaskStore(engine)
    task = store.create_task(uuid.uuid4().hex, "sft", json.dumps(CONFIG), "/tmp/out")
    store.ingest(task.id, [], [NewMetric(1, T0, {"step": 1, "loss": float("nan")})])
    (point,) = store.metric_points(task.id)
    loss = json.loads(point.values_json)["loss"]
    assert loss is None if engine.dialect.name == "postgresql" else loss != loss  # NaN on SQLite, as written
    assert json.loads(store.get_task(task.id).config_json) == CONFIG
