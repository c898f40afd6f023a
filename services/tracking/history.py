"""Reading back what the consumer stored, as the domain sees it, many at a time.

``Posts`` gives a revision's title, topics and expected reading time (from the
content service's publish events), each read once per session and any number
per query; ``visits_of`` gives contacts' recent human visits. The consumer uses
both for a whole batch of views at once; the sales reads use them for a profile
or a page of leads. Lookups go by the leading column of a key (``post_id IN``,
``contact_id IN``) so PostgreSQL can use the index, and in slices, because a
statement takes at most 65,535 parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ARRAY, ColumnElement, String, any_, bindparam, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from services.shared.db import as_utc

from .domain.interest import Visit
from .domain.reading import MIN_EXPECTED_MS
from .models import PostInfoRow, VisitRow

SLICE = 1_000  # keys per IN list
TAG_VISITS = 500  # at most this many recent visits per contact are evaluated for tags

T = TypeVar("T")


def slices(items: Sequence[T], size: int = SLICE) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def among(s: Session, column: ColumnElement[Any], values: Sequence[str]) -> ColumnElement[bool]:
    """``column IN values`` for string keys. On PostgreSQL ``= ANY(CAST(:keys AS VARCHAR[]))`` over one array literal
    built here: a big IN list renders and dumps a parameter per key (and makes another statement text for every
    length), psycopg's list dumper escapes each element in Python; the literal is a few C string calls, and the
    planner still sees the array (its length, and a hashed lookup where it has to filter)."""
    if s.get_bind().dialect.name != "postgresql":
        return column.in_(values)
    return column == any_(cast(bindparam(None, array_literal(values), type_=NullType()), ARRAY(String)))  # untyped: a Const


def array_literal(values: Sequence[str]) -> str:
    """PostgreSQL's text form of an array of strings: each element quoted, backslashes and quotes escaped."""
    if not values:
        return "{}"
    return '{"' + '","'.join(v.replace("\\", "\\\\").replace('"', '\\"') for v in values) + '"}'


@dataclass(frozen=True)
class PostInfo:
    title: str
    topics: tuple[str, ...]
    topic_names: dict[str, str]
    expected_ms: int


UNKNOWN_POST = PostInfo("", (), {}, MIN_EXPECTED_MS)


class Posts:
    """Published revisions as tracking needs them, read once per session: ``load`` many, then look them up."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self._known: dict[tuple[str, int], PostInfo] = {}

    def load(self, keys: Iterable[tuple[str, int]]) -> None:
        missing = {k for k in keys if k not in self._known}
        if not missing:
            return
        for chunk in slices(sorted({post for post, _ in missing})):
            for row in self.s.scalars(select(PostInfoRow).where(PostInfoRow.post_id.in_(chunk))):
                self._known[(row.post_id, row.revision)] = PostInfo(
                    row.title, tuple(row.topics), dict(zip(row.topics, row.topic_names, strict=False)), row.expected_ms)
        for key in missing:
            self._known.setdefault(key, UNKNOWN_POST)  # a view of a revision whose publish event has not arrived

    def get(self, post_id: str, revision: int) -> PostInfo:
        if (info := self._known.get((post_id, revision))) is None:
            self.load([(post_id, revision)])
            info = self._known[(post_id, revision)]
        return info

    def topic_names(self) -> dict[str, str]:
        return {t: n for info in self._known.values() for t, n in info.topic_names.items()}


def visits_of(s: Session, contact_ids: Sequence[str], since: datetime, posts: Posts,
              limit: int = TAG_VISITS) -> dict[str, list[Visit]]:
    """Each contact's human visits since ``since``, newest first, at most ``limit`` each."""
    out: dict[str, list[Visit]] = {c: [] for c in contact_ids}
    rows: list[tuple[str, str, str, int, datetime, int]] = []
    cols = (VisitRow.contact_id, VisitRow.id, VisitRow.post_id, VisitRow.revision, VisitRow.started_at, VisitRow.engaged_ms)
    for chunk in slices(sorted(set(contact_ids))):
        where = (among(s, VisitRow.contact_id, chunk), VisitRow.started_at >= since, VisitRow.bot.is_(False))
        newest = (VisitRow.started_at.desc(), VisitRow.id.desc())
        if len(chunk) == 1:  # one contact: the index hands them over newest first, and LIMIT stops early
            q = select(*cols).where(*where).order_by(*newest).limit(limit)
        else:
            ranked = select(*cols, func.row_number().over(partition_by=VisitRow.contact_id, order_by=newest).label("n")) \
                .where(*where).subquery()
            q = select(*(ranked.c[c.key] for c in cols)).where(ranked.c.n <= limit) \
                .order_by(ranked.c.contact_id, ranked.c.started_at.desc(), ranked.c.id.desc())
        rows.extend(tuple(r) for r in s.execute(q))
    posts.load((post, revision) for _, _, post, revision, _, _ in rows)
    for contact_id, visit_id, post_id, revision, started_at, engaged_ms in rows:
        info = posts.get(post_id, revision)
        out[contact_id].append(Visit(visit_id, post_id, info.title, info.topics, as_utc(started_at),  # type: ignore[arg-type]
                                     engaged_ms, info.expected_ms))
    return out
