"""Several consumers in one group apply one log at once (PostgreSQL, where production runs them).

- Two consumers starting views of one visitor at the same moment: the second waits for
  the first's new contact instead of failing or making a second one, and its view joins
  the first's visit.
- Two consumers applying the same entries at once (one's entries reclaimed while it
  was slow): the second meets the first's committed view, applies them again, and
  nothing is counted twice.
- Two consumers applying interleaved halves of one log, round after round: every view,
  visit, contact, interest score and tag ends up as one consumer applying it all alone
  would leave it, and neither ever fails (rows are locked in one order: no deadlock).
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.shared.db import Database, as_utc
from services.shared.ids import new_id
from services.shared.migrate import upgrade_all
from services.tracking.aggregate import Aggregator
from services.tracking.domain.interest import HALF_LIFE, DecayedScore
from services.tracking.domain.leads import LEAD_HALF_LIFE
from services.tracking.models import ContactRow, InterestRow, PostInfoRow, ViewRow, VisitorContactRow, VisitRow

from . import infra
from .helpers import wait_for

T0 = int(datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp() * 1000)
NOW = datetime(2026, 11, 20, 13, tzinfo=UTC)


@pytest.fixture
def dbs(pg_url: str) -> Iterator[tuple[Database, Database]]:
    """Two connection pools on one database: two consumer processes."""
    one, two = Database(pg_url), Database(pg_url)
    with one.write() as s:
        for p in range(3):
            s.add(PostInfoRow(post_id=f"post{p}", revision=1, title=f"第{p}篇", topics=[f"topic{p}", "shared"],
                              topic_names=[f"话题{p}", "共同"], expected_ms=60_000))
    yield one, two
    one.dispose()
    two.dispose()


def start(view: str, visitor: str, post: str, at_ms: int, rep: str = "rep1") -> pb.IngestEvent:
    return pb.IngestEvent(received_ms=at_ms, started=pb.ViewStarted(
        view=view, visitor_id=visitor, share_id=f"share-{rep}-{post}", post=post, revision=1, rep=rep, team="team1",
        copy_id=f"copy-{rep}"))


def beat(view: str, seq: int, at_ms: int, delta_ms: int = 10_000) -> pb.IngestEvent:
    return pb.IngestEvent(received_ms=at_ms, heartbeat=pb.Heartbeat(view=view, seq=seq, engaged_ms_delta=delta_ms,
                                                                    max_scroll_percent=min(100, seq * 10)))


def spawn(call: Callable[[], object], errors: list[BaseException]) -> threading.Thread:
    """``call`` in a thread of its own (a consumer process); its failure lands in ``errors``."""

    def run() -> None:
        try:
            call()
        except BaseException as err:  # noqa: BLE001 - the test asserts on errors
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_two_consumers_starting_one_visitors_views_at_once_share_one_contact_and_visit(dbs: tuple[Database, Database]) -> None:
    one, two = dbs
    first, second = Aggregator(one, clock=lambda: NOW), Aggregator(two, clock=lambda: NOW)
    gate, inside = threading.Event(), threading.Event()
    lock_visits = first._lock_visits

    def held(b, starts):  # type: ignore[no-untyped-def]
        inside.set()  # the first consumer has made the visitor's contact, not committed yet
        assert gate.wait(30)
        return lock_visits(b, starts)

    first._lock_visits = held  # type: ignore[method-assign]
    errors: list[BaseException] = []
    a = spawn(lambda: first.apply([start("view-a", "visitor1", "post0", T0)]), errors)
    assert inside.wait(30)
    b = spawn(lambda: second.apply([start("view-b", "visitor1", "post0", T0 + 1_000)]), errors)
    with one.read() as s:  # the second consumer queues behind the first's uncommitted contact
        # pg_stat_activity is a snapshot per transaction: cleared before each look, or the first one is all it sees
        wait_for(lambda: s.scalar(text("SELECT count(*) FROM pg_stat_activity, pg_stat_clear_snapshot() WHERE datname = "
                                       "current_database() AND wait_event_type = 'Lock'")) == 1, "the second consumer to wait for a lock")
    gate.set()
    a.join(30)
    b.join(30)
    assert not errors, errors
    with one.read() as s:
        contacts = list(s.scalars(select(ContactRow)))
        mapping = list(s.scalars(select(VisitorContactRow)))
        views = {v.id: v for v in s.scalars(select(ViewRow))}
        visits = list(s.scalars(select(VisitRow)))
    assert len(contacts) == 1 and contacts[0].display_name == "访客 visi"
    assert [(m.visitor_id, m.rep_id, m.contact_id) for m in mapping] == [("visitor1", "rep1", contacts[0].id)]
    assert {v.contact_id for v in views.values()} == {contacts[0].id} and set(views) == {"view-a", "view-b"}
    assert [v.id for v in visits] == ["view-a"] and views["view-b"].visit_id == "view-a"  # one visit, opened twice


def test_two_consumers_applying_the_same_entry_at_once_count_it_once(dbs: tuple[Database, Database]) -> None:
    """A live but slow consumer's entries reclaimed by another: both apply them. The second one's view insert meets the
    first one's committed row; it applies the entry again (finding it applied) instead of failing."""
    one, two = dbs
    first, second = Aggregator(one, clock=lambda: NOW), Aggregator(two, clock=lambda: NOW)
    gate, inside = threading.Event(), threading.Event()
    tag = first._tag

    def held(b):  # type: ignore[no-untyped-def]
        inside.set()  # the first consumer has written the view, its visit and the heartbeat, not committed yet
        assert gate.wait(120)  # a bound for a loaded machine: the test opens the gate once the second one waits
        return tag(b)

    first._tag = held  # type: ignore[method-assign]
    entry = [start("view-a", "visitor1", "post0", T0), beat("view-a", 1, T0 + 10_000)]
    errors: list[BaseException] = []
    a = spawn(lambda: first.apply(entry), errors)
    assert inside.wait(30)
    found: list[list[object]] = []
    b = spawn(lambda: found.append(list(second.apply(entry))), errors)
    with one.read() as s:
        wait_for(lambda: errors or s.scalar(text("SELECT count(*) FROM pg_stat_activity, pg_stat_clear_snapshot() WHERE datname = "
                                                 "current_database() AND wait_event_type = 'Lock'")) == 1,
                 "the second consumer to wait for a lock")
    assert not errors, errors
    gate.set()
    a.join(30)
    b.join(30)
    assert not errors, errors
    assert found == [[]]  # nothing announced twice: "X is reading your post" came from the first consumer only
    with one.read() as s:
        views = list(s.scalars(select(ViewRow)))
        visits = list(s.scalars(select(VisitRow)))
        contacts = list(s.scalars(select(ContactRow)))
    assert [(v.id, v.engaged_ms) for v in views] == [("view-a", 10_000)]
    assert [(v.id, v.engaged_ms) for v in visits] == [("view-a", 10_000)] and len(contacts) == 1


