"""The consumer side: apply the event log to the database, idempotently.

A read batch of stream entries is applied in transactions of up to
``CHUNK_VIEWS`` distinct views each, set-wise: one query per table loads (and on
PostgreSQL locks) every row the chunk touches, the domain folds the events in
memory, and one flush writes the changes back. Starts come first (a view row,
its visit, its contact, its share), then heartbeats per view
(``engagement.apply_heartbeats`` dedupes on (view, seq), caps deltas and wall
time), then ends. Visits whose engaged time changed update the contact's decayed
topic interest and lead score by the change of their weight, and the contacts'
tags are evaluated again: tags follow the events, not a nightly batch.

Re-applying an entry (a consumer died after committing but before acking) finds
the view already there and every seq already applied: nothing changes.

Several consumers may run in one group. Rows they may both create (reps, shares,
a visitor's contact) are inserted with ON CONFLICT, so the loser takes the
winner's row instead of failing; rows they may both change are locked
``FOR UPDATE`` in one order (views, visits, contacts, interest; each by key), so
they queue instead of deadlocking.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from math import isfinite
from operator import itemgetter
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from sqlalchemy import ColumnElement, DateTime, Float, Table, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.shared.db import Database, as_utc, insert_rows, update_rows, upsert
from services.shared.ids import new_id

from .domain import interest, leads
from .domain.engagement import (
    VISIT_MERGE_WINDOW_MS,
    Heartbeat,
    ViewState,
    apply_heartbeats,
    clamp_delta,
    clamp_scroll,
    close,
    new_view,
)
from .domain.humanize import describe_activity
from .domain.interest import DecayedScore, TagRule
from .history import Posts, among, slices, visits_of
from .models import (
    ContactRow,
    ErasedViewRow,
    EventRow,
    InterestRow,
    RepInfoRow,
    ShareRow,
    TagRuleRow,
    ViewRow,
    VisitorContactRow,
    VisitRow,
)
from .streams import RETRY_LATER, Entry, Verdict

log = logging.getLogger(__name__)

TAG_LOOKBACK = timedelta(days=90)  # visits older than this no longer make tags (rules' windows are shorter)
RULES_CACHE_SECONDS = 5.0
# An orphan (a heartbeat or end whose view's start is not applied yet) is put straight back in the log this often:
# another live consumer is about to commit the start. After that its start is likely held by a consumer that died,
# which the group reclaims only after min_idle_ms, so the orphan's entry is left pending (RETRY_LATER) and handed out
# again by that same reclaim, paced, until the log's delivery limit dead-letters it. (Counting put-backs alone
# dead-lettered orphans within a second on a quiet log, long before a dead consumer's start could be reclaimed.)
QUICK_DEFERRALS = 20
CHUNK_VIEWS = 1_000  # distinct views per transaction: bounds the IN lists and how long rows stay locked
# PostgreSQL advisory lock: applying takes it shared, erasure exclusive, so an erasure never interleaves with a batch.
ERASURE_LOCK = 0x7472_6B65_7261_7365  # "trkerase"


def view_hash(view_id: str) -> str:
    return hashlib.sha256(view_id.encode()).hexdigest()


def lock_against_erasure(s: Session, exclusive: bool) -> None:
    if s.get_bind().dialect.name == "postgresql":  # SQLite serialises every write transaction anyway
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        s.execute(text(f"SELECT {fn}(:key)"), {"key": ERASURE_LOCK})


def plan_for_the_keys_at_hand(s: Session) -> None:
    """Plan this transaction's statements for their key arrays as they are: a generic plan (psycopg prepares a
    statement run 5 times) guesses 10 keys, and may filter a whole table through a 1,000-key array that is not hashed."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"))


def remember_reps(s: Session, teams: dict[str, str]) -> None:
    """Note reps and their teams as share tokens name them (a newer token's non-empty team wins)."""
    if not teams:
        return
    stmt = upsert(s, RepInfoRow)
    stmt = stmt.on_conflict_do_update(index_elements=[RepInfoRow.rep_id], set_={"team_id": stmt.excluded.team_id},
                                      where=(stmt.excluded.team_id != "") & (RepInfoRow.team_id != stmt.excluded.team_id))
    s.execute(stmt, [{"rep_id": r, "team_id": teams[r]} for r in sorted(teams)])


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


