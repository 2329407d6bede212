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
        file = Path(url.database).expanduser() if url.database and url.database != ":memory:" else None
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = create_engine(database_url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        file = None
        engine = create_engine(database_url, pool_pre_ping=True)
    SQLModel.metadata.create_all(engine)
    _check_schema(engine)
    _add_missing_indexes(engine)
    if file is not None:
        _owner_only(file)
    return engine


def _owner_only(store: Path) -> None:
    """The store holds password hashes and token hashes: readable by its owner only (also one an older release
    made world-readable). Its WAL and shared-memory files exist once a connection has written."""
    for path in (store, store.with_name(store.name + "-wal"), store.with_name(store.name + "-shm")):
        if path.exists():
            path.chmod(0o600)


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


def _add_missing_indexes(engine: Engine) -> None:
    """create_all makes a table's indexes only with the table: a store from an older version gets the newer ones."""
    for table in SQLModel.metadata.sorted_tables:
        for index in table.indexes:
            index.create(engine, checkfirst=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers (log streams) run while ingestion writes; NORMAL sync is safe under WAL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
