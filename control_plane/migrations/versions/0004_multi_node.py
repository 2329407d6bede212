"""Multi-node tasks: a task's node count, devices per node and split permission (task), and one row per node of
each multi-node attempt (task_node). Existing tasks are one-node tasks.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('task') as batch:
        batch.add_column(sa.Column('nodes', sa.Integer(), nullable=False, server_default='1'))
        batch.add_column(sa.Column('gpus_per_node', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('split_gpus', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table('task_node',
    sa.Column('task_id', sa.String(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('node', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.String(), nullable=False),
    sa.Column('devices', sa.String(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('output_dir', sa.String(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('exit_code', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('rank0', sa.Boolean(), nullable=False),
    sa.Column('last_log_seq', sa.BigInteger(), nullable=False),
    sa.Column('last_metric_seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('task_id', 'attempt', 'node')
    )


def downgrade() -> None:
    op.drop_table('task_node')
    with op.batch_alter_table('task') as batch:
        batch.drop_column('split_gpus')
        batch.drop_column('gpus_per_node')
        batch.drop_column('nodes')