def log_of(seed: int, visitors: int = 12, views_per_visitor: int = 3, beats_per_view: int = 8) -> list[pb.IngestEvent]:
    """Visitors opening posts (some the same post twice: one visit) and reading them, in the order a consumer group
    may see them: up to 3 minutes out of receive order (partitions, a slow consumer), so a later view of a visit can
    come first and heartbeats can overtake their view's start."""
    rng = random.Random(seed)
    starts, beats = [], []
    for v in range(visitors):
        for k in range(views_per_visitor):
            view = f"v{v:02d}-{k}-{new_id()}"
            at = T0 + k * 60_000 + v * 100
            starts.append(start(view, f"visitor{v:02d}", f"post{rng.randrange(2) if k else 0}", at, rep=f"rep{v % 3}"))
            beats += [beat(view, seq, at + seq * 10_000, rng.choice([5_000, 10_000, 30_000]))
                      for seq in range(1, beats_per_view + 1)]
    return sorted(starts + beats, key=lambda e: e.received_ms + rng.randrange(180_000))


def now(value: float, at: datetime | None, half_life: timedelta = HALF_LIFE) -> float:
    """A decayed score's value at NOW (the stored value is as of its own reference time, which depends on order)."""
    return round(DecayedScore(value, as_utc(at)).value_at(NOW, half_life), 9)


