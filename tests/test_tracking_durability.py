"""Tracking's promises about what it keeps and what it never loses.

Privacy, on both backends (SQLite + memory log, PostgreSQL + Redis stream):
- EraseContact leaves nothing of the contact in any tracking_* table (contact id,
  view ids, visitor id) nor in the event log, entries not applied yet included, and
  another contact of the same rep keeps every read, even heartbeats that travelled in
  the same stream entry as the erased contact's;
- raw heartbeats past the retention are purged, the aggregates (views, visits, tags
  with their evidence) stay;
- a client IP is never stored in the clear: not in any column, not in the stream.
Durability, on the production backend:
- a consumer process SIGKILLed mid-way: a second one reclaims, and every view's engaged
  time is exactly what was sent (given the caps): nothing lost, nothing counted twice;
- heartbeats acknowledged by ingest survive a Redis kill -9 and restart (AOF, fsync always);
- the database down while consuming: entries stay pending, nothing is dead-lettered,
  and all of it is applied once the database is back.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.shared.errors import Unavailable
from services.shared.ids import new_id
from services.shared.settings import Settings, load_settings
from services.shared.sharetoken import ShareTokens
from services.tracking.app import TrackingApp
from services.tracking.domain.engagement import HEARTBEAT_INTERVAL_MS, MAX_DELTA_MS
from services.tracking.models import Base, EventRow, ViewRow
from services.tracking.streams import DEFAULT_PREFIX, RedisEventLog, run_consumer

from . import infra
from .helpers import wait_for
from .test_tracking_streams import own_redis
from .tracking_harness import Metadata, Track, log_payloads, pause_consumer, resume_consumer

ROOT = Path(__file__).resolve().parent.parent
REDIS_DB = 12  # the consumer-process test's own database (default stream prefix): flushed before and after
REDIS_URL = f"{infra.REDIS_URL.rsplit('/', 1)[0]}/{REDIS_DB}"
WAIT = 60  # upper bound on a loaded machine; never an assertion on speed
BODY = "孩子的保险怎么配：先给大人配足保障，再给孩子配医疗险和意外险，最后才考虑教育金。" * 5
IPV4 = "203.0.113.7"
IPV6 = "2001:db8:85a3::8a2e:370:7334"


# ---- helpers --------------------------------------------------------------------------------------


def table_texts(app: TrackingApp) -> list[tuple[str, str]]:
    """Every row of every tracking_* table as (table, text of all its columns)."""
    rows = []
    with app.db.read() as s:
        for table in Base.metadata.sorted_tables:
            assert table.name.startswith("tracking_")
            for row in s.execute(table.select()):
                rows.append((table.name, " | ".join(json.dumps(v, ensure_ascii=False, default=str) for v in row)))
    return rows


def mentions(app: TrackingApp, needles: set[str]) -> list[tuple[str, str, str]]:
    """(table, needle, row) for every row of a tracking_* table that contains one of ``needles``."""
    return [(table, needle, text) for table, text in table_texts(app) for needle in needles if needle.lower() in text.lower()]


def stream_mentions(track: Track, needles: set[str]) -> list[tuple[str, bytes]]:
    return [(n, p) for p in log_payloads(track.app.event_log) for n in needles if n.encode() in p]


def contact_id(name: str) -> str:
    return name.rsplit("/", 1)[1]


def view_id(view: str) -> str:
    return view.removeprefix("views/")


def engaged(app: TrackingApp) -> dict[str, int]:
    with app.db.read() as s:
        return {v.id: v.engaged_ms for v in s.scalars(select(ViewRow))}


def event_count(app: TrackingApp, views: set[str] | None = None) -> int:
    q = select(func.count()).select_from(EventRow)
    if views is not None:
        q = q.where(EventRow.view_id.in_(views))
    with app.db.read() as s:
        return int(s.scalar(q) or 0)


Read = tuple[str, int, int]  # post title, engaged seconds, read time (unix seconds)


def profile_facts(track: Track, name: str, md: Metadata) -> tuple[list[tuple[str, list[Read]]], list[Read]]:
    """What a profile shows, without the wording that depends on the current time."""
    p = track.stub.GetContactProfile(pb.GetContactProfileRequest(name=name), metadata=md)
    return ([(t.label, [(e.post_title, e.engaged_seconds, e.read_time.seconds) for e in t.evidence]) for t in p.tags],
            [(e.post_title, e.engaged_seconds, e.read_time.seconds) for e in p.timeline])


@dataclass
class Customers:
    """A rep with a post and two named contacts, each through their own per-contact link."""

    rep_md: Metadata
    rep_link: str  # the rep's own share token
    a_name: str
    a_link: str
    b_name: str
    b_link: str


def customers(track: Track) -> Customers:
    topic = track.topic("child-insurance", "少儿保险")
    post = track.publish("孩子的保险怎么配", BODY, [topic])
    rep, md = track.rep("李顾问")
    token = track.share_token(post, rep, md)
    links = [track.stub.CreateContactLink(pb.CreateContactLinkRequest(parent=rep.name, share_token=token,
                                                                      contact_display_name=name), metadata=md)
             for name in ("张女士", "陈先生")]
    return Customers(md, token, links[0].contact.name, links[0].share_token, links[1].contact.name, links[1].share_token)


def start(track: Track, token: str, visitor: str = "", ip: str = IPV4) -> pb.StartViewResponse:
    return track.stub.StartView(pb.StartViewRequest(share_token=token, visitor_id=visitor, client_ip=ip,
                                                    user_agent="Mozilla/5.0 (iPhone) MicroMessenger/8.0"),
                                metadata=track.edge)


def beats(track: Track, *heartbeats: pb.Heartbeat) -> None:
    """One RecordEngagement message, as the web edge batches its browsers' heartbeats."""
    track.stub.RecordEngagement(iter([pb.RecordEngagementRequest(heartbeats=list(heartbeats))]), metadata=track.edge)


