"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.shared.db import Database
from services.shared.migrate import OWNERS, history, upgrade_all

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
