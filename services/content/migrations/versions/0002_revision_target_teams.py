"""revisions name the teams they target

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("content_revisions") as batch_op:
        batch_op.add_column(sa.Column("target_teams", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("content_revisions") as batch_op:
        batch_op.drop_column("target_teams")
