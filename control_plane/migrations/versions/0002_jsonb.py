"""JSON columns become jsonb on PostgreSQL, their documents converted in place (SQLite keeps them as TEXT).

The models read and write these columns as JSON strings through control_plane.json_column.JsonText.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Every column of the baseline that holds a JSON document (all NOT NULL, none with a server default).
JSON_COLUMNS = (
    ("task", "config_json"),
    ("task", "latest_metrics_json"),
    ("metric_point", "values_json"),
    ("agent", "devices_json"),
    ("saved_template", "config_json"),
    ("dataset", "stats_json"),
    ("dataset", "preview_json"),
    ("agent_inventory", "models_json"),
)


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table, column in JSON_COLUMNS:
        # One rewrite of the table per column, inside the migration's transaction: a document that is not JSON
        # stops the upgrade (PostgreSQL names it) and leaves the store as it was.
        op.alter_column(table, column, type_=postgresql.JSONB(), existing_type=sa.Text(), existing_nullable=False,
                        postgresql_using=f"{column}::jsonb")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table, column in JSON_COLUMNS:
        op.alter_column(table, column, type_=sa.Text(), existing_type=postgresql.JSONB(), existing_nullable=False,
                        postgresql_using=f"{column}::text")
