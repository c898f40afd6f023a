"""HOT updates for the rows every heartbeat changes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 20:30:00.000000

A heartbeat updates its view, its visit, its contact and the contact's interest
rows. PostgreSQL can update a row in place on its page ("heap-only tuple": no new
index entries) when no indexed column changed and the page has room. So: leave
room (fillfactor 80) on views, visits and interest, and take ``last_activity``,
which every heartbeat moves, out of the visits' (visitor, post) index; the lookup
of a visitor's recent visits filters on it after the index, over the few visits a
visitor has. Contacts keep ``lead_key`` in their index (ListLeads orders by it),
so their updates are not HOT anyway.
"""

from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

HOT_TABLES = ("tracking_views", "tracking_visits", "tracking_interest")


INDEX = "ix_tracking_visits_visitor_post"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rebuild_concurrently(["visitor_id", "post_id"])
        for table in HOT_TABLES:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = 80)")
    else:
        with op.batch_alter_table('tracking_visits', schema=None) as batch_op:
            batch_op.drop_index(INDEX)
            batch_op.create_index(INDEX, ['visitor_id', 'post_id'], unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in HOT_TABLES:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
        _rebuild_concurrently(["visitor_id", "post_id", "last_activity"])
    else:
        with op.batch_alter_table('tracking_visits', schema=None) as batch_op:
            batch_op.drop_index(INDEX)
            batch_op.create_index(INDEX, ['visitor_id', 'post_id', 'last_activity'], unique=False)


def _rebuild_concurrently(columns: list[str]) -> None:
    """The visits index on new columns without blocking the consumers' writes (a plain CREATE INDEX holds them off
    for the whole build, a DROP INDEX waits for every reader): build the new one beside the old, concurrently, then
    swap. Outside a transaction, as CONCURRENTLY must be; a run cut short leaves an invalid or spare index that the
    next run drops first."""
    spare = f"{INDEX}_new"
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {spare}")
        op.create_index(spare, "tracking_visits", columns, unique=False, postgresql_concurrently=True)
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(f"ALTER INDEX {spare} RENAME TO {INDEX}")
