"""The tables of API keys (api_key) and webhooks (webhook_endpoint, webhook_delivery, webhook_attempt); a delivery's
payload is a JSON column (jsonb on PostgreSQL, as revision 0002 made the others).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_key',
    sa.Column('id', sa.String(), nullable=False),
    sa.Column('key_hash', sa.String(), nullable=False),
    sa.Column('owner', sa.String(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('scopes', sa.String(), nullable=False),
    sa.Column('prefix', sa.String(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_api_key_key_hash'), 'api_key', ['key_hash'], unique=True)
    op.create_index(op.f('ix_api_key_owner'), 'api_key', ['owner'], unique=False)
    op.create_table('webhook_attempt',
    sa.Column('delivery_id', sa.String(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('delivery_id', 'number')
    )
    op.create_table('webhook_delivery',
    sa.Column('id', sa.String(), nullable=False),
    sa.Column('endpoint_id', sa.String(), nullable=False),
    sa.Column('task_event_id', sa.BigInteger(), nullable=False),
    sa.Column('task_id', sa.String(), nullable=False),
    sa.Column('event_type', sa.String(), nullable=False),
    sa.Column('payload_json', sa.Text().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_webhook_delivery_due', 'webhook_delivery', ['state', 'next_attempt_at'], unique=False)
    op.create_index('ix_webhook_delivery_endpoint_list', 'webhook_delivery', ['endpoint_id', 'created_at'], unique=False)
    op.create_index(op.f('ix_webhook_delivery_task_event_id'), 'webhook_delivery', ['task_event_id'], unique=False)
    op.create_table('webhook_endpoint',
    sa.Column('id', sa.String(), nullable=False),
    sa.Column('owner', sa.String(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('events', sa.String(), nullable=False),
    sa.Column('description', sa.String(), nullable=False),
    sa.Column('secret', sa.String(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_webhook_endpoint_owner'), 'webhook_endpoint', ['owner'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_webhook_endpoint_owner'), table_name='webhook_endpoint')
    op.drop_table('webhook_endpoint')
    op.drop_index(op.f('ix_webhook_delivery_task_event_id'), table_name='webhook_delivery')
    op.drop_index('ix_webhook_delivery_endpoint_list', table_name='webhook_delivery')
    op.drop_index('ix_webhook_delivery_due', table_name='webhook_delivery')
    op.drop_table('webhook_delivery')
    op.drop_table('webhook_attempt')
    op.drop_index(op.f('ix_api_key_owner'), table_name='api_key')
    op.drop_index(op.f('ix_api_key_key_hash'), table_name='api_key')
    op.drop_table('api_key')
