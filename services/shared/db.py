"""Database engine and transactions (SQLAlchemy 2).

``Database.write()`` and ``Database.read()`` give a session inside one
transaction that commits on success and rolls back on any exception, so a
failed operation leaves no partial rows. Driver-level failures (server down,
connection dropped, SQLite locked past its busy timeout) surface as
``Unavailable``; constraint violations stay ``IntegrityError`` for the store to
translate, because only the store knows what a duplicate means.

On SQLite, writes open with ``BEGIN IMMEDIATE`` so two writers queue on the
busy timeout instead of failing when a read lock cannot be upgraded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, exc
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from .errors import Unavailable

log = logging.getLogger(__name__)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything ContentOps stores is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def declarative_base(owner: str) -> type[DeclarativeBase]:
    """A declarative base whose metadata holds only ``owner``'s tables."""

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING, info={"owner": owner})

    Base.__name__ = f"{owner.title()}Base"
    return Base


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 15, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so BEGIN is ours (SQLAlchemy docs recipe).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=15000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _session_utc(dbapi_conn: Any, _record: Any) -> None:
    """Sessions in UTC whatever the server's default: in, say, Asia/Shanghai the driver
    cannot load a timestamptz near the end of year 9999 (it would be local year 10000)."""
    autocommit = dbapi_conn.autocommit
    dbapi_conn.autocommit = True  # a SET inside a transaction the pool rolls back would be undone
    with dbapi_conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    dbapi_conn.autocommit = autocommit


class Database:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        if url.startswith("sqlite"):
            self.engine = _sqlite_engine(url, immediate=True)
            self._read_engine = _sqlite_engine(url, immediate=False)
        else:
            self.engine = create_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800
            )
            event.listen(self.engine, "connect", _session_utc)
            self._read_engine = self.engine
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(self._read_engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        with translate_db_errors(), self._writer.begin() as session:
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with translate_db_errors(), self._reader.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
        if self._read_engine is not self.engine:
            self._read_engine.dispose()


@contextlib.contextmanager
def translate_db_errors() -> Iterator[None]:
    try:
        yield
    except exc.IntegrityError:
        raise
    except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as err:
        log.warning("database unavailable: %s", err.__class__.__name__, exc_info=log.isEnabledFor(logging.DEBUG))
        raise Unavailable("database unavailable, retry later") from err
    except exc.DBAPIError as err:
        if err.connection_invalidated:
            raise Unavailable("database connection lost, retry later") from err
        raise
