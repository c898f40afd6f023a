"""Alembic migrations, one history per table owner.

Every owner (identity, content, later distribution and tracking) keeps its own
``migrations/`` folder and its own version table, so services that share a
database never step on each other's history. ``make migrate`` and the embedded
default's start-up both call ``upgrade_all``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData

from .db import Database
from .settings import Settings


@dataclass(frozen=True)
class MigrationHistory:
    owner: str
    script_location: Path
    metadata: MetaData

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.owner}"


def history(owner: str) -> MigrationHistory:
    """The migration history of an owner, found by package convention."""
    package = {"identity": "services.shared.identity", "content": "services.content",
               "distribution": "services.distribution", "tracking": "services.tracking"}[owner]
    models = importlib.import_module(f"{package}.models")
    location = Path(importlib.import_module(package).__file__ or "").parent / "migrations"
    return MigrationHistory(owner, location, models.Base.metadata)


OWNERS = ("identity", "content", "distribution", "tracking")


def alembic_config(db: Database, hist: MigrationHistory) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(hist.script_location))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    cfg.attributes["engine"] = db.engine
    cfg.attributes["metadata"] = hist.metadata
    cfg.attributes["version_table"] = hist.version_table
    return cfg


def open_database(settings: Settings, migrate: bool | None = None) -> Database:
    """The database a service process uses, migrated first when asked (default: ``DATABASE_AUTO_MIGRATE``)."""
    db = Database(settings.database_url, replica_url=settings.database_replica_url or None)
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.auto_migrate if migrate is None else migrate:
        upgrade_all(db)
    return db


def upgrade_all(db: Database, owners: tuple[str, ...] = OWNERS) -> None:
    for owner in owners:
        command.upgrade(alembic_config(db, history(owner)), "head")


def run_env() -> None:
    """Body of every owner's ``migrations/env.py``."""
    from alembic import context

    cfg = context.config
    engine = cfg.attributes["engine"]
    metadata = cfg.attributes["metadata"]

    def only_this_owner(name: str | None, type_: str, _parent: object) -> bool:
        # Services share a database; each history looks only at its own tables.
        return type_ != "table" or name in metadata.tables

    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            include_name=only_this_owner,
            version_table=cfg.attributes["version_table"],
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