class Record:
    """A row of one of tracking's tables as a plain mutable record: a batch holds thousands, changes them in memory
    and writes them back set-wise (``_Batch.write``), so they skip the ORM's per-attribute instrumentation. A loaded
    record holds the columns the consumer reads (``LOADED``), a new one every column."""

    _model: type

    def __init__(self, model: type, **values: Any) -> None:
        self.__dict__.update(values)
        self._model = model

    def __repr__(self) -> str:
        return f"Record({self._model.__name__}, {', '.join(f'{k}={v!r}' for k, v in vars(self).items() if k != '_model')})"

    @classmethod
    def new(cls, model: type, **values: Any) -> Record:
        missing = {c.key for c in model.__table__.columns} - values.keys()  # type: ignore[attr-defined]
        if missing:
            raise ValueError(f"a new {model.__name__} needs {sorted(missing)}")
        return cls(model, **values)


def locked(s: Session, model: type, where: ColumnElement[bool], order_by: Sequence[str]) -> list[Record]:
    """The rows of ``model`` that match (their ``LOADED`` columns), locked FOR UPDATE in ``order_by`` order."""
    table = model.__table__  # type: ignore[attr-defined]
    keys = LOADED[model]
    q = select(*(table.c[c] for c in keys)).where(where).order_by(*(table.c[c] for c in order_by)).with_for_update()
    out: list[Record] = []
    new, append = Record.__new__, out.append
    for row in s.connection().execute(q).all():  # Core, not the ORM session's execute: no ORM compile step per statement
        record = new(Record)
        fields = record.__dict__
        fields.update(zip(keys, row, strict=True))
        fields["_model"] = model
        append(record)
    return out


@dataclass(frozen=True)
class Activity:
    """A live event for WatchActivity."""

    rep_id: str
    contact_id: str
    post_id: str
    kind: int  # pb.ActivityKind
    message: str
    at: datetime


def anonymous_name(visitor_id: str) -> str:
    return f"访客 {visitor_id[:4]}"


def _view_of(event: pb.IngestEvent) -> str:
    kind = event.WhichOneof("kind")
    return event.started.view if kind == "started" else event.heartbeat.view if kind == "heartbeat" else event.ended.view


def chunks(events: Sequence[pb.IngestEvent], views: int = CHUNK_VIEWS) -> list[list[int]]:
    """``events``' indexes split by view into groups of at most ``views`` views (in order of first appearance), each
    view's events together and in order: the work of applying a chunk grows with its views, not its events."""
    group: dict[str, int] = {}
    out: list[list[int]] = []
    for i, event in enumerate(events):
        view = _view_of(event)
        if view not in group:
            group[view] = len(group) // views
            if group[view] == len(out):
                out.append([])
        out[group[view]].append(i)
    return out


# What applying may change, per table (everything else of a row is fixed once it is inserted).
CHANGING: dict[type, tuple[str, ...]] = {
    ViewRow: ("state", "engaged_ms", "max_scroll_percent", "closed"),
    VisitRow: ("engaged_ms", "last_activity", "started_at"),
    ContactRow: ("last_activity", "lead_value", "lead_at", "lead_key", "headline_visit", "headline_key", "last_visit", "tags"),
    InterestRow: ("value", "at"),
}
# What applying reads of a locked row. Not a contact's tags: every contact a batch changes has its tags evaluated
# again (``_tag``), so they are only ever written.
LOADED: dict[type, tuple[str, ...]] = {
    ViewRow: ("id", "visit_id", "contact_id", "rep_id", "post_id", "revision", "bot", "state"),
    VisitRow: ("id", "contact_id", "visitor_id", "rep_id", "post_id", "revision", "started_at", "last_activity", "engaged_ms", "bot"),
    ContactRow: ("id", "display_name", "last_activity", "lead_value", "lead_at", "lead_key", "headline_visit", "headline_key",
                 "last_visit"),
    InterestRow: ("contact_id", "topic", "value", "at"),
}


def _timestamps(table: Table, cols: Sequence[str]) -> list[str]:
    return [c for c in cols if isinstance(table.c[c].type, DateTime)]


def _recordset(s: Session, table: Table, cols: Sequence[str], times: Sequence[str]) -> str:
    """``json_to_recordset`` over the ``:rows`` parameter, ``times`` as unix seconds (float8)."""
    dialect = s.get_bind().dialect
    q = dialect.identifier_preparer.quote
    types = ", ".join(f"{q(c)} {'float8' if c in times else table.c[c].type.compile(dialect)}" for c in cols)
    return f"json_to_recordset(CAST(:rows AS json)) AS u({types})"


