"""Engine creation: SQLite (WAL, busy timeout) by default, PostgreSQL through `postgresql+psycopg://`."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import create_engine

from control_plane import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from control_plane.store_upgrade import SchemaOutOfDate, upgrade_store  # noqa: F401  (SchemaOutOfDate: raised here)


def make_engine(database_url: str, *, upgrade: bool = True) -> Engine:
    """The store's engine; with `upgrade` (what the control plane does at start) the store is first brought to the
    newest schema (control_plane.store_upgrade): made when empty, migrated when older."""
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
    if upgrade:
        try:
            upgrade_store(engine)
        except BaseException:
            engine.dispose()
            raise
    if file is not None:
        _owner_only(file)
    return engine


def _owner_only(store: Path) -> None:
    """The store holds password hashes and token hashes: readable by its owner only (also one an older release
    made world-readable). Its WAL and shared-memory files exist once a connection has written."""
    for path in (store, store.with_name(store.name + "-wal"), store.with_name(store.name + "-shm")):
        if path.exists():
            path.chmod(0o600)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers (log streams) run while ingestion writes; NORMAL sync is safe under WAL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
