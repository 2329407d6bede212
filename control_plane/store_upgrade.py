"""Brings a store to the newest schema (the Alembic head of control_plane/migrations), once, whoever starts first.

A store the first release (0.1.0) made has its tables but no `alembic_version`: it is checked against the baseline
revision, given any baseline index it lacks, stamped with the baseline and upgraded from there. A store older than
that, missing tables or columns, is refused with SchemaOutOfDate (there are no migrations from before the baseline).

Two processes starting on one store take turns: the whole upgrade is one transaction that first takes a lock,
`pg_advisory_xact_lock` on PostgreSQL (per schema), `BEGIN EXCLUSIVE` on SQLite. The second one to get it finds the
store at head and does nothing. On PostgreSQL the DDL is transactional, so a failed upgrade leaves the store as it was.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from alembic import command
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Connection, Engine

from control_plane.migrations import alembic_config

BASELINE = "0001"

log = logging.getLogger(__name__)


class _WithoutContextLines(logging.Filter):
    """Alembic says which dialect and whether DDL is transactional each time it looks at the store: noise on every
    start, and "non-transactional" is wrong here (the upgrade runs inside this module's own transaction). Its
    "Running upgrade a -> b" lines stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Context impl", "Will assume"))


logging.getLogger("alembic.runtime.migration").addFilter(_WithoutContextLines())


class SchemaOutOfDate(RuntimeError):
    pass


@dataclass(frozen=True)
class Upgrade:
    before: str | None  # the revision the store was at (None: an empty database)
    after: str
    adopted: bool = False  # a first-release store without alembic_version, stamped with the baseline first

    def describe(self) -> str:
        before = f"{self.before} (a first-release store, stamped)" if self.adopted else (self.before or "empty")
        return f"{before} -> {self.after}" if before != self.after else f"{self.after} (up to date)"


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade_store(engine: Engine) -> Upgrade:
    with engine.begin() as connection:
        _take_migration_lock(connection)
        before = _current_revision(connection)
        adopted = before is None and _adopt_first_release_store(connection)
        if adopted:
            before = BASELINE
        command.upgrade(alembic_config(connection=connection), "head")
        upgrade = Upgrade(before, _current_revision(connection), adopted)
    log.info("store %s: %s", engine.url.render_as_string(hide_password=True), upgrade.describe())
    return upgrade


def _take_migration_lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Held until this transaction ends. Per schema: each schema is a store of its own.
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key || coalesce(current_schema(), '')))"),
                           {"key": "bugagaric store migrations "})
    elif connection.dialect.name == "sqlite":
        # pysqlite has not begun a transaction yet (it begins one lazily, before DML only): this makes the DDL part of
        # it too, and waits (busy_timeout) while another process migrates.
        connection.exec_driver_sql("BEGIN EXCLUSIVE")


def _current_revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()


def _adopt_first_release_store(connection: Connection) -> bool:
    """Stamps a store the first release made (baseline tables, no alembic_version) with the baseline; False when the
    database holds none of the baseline's tables (a new store, made from scratch by the migrations)."""
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    baseline = _baseline_schema()
    if not present & baseline.keys():
        return False
    missing_tables = sorted(baseline.keys() - present)
    missing_columns = [
        f"{table}.{column}"
        for table in sorted(baseline.keys() & present)
        for column in baseline[table][0]
        if column not in {c["name"] for c in inspector.get_columns(table)}
    ]
    if missing_tables or missing_columns:
        what = "; ".join(part for part in (
            f"missing table(s) {', '.join(missing_tables)}" if missing_tables else "",
            f"missing column(s) {', '.join(missing_columns)}" if missing_columns else "",
        ) if part)
        raise SchemaOutOfDate(
            f"the database {connection.engine.url.render_as_string(hide_password=True)} was made by a version older "
            f"than the first release, which the migrations start from: {what}. Back it up and remove it (or point "
            "BUGAGARIC_DATABASE_URL elsewhere)."
        )
    # Stores from before the composite indexes have every column: they get the baseline's indexes they lack.
    operations = Operations(MigrationContext.configure(connection))
    for table, (_columns, indexes) in baseline.items():
        have = {index["name"] for index in inspector.get_indexes(table)}
        for name, (columns, unique) in indexes.items():
            if name not in have:
                operations.create_index(name, table, list(columns), unique=unique)
    command.stamp(alembic_config(connection=connection), BASELINE)
    return True


@functools.cache
def _baseline_schema() -> dict[str, tuple[frozenset[str], dict[str, tuple[tuple[str, ...], bool]]]]:
    """Table -> (column names, index name -> (columns, unique)) of the baseline revision, read back from running it
    on an in-memory SQLite database: the revision file stays the one description of the first release's schema."""
    module = ScriptDirectory.from_config(alembic_config()).get_revision(BASELINE).module
    engine = create_engine("sqlite://")
    try:
        with engine.begin() as connection:
            with Operations.context(MigrationContext.configure(connection)):
                module.upgrade()
            inspector = inspect(connection)
            return {
                table: (
                    frozenset(column["name"] for column in inspector.get_columns(table)),
                    {index["name"]: (tuple(index["column_names"]), bool(index["unique"]))
                     for index in inspector.get_indexes(table)},
                )
                for table in inspector.get_table_names()
            }
    finally:
        engine.dispose()