def state(db: Database) -> dict[str, object]:
    """Everything the consumers derive, named by what it is made of (visitor and rep, the views in a visit), not by
    ids: which view of a visit came first, and so names the visit, depends on who applied it first."""
    with db.read() as s:
        views = list(s.scalars(select(ViewRow)))
        members: dict[str | None, tuple[str, ...]] = {}
        for v in views:
            members[v.visit_id] = tuple(sorted((*members.get(v.visit_id, ()), v.id)))
        key = {m.contact_id: (m.visitor_id, m.rep_id) for m in s.scalars(select(VisitorContactRow))}
        contacts = list(s.scalars(select(ContactRow)))
        return {
            "contacts": sorted(key[c.id] for c in contacts),
            "views": sorted((v.id, v.engaged_ms, v.max_scroll_percent, members[v.visit_id]) for v in views),
            "visits": sorted((members[v.id], v.engaged_ms, v.started_at, key[v.contact_id]) for v in s.scalars(select(VisitRow))),
            "interest": sorted((key[r.contact_id], r.topic, now(r.value, r.at)) for r in s.scalars(select(InterestRow))),
            "leads": sorted((key[c.id], now(c.lead_value, c.lead_at, LEAD_HALF_LIFE), members.get(c.headline_visit),
                             members.get(c.last_visit)) for c in contacts),
            "tags": sorted((key[c.id], tag["label"], tag["score"], tuple(members[e["visit"]] for e in tag["evidence"]))
                           for c in contacts for tag in c.tags),
        }


@pytest.mark.parametrize("seed", [7, 19, 23])
def test_two_consumers_applying_one_log_at_once_leave_what_one_consumer_alone_would(dbs: tuple[Database, Database],
                                                                                    seed: int) -> None:
    events = log_of(seed)
    one, two = dbs
    consumers = [Aggregator(one, clock=lambda: NOW), Aggregator(two, clock=lambda: NOW)]
    rng = random.Random(seed + 1)
    pending = list(range(len(events)))
    rounds = 0
    while pending:  # each round: the log's next entries dealt out to both consumers and applied at once
        rounds += 1
        assert rounds < 200, "heartbeats put back never found their view"
        size = rng.randrange(20, 80)
        take, pending = pending[:size], pending[size:]
        halves: list[list[int]] = [[], []]
        for i in take:
            halves[rng.randrange(2)].append(i)
        orphans: list[list[int]] = [[], []]
        errors: list[BaseException] = []
        threads = [spawn(functools.partial(consumers[n].apply, [events[i] for i in halves[n]], orphans[n]), errors)
                   for n in (0, 1)]
        for t in threads:
            t.join(60)
        assert not errors, errors
        pending = sorted({halves[n][k] for n in (0, 1) for k in orphans[n]} | set(pending))  # put back, as the app does
    with infra.pg_database() as alone_url:
        alone = Database(alone_url)
        try:
            upgrade_all(alone)
            with one.read() as s, alone.write() as t:
                for p in s.scalars(select(PostInfoRow)):
                    t.add(PostInfoRow(post_id=p.post_id, revision=p.revision, title=p.title, topics=p.topics,
                                      topic_names=p.topic_names, expected_ms=p.expected_ms))
            Aggregator(alone, clock=lambda: NOW).apply(events)
            expected = state(alone)
        finally:
            alone.dispose()
    got = state(one)
    assert len(got["contacts"]) == 12 and any(c.tags for c in contacts_of(one))  # type: ignore[arg-type]
    assert got == expected


def contacts_of(db: Database) -> list[ContactRow]:
    with db.read() as s:
        return list(s.scalars(select(ContactRow)))