# ---- erasure ----------------------------------------------------------------------------------------------


def test_erasing_a_contact_leaves_nothing_of_them_in_the_database_or_the_stream_and_spares_the_others(track: Track) -> None:
    c = customers(track)
    a1 = track.read(c.a_link, 130)
    a2 = track.read(c.rep_link, 40, visitor=a1.visitor_id)  # the rep's own link, but the visitor is known to be A
    b1 = track.read(c.b_link, 60)
    track.settle()
    b_before = profile_facts(track, c.b_name, c.rep_md)
    assert b_before[0], "B's read made a tag"
    pause_consumer(track.app)
    try:
        a3 = track.read(c.a_link, 30, visitor=a1.visitor_id)  # not applied when the erasure comes
        a4 = track.read(c.rep_link, 20, visitor=a1.visitor_id)
        b2 = track.read(c.b_link, 20, visitor=b1.visitor_id)
        a_views = {view_id(v.view) for v in (a1, a2, a3, a4)}
        a_traces = a_views | {contact_id(c.a_name), a1.visitor_id}
        assert {table for table, _, _ in mentions(track.app, a_traces)} == {
            "tracking_contacts", "tracking_visitor_contacts", "tracking_views", "tracking_visits", "tracking_events",
            "tracking_interest"}
        assert {n for n, _ in stream_mentions(track, {view_id(a3.view), view_id(a4.view)})} == {view_id(a3.view), view_id(a4.view)}
        assert track.app.event_log.stats().lag > 0
        erased = track.stub.EraseContact(pb.EraseContactRequest(name=c.a_name), metadata=c.rep_md)
        assert stream_mentions(track, a_traces) == [], "the contact's entries are still in the event log"
    finally:
        resume_consumer(track.app)
    track.settle()
    assert (erased.views_erased, erased.events_erased) == (4, 13 + 4)  # two views were only in the log
    assert erased.stream_entries_erased >= (1 + 3 + 1) + (1 + 2 + 1)  # a3's and a4's at least (applied ones may be trimmed)
    assert mentions(track.app, a_traces) == []
    assert stream_mentions(track, a_traces) == []
    views = engaged(track.app)
    assert (views[view_id(b1.view)], views[view_id(b2.view)]) == (60_000, 20_000)
    b_tags, b_timeline = profile_facts(track, c.b_name, c.rep_md)
    assert [label for label, _ in b_tags] == [label for label, _ in b_before[0]]
    assert sum(seconds for _, seconds, _ in b_timeline) == 80  # both of B's reads, the one still in the log included
    contacts = track.stub.ListContacts(pb.ListContactsRequest(parent=c.a_name.rsplit("/contacts/", 1)[0]), metadata=c.rep_md)
    assert [x.name for x in contacts.contacts] == [c.b_name]


