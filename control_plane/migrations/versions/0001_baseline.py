"""Baseline: the store's schema as the first release (0.1.0) made it, with SQLModel's create_all.

Written out, not derived from control_plane/models.py (which moves on): a store that release made without Alembic
(tables, no alembic_version) is checked against this revision and stamped with it (control_plane.store_upgrade).

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("agent",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("hostname", sa.String(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("devices_json", sa.Text(), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_heartbeat", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_table("agent_inventory",
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("models_json", sa.Text(), nullable=False),
        sa.Column("hub_access", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agent_id")
    )
    op.create_table("app_user",
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("username")
    )
    op.create_table("auth_token",
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash")
    )
    op.create_index("ix_auth_token_username", "auth_token", ["username"], unique=False)
    op.create_table("checkpoint",
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "path")
    )
    op.create_table("dataset",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("suffix", sa.String(), nullable=False),
        sa.Column("stats_json", sa.Text(), nullable=False),
        sa.Column("preview_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_dataset_created_at", "dataset", ["created_at"], unique=False)
    op.create_index("ix_dataset_owner", "dataset", ["owner"], unique=False)
    op.create_index("ix_dataset_sha256", "dataset", ["sha256"], unique=False)
    op.create_index("ix_dataset_type", "dataset", ["type"], unique=False)
    op.create_table("log_line",
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stream", sa.String(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "seq")
    )
    op.create_table("login_throttle",
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.Double(), nullable=False),
        sa.Column("next_allowed_at", sa.Double(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "username", "address")
    )
    op.create_index("ix_login_throttle_last_at", "login_throttle", ["last_at"], unique=False)
    op.create_table("metric_point",
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("values_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "seq")
    )
    op.create_table("output_dir_claim",
        sa.Column("output_dir", sa.String(), nullable=False),
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("output_dir")
    )
    op.create_index("ix_output_dir_claim_task_id", "output_dir_claim", ["task_id"], unique=False)
    op.create_table("published_model",
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task_id")
    )
    op.create_index("ix_published_model_sha256", "published_model", ["sha256"], unique=False)
    op.create_table("saved_template",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_saved_template_owner", "saved_template", ["owner"], unique=False)
    op.create_table("task",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("output_dir", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("error_reason", sa.String(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer(), nullable=False),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("eta_seconds", sa.Float(), nullable=True),
        sa.Column("epoch", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("learning_rate", sa.Float(), nullable=True),
        sa.Column("latest_metrics_json", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("gpu_vis", sa.String(), nullable=False),
        sa.Column("devices", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("resume_from", sa.String(), nullable=False),
        sa.Column("last_log_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_metric_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_task_agent_id", "task", ["agent_id"], unique=False)
    op.create_index("ix_task_created_at", "task", ["created_at"], unique=False)
    op.create_index("ix_task_list", "task", ["created_at", "id"], unique=False)
    op.create_index("ix_task_owner", "task", ["owner"], unique=False)
    op.create_index("ix_task_owner_list", "task", ["owner", "created_at", "id"], unique=False)
    op.create_index("ix_task_priority", "task", ["priority"], unique=False)
    op.create_index("ix_task_queue_order", "task", ["status", "priority", "created_at", "id"], unique=False)
    op.create_index("ix_task_status", "task", ["status"], unique=False)
    op.create_index("ix_task_status_list", "task", ["status", "created_at", "id"], unique=False)
    op.create_index("ix_task_type", "task", ["type"], unique=False)
    op.create_index("ix_task_type_list", "task", ["type", "created_at", "id"], unique=False)
    op.create_table("task_attempt",
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("devices", sa.String(), nullable=False),
        sa.Column("resumed_from", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "number")
    )
    op.create_table("task_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_status", sa.String(), nullable=False),
        sa.Column("to_status", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_task_event_task_id", "task_event", ["task_id"], unique=False)
    op.create_table("task_validation",
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("admin_paths", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("task_id")
    )
    op.create_index("ix_task_validation_state", "task_validation", ["state"], unique=False)


def downgrade() -> None:
    op.drop_table("task_validation")
    op.drop_table("task_event")
    op.drop_table("task_attempt")
    op.drop_table("task")
    op.drop_table("saved_template")
    op.drop_table("published_model")
    op.drop_table("output_dir_claim")
    op.drop_table("metric_point")
    op.drop_table("login_throttle")
    op.drop_table("log_line")
    op.drop_table("dataset")
    op.drop_table("checkpoint")
    op.drop_table("auth_token")
    op.drop_table("app_user")
    op.drop_table("agent_inventory")
    op.drop_table("agent")
