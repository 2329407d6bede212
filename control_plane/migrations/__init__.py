"""The store's schema migrations (Alembic). The configuration is built here in code, so the migrations run from an
installed package with no alembic.ini: `alembic_config()` is what control_plane.store_upgrade and the tests use.

A new revision after a change to control_plane/models.py (from a source checkout; review what it wrote):

    python -c "from alembic import command; from control_plane.migrations import alembic_config; \
command.revision(alembic_config('sqlite:///var/bugagaric.db'), 'what changed', autogenerate=True)"
"""

from __future__ import annotations

from alembic.config import Config
from sqlalchemy.engine import Connection

SCRIPT_LOCATION = "control_plane:migrations"


def alembic_config(url: str | None = None, *, connection: Connection | None = None) -> Config:
    """An Alembic config for the store at `url`, or for an open `connection` (env.py then migrates through it, inside
    the caller's transaction)."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config
