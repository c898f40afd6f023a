"""The consumer side: apply the event log to the database, idempotently.

One read batch of stream entries is applied in one transaction: starts first
(a view row, its visit, its contact, its share), then heartbeats per view
(``engagement.apply_heartbeats`` dedupes on (view, seq), caps deltas and wall
time), then ends. Visits whose engaged time changed update the contact's decayed
topic interest and lead score by the change of their weight, and the contact's
tags are evaluated again: tags follow the events, not a nightly batch.

Re-applying an entry (a consumer died after committing but before acking) finds
the view already there and every seq already applied: nothing changes. Rows that
several consumers may touch at once are read ``FOR UPDATE`` on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import DecodeError
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.shared.db import Database, as_utc
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
from .domain.interest import DecayedScore, TagRule, Visit
from .domain.reading import MIN_EXPECTED_MS
from .models import (
    ContactRow,
    ErasedViewRow,
    EventRow,
    InterestRow,
    PostInfoRow,
    RepInfoRow,
    ShareRow,
    TagRuleRow,
    ViewRow,
    VisitorContactRow,
    VisitRow,
)
from .streams import Entry

log = logging.getLogger(__name__)

TAG_LOOKBACK = timedelta(days=90)  # visits older than this no longer make tags (rules' windows are shorter)
TAG_VISITS = 500  # at most this many recent visits per contact are evaluated
RULES_CACHE_SECONDS = 5.0
MAX_DEFERRALS = 50  # an orphan heartbeat goes round the log this often before it is dead-lettered
# PostgreSQL advisory lock: applying takes it shared, erasure exclusive, so an erasure never interleaves with a batch.
ERASURE_LOCK = 0x7472_6B65_7261_7365  # "trkerase"


def view_hash(view_id: str) -> str:
    return hashlib.sha256(view_id.encode()).hexdigest()


def lock_against_erasure(s: Session, exclusive: bool) -> None:
    if s.get_bind().dialect.name == "postgresql":  # SQLite serialises every write transaction anyway
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        s.execute(text(f"SELECT {fn}(:key)"), {"key": ERASURE_LOCK})


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


@dataclass(frozen=True)
class Activity:
    """A live event for WatchActivity."""

    rep_id: str
    contact_id: str
    post_id: str
    kind: int  # pb.ActivityKind
    message: str
    at: datetime


@dataclass
class PostInfo:
    title: str
    topics: tuple[str, ...]
    topic_names: dict[str, str]
    expected_ms: int


UNKNOWN_POST = PostInfo("", (), {}, MIN_EXPECTED_MS)


def post_info(s: Session, post_id: str, revision: int, cache: dict[tuple[str, int], PostInfo]) -> PostInfo:
    """A revision's title, topics and expected reading time (from its publish event), read once per ``cache``."""
    key = (post_id, revision)
    if key not in cache:
        row = s.get(PostInfoRow, key)
        cache[key] = UNKNOWN_POST if row is None else PostInfo(
            row.title, tuple(row.topics), dict(zip(row.topics, row.topic_names, strict=False)), row.expected_ms)
    return cache[key]


def anonymous_name(visitor_id: str) -> str:
    return f"访客 {visitor_id[:4]}"


@dataclass
class _Batch:
    s: Session
    now: datetime
    touched_visits: dict[str, int] = field(default_factory=dict)  # visit id -> engaged_ms before this batch
    contacts: set[str] = field(default_factory=set)
    activities: list[Activity] = field(default_factory=list)
    posts: dict[tuple[str, int], PostInfo] = field(default_factory=dict)


