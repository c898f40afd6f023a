"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, inspect, text

from services.shared.db import Database
from services.shared.migrate import OWNERS, alembic_config, history, upgrade_all

from . import infra


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'm.db'}")
        yield db
        db.dispose()
    else:
        with infra.pg_database() as url:
            db = Database(url)
            yield db
            db.dispose()


def test_migrations_match_the_models(empty_db: Database) -> None:
    upgrade_all(empty_db)
    with empty_db.engine.connect() as conn:
        for owner in OWNERS:
            hist = history(owner)
            ctx = MigrationContext.configure(conn, opts={
                "compare_type": True,
                "include_name": lambda name, type_, _p, h=hist: type_ != "table" or name in h.metadata.tables,
            })
            diff = compare_metadata(ctx, hist.metadata)
            assert diff == [], f"{owner}: models and migrations disagree; add a migration: {diff}"


def test_each_owner_keeps_its_own_version_table_and_upgrade_is_idempotent(empty_db: Database) -> None:
    upgrade_all(empty_db)
    upgrade_all(empty_db)
    tables = set(inspect(empty_db.engine).get_table_names())
    assert {f"alembic_version_{o}" for o in OWNERS} <= tables
    for owner in OWNERS:
        assert all(t.startswith(f"{owner}_") for t in history(owner).metadata.tables)


def visits_index(db: Database) -> list[str | None]:
    [index] = [i for i in inspect(db.engine).get_indexes("tracking_visits") if i["name"] == "ix_tracking_visits_visitor_post"]
    return list(index["column_names"])


def test_the_visits_index_is_rebuilt_concurrently_and_a_cut_short_run_is_redone() -> None:
    """Tracking's 0003 changes the index of a table every heartbeat writes to: on PostgreSQL it builds the new index
    beside the old one with CREATE INDEX CONCURRENTLY (a plain build holds off writes for its whole length), and a
    spare index left by a run cut short does not stop the next run."""
    with infra.pg_database() as url:
        db = Database(url)
        try:
            upgrade_all(db)
            cfg = alembic_config(db, history("tracking"))
            command.downgrade(cfg, "0002")
            assert visits_index(db) == ["visitor_id", "post_id", "last_activity"]
            with db.engine.begin() as conn:  # what a run killed mid-build leaves behind
                conn.execute(text("CREATE INDEX ix_tracking_visits_visitor_post_new ON tracking_visits (post_id)"))
            statements: list[str] = []
            event.listen(db.engine, "before_cursor_execute", lambda _c, _cur, statement, *_: statements.append(statement))
            command.upgrade(cfg, "head")
            assert visits_index(db) == ["visitor_id", "post_id"]
            assert [i["name"] for i in inspect(db.engine).get_indexes("tracking_visits")].count(
                "ix_tracking_visits_visitor_post_new") == 0
            with db.engine.connect() as conn:
                assert conn.execute(text("SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = 'tracking_visits'::regclass")).scalar()
            assert any(s.startswith("CREATE INDEX CONCURRENTLY ix_tracking_visits_visitor_post_new") for s in statements), statements
        finally:
            db.dispose()