def _unix_seconds(value: object) -> float:
    """orjson's ``default`` for datetimes (passed through to it): unix seconds; anything else it cannot encode."""
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"not JSON: {type(value).__name__}")


def write_rows(s: Session, table: Table, key: Sequence[str], rows: Sequence[dict[str, Any]], *, insert: bool) -> None:
    """INSERT ``rows`` (dicts with the same keys), or UPDATE the rows whose ``key`` columns match to their other
    values. On PostgreSQL one statement over one JSON parameter (``json_to_recordset``): encoding is a single C call
    (orjson; JSON columns nested as they are), where arrays of text are escaped element by element in Python (a JSON
    column's quotes one at a time); times go as unix seconds (``datetime.timestamp``, a float that is exact to the
    microsecond for these dates; ``to_timestamp`` rounds to the microsecond), a few times cheaper than ISO 8601 text
    both ways. Elsewhere, or for a value JSON cannot spell (a float column's inf or nan, which orjson would write as
    null; an integer past 64 bits), ``insert_rows`` / ``update_rows``."""
    if not rows:
        return
    if s.get_bind().dialect.name != "postgresql":
        (insert_rows(s, table, rows) if insert else update_rows(s, table, key, rows))
        return
    cols = list(rows[0])
    times = _timestamps(table, cols)
    floats = [c for c in cols if isinstance(table.c[c].type, Float)]
    try:
        if any(not isfinite(v) for row in rows for c in floats if (v := row[c]) is not None):
            raise ValueError("a float JSON cannot spell")
        document = orjson.dumps(rows, default=_unix_seconds, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except (ValueError, TypeError):  # the arrays spell them
        (insert_rows(s, table, rows) if insert else update_rows(s, table, key, rows))
        return
    q = s.get_bind().dialect.identifier_preparer.quote

    def value(c: str) -> str:
        return f"to_timestamp(u.{q(c)})" if c in times else f"u.{q(c)}"

    if insert:
        sql = (f"INSERT INTO {q(table.name)} ({', '.join(map(q, cols))}) SELECT {', '.join(map(value, cols))} "
               f"FROM {_recordset(s, table, cols, times)}")
    else:
        sets = ", ".join(f"{q(c)} = {value(c)}" for c in cols if c not in key)
        match = " AND ".join(f"t.{q(k)} = u.{q(k)}" for k in key)
        sql = f"UPDATE {q(table.name)} AS t SET {sets} FROM {_recordset(s, table, cols, times)} WHERE {match}"
    s.connection().execute(text(sql), {"rows": document})


@dataclass
class _Batch:
    """One transaction's rows, loaded and locked once, changed in memory, written back set-wise."""

    s: Session
    now: datetime
    posts: Posts
    views: dict[str, Record] = field(default_factory=dict)
    visits: dict[str, Record] = field(default_factory=dict)
    recent: dict[tuple[str, str, str], list[Record]] = field(default_factory=dict)  # (visitor, post, rep) -> visits
    contacts: dict[str, Record] = field(default_factory=dict)
    interest: dict[str, dict[str, Record]] = field(default_factory=dict)  # contact -> topic -> row
    new: dict[type, list[Record]] = field(default_factory=dict)  # rows to insert, by model
    changed: dict[type, dict[int, Record]] = field(default_factory=dict)  # rows to update, by model
    touched_visits: dict[str, tuple[int, datetime]] = field(default_factory=dict)  # visit -> (engaged, start) before
    touched_contacts: set[str] = field(default_factory=set)  # their tags are evaluated again
    events: list[dict[str, Any]] = field(default_factory=list)  # raw heartbeat rows to insert
    started: list[tuple[pb.ViewStarted, str, datetime]] = field(default_factory=list)  # (start, contact, at)
    ended: list[tuple[Record, int, datetime]] = field(default_factory=list)  # (view, engaged ms, at)
    activities: list[Activity] = field(default_factory=list)

    def add(self, row: Record) -> None:
        self.new.setdefault(row._model, []).append(row)

    def change(self, row: Record) -> None:
        self.changed.setdefault(row._model, {})[id(row)] = row  # a batch holds one record per row

    def write(self, *models: type) -> None:
        """Insert the new rows and update the changed ones of ``models``: one statement per table and kind."""
        for model in models:
            table = model.__table__  # type: ignore[attr-defined]
            key = [c.key for c in table.primary_key]
            new = self.new.pop(model, [])
            write_rows(self.s, table, key, _values(new, [c.key for c in table.columns]), insert=True)
            changed = self.changed.pop(model, {})
            for row in new:  # inserted as they are now
                changed.pop(id(row), None)
            write_rows(self.s, table, key, _values(changed.values(), [*key, *CHANGING[model]]), insert=False)


def _values(records: Iterable[Record], cols: list[str]) -> list[dict[str, Any]]:
    """Each record's ``cols`` as a dict (a C-level getter and zip: a batch writes thousands)."""
    get = itemgetter(*cols)
    if len(cols) == 1:
        return [{cols[0]: get(r.__dict__)} for r in records]
    return [dict(zip(cols, get(r.__dict__), strict=True)) for r in records]


class Aggregator:
    def __init__(self, db: Database, *, half_life: timedelta = interest.HALF_LIFE,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.db = db
        self.half_life = half_life
        self.clock = clock
        self._rules: tuple[float, tuple[TagRule, ...]] = (0.0, ())

    # ---- entry point for run_consumer --------------------------------------------------------

    def handle_batch(self, entries: Sequence[Entry]) -> tuple[list[tuple[Entry, str | Verdict]], list[Activity], list[pb.IngestEvent]]:
        """Apply ``entries``. Returns the ones to dead-letter with their reasons (or to leave pending, with
        ``RETRY_LATER``), the live activity, and the events to put back in the log for later: heartbeats and ends
        whose view's start is not applied yet (with several consumers in a group, another one may hold it
        uncommitted; see ``QUICK_DEFERRALS``)."""
        bad: list[tuple[Entry, str | Verdict]] = []
        events: list[pb.IngestEvent] = []
        source: list[Entry] = []
        for entry in entries:
            try:
                batch = pb.IngestBatch.FromString(entry.payload)
                for event in batch.events:
                    if event.WhichOneof("kind") is None or event.received_ms <= 0:
                        raise ValueError("an event without a kind or receive time")
            except (DecodeError, ValueError) as err:
                bad.append((entry, f"unparseable ingest batch: {err}"))
                continue
            events.extend(batch.events)
            source.extend([entry] * len(batch.events))
        if not events:
            return bad, [], []
        orphans: list[int] = []
        began = time.perf_counter()
        activities = self.apply(events, orphans)
        log.debug("applied %d entries: %d events over %d views in %.0f ms", len(entries), len(events),
                  len({_view_of(e) for e in events}), (time.perf_counter() - began) * 1000)
        later = {(source[i].partition, source[i].id): source[i] for i in orphans if events[i].deferrals >= QUICK_DEFERRALS}
        retry: list[pb.IngestEvent] = []
        for i in orphans:
            if (source[i].partition, source[i].id) not in later:  # a pending entry comes back whole: no copy too
                again = pb.IngestEvent()
                again.CopyFrom(events[i])
                again.deferrals += 1
                retry.append(again)
        bad += [(e, RETRY_LATER) for e in later.values()]
        return bad, activities, retry

    def apply(self, events: Sequence[pb.IngestEvent], orphans: list[int] | None = None) -> list[Activity]:
        """Apply ``events``, a transaction per chunk of views; indexes of heartbeats and ends whose view has no
        row (and was not erased) are appended to ``orphans``. Re-applying any chunk changes nothing."""
        activities: list[Activity] = []
        for run in chunks(events):
            waiting: list[int] = []
            try:
                activities += self._apply(events, run, waiting)
            except IntegrityError:
                # Another consumer committed some of these views first, between our look and our insert: it holds the
                # same entries (reclaimed from us while we were slow, or we from it). Applied again, they are found.
                log.info("another consumer applied some of %d events first; applying them again", len(run))
                waiting = []
                activities += self._apply(events, run, waiting)
            if orphans is not None:
                orphans += waiting
        return activities

    def _apply(self, events: Sequence[pb.IngestEvent], run: list[int], orphans: list[int]) -> list[Activity]:
        with self.db.write() as s:
            lock_against_erasure(s, exclusive=False)
            plan_for_the_keys_at_hand(s)
            b = _Batch(s, self.clock(), Posts(s))
            starts: list[tuple[pb.ViewStarted, int]] = []
            beats: dict[str, list[Heartbeat]] = {}
            ends: list[tuple[str, int]] = []
            for i in run:
                event = events[i]
                kind = event.WhichOneof("kind")
                if kind == "started":
                    starts.append((event.started, event.received_ms))
                elif kind == "heartbeat":
                    hb = event.heartbeat
                    beats.setdefault(hb.view, []).append(
                        Heartbeat(hb.view, hb.seq, hb.engaged_ms_delta, hb.max_scroll_percent, event.received_ms))
                else:
                    ends.append((event.ended.view, event.received_ms))
            ids = sorted({ev.view for ev, _ in starts} | set(beats) | {v for v, _ in ends})
            b.views = {v.id: v for v in locked(s, ViewRow, among(s, ViewRow.id, ids), ["id"])}
            starts = [(ev, at) for ev, at in starts if ev.view not in b.views]  # applied before: a redelivered entry
            erased = self._erased(s, sorted({ev.view for ev, _ in starts} | (set(beats) | {v for v, _ in ends}) - set(b.views)))
            starts = [(ev, at) for ev, at in starts if ev.view not in erased]  # erased while in a consumer's hands
            contact_of = self._contacts_for(b, starts)
            self._lock_visits(b, starts)
            for ev, at in sorted(starts, key=lambda start: start[1]):
                self._start(b, ev, at, contact_of(ev))
            waiting = (set(beats) | {v for v, _ in ends}) - set(b.views) - erased  # erased views' events are dropped
            orphans += [i for i in run if _view_of(events[i]) in waiting and events[i].WhichOneof("kind") != "started"]
            self._lock_contacts(b)
            for view_id, hbs in beats.items():
                if (row := b.views.get(view_id)) is not None:
                    self._heartbeats(b, row, hbs)
            for view_id, at in ends:
                if (row := b.views.get(view_id)) is not None:
                    self._end(b, row, at)
            self._settle(b)
            self._announce(b)
            b.write(ViewRow, VisitRow, InterestRow)
            write_rows(s, EventRow.__table__, ["view_id", "seq"], b.events, insert=True)
            self._tag(b)
            b.write(ContactRow)
            return b.activities

    @staticmethod
    def _erased(s: Session, view_ids: list[str]) -> set[str]:
        hashes = {view_hash(v): v for v in view_ids}
        found: set[str] = set()
        for chunk in slices(sorted(hashes)):
            found.update(s.scalars(select(ErasedViewRow.view_hash).where(among(s, ErasedViewRow.view_hash, chunk))))
        return {hashes[h] for h in found}

    # ---- starts ----------------------------------------------------------------------------------

    def _contacts_for(self, b: _Batch, starts: list[tuple[pb.ViewStarted, int]]) -> Callable[[pb.ViewStarted], str]:
        """Record the starts' reps and shares, and say which of the rep's contacts each start's visitor is: the one
        a per-contact link names (from now on), else as before, else a new anonymous one."""
        s = b.s
        if not starts:
            return lambda ev: ""
        remember_reps(s, {ev.rep: ev.team for ev, _ in sorted(starts, key=lambda start: start[1])})
        shares = {ev.share_id: {"share_id": ev.share_id, "parent_share_id": ev.parent_share_id, "post_id": ev.post,
                                "revision": ev.revision, "rep_id": ev.rep, "copy_id": ev.copy_id, "create_time": ms(at)}
                  for ev, at in starts}
        s.execute(upsert(s, ShareRow).on_conflict_do_nothing(), [shares[k] for k in sorted(shares)])
        humans = sorted(((ev, at) for ev, at in starts if not ev.bot), key=lambda start: start[1])
        keys = {(ev.visitor_id, ev.rep) for ev, _ in humans}
        mapping = self._mappings(s, keys)
        named_ids = sorted({ev.contact for ev, _ in humans if ev.contact})
        named = dict(s.execute(select(ContactRow.id, ContactRow.rep_id).where(among(s, ContactRow.id, named_ids))).all()) \
            if named_ids else {}  # contact -> its rep
        proposed: dict[tuple[str, str], tuple[str, str, datetime]] = {}  # key -> (new contact id, team, first seen)
        moved: dict[tuple[str, str], str] = {}
        chosen: dict[str, str] = {}  # view -> contact (or a proposed id)
        for ev, at in humans:
            key = (ev.visitor_id, ev.rep)
            if ev.contact and named.get(ev.contact) == ev.rep:
                mapping[key] = moved[key] = ev.contact
            elif key not in mapping:
                mapping[key] = new_id()
                proposed[key] = (mapping[key], ev.team, ms(at))
            chosen[ev.view] = mapping[key]
        if proposed:  # another consumer may be creating the same visitor's contact right now: one of us wins
            s.execute(upsert(s, VisitorContactRow).on_conflict_do_nothing(), [
                {"visitor_id": k[0], "rep_id": k[1], "contact_id": proposed[k][0]} for k in sorted(proposed)])
            winners = self._mappings(s, set(proposed))
            instead: dict[str, str] = {}
            for key, (contact_id, team, at) in proposed.items():
                if winners[key] == contact_id:
                    row = Record.new(ContactRow, id=contact_id, rep_id=key[1], team_id=team, display_name=anonymous_name(key[0]),
                                     named=False, create_time=at, last_activity=None, lead_value=0.0, lead_at=None,
                                     lead_key=None, headline_visit=None, headline_key=None, last_visit=None, tags=[])
                    b.add(row)
                    b.contacts[contact_id] = row
                else:
                    instead[contact_id] = winners[key]
            chosen = {view: instead.get(c, c) for view, c in chosen.items()}
        if moved:
            stmt = upsert(s, VisitorContactRow)
            s.execute(stmt.on_conflict_do_update(index_elements=[VisitorContactRow.visitor_id, VisitorContactRow.rep_id],
                                                 set_={"contact_id": stmt.excluded.contact_id}),
                      [{"visitor_id": k[0], "rep_id": k[1], "contact_id": moved[k]} for k in sorted(moved)])
        return lambda ev: chosen.get(ev.view, "")

    @staticmethod
    def _mappings(s: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for chunk in slices(sorted({visitor for visitor, _ in keys})):
            q = select(VisitorContactRow.visitor_id, VisitorContactRow.rep_id, VisitorContactRow.contact_id) \
                .where(among(s, VisitorContactRow.visitor_id, chunk))
            for visitor, rep, contact in s.execute(q):
                if (visitor, rep) in keys:
                    out[(visitor, rep)] = contact
        return out

    def _lock_visits(self, b: _Batch, starts: list[tuple[pb.ViewStarted, int]]) -> None:
        """Lock the visits of the views at hand and those the starts may merge into, in one query (id order)."""
        ids = sorted({v.visit_id for v in b.views.values()})
        visitors = sorted({ev.visitor_id for ev, _ in starts})
        if not ids and not visitors:
            return
        where = []
        if ids:
            where.append(among(b.s, VisitRow.id, ids))
        if visitors:
            earliest = ms(min(at for _, at in starts)) - timedelta(milliseconds=VISIT_MERGE_WINDOW_MS)
            where.append(among(b.s, VisitRow.visitor_id, visitors) & (VisitRow.last_activity >= earliest))
        for visit in locked(b.s, VisitRow, or_(*where), ["id"]):
            b.visits[visit.id] = visit
            b.recent.setdefault((visit.visitor_id, visit.post_id, visit.rep_id), []).append(visit)

    def _start(self, b: _Batch, ev: pb.ViewStarted, received_ms: int, contact_id: str) -> None:
        started = ms(received_ms)
        merge_after = started - timedelta(milliseconds=VISIT_MERGE_WINDOW_MS)
        same = b.recent.setdefault((ev.visitor_id, ev.post, ev.rep), [])
        visit = max((v for v in same if v.contact_id == contact_id and v.bot == ev.bot
                     and as_utc(v.last_activity) >= merge_after),  # type: ignore[operator]
                    key=lambda v: as_utc(v.last_activity), default=None)  # type: ignore[arg-type, return-value]
        if visit is None:
            visit = Record.new(VisitRow, id=ev.view, contact_id=contact_id, visitor_id=ev.visitor_id, rep_id=ev.rep, post_id=ev.post,
                             revision=ev.revision, started_at=started, last_activity=started, engaged_ms=0, bot=ev.bot)
            b.add(visit)
            b.visits[visit.id] = visit
            same.append(visit)
        else:
            b.touched_visits.setdefault(visit.id, (visit.engaged_ms, as_utc(visit.started_at)))  # type: ignore[arg-type]
            visit.last_activity = max(as_utc(visit.last_activity), started)  # type: ignore[type-var]
            visit.started_at = min(as_utc(visit.started_at), started)  # type: ignore[type-var]  # another consumer's later view came first
            b.change(visit)
        view = Record.new(ViewRow, id=ev.view, visit_id=visit.id, contact_id=contact_id, visitor_id=ev.visitor_id, share_id=ev.share_id,
                       rep_id=ev.rep, post_id=ev.post, revision=ev.revision, copy_id=ev.copy_id, started_at=started,
                       engaged_ms=0, max_scroll_percent=0, closed=False, bot=ev.bot, bot_reason=ev.bot_reason,
                       ip_hash=ev.ip_hash, referrer_host=ev.referrer_host, user_agent_family=ev.user_agent_family,
                       state=new_view(ev.view, received_ms).to_dict())
        b.add(view)
        b.views[view.id] = view
        if contact_id:
            b.started.append((ev, contact_id, started))
            b.touched_contacts.add(contact_id)
            b.touched_visits.setdefault(visit.id, (visit.engaged_ms, as_utc(visit.started_at)))  # type: ignore[arg-type]

    def _lock_contacts(self, b: _Batch) -> None:
        """Lock every contact the batch may change: the starts' and those of the views' visits (id order)."""
        ids = {c for _, c, _ in b.started} | {v.contact_id for v in b.visits.values()} | {v.contact_id for v in b.views.values()}
        ids = sorted(ids - set(b.contacts) - {""})
        for chunk in slices(ids):
            for contact in locked(b.s, ContactRow, among(b.s, ContactRow.id, chunk), ["id"]):
                b.contacts[contact.id] = contact

    # ---- heartbeats and ends ------------------------------------------------------------------

    def _heartbeats(self, b: _Batch, row: Record, hbs: list[Heartbeat]) -> None:
        before = ViewState.from_dict(row.state)
        after, _ = apply_heartbeats(before, hbs)
        if after == before:
            return
        fresh: dict[int, Heartbeat] = {}
        for hb in sorted(hbs, key=lambda h: (h.received_at, h.seq)):
            if not before.applied(hb.seq) and after.applied(hb.seq) and hb.seq not in fresh:
                fresh[hb.seq] = hb
        b.events += [{"view_id": row.id, "seq": hb.seq, "engaged_ms": clamp_delta(hb.engaged_ms_delta)[0],
                      "max_scroll_percent": clamp_scroll(hb.max_scroll_percent), "received_at": ms(hb.received_at)}
                     for hb in fresh.values()]
        self._store_state(b, row, before, after)

    def _end(self, b: _Batch, row: Record, received_ms: int) -> None:
        before = ViewState.from_dict(row.state)
        if before.closed:
            return
        after = close(before, received_ms)
        self._store_state(b, row, before, after)
        if row.contact_id and not row.bot:
            b.ended.append((row, after.engaged_ms, ms(received_ms)))

    def _store_state(self, b: _Batch, row: Record, before: ViewState, after: ViewState) -> None:
        row.state = after.to_dict()
        row.engaged_ms = after.engaged_ms
        row.max_scroll_percent = after.max_scroll_percent
        row.closed = after.closed
        b.change(row)
        delta = after.engaged_ms - before.engaged_ms
        visit = b.visits.get(row.visit_id)
        if visit is None:
            return
        b.change(visit)
        b.touched_visits.setdefault(visit.id, (visit.engaged_ms, as_utc(visit.started_at)))  # type: ignore[arg-type]
        visit.engaged_ms = max(0, visit.engaged_ms + delta)
        visit.last_activity = max(as_utc(visit.last_activity), ms(after.last_activity))  # type: ignore[type-var]
        if visit.contact_id:
            b.touched_contacts.add(visit.contact_id)

    # ---- interest, leads, tags -------------------------------------------------------------------

    def _settle(self, b: _Batch) -> None:
        s = b.s
        contact_ids = sorted(c for c in b.touched_contacts if c in b.contacts)
        scores = b.interest = {c: {} for c in contact_ids}
        for chunk in slices(contact_ids):
            for row in locked(s, InterestRow, among(s, InterestRow.contact_id, chunk), ["contact_id", "topic"]):
                scores[row.contact_id][row.topic] = row
        touched = [(b.visits[v], old) for v, old in b.touched_visits.items() if v in b.visits]
        b.posts.load((v.post_id, v.revision) for v, _ in touched)
        starts = {v.id: as_utc(v.started_at) for v in b.visits.values()}
        earlier = sorted({c.last_visit for c in b.contacts.values() if c.last_visit and c.last_visit not in starts})
        for chunk in slices(earlier):
            starts.update((i, as_utc(at)) for i, at in s.execute(select(VisitRow.id, VisitRow.started_at).where(among(s, VisitRow.id, chunk))))
        for visit, (old_engaged, old_start) in touched:
            contact = b.contacts.get(visit.contact_id)
            if visit.bot or contact is None:
                continue
            b.change(contact)
            info = b.posts.get(visit.post_id, visit.revision)
            old_w = interest.weight(old_engaged, info.expected_ms) if old_engaged else 0.0
            new_w = interest.weight(visit.engaged_ms, info.expected_ms)
            started: datetime = as_utc(visit.started_at)  # type: ignore[assignment]
            if (new_w, started) != (old_w, old_start):
                for topic in info.topics:
                    row = scores[contact.id].get(topic)
                    score = DecayedScore(row.value, as_utc(row.at)) if row else DecayedScore()  # type: ignore[arg-type]
                    score = score.move(old_w, old_start, new_w, started, self.half_life)
                    if row is None:
                        row = Record.new(InterestRow, contact_id=contact.id, topic=topic, value=0.0, at=started)
                        scores[contact.id][topic] = row
                        b.add(row)
                    row.value, row.at = score.value, score.at  # type: ignore[assignment]
                    b.change(row)
                lead = DecayedScore(contact.lead_value, as_utc(contact.lead_at) if contact.lead_at else None)
                lead = lead.move(old_w, old_start, new_w, started, leads.LEAD_HALF_LIFE)
                contact.lead_value, contact.lead_at = lead.value, lead.at
                contact.lead_key = (interest.strength_key(lead.value, lead.at, leads.LEAD_HALF_LIFE)
                                    if lead.value > 0 and lead.at else None)
            key = interest.strength_key(new_w, started, leads.LEAD_HALF_LIFE)
            if new_w > 0 and (contact.headline_key is None or key >= contact.headline_key or contact.headline_visit == visit.id):
                contact.headline_visit, contact.headline_key = visit.id, key
            last = starts.get(contact.last_visit) if contact.last_visit else None
            if last is None or as_utc(last) <= started:  # type: ignore[operator]
                contact.last_visit = visit.id

    def _tag(self, b: _Batch) -> None:
        """Evaluate the touched contacts' tags again, from their visits as this batch wrote them."""
        contact_ids = sorted(b.interest)
        rules = self.rules(b.s)
        visits = visits_of(b.s, contact_ids, b.now - TAG_LOOKBACK, b.posts)
        names = b.posts.topic_names()
        for contact_id in contact_ids:
            now = {t: DecayedScore(r.value, as_utc(r.at)).value_at(b.now, self.half_life)  # type: ignore[arg-type]
                   for t, r in b.interest[contact_id].items()}
            tags = interest.evaluate_tags(visits[contact_id], b.now, rules, topic_names=names, scores=now,
                                          half_life=self.half_life)
            contact = b.contacts[contact_id]
            b.change(contact)
            contact.tags = [{"topic": t.topic, "label": t.label, "score": round(t.score, 6), "evidence": [
                {"visit": e.visit_id, "post": e.post_id, "title": e.post_title, "at": e.read_at.isoformat(),
                 "engaged_seconds": e.engaged_seconds, "completeness": round(e.completeness, 4)} for e in t.evidence]}
                for t in tags]

    def _announce(self, b: _Batch) -> None:
        """The starts' effect on their contacts' last activity, and the live activity for WatchActivity."""
        for ev, contact_id, at in b.started:
            contact = b.contacts.get(contact_id)
            if contact is None:
                continue
            if contact.last_activity is None or as_utc(contact.last_activity) < at:  # type: ignore[operator]
                contact.last_activity = at
                b.change(contact)
            b.activities.append(Activity(ev.rep, contact_id, ev.post, pb.ACTIVITY_KIND_VIEW_STARTED,
                                         describe_activity(contact.display_name, b.posts.get(ev.post, ev.revision).title), at))
        for row, engaged_ms, at in b.ended:
            contact = b.contacts.get(row.contact_id)
            if contact is not None:
                b.activities.append(Activity(row.rep_id, row.contact_id, row.post_id, pb.ACTIVITY_KIND_VIEW_ENDED,
                                             describe_activity(contact.display_name, b.posts.get(row.post_id, row.revision).title,
                                                               engaged_ms), at))

    def rules(self, s: Session) -> tuple[TagRule, ...]:
        expires, cached = self._rules
        if time.monotonic() < expires:
            return cached
        rows = list(s.scalars(select(TagRuleRow).order_by(TagRuleRow.position, TagRuleRow.id)))
        rules = tuple(TagRule(r.topic, r.min_engaged_seconds, r.min_visits, r.window_days, r.label, r.min_score)
                      for r in rows) or interest.DEFAULT_RULES
        self._rules = (time.monotonic() + RULES_CACHE_SECONDS, rules)
        return rules

    def forget_rules(self) -> None:
        self._rules = (0.0, ())
