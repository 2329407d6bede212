"""Alembic's environment: migrates the connection handed over in `config.attributes` (control_plane.store_upgrade),
or else an engine of its own on `sqlalchemy.url`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

from control_plane import models  # noqa: F401  (registers the tables on SQLModel.metadata, for autogenerate)
from control_plane.json_column import JsonText

config = context.config


def _render_type(kind: str, obj, autogen_context):
    """Autogenerate writes the column types of the application as the plain SQL types they are, so a revision keeps
    meaning the same schema when the application's types change later."""
    if kind != "type":
        return False
    if isinstance(obj, AutoString):
        return "sa.String()"
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, JsonText):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.Text().with_variant(postgresql.JSONB(), "postgresql")'
    return False


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        # SQLite alters a table by copying it: autogenerate writes batch operations that do so.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_type,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the store's migrations run against a database (no --sql mode)")
run_migrations_online()
