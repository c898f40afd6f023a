"""known posts: the state and head snapshot of each post, from post-changed events

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 09:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('distribution_posts',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('head_revision', sa.Integer(), nullable=False),
    sa.Column('live_revision', sa.Integer(), nullable=True),
    sa.Column('head_snapshot', sa.LargeBinary(), nullable=True),
    sa.Column('update_time', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_distribution_posts'))
    )


def downgrade() -> None:
    op.drop_table('distribution_posts')
