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
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, Engine, MetaData, Table, bindparam, create_engine, event, exc, insert, text, update
from sqlalchemy.dialects import postgresql, sqlite
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


def upsert(s: Session, model: Any) -> Any:
    """An INSERT that takes ``on_conflict_do_nothing`` / ``on_conflict_do_update`` (PostgreSQL and SQLite spell
    them alike): rows that concurrent transactions may both insert, without a failed transaction for the loser."""
    return (postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert)(model)


def insert_rows(s: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT ``rows`` (dicts with the same keys): on PostgreSQL one statement over arrays (``unnest``), a few
    times faster than a statement per row; on SQLite, in process, executemany is as fast."""
    if not rows:
        return
    cols = list(rows[0])
    if s.get_bind().dialect.name != "postgresql":
        s.execute(insert(table), list(rows))
        return
    arrays, params = _arrays(s, table, cols, rows)
    q = s.get_bind().dialect.identifier_preparer.quote
    s.execute(text(f"INSERT INTO {q(table.name)} ({', '.join(map(q, cols))}) SELECT * FROM unnest({arrays})"), params)


def update_rows(s: Session, table: Table, key: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """UPDATE the rows whose ``key`` columns match to the other values in ``rows`` (dicts with the same keys): one
    statement over arrays on PostgreSQL, executemany on SQLite."""
    if not rows:
        return
    cols = list(rows[0])
    values = [c for c in cols if c not in key]
    if s.get_bind().dialect.name != "postgresql":
        stmt = update(table).where(*(table.c[k] == bindparam(f"k_{k}") for k in key)) \
            .values({c: bindparam(f"v_{c}") for c in values})
        s.execute(stmt, [{(f"k_{c}" if c in key else f"v_{c}"): r[c] for c in cols} for r in rows])
        return
    arrays, params = _arrays(s, table, cols, rows)
    q = s.get_bind().dialect.identifier_preparer.quote
    s.execute(text(f"UPDATE {q(table.name)} AS t SET {', '.join(f'{q(c)} = u.{q(c)}' for c in values)} "
                   f"FROM unnest({arrays}) AS u({', '.join(map(q, cols))}) "
                   f"WHERE {' AND '.join(f't.{q(k)} = u.{q(k)}' for k in key)}"), params)


def _arrays(s: Session, table: Table, cols: list[str], rows: Sequence[Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
    dialect = s.get_bind().dialect
    params: dict[str, Any] = {}
    for i, c in enumerate(cols):
        column_type = table.c[c].type
        values = [r[c] for r in rows]
        if isinstance(column_type, JSON):  # the array is sent as text; each element is cast to JSON
            values = [None if v is None else json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in values]
        params[f"a{i}"] = values
    return ", ".join(f"CAST(:a{i} AS {table.c[c].type.compile(dialect)}[])" for i, c in enumerate(cols)), params


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


def _server_engine(url: str, pool_size: int) -> Engine:
    # JSON columns read back with orjson: the same values as the stdlib's json.loads (an integer past 64 bits aside,
    # which none of ours is), an order of magnitude faster (a tracking view's state is read on every heartbeat).
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800,
                           json_deserializer=orjson.loads)
    event.listen(engine, "connect", _session_utc)
    return engine


class Database:
    """Sessions on the primary (``write``, ``read``) and, when ``replica_url`` is given, on a read replica
    (``replica``: for reads that tolerate its lag; without a replica they read the primary)."""

    def __init__(self, url: str, *, pool_size: int = 10, replica_url: str | None = None) -> None:
        self.url = url
        if url.startswith("sqlite"):
            if replica_url:
                raise ValueError("a read replica needs a server database (DATABASE_URL), not SQLite")
            self.engine = _sqlite_engine(url, immediate=True)
            self._read_engine = _sqlite_engine(url, immediate=False)
        else:
            self.engine = _server_engine(url, pool_size)
            self._read_engine = self.engine
        self._replica_engine = _server_engine(replica_url, pool_size) if replica_url else self._read_engine
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(self._read_engine, expire_on_commit=False)
        self._replica = sessionmaker(self._replica_engine, expire_on_commit=False)

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

    @contextlib.contextmanager
    def replica(self) -> Iterator[Session]:
        with translate_db_errors(), self._replica.begin() as session:
            yield session

    def dispose(self) -> None:
        for engine in {self.engine, self._read_engine, self._replica_engine}:
            engine.dispose()


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
