"""Engine creation: SQLite (WAL, busy timeout) by default, PostgreSQL through `postgresql+psycopg://`."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlmodel import SQLModel, create_engine

from control_plane import models  # noqa: F401  (registers the tables on SQLModel.metadata)


def make_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(database_url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(database_url, pool_pre_ping=True)
    SQLModel.metadata.create_all(engine)
    _check_schema(engine)
    return engine


class SchemaOutOfDate(RuntimeError):
    pass


def _check_schema(engine: Engine) -> None:
    """create_all adds missing tables but never columns: say clearly when a store predates this version's schema
    (there are no migrations before 1.0) instead of failing later on the first query."""
    inspector = inspect(engine)
    missing = [
        f"{table.name}.{column.name}"
        for table in SQLModel.metadata.sorted_tables
        for column in table.columns
        if column.name not in {c["name"] for c in inspector.get_columns(table.name)}
    ]
    if missing:
        raise SchemaOutOfDate(
            f"the database {engine.url.render_as_string(hide_password=True)} was made by an older version: missing "
            f"column(s) {', '.join(missing)}. Back it up and remove it (or point BUGAGARIC_DATABASE_URL elsewhere); "
            "schema migrations arrive with 1.0."
        )


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers (log streams) run while ingestion writes; NORMAL sync is safe under WAL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
