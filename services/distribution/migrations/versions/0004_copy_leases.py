"""copy leases: a pending copy is held by the worker rendering its chunk, so a dead worker's copies are queued again

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('distribution_copies') as batch:
        batch.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('distribution_copies') as batch:
        batch.drop_column('lease_until')