def test_erasure_spares_another_contacts_heartbeats_batched_in_the_same_stream_entry(track: Track) -> None:
    c = customers(track)
    a, b = start(track, c.a_link), start(track, c.b_link)
    track.settle()
    pause_consumer(track.app)
    try:
        for seq in (1, 2, 3):  # the edge sends both browsers' heartbeats in one message: one stream entry each
            track.clock.advance(10)
            beats(track, pb.Heartbeat(view=a.view, seq=seq, engaged_ms_delta=10_000),
                  pb.Heartbeat(view=b.view, seq=seq, engaged_ms_delta=10_000))
        shared = [p for p in log_payloads(track.app.event_log) if view_id(a.view).encode() in p and view_id(b.view).encode() in p]
        assert len(shared) == 3
        track.stub.EraseContact(pb.EraseContactRequest(name=c.a_name), metadata=c.rep_md)
        assert stream_mentions(track, {view_id(a.view), a.visitor_id}) == []
    finally:
        resume_consumer(track.app)
    track.settle()
    assert engaged(track.app) == {view_id(b.view): 30_000}
    assert event_count(track.app) == 3


def test_erasure_while_a_consumer_holds_the_contacts_entries_does_not_bring_them_back(track: Track) -> None:
    c = customers(track)
    a1 = track.read(c.a_link, 30)
    track.settle()
    pause_consumer(track.app)
    try:
        a2 = track.read(c.a_link, 20, visitor=a1.visitor_id)
        in_hand = track.app.event_log.read("slow-consumer", count=100)  # read, not yet applied, when erasure runs
        assert in_hand
        track.stub.EraseContact(pb.EraseContactRequest(name=c.a_name), metadata=c.rep_md)
        track.app.handle_batch(in_hand)  # the slow consumer commits what it had in hand
        track.app.event_log.ack(in_hand)
    finally:
        resume_consumer(track.app)
    track.settle()
    assert mentions(track.app, {view_id(a1.view), view_id(a2.view), a1.visitor_id, contact_id(c.a_name)}) == []


def test_erasing_entries_nobody_read_yet_leaves_no_phantom_lag_once_the_rest_is_read(redis12: redis.Redis) -> None:
    """Redis 7.0 keeps counting XDELed entries in a group's lag; "caught up" must still read as lag 0 (wait_applied)."""
    log = RedisEventLog(redis12, prefix=f"test:{new_id()}")
    log.append([b"read"], partition=0)
    log.ack(log.read("c1", count=10))
    log.append([b"erased-1", b"erased-2", b"kept"], partition=0)
    assert log.delete_where(lambda payload: payload.startswith(b"erased")) == 2
    assert log.stats().lag == 1
    assert [e.payload for e in log.read("c1", count=10)] == [b"kept"]
    assert log.stats().lag == 0


# ---- retention ---------------------------------------------------------------------------------------------


def test_purging_raw_heartbeats_past_retention_keeps_views_visits_tags_and_their_evidence(track: Track) -> None:
    c = customers(track)
    track.clock.now = time.time() - 91 * 86_400  # A read three months ago (tags evaluated as of then)
    track.app.aggregator.clock = lambda: datetime.fromtimestamp(track.clock.now, UTC)
    old = track.read(c.a_link, 130)
    track.settle()
    track.clock.now = time.time()
    recent = track.read(c.b_link, 40)
    track.settle()
    a_before, b_before = profile_facts(track, c.a_name, c.rep_md), profile_facts(track, c.b_name, c.rep_md)
    assert a_before[0] and a_before[1] and event_count(track.app, {view_id(old.view)}) == 13
    views_before = engaged(track.app)

    purged = track.app.service.purge_events(timedelta(days=90))

    assert purged == 13
    assert event_count(track.app, {view_id(old.view)}) == 0
    assert event_count(track.app, {view_id(recent.view)}) == 4  # inside the retention: kept
    assert engaged(track.app) == views_before == {view_id(old.view): 130_000, view_id(recent.view): 40_000}
    assert profile_facts(track, c.a_name, c.rep_md) == a_before
    assert profile_facts(track, c.b_name, c.rep_md) == b_before
    assert track.app.service.purge_events(timedelta(days=90)) == 0


