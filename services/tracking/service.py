"""The tracking service's use cases besides ingest: contacts, profiles, leads, analytics, rules, privacy.

Authorisation is decided here, next to the data it protects: a rep sees only
their own contacts, a sales manager the contacts of their team's reps, an admin
everything; editors get post analytics, which carry no contact identities.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from services.content.events import POST_PUBLISHED
from services.protos.contentops.content.v1 import events_pb2
from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.shared.db import Database, as_utc, upsert
from services.shared.errors import InvalidArgument, NotFound, PermissionDenied
from services.shared.identity.domain import Principal, Role
from services.shared.ids import new_id
from services.shared.sharetoken import ShareToken, ShareTokens

from .aggregate import Aggregator, lock_against_erasure, remember_reps, view_hash
from .domain import analytics, interest, leads, reading
from .domain.humanize import describe_read
from .domain.interest import DecayedScore, TagRule
from .history import Posts, visits_of
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
from .streams import EventLog

log = logging.getLogger(__name__)

MAX_CONTACT_NAME = 60
TOMBSTONE_DAYS = timedelta(days=1)
TIMELINE = 50


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ContactView:
    id: str
    rep_id: str
    display_name: str
    named: bool
    create_time: datetime
    last_activity: datetime | None

    @property
    def name(self) -> str:
        return f"reps/{self.rep_id}/contacts/{self.id}"


@dataclass(frozen=True)
class EvidenceView:
    post_id: str
    title: str
    at: datetime
    engaged_seconds: int
    completeness: float
    description: str


@dataclass(frozen=True)
class Profile:
    contact: ContactView
    tags: list[dict[str, Any]]
    timeline: list[EvidenceView]
    topic_scores: list[tuple[str, float]]


def _contact(row: ContactRow) -> ContactView:
    return ContactView(row.id, row.rep_id, row.display_name, row.named, as_utc(row.create_time),  # type: ignore[arg-type]
                       as_utc(row.last_activity) if row.last_activity else None)


class TrackingService:
    def __init__(self, db: Database, aggregator: Aggregator, tokens: ShareTokens, event_log: EventLog, *,
                 tz: str, half_life: timedelta, clock: Callable[[], datetime] = _now) -> None:
        self.db = db
        self.aggregator = aggregator
        self.tokens = tokens
        self.log = event_log
        self.tz = tz
        self.half_life = half_life
        self.clock = clock

    # ---- who may see what -------------------------------------------------------------------------

    def check_rep_scope(self, s: Session, who: Principal, rep_id: str) -> None:
        if who.role is Role.ADMIN:
            return
        if who.role is Role.REP and who.rep == f"reps/{rep_id}":
            return
        if who.role is Role.SALES and who.team:
            rep = s.get(RepInfoRow, rep_id)
            if rep is not None and rep.team_id and who.team == f"teams/{rep.team_id}":
                return
        raise PermissionDenied(f"reps/{rep_id}: not your contacts")

    def _contact_row(self, s: Session, who: Principal, rep_id: str, contact_id: str) -> ContactRow:
        row = s.get(ContactRow, contact_id)
        if row is None or row.rep_id != rep_id:
            raise NotFound(f"reps/{rep_id}/contacts/{contact_id} not found")
        if who.role is Role.SALES and who.team and row.team_id and who.team == f"teams/{row.team_id}":
            return row
        self.check_rep_scope(s, who, rep_id)
        return row

    # ---- posts (from the content service's publish events) -------------------------------------------

    def handle_post_published(self, payload: bytes) -> bool:
        event = events_pb2.PostPublishedEvent.FromString(payload)
        post_id = event.post.removeprefix("posts/")
        revision = int(event.revision.rpartition("/revisions/")[2])
        c = event.content
        topics = [t.removeprefix("topics/") for t in c.topics]
        names = list(c.topic_names) or topics
        expected = reading.expected_reading_ms(f"{c.title}\n{c.body}", len(c.images))
        with self.db.write() as s:  # a redelivered event (or two workers with one event) inserts nothing
            done = s.execute(upsert(s, PostInfoRow).values(
                post_id=post_id, revision=revision, title=c.title[:200], topics=topics, topic_names=names[:len(topics)],
                expected_ms=expected).on_conflict_do_nothing())
            return bool(done.rowcount)

    def event_handlers(self) -> dict[str, Callable[[bytes], object]]:
        """The content events this service consumes, by topic (for an in-process event bus)."""
        return {POST_PUBLISHED: self.handle_post_published}

    # ---- contacts ------------------------------------------------------------------------------------------

    def create_contact_link(self, who: Principal, rep_id: str, share_token: str, contact_id: str,
                            display_name: str) -> tuple[ContactView, str]:
        if who.role is not Role.ADMIN and who.rep != f"reps/{rep_id}":
            raise PermissionDenied("reps create links only for themselves")
        share: ShareToken = self.tokens.verify(share_token)
        if share.rep_id != rep_id:
            raise InvalidArgument("share_token", f"this link is not reps/{rep_id}'s")
        if share.contact_id:
            raise InvalidArgument("share_token", "already a per-contact link: use the rep's own link")
        self._remember_rep(rep_id, share.team_id)
        with self.db.write() as s:
            if contact_id:
                row = self._contact_row(s, who, rep_id, contact_id)
                if not row.named:
                    if not display_name.strip():
                        raise InvalidArgument("contact_display_name", "name this visitor to create their link")
                    row.display_name, row.named = self._name(display_name), True
            else:
                name = self._name(display_name)
                row = ContactRow(id=new_id(), rep_id=rep_id, team_id=share.team_id, display_name=name, named=True,
                                 create_time=self.clock(), lead_value=0.0, tags=[])
                s.add(row)
            s.flush()
            contact = _contact(row)
        token, _ = self.tokens.child(share, contact_id=contact.id)
        return contact, token

    def _remember_rep(self, rep_id: str, team_id: str) -> None:
        """Note the rep's team (from their own share token) if no view has yet: their sales manager must see the
        contacts they link before any of them opens the link."""
        with self.db.write() as s:
            remember_reps(s, {rep_id: team_id})

    @staticmethod
    def _name(display_name: str) -> str:
        name = display_name.strip()
        if not name:
            raise InvalidArgument("contact_display_name", "required")
        if len(name) > MAX_CONTACT_NAME or any(ord(c) < 32 for c in name):
            raise InvalidArgument("contact_display_name", f"at most {MAX_CONTACT_NAME} printable characters")
        return name

    def list_contacts(self, who: Principal, rep_id: str, after: str | None, limit: int) -> list[ContactView]:
        with self.db.read() as s:
            self.check_rep_scope(s, who, rep_id)
            q = select(ContactRow).where(ContactRow.rep_id == rep_id).order_by(ContactRow.id).limit(limit)
            if after:
                q = q.where(ContactRow.id > after)
            return [_contact(r) for r in s.scalars(q)]

    # ---- what sales read ------------------------------------------------------------------------------------

    def profile(self, who: Principal, rep_id: str, contact_id: str) -> Profile:
        now = self.clock()
        with self.db.replica() as s:  # what sales read tolerates the replica's lag: it trails the consumer anyway
            row = self._contact_row(s, who, rep_id, contact_id)
            visits = visits_of(s, [contact_id], datetime(1970, 1, 1, tzinfo=UTC), Posts(s), limit=TIMELINE)[contact_id]
            scores = sorted(((r.topic, DecayedScore(r.value, as_utc(r.at)).value_at(now, self.half_life))  # type: ignore[arg-type]
                             for r in s.scalars(select(InterestRow).where(InterestRow.contact_id == contact_id))),
                            key=lambda t: (-t[1], t[0]))
            tags = list(row.tags or [])
            contact = _contact(row)
        timeline = [self._evidence(e, now) for e in interest.timeline(visits, TIMELINE)]
        for tag in tags:
            for e in tag["evidence"]:
                e["description"] = describe_read(e["title"], e["engaged_seconds"] * 1000, datetime.fromisoformat(e["at"]),
                                                 now, self.tz)
        return Profile(contact, tags, timeline, scores)

    def _evidence(self, e: interest.Evidence, now: datetime) -> EvidenceView:
        return EvidenceView(e.post_id, e.post_title, e.read_at, e.engaged_seconds, e.completeness,
                            describe_read(e.post_title, e.engaged_seconds * 1000, e.read_at, now, self.tz))

    def list_leads(self, who: Principal, rep_id: str, day: date | None, offset: int,
                   limit: int) -> tuple[list[leads.Lead], set[str]]:
        """The rep's leads for ``day``, and which of their contacts are named (came through a per-contact link)."""
        now = self.clock()
        at = leads.ranking_time(day, now, self.tz)
        with self.db.replica() as s:
            self.check_rep_scope(s, who, rep_id)
            if at is not now:  # an earlier day: rank from that day's visits
                found, named = self._leads_of_day(s, rep_id, day, now)
                return found[offset:offset + limit], named
            rows = list(s.scalars(
                select(ContactRow).where(ContactRow.rep_id == rep_id, ContactRow.lead_key.is_not(None),
                                         ContactRow.last_activity > at - leads.LEAD_LOOKBACK)
                .order_by(ContactRow.lead_key.desc(), ContactRow.id).offset(offset).limit(limit)))
            visit_ids = {v for r in rows for v in (r.headline_visit, r.last_visit) if v}
            visits = {v.id: v for v in s.scalars(select(VisitRow).where(VisitRow.id.in_(visit_ids)))} if visit_ids else {}
            tops = self._top_topics(s, [r.id for r in rows], at)
            posts = Posts(s)
            posts.load((v.post_id, v.revision) for v in visits.values())
            candidates = []
            for r in rows:
                headline, last = visits.get(r.headline_visit or ""), visits.get(r.last_visit or "")
                if headline is None or last is None:
                    continue
                top_id = tops.get(r.id, "")
                top_name = ""
                for v in (headline, last):
                    top_name = top_name or posts.get(v.post_id, v.revision).topic_names.get(top_id, "")
                score = DecayedScore(r.lead_value, as_utc(r.lead_at)).value_at(at, leads.LEAD_HALF_LIFE)  # type: ignore[arg-type]
                candidates.append(leads.LeadCandidate(r.id, r.display_name, score, as_utc(r.last_activity),  # type: ignore[arg-type]
                                                      self._read(headline, posts), self._read(last, posts),
                                                      top_name or top_id, top_id))
        return leads.rank_leads(candidates, now=now, tz=self.tz), {r.id for r in rows if r.named}

    @staticmethod
    def _read(v: VisitRow, posts: Posts) -> leads.Read:
        info = posts.get(v.post_id, v.revision)
        return leads.Read(v.post_id, info.title, as_utc(v.started_at), v.engaged_ms,  # type: ignore[arg-type]
                          reading.completeness(v.engaged_ms, info.expected_ms))

    def _top_topics(self, s: Session, contact_ids: list[str], at: datetime) -> dict[str, str]:
        best: dict[str, tuple[float, str]] = {}
        if not contact_ids:
            return {}
        for r in s.scalars(select(InterestRow).where(InterestRow.contact_id.in_(contact_ids))):
            value = DecayedScore(r.value, as_utc(r.at)).value_at(at, self.half_life)  # type: ignore[arg-type]
            if value > 0 and (r.contact_id not in best or (-value, r.topic) < (-best[r.contact_id][0], best[r.contact_id][1])):
                best[r.contact_id] = (value, r.topic)
        return {c: t for c, (_, t) in best.items()}

    def _leads_of_day(self, s: Session, rep_id: str, day: date | None, now: datetime) -> tuple[list[leads.Lead], set[str]]:
        at = leads.ranking_time(day, now, self.tz)
        since = at - max(leads.LEAD_LOOKBACK, timedelta(days=90))
        contacts = list(s.scalars(select(ContactRow).where(ContactRow.rep_id == rep_id,
                                                           ContactRow.last_activity > at - leads.LEAD_LOOKBACK)))
        posts = Posts(s)
        visits = visits_of(s, [c.id for c in contacts], since, posts)
        entries = [(c.id, c.display_name, [v for v in visits[c.id] if v.started_at <= at]) for c in contacts]
        return (leads.leads_for_day(entries, day, now, tz=self.tz, topic_names=posts.topic_names()),
                {c.id for c in contacts if c.named})

    # ---- analytics for editors ------------------------------------------------------------------------------

    def post_analytics(self, post_id: str) -> tuple[analytics.PostAnalytics, analytics.ForwardTree, list[analytics.Spreader]]:
        with self.db.replica() as s:
            views = [analytics.ViewRecord(v.id, v.visitor_id, v.copy_id, v.rep_id, v.engaged_ms, v.bot, v.share_id)
                     for v in s.scalars(select(ViewRow).where(ViewRow.post_id == post_id))]
            shares = list(s.scalars(select(ShareRow).where(ShareRow.post_id == post_id)))
        if not views and not shares:
            with self.db.replica() as s:
                if s.scalar(select(func.count()).select_from(PostInfoRow).where(PostInfoRow.post_id == post_id)) == 0:
                    raise NotFound(f"posts/{post_id} has no published revision")
        per_share: dict[str, int] = {}
        for v in views:
            if not v.is_bot:
                per_share[v.share_id] = per_share.get(v.share_id, 0) + 1
        tree = analytics.build_forward_tree(
            analytics.Share(sh.share_id, sh.parent_share_id, sh.rep_id, per_share.get(sh.share_id, 0)) for sh in shares)
        return analytics.post_analytics(views), tree, analytics.top_spreaders(tree)

    # ---- tag rules -----------------------------------------------------------------------------------------------

    def create_rule(self, rule: TagRule) -> tuple[str, TagRule]:
        rule = interest.validate_rule(rule)
        with self.db.write() as s:
            position = (s.scalar(select(func.max(TagRuleRow.position))) or 0) + 1
            row = TagRuleRow(id=new_id(), position=position, topic=rule.topic, min_engaged_seconds=rule.min_engaged_seconds,
                             min_visits=rule.min_visits, window_days=rule.window_days, label=rule.label,
                             min_score=rule.min_score, create_time=self.clock())
            s.add(row)
        self.aggregator.forget_rules()
        return row.id, rule

    def list_rules(self) -> list[tuple[str, TagRule]]:
        with self.db.read() as s:
            rows = list(s.scalars(select(TagRuleRow).order_by(TagRuleRow.position, TagRuleRow.id)))
        if not rows:
            return [(f"default-{i + 1}", r) for i, r in enumerate(interest.DEFAULT_RULES)]
        return [(r.id, TagRule(r.topic, r.min_engaged_seconds, r.min_visits, r.window_days, r.label, r.min_score))
                for r in rows]

    def delete_rule(self, rule_id: str) -> None:
        with self.db.write() as s:
            if s.execute(delete(TagRuleRow).where(TagRuleRow.id == rule_id)).rowcount != 1:  # type: ignore[attr-defined]
                raise NotFound(f"tagRules/{rule_id} not found")
        self.aggregator.forget_rules()

    # ---- privacy ----------------------------------------------------------------------------------------------------

    def erase_contact(self, who: Principal, rep_id: str, contact_id: str) -> tuple[int, int, int]:
        """Every view, event, visit, score and tag of the contact, in the database and in the event log."""
        with self.db.read() as s:
            self._contact_row(s, who, rep_id, contact_id)
            view_ids = set(s.scalars(select(ViewRow.id).where(ViewRow.contact_id == contact_id)))
            visitors = set(s.scalars(select(VisitorContactRow.visitor_id).where(VisitorContactRow.contact_id == contact_id)))

        survivors: list[pb.IngestEvent] = []  # others' events that shared a stream entry with this contact's

        def mine(e: pb.IngestEvent) -> bool:
            kind = e.WhichOneof("kind")
            if kind == "started" and (e.started.view in view_ids or e.started.contact == contact_id
                                      or (e.started.visitor_id in visitors and e.started.rep == rep_id)):
                # Maybe a view not applied yet: its heartbeats and end follow in the same partition, so they match too.
                view_ids.add(e.started.view)
                return True
            return (kind == "heartbeat" and e.heartbeat.view in view_ids) or (kind == "ended" and e.ended.view in view_ids)

        def matches(payload: bytes) -> bool:
            try:
                batch = pb.IngestBatch.FromString(payload)
            except Exception:  # noqa: BLE001 - an unparseable entry is not this contact's
                return False
            verdicts = [mine(e) for e in batch.events]
            if not any(verdicts):
                return False
            survivors.extend(e for e, is_mine in zip(batch.events, verdicts, strict=True) if not is_mine)
            return True

        def erase_from_log() -> int:
            """Delete the contact's entries; an entry the edge batched with other viewers' heartbeats goes too, so
            those are appended again (receive times kept; applying is idempotent, so one already applied is a no-op)."""
            deleted = self.log.delete_where(matches)
            by_partition: dict[int, list[pb.IngestEvent]] = {}
            for e in survivors:
                kind = e.WhichOneof("kind")
                view = e.heartbeat.view if kind == "heartbeat" else e.ended.view if kind == "ended" else e.started.view
                by_partition.setdefault(self.log.partition_for(view), []).append(e)
            for partition, events in sorted(by_partition.items()):
                self.log.append([pb.IngestBatch(events=events).SerializeToString()], partition=partition)
            survivors.clear()
            return deleted

        # Log first, so a consumer cannot apply one of them after the rows are gone; again after, for any
        # entry that raced in between.
        stream_entries = erase_from_log()
        with self.db.write() as s:
            lock_against_erasure(s, exclusive=True)  # waits for batches being applied; later ones see the tombstones
            view_ids |= set(s.scalars(select(ViewRow.id).where(ViewRow.contact_id == contact_id)))
            events = 0
            if view_ids:
                events = s.execute(delete(EventRow).where(EventRow.view_id.in_(view_ids))).rowcount  # type: ignore[attr-defined]
            s.execute(delete(ViewRow).where(ViewRow.contact_id == contact_id))
            s.execute(delete(VisitRow).where(VisitRow.contact_id == contact_id))
            s.execute(delete(InterestRow).where(InterestRow.contact_id == contact_id))
            s.execute(delete(VisitorContactRow).where(VisitorContactRow.contact_id == contact_id))
            s.execute(delete(ContactRow).where(ContactRow.id == contact_id))
            erased_at = self.clock()
            known = set(s.scalars(select(ErasedViewRow.view_hash).where(
                ErasedViewRow.view_hash.in_([view_hash(v) for v in view_ids])))) if view_ids else set()
            s.add_all(ErasedViewRow(view_hash=h, erased_at=erased_at)
                      for h in {view_hash(v) for v in view_ids} - known)
        stream_entries += erase_from_log()
        log.info("erased reps/%s/contacts/%s: %d views, %d events, %d stream entries", rep_id, contact_id,
                 len(view_ids), events, stream_entries)
        return len(view_ids), events, stream_entries

    def purge_events(self, older_than: timedelta) -> int:
        """Drop raw heartbeats past the retention period; views, visits, scores and tags stay."""
        cutoff = self.clock() - older_than
        with self.db.write() as s:
            # Tombstones only need to outlive the entries a consumer could still hold: a day is plenty.
            s.execute(delete(ErasedViewRow).where(ErasedViewRow.erased_at < self.clock() - TOMBSTONE_DAYS))
            return int(s.execute(delete(EventRow).where(EventRow.received_at < cutoff)).rowcount)  # type: ignore[attr-defined]