class Aggregator:
    def __init__(self, db: Database, *, half_life: timedelta = interest.HALF_LIFE,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.db = db
        self.half_life = half_life
        self.clock = clock
        self._rules: tuple[float, tuple[TagRule, ...]] = (0.0, ())

    # ---- entry point for run_consumer --------------------------------------------------------

    def handle_batch(self, entries: Sequence[Entry]) -> tuple[list[tuple[Entry, str]], list[Activity], list[pb.IngestEvent]]:
        """Apply ``entries``. Returns the ones to dead-letter with their reasons, the live activity, and the
        events to put back in the log for later: heartbeats and ends whose view's start is not applied yet
        (with several consumers in a group, another one may hold it uncommitted)."""
        bad: list[tuple[Entry, str]] = []
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
        activities = self.apply(events, orphans)
        retry: list[pb.IngestEvent] = []
        given_up: dict[str, Entry] = {}
        for i in orphans:
            if events[i].deferrals >= MAX_DEFERRALS:
                given_up.setdefault(source[i].id, source[i])
            else:
                again = pb.IngestEvent()
                again.CopyFrom(events[i])
                again.deferrals += 1
                retry.append(again)
        bad += [(e, f"heartbeats for a view whose start never arrived (put back {MAX_DEFERRALS} times); the "
                    "entry's other events were applied") for e in given_up.values()]
        return bad, activities, retry

    def apply(self, events: Sequence[pb.IngestEvent], orphans: list[int] | None = None) -> list[Activity]:
        """Apply ``events`` in one transaction; indexes of heartbeats and ends whose view has no row (and was
        not erased) are appended to ``orphans``."""
        with self.db.write() as s:
            lock_against_erasure(s, exclusive=False)
            b = _Batch(s, self.clock())
            for event in events:
                if event.WhichOneof("kind") == "started":
                    self._start(b, event.started, event.received_ms)
            beats: dict[str, list[Heartbeat]] = {}
            for event in events:
                if event.WhichOneof("kind") == "heartbeat":
                    hb = event.heartbeat
                    beats.setdefault(hb.view, []).append(
                        Heartbeat(hb.view, hb.seq, hb.engaged_ms_delta, hb.max_scroll_percent, event.received_ms))
            ends = [(e.ended.view, e.received_ms) for e in events if e.WhichOneof("kind") == "ended"]
            ids = sorted(set(beats) | {v for v, _ in ends})
            views = {v.id: v for v in s.scalars(select(ViewRow).where(ViewRow.id.in_(ids)).with_for_update())} if ids else {}
            missing = [v for v in ids if v not in views]
            if missing and orphans is not None:
                erased = set(s.scalars(select(ErasedViewRow.view_hash).where(
                    ErasedViewRow.view_hash.in_([view_hash(v) for v in missing]))))
                waiting = {v for v in missing if view_hash(v) not in erased}  # erased views' events are dropped
                orphans += [i for i, e in enumerate(events) if (e.WhichOneof("kind") == "heartbeat" and e.heartbeat.view in waiting)
                            or (e.WhichOneof("kind") == "ended" and e.ended.view in waiting)]
            for view_id, hbs in beats.items():
                if (row := views.get(view_id)) is not None:
                    self._heartbeats(b, row, hbs)
            for view_id, at in ends:
                if (row := views.get(view_id)) is not None:
                    self._end(b, row, at)
            self._settle(b)
            return b.activities

    # ---- starts ----------------------------------------------------------------------------------

    def _start(self, b: _Batch, ev: pb.ViewStarted, received_ms: int) -> None:
        s = b.s
        if s.get(ViewRow, ev.view) is not None:
            return  # applied before (a redelivered entry)
        if s.get(ErasedViewRow, view_hash(ev.view)) is not None:
            return  # its contact was erased while this entry was in a consumer's hands
        started = ms(received_ms)
        rep = s.get(RepInfoRow, ev.rep)
        if rep is None:
            s.add(RepInfoRow(rep_id=ev.rep, team_id=ev.team))
        elif rep.team_id != ev.team and ev.team:
            rep.team_id = ev.team
        if s.get(ShareRow, ev.share_id) is None:
            s.add(ShareRow(share_id=ev.share_id, parent_share_id=ev.parent_share_id, post_id=ev.post, revision=ev.revision,
                           rep_id=ev.rep, copy_id=ev.copy_id, create_time=started))
        contact_id = "" if ev.bot else self._contact_for(b, ev, started)
        merge_after = started - timedelta(milliseconds=VISIT_MERGE_WINDOW_MS)
        visit = s.scalars(select(VisitRow).where(VisitRow.visitor_id == ev.visitor_id, VisitRow.post_id == ev.post,
                                                 VisitRow.rep_id == ev.rep, VisitRow.last_activity >= merge_after,
                                                 VisitRow.contact_id == contact_id, VisitRow.bot == ev.bot)
                          .order_by(VisitRow.last_activity.desc()).limit(1).with_for_update()).first()
        if visit is None:
            visit = VisitRow(id=ev.view, contact_id=contact_id, visitor_id=ev.visitor_id, rep_id=ev.rep, post_id=ev.post,
                             revision=ev.revision, started_at=started, last_activity=started, engaged_ms=0, bot=ev.bot)
            s.add(visit)
        else:
            visit.last_activity = max(as_utc(visit.last_activity), started)  # type: ignore[type-var]
        s.add(ViewRow(id=ev.view, visit_id=visit.id, contact_id=contact_id, visitor_id=ev.visitor_id, share_id=ev.share_id,
                      rep_id=ev.rep, post_id=ev.post, revision=ev.revision, copy_id=ev.copy_id, started_at=started,
                      engaged_ms=0, max_scroll_percent=0, closed=False, bot=ev.bot, bot_reason=ev.bot_reason,
                      ip_hash=ev.ip_hash, referrer_host=ev.referrer_host, user_agent_family=ev.user_agent_family,
                      state=new_view(ev.view, received_ms).to_dict()))
        s.flush()
        if contact_id:
            contact = s.get(ContactRow, contact_id)
            assert contact is not None
            if contact.last_activity is None or as_utc(contact.last_activity) < started:  # type: ignore[operator]
                contact.last_activity = started
            b.contacts.add(contact_id)
            b.touched_visits.setdefault(visit.id, visit.engaged_ms)
            info = self._post(b, ev.post, ev.revision)
            b.activities.append(Activity(ev.rep, contact_id, ev.post, pb.ACTIVITY_KIND_VIEW_STARTED,
                                         describe_activity(contact.display_name, info.title), started))

    def _contact_for(self, b: _Batch, ev: pb.ViewStarted, at: datetime) -> str:
        """The rep's contact this visitor is: a per-contact link names them from now on; else as before, or new."""
        s = b.s
        mapping = s.get(VisitorContactRow, (ev.visitor_id, ev.rep))
        if ev.contact:
            named = s.get(ContactRow, ev.contact)
            if named is not None and named.rep_id == ev.rep:
                if mapping is None:
                    s.add(VisitorContactRow(visitor_id=ev.visitor_id, rep_id=ev.rep, contact_id=named.id))
                elif mapping.contact_id != named.id:
                    mapping.contact_id = named.id
                return named.id
        if mapping is not None:
            return mapping.contact_id
        contact = ContactRow(id=new_id(), rep_id=ev.rep, team_id=ev.team, display_name=anonymous_name(ev.visitor_id),
                             named=False, create_time=at, lead_value=0.0, tags=[])
        s.add(contact)
        s.add(VisitorContactRow(visitor_id=ev.visitor_id, rep_id=ev.rep, contact_id=contact.id))
        s.flush()
        return contact.id

    # ---- heartbeats and ends ------------------------------------------------------------------

    def _heartbeats(self, b: _Batch, row: ViewRow, hbs: list[Heartbeat]) -> None:
        before = ViewState.from_dict(row.state)
        after, result = apply_heartbeats(before, hbs)
        if after == before:
            return
        fresh: dict[int, Heartbeat] = {}
        for hb in sorted(hbs, key=lambda h: (h.received_at, h.seq)):
            if not before.applied(hb.seq) and after.applied(hb.seq) and hb.seq not in fresh:
                fresh[hb.seq] = hb
        if fresh:
            b.s.execute(insert(EventRow), [
                {"view_id": row.id, "seq": hb.seq, "engaged_ms": clamp_delta(hb.engaged_ms_delta)[0],
                 "max_scroll_percent": clamp_scroll(hb.max_scroll_percent), "received_at": ms(hb.received_at)}
                for hb in fresh.values()])
        self._store_state(b, row, before, after)

    def _end(self, b: _Batch, row: ViewRow, received_ms: int) -> None:
        before = ViewState.from_dict(row.state)
        if before.closed:
            return
        after = close(before, received_ms)
        self._store_state(b, row, before, after)
        if row.contact_id and not row.bot:
            contact = b.s.get(ContactRow, row.contact_id)
            info = self._post(b, row.post_id, row.revision)
            if contact is not None:
                b.activities.append(Activity(row.rep_id, row.contact_id, row.post_id, pb.ACTIVITY_KIND_VIEW_ENDED,
                                             describe_activity(contact.display_name, info.title, after.engaged_ms),
                                             ms(received_ms)))

    def _store_state(self, b: _Batch, row: ViewRow, before: ViewState, after: ViewState) -> None:
        row.state = after.to_dict()
        row.engaged_ms = after.engaged_ms
        row.max_scroll_percent = after.max_scroll_percent
        row.closed = after.closed
        delta = after.engaged_ms - before.engaged_ms
        visit = b.s.get(VisitRow, row.visit_id, with_for_update=True)
        if visit is None:
            return
        b.touched_visits.setdefault(visit.id, visit.engaged_ms)
        visit.engaged_ms = max(0, visit.engaged_ms + delta)
        visit.last_activity = max(as_utc(visit.last_activity), ms(after.last_activity))  # type: ignore[type-var]
        if visit.contact_id:
            b.contacts.add(visit.contact_id)

    # ---- interest, leads, tags -------------------------------------------------------------------

    def _post(self, b: _Batch, post_id: str, revision: int) -> PostInfo:
        return post_info(b.s, post_id, revision, b.posts)

    def _settle(self, b: _Batch) -> None:
        s = b.s
        for visit_id, old_engaged in b.touched_visits.items():
            visit = s.get(VisitRow, visit_id)
            if visit is None or visit.bot or not visit.contact_id:
                continue
            info = self._post(b, visit.post_id, visit.revision)
            old_w = interest.weight(old_engaged, info.expected_ms) if old_engaged else 0.0
            new_w = interest.weight(visit.engaged_ms, info.expected_ms)
            started = as_utc(visit.started_at)
            contact = s.get(ContactRow, visit.contact_id, with_for_update=True)
            if contact is None:
                continue
            if new_w != old_w:
                for topic in info.topics:
                    row = s.get(InterestRow, (contact.id, topic), with_for_update=True)
                    score = DecayedScore(row.value, as_utc(row.at)) if row else DecayedScore()  # type: ignore[arg-type]
                    score = score.replace(old_w, new_w, started, self.half_life)  # type: ignore[arg-type]
                    if row is None:
                        s.add(InterestRow(contact_id=contact.id, topic=topic, value=score.value, at=score.at))
                    else:
                        row.value, row.at = score.value, score.at  # type: ignore[assignment]
                lead = DecayedScore(contact.lead_value, as_utc(contact.lead_at) if contact.lead_at else None)
                lead = lead.replace(old_w, new_w, started, leads.LEAD_HALF_LIFE)  # type: ignore[arg-type]
                contact.lead_value, contact.lead_at = lead.value, lead.at
                contact.lead_key = (interest.strength_key(lead.value, lead.at, leads.LEAD_HALF_LIFE)
                                    if lead.value > 0 and lead.at else None)
            key = interest.strength_key(new_w, started, leads.LEAD_HALF_LIFE)  # type: ignore[arg-type]
            if new_w > 0 and (contact.headline_key is None or key >= contact.headline_key):
                contact.headline_visit, contact.headline_key = visit.id, key
            last = s.get(VisitRow, contact.last_visit) if contact.last_visit else None
            if last is None or as_utc(last.started_at) <= started:  # type: ignore[operator]
                contact.last_visit = visit.id
        s.flush()
        rules = self.rules(s)
        for contact_id in sorted(b.contacts):
            contact = s.get(ContactRow, contact_id)
            if contact is not None:
                contact.tags = self._tags(b, contact_id, rules)

    def visits_of(self, s: Session, contact_id: str, since: datetime, posts: dict[tuple[str, int], PostInfo] | None = None,
                  limit: int = TAG_VISITS) -> tuple[list[Visit], dict[str, str]]:
        """A contact's human visits since ``since`` as the domain sees them, and the topics' names."""
        b = _Batch(s, since)
        if posts is not None:
            b.posts = posts
        rows = s.scalars(select(VisitRow).where(VisitRow.contact_id == contact_id, VisitRow.started_at >= since,
                                                VisitRow.bot.is_(False))
                         .order_by(VisitRow.started_at.desc()).limit(limit))
        visits, names = [], {}
        for r in rows:
            info = self._post(b, r.post_id, r.revision)
            names.update(info.topic_names)
            visits.append(Visit(r.id, r.post_id, info.title, info.topics, as_utc(r.started_at), r.engaged_ms,  # type: ignore[arg-type]
                                info.expected_ms))
        return visits, names

    def _tags(self, b: _Batch, contact_id: str, rules: tuple[TagRule, ...]) -> list[dict[str, Any]]:
        s = b.s
        visits, names = self.visits_of(s, contact_id, b.now - TAG_LOOKBACK, b.posts)
        scores = {r.topic: DecayedScore(r.value, as_utc(r.at)).value_at(b.now, self.half_life)  # type: ignore[arg-type]
                  for r in s.scalars(select(InterestRow).where(InterestRow.contact_id == contact_id))}
        tags = interest.evaluate_tags(visits, b.now, rules, topic_names=names, scores=scores, half_life=self.half_life)
        return [{"topic": t.topic, "label": t.label, "score": round(t.score, 6), "evidence": [
            {"visit": e.visit_id, "post": e.post_id, "title": e.post_title, "at": e.read_at.isoformat(),
             "engaged_seconds": e.engaged_seconds, "completeness": round(e.completeness, 4)} for e in t.evidence]}
            for t in tags]

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