# ---- IP addresses ---------------------------------------------------------------------------------------------


def test_client_ips_are_never_stored_in_the_clear_in_any_table_or_stream_entry(track: Track) -> None:
    c = customers(track)
    pause_consumer(track.app)  # so that every entry is still in the log when it is inspected (trim drops applied ones)
    try:
        v4 = track.read(c.a_link, 20, ip=IPV4)
        v6 = track.read(c.b_link, 20, ip=IPV6)
        payloads = log_payloads(track.app.event_log)
        texts = [IPV4, "203.0.113", IPV6, ipaddress.ip_address(IPV6).exploded, "2001:db8:85a3", "2001:0db8:85a3"]
        packed = [ipaddress.ip_address(IPV4).packed, ipaddress.ip_address(IPV6).packed]
        assert len(payloads) >= 2 * (1 + 2 + 1)
        assert [(t, p) for p in payloads for t in texts if t.encode() in p.lower()] == []
        assert [p for p in payloads for raw in packed if raw in p] == []
    finally:
        resume_consumer(track.app)
    track.settle()
    with track.app.db.read() as s:
        hashes = {v.id: v.ip_hash for v in s.scalars(select(ViewRow))}
    assert set(hashes) == {view_id(v4.view), view_id(v6.view)}
    assert all(hashes.values()) and len(set(hashes.values())) == 2, "the address reached the server (as a hash)"
    assert [(table, t) for table, text in table_texts(track.app) for t in texts if t in text.lower()] == []


# ---- the database down while consuming ----------------------------------------------------------------------------


