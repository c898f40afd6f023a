"""The consumer's set-wise writes (``aggregate.write_rows``) put back exactly what they were given.

On PostgreSQL a batch goes as one JSON document (orjson) through ``json_to_recordset``,
times as unix seconds; a value that JSON cannot spell (a float column's inf or nan, which
orjson would silently write as null) takes the array path instead. Both paths, and
SQLite's, must round-trip every column: text with CJK and quotes, microseconds,
nested JSON, NULLs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from services.shared.db import Database, as_utc
from services.shared.migrate import upgrade_all
from services.tracking.aggregate import write_rows
from services.tracking.models import ContactRow

AT = datetime(2026, 11, 20, 12, 0, 0, 123457, tzinfo=UTC)
TABLE = ContactRow.__table__


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'w.db'}")
        upgrade_all(database, ("tracking",))
    else:
        database = Database(request.getfixturevalue("pg_url"))
    yield database
    database.dispose()


def contact(i: int, **changes: Any) -> dict[str, Any]:
    row = {"id": f"c{i:03d}", "rep_id": "rep1", "team_id": "team1", "display_name": f'访客 "{i}" \\ 优优妈妈',
           "named": i % 2 == 0, "create_time": AT, "last_activity": AT + timedelta(microseconds=i),
           "lead_value": 0.1 * i, "lead_at": AT if i % 3 else None, "lead_key": 1e-300 * i if i % 3 else None,
           "headline_visit": None, "headline_key": None, "last_visit": f"v{i}",
           "tags": [{"topic": "t-早教", "label": "早教·关注", "score": 0.5 + i, "evidence": [
               {"visit": f"v{i}", "title": "5岁小姑娘的创造力启蒙三步走", "engaged_seconds": 780, "completeness": 0.25}]}]}
    row.update(changes)
    return row


def stored(db: Database) -> dict[str, dict[str, Any]]:
    with db.read() as s:
        rows = s.execute(select(*TABLE.c).order_by(TABLE.c.id)).mappings().all()
    return {r["id"]: {k: as_utc(v) if isinstance(v, datetime) else v for k, v in r.items()} for r in rows}


@pytest.mark.parametrize("lead_key", [5.5, math.inf], ids=["json", "arrays"])
def test_insert_then_update_round_trips_every_column(db: Database, lead_key: float) -> None:
    rows = [contact(i) for i in range(5)]
    rows[4]["lead_key"] = lead_key  # inf cannot go as JSON: the whole statement takes the arrays instead
    with db.write() as s:
        write_rows(s, TABLE, ["id"], [dict(r) for r in rows], insert=True)
    assert stored(db) == {r["id"]: r for r in rows}

    key = ["id"]
    changed = [{"id": f"c{i:03d}", "lead_value": 2.0 * i, "lead_key": None if i == 1 else lead_key,
                "last_activity": AT + timedelta(days=i, microseconds=999_999), "tags": [] if i % 2 else [{"topic": "新"}]}
               for i in (1, 3, 4)]
    with db.write() as s:
        write_rows(s, TABLE, key, [dict(r) for r in changed], insert=False)
    expected = {r["id"]: r for r in rows}
    for change in changed:
        expected[change["id"]] = {**expected[change["id"]], **change}
    assert stored(db) == expected


def test_a_failed_write_leaves_nothing(db: Database) -> None:
    with pytest.raises(Exception), db.write() as s:  # noqa: B017,PT011 - the driver's IntegrityError, whichever it is
        write_rows(s, TABLE, ["id"], [contact(1), contact(1)], insert=True)  # the same key twice
    assert stored(db) == {}