def test_a_database_outage_keeps_entries_pending_and_applies_them_all_once_it_is_back(track: Track,
                                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    c = customers(track)
    track.settle()
    real_apply = track.app.aggregator.apply
    back, failures = threading.Event(), []

    def apply(events, orphans=None):  # type: ignore[no-untyped-def]
        if not back.is_set():
            failures.append(len(events))
            raise Unavailable("database unavailable (the test's outage)")
        return real_apply(events, orphans)

    monkeypatch.setattr(track.app.aggregator, "apply", apply)
    view = track.read(c.a_link, 30)  # acknowledged while the database is down
    wait_for(lambda: len(failures) >= 3, "the consumer to retry through the outage")
    stats = track.app.event_log.stats()
    assert stats.pending + stats.lag == 1 + 3 + 1 and stats.pending > 0 and stats.dead_letters == 0
    assert engaged(track.app) == {}
    back.set()
    track.settle()
    assert engaged(track.app) == {view_id(view.view): 30_000}
    assert event_count(track.app) == 3
    assert track.app.event_log.stats().dead_letters == 0
    assert profile_facts(track, c.a_name, c.rep_md)[1] == [("孩子的保险怎么配", 30, pytest.approx(track.clock.now, abs=60))]


# ---- real processes on the production backend -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """What the ingest acknowledged, and what every view's engaged time must come to."""

    expected_ms: dict[str, int]
    seqs: int  # distinct (view, seq) pairs


def send_reads(app: TrackingApp, settings: Settings, views: int, heartbeats: int, *, t0_ms: int) -> Sent:
    """``views`` readers, each sending ``heartbeats`` heartbeats 10 s apart (server time), round robin, one stream entry
    per heartbeat; every 4th is inflated (the server caps it), every 5th is replayed later (deduplicated)."""
    tokens = ShareTokens(list(settings.share_token_keys))
    token, _ = tokens.issue(new_id(), 1, new_id(), new_id(), team_id="t1")
    started = [app.ingest.start_view(token, f"visitor-{i:04d}", "Mozilla/5.0 (iPhone) MicroMessenger/8.0", "", "",
                                     now_ms=t0_ms).view for i in range(views)]
    expected = dict.fromkeys(started, 0)
    replays = []
    for seq in range(1, heartbeats + 1):
        for v in started:
            delta = 60_000 if seq % 4 == 0 else 3_000 + (seq * 517 + len(replays)) % 7_000
            hb = pb.Heartbeat(view=f"views/{v}", seq=seq, engaged_ms_delta=delta, max_scroll_percent=seq)
            assert app.ingest.record([hb], now_ms=t0_ms + seq * HEARTBEAT_INTERVAL_MS) == (1, 0)
            expected[v] += min(delta, MAX_DELTA_MS)
            if seq % 5 == 0:
                replays.append(hb)
    assert app.ingest.record(replays, now_ms=t0_ms + (heartbeats + 1) * HEARTBEAT_INTERVAL_MS)[1] == 0
    wall = heartbeats * HEARTBEAT_INTERVAL_MS + HEARTBEAT_INTERVAL_MS
    assert all(total < wall for total in expected.values()), "the wall-time cap never binds: the sum is the expectation"
    return Sent(expected, views * heartbeats)


def consumer_env(settings_env: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CONTENTOPS_", "MINIO_", "DATABASE_", "REDIS_", "TRACKING_"))}
    return {**keep, **settings_env, "PYTHONPATH": str(ROOT)}


def spawn_consumer(env: dict[str, str], name: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.tracking.consumer", "--name", name, "--min-idle-ms", "1000"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def redis12() -> Iterator[redis.Redis]:
    infra.require("Redis", infra.port_open(REDIS_URL, 6379), REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.mark.slow
def test_a_sigkilled_consumer_process_loses_and_double_counts_no_engaged_time(pg_url: str, redis12: redis.Redis,
                                                                               tmp_path: Path) -> None:
    env = {"DATABASE_URL": pg_url, "DATABASE_AUTO_MIGRATE": "0", "REDIS_URL": REDIS_URL,
           "CONTENTOPS_DATA_DIR": str(tmp_path / "data"), "CONTENTOPS_SECRET_KEY": "test-secret", "LOG_LEVEL": "INFO"}
    settings = load_settings(env)
    app = TrackingApp.build(settings, consume_in_process=False)
    assert isinstance(app.event_log, RedisEventLog) and app.event_log.prefix == DEFAULT_PREFIX  # what the process reads
    log = tmp_path / "consumers.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sent = send_reads(app, settings, views=40, heartbeats=25, t0_ms=int(time.time() * 1000))
        pending = lambda: {_s(c["name"]): int(c["pending"]) for c in redis12.xinfo_consumers(f"{DEFAULT_PREFIX}:0",  # noqa: E731
                                                                                               "tracking-aggregator")}
        victim = ""
        for attempt in range(5):  # a kill can land between a batch's ack and the next read: then it holds nothing; again
            name = f"c{attempt}"
            procs.append(spawn_consumer(consumer_env(env), name, log))
            wait_for(lambda n=name: procs[-1].poll() is not None or (event_count(app) > 0 and pending().get(n, 0) > 0),
                     f"{name} to have applied some and to hold more")
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait()
            assert procs[-1].returncode == -signal.SIGKILL, log.read_text()[-3000:]
            if pending().get(name, 0) > 0:
                victim = name
                break
        applied_before = event_count(app)
        assert victim and 0 < applied_before < sent.seqs, "killed mid-way, with entries in hand"

        held = redis12.xpending_range(f"{DEFAULT_PREFIX}:0", "tracking-aggregator", "-", "+", 1000, victim)
        wait_for(lambda: min(int(e["time_since_delivered"]) for e in redis12.xpending_range(
            f"{DEFAULT_PREFIX}:0", "tracking-aggregator", "-", "+", 1000, victim)) > 1_100, f"{victim}'s entries to be idle 1 s")
        procs.append(spawn_consumer(consumer_env(env), "reclaimer", log))  # reclaims at its start what is idle --min-idle-ms
        assert app.wait_applied(WAIT), f"the reclaimer did not apply the rest:\n{log.read_text()[-3000:]}"
        assert pending().get(victim, 0) == 0 and len(held) > 0, "the reclaimer took what the killed consumer held"
        assert engaged(app) == sent.expected_ms
        assert event_count(app) == sent.seqs
        assert app.event_log.stats().dead_letters == 0
    finally:
        for proc in procs:
            stop(proc)
        app.close()


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.mark.slow
def test_heartbeats_acknowledged_before_a_redis_crash_are_all_applied_after_its_restart(pg_url: str, tmp_path: Path) -> None:
    port = infra.free_port()
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    env = {"DATABASE_URL": pg_url, "DATABASE_AUTO_MIGRATE": "0", "REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "CONTENTOPS_DATA_DIR": str(tmp_path / "data"), "CONTENTOPS_SECRET_KEY": "test-secret"}
    settings = load_settings(env)
    with own_redis(redis_dir, port) as (_url, redis_proc):
        ingest = TrackingApp.build(settings, consume_in_process=False)
        try:
            sent = send_reads(ingest, settings, views=10, heartbeats=12, t0_ms=int(time.time() * 1000))
        finally:
            ingest.close()
        redis_proc.send_signal(signal.SIGKILL)  # no shutdown save: only the AOF remains
        redis_proc.wait()
    with own_redis(redis_dir, port):
        consumer = TrackingApp.build(settings, consume_in_process=True)
        try:
            assert consumer.wait_applied(WAIT), "the consumer did not apply the log"
            assert engaged(consumer) == sent.expected_ms
            assert event_count(consumer) == sent.seqs
            assert consumer.event_log.stats().dead_letters == 0
        finally:
            consumer.close()


def test_heartbeats_whose_start_a_dead_consumer_holds_wait_for_its_reclaim_and_are_not_dead_lettered(track: Track) -> None:
    """Found by make soak: a consumer died holding a view's start, and a live one dead-lettered the view's heartbeats
    after putting them back 50 times, well under a second on a quiet log, long before the group could reclaim the
    start (min_idle_ms). Now, after a few put-backs, the heartbeat's entry waits pending for that same reclaim."""
    c = customers(track)
    pause_consumer(track.app)
    stop = threading.Event()
    live = threading.Thread(target=run_consumer, args=(track.app.event_log, "live", track.app.handle_batch, stop),
                            kwargs={"block_ms": 50, "min_idle_ms": 2_000, "reclaim_interval_s": 0.2, "trim_interval_s": None})
    try:
        started = track.stub.StartView(pb.StartViewRequest(share_token=c.a_link, user_agent="Mozilla/5.0 (iPhone) "
                                                           "MicroMessenger/8.0"), metadata=track.edge)
        assert len(track.app.event_log.read("dead-consumer", count=10)) == 1  # it dies holding the start
        track.clock.advance(10)
        track.stub.RecordEngagement(iter([pb.RecordEngagementRequest(heartbeats=[pb.Heartbeat(
            view=started.view, seq=1, engaged_ms_delta=10_000, max_scroll_percent=50)])]), metadata=track.edge)
        live.start()
        wait_for(lambda: engaged(track.app).get(view_id(started.view)) == 10_000, "the heartbeat applied after the reclaim")
        assert track.app.event_log.stats().dead_letters == 0
    finally:
        stop.set()
        if live.is_alive():
            live.join(10)
        resume_consumer(track.app)
    track.settle()
    assert engaged(track.app)[view_id(started.view)] == 10_000
    assert track.app.event_log.stats().dead_letters == 0


def test_heartbeats_that_overtake_their_views_start_are_put_back_not_lost(track: Track) -> None:
    """With several consumers in a group, one may apply a view's heartbeats while another still holds its start."""
    c = customers(track)
    pause_consumer(track.app)
    try:
        started = track.stub.StartView(pb.StartViewRequest(share_token=c.a_link, user_agent="Mozilla/5.0 (iPhone) "
                                                           "MicroMessenger/8.0"), metadata=track.edge)
        held_start = track.app.event_log.read("slow-consumer", count=10)  # another consumer holds the start
        assert len(held_start) == 1
        track.clock.advance(10)
        track.stub.RecordEngagement(iter([pb.RecordEngagementRequest(heartbeats=[pb.Heartbeat(
            view=started.view, seq=1, engaged_ms_delta=10_000, max_scroll_percent=50)])]), metadata=track.edge)
        beats = track.app.event_log.read("fast-consumer", count=10)
        assert track.app.handle_batch(beats) == []  # nothing dead-lettered: the heartbeat was put back
        track.app.event_log.ack(beats)
        assert track.app.handle_batch(held_start) == []  # the start commits later
        track.app.event_log.ack(held_start)
    finally:
        resume_consumer(track.app)
    track.settle()
    assert engaged(track.app)[view_id(started.view)] == 10_000
