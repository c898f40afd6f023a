"""The tracking service under load: ingest, event -> tag lag, profile and leads reads (the issue's four targets).

Everything runs against ``python -m services.tracking`` in its own process, on
PostgreSQL (a fresh database, dropped afterwards) and Redis Streams (Redis db 10:
only the keys this benchmark makes are deleted), exactly what production runs;
the consumers are ``python -m services.tracking.consumer`` processes. Clients are
threads in this process, each with its own connection, on the same 2 cores.

1. Ingest. Views are started with StartView (a service-role token, as the web
   edge has), then N client threads each open RecordEngagement streams of
   ``per_stream`` messages of 500 heartbeats, every heartbeat for another view
   (as an edge batching many browsers sends them), pre-serialized so the clients
   spend their time on the wire, not in protobuf. No consumer runs: this is
   ingest alone. Afterwards every entry in the stream is read back and its
   heartbeats counted: they must equal what the server acknowledged (the server
   appends each message before it reads the next, and answers only after the
   last). The floor: the very payloads the server wrote, XADDed again with
   redis-py pipelines from as many threads, against the same Redis.
   Heartbeats are spread over enough views that none is throttled (2/s, burst
   120 per view per process); a throttled heartbeat would make the run invalid.
2. Event -> tag lag, with one consumer, then again with two in one group
   (fresh visitors each time). A feeder streams 5,000 heartbeats/s
   (a message of 250 every 50 ms) over ``lag_views`` views for ``lag_seconds``.
   Meanwhile, every ``sample_every`` seconds, a sampled contact who has read a
   post for 20 s in two earlier views of one visit (applied, no tag yet) sends
   one heartbeat of 10 s in a third view of that visit: 30 s engaged makes the
   "·关注" tag. The lag is from that call's ack to the first GetContactProfile
   (as the contact's rep) that shows the tag. One poller takes the sampled
   contacts in flight in turn, a call every ``POLL``, so watching costs the
   server the same whatever the lag; a lag is an upper bound by up to one round.
   The consumer's work grows with the distinct views in a batch, not with the
   heartbeats, so the feed is spread twice: over 1,000 views (5/s each, the
   fewest that stay under the per-view rate limit with room to spare), and over
   50,000 (20,000 with --quick), one heartbeat per 10 s each: what 5,000/s from
   real browsers is. Then once more at twice the rate (10,000/s, a heartbeat per
   5 s each) over the widest spread with the most consumers: the headroom.
3. GetContactProfile with 1,000,000 raw heartbeats in PostgreSQL (200,000 with
   --quick): 20 reps' contacts, views, visits, interest, lead scores and tags,
   computed with the domain's own functions, seeded with COPY, and 10 events per
   view with one INSERT ... SELECT; then ANALYZE (as autovacuum would). Random contacts, each
   called as its rep; the floor is the health Check on the same server, taking
   turns with it in rounds (bench/reads.py).
4. ListLeads, first page of 50, for a rep whose 5,000 contacts were all active
   this week (every one a candidate), same rounds.

``python -m bench.tracking [--quick]`` prints the rows on their own.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
import redis

from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.protos.contentops.tracking.v1 import tracking_pb2_grpc as pb_grpc
from services.shared.identity.domain import Role
from services.shared.identity.store import IdentityStore
from services.shared.ids import new_id
from services.shared.migrate import open_database
from services.shared.settings import load_settings
from services.shared.sharetoken import ShareTokens
from services.tracking.domain import interest, leads
from services.tracking.domain.engagement import ViewState
from services.tracking.streams import DEFAULT_PREFIX, RedisEventLog

from . import reads
from .common import (
    ROOT,
    Score,
    clean_environ,
    delete_redis_keys,
    ms,
    percentile,
    postgres_database,
    run_alone,
    run_clients,
    run_together,
    service_process,
    stop_process,
)

REDIS_DB = 10  # this benchmark's own Redis database (tests use 11-14, bench/campaign.py 15)
REDIS_URL = f"{(os.environ.get('BENCH_REDIS_URL') or 'redis://127.0.0.1:6379/0').rsplit('/', 1)[0]}/{REDIS_DB}"
FLOOR_KEY = "bench:tracking:xadd"
KEY_PATTERNS = (f"{DEFAULT_PREFIX}:*", "contentops:tracking:rl:*", "bench:tracking:*")
RECORD_ENGAGEMENT = "/contentops.tracking.v1.TrackingService/RecordEngagement"
PER_MESSAGE = 500
PER_VIEW = 100  # heartbeats per view in the ingest run: under the per-view burst of 120
EXPECTED_MS = 120_000  # every seeded post takes 2 minutes to read: 30 s engaged is well under the 3x cap
TOPICS = [("t-parenting", "早教"), ("t-insurance", "保险"), ("t-math", "数学思维"), ("t-english", "英语启蒙"),
          ("t-art", "美育"), ("t-health", "儿童健康"), ("t-camp", "营地"), ("t-finance", "家庭理财")]
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 MicroMessenger/8.0.47"

TARGET_INGEST = 50_000  # heartbeat events/s
TARGET_LAG = 5.0  # s, p95
TARGET_PROFILE = 0.010  # s, p99
TARGET_LEADS = 0.050  # s, p99
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Plan:
    ingest_events: int
    ingest_clients: int
    per_stream: int  # messages per RecordEngagement stream
    consumers: tuple[int, ...]  # the lag is measured once per count, in the same run
    lag_rate: int  # heartbeats/s fed while measuring the lag
    lag_seconds: float
    lag_views: tuple[int, ...]  # open views the lag feed spreads over: as tests of a batch's width
    headroom_rate: int  # once more at this rate, over the most views with the most consumers: how far past the target
    sample_every: float
    contacts: int
    views: int
    events_per_view: int
    lead_contacts: int
    calls: int
    max_seconds: float
    rounds: int
    warmup: int


FULL = Plan(ingest_events=1_000_000, ingest_clients=4, per_stream=20, consumers=(1, 2), lag_rate=5_000, lag_seconds=20,
            lag_views=(1_000, 50_000), headroom_rate=10_000, sample_every=0.5, contacts=20_000, views=100_000, events_per_view=10,
            lead_contacts=5_000, calls=2_000, max_seconds=20.0, rounds=4, warmup=20)
QUICK = Plan(ingest_events=200_000, ingest_clients=4, per_stream=20, consumers=(1, 2), lag_rate=5_000, lag_seconds=5,
             lag_views=(1_000, 20_000), headroom_rate=10_000, sample_every=0.25, contacts=8_000, views=20_000, events_per_view=10,
             lead_contacts=5_000, calls=300, max_seconds=4.0, rounds=2, warmup=5)
POLL = 0.02  # s between GetContactProfile polls (of the sampled contacts in turn)
LAG_LIMIT = 60.0  # s: a tag not seen by then counts as never seen (inf)
LIVE_REPS = 10  # reps whose contacts read during the ingest and lag runs
SEED_REPS = 20  # reps whose contacts' history is seeded for the reads
POSTS = 20


def bearer(secret: str) -> Metadata:
    return (("authorization", f"Bearer {secret}"),)


# ---- processes and stores --------------------------------------------------------------------------


def clean_redis() -> None:
    delete_redis_keys(REDIS_URL, KEY_PATTERNS)


def tracking_server(env: dict[str, str], log_path: Path) -> contextlib.AbstractContextManager[str]:
    """``python -m services.tracking`` on a loopback port."""
    return service_process("services.tracking", "TRACKING_GRPC_ADDR", env, log_path)


@contextlib.contextmanager
def consumers(env: dict[str, str], count: int, log_path: Path) -> Iterator[None]:
    """``count`` × ``python -m services.tracking.consumer`` in one group."""
    procs = []
    try:
        with log_path.open("ab") as log:
            for i in range(count):
                procs.append(subprocess.Popen([sys.executable, "-m", "services.tracking.consumer", "--name", f"bench-{i}"],
                                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=clean_environ(**env)))
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            stop_process(proc)


def wait_applied(event_log: RedisEventLog, procs_log: Path, timeout: float) -> float:
    """Seconds until the consumers have applied everything appended so far."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        stats = event_log.stats()
        if stats.lag == 0 and stats.pending == 0:
            return time.perf_counter() - began
        time.sleep(0.05)
    raise RuntimeError(f"consumers did not catch up within {timeout:.0f}s: {event_log.stats()}; "
                       f"log: {procs_log.read_text()[-1500:]}")


# ---- the world: reps, posts, share links -------------------------------------------------------------------


@dataclass
class World:
    env: dict[str, str]
    url: str  # psycopg URL of the database
    edge: Metadata
    tokens: ShareTokens
    posts: list[str]  # post ids, each with two topics (tracking_posts rows)
    reps: list[tuple[str, Metadata]] = field(default_factory=list)  # (rep id, that rep's token)

    @property
    def live_reps(self) -> list[tuple[str, Metadata]]:
        """Reps whose contacts read during the ingest and lag runs."""
        return self.reps[:LIVE_REPS]

    @property
    def seed_reps(self) -> list[tuple[str, Metadata]]:
        """Reps whose contacts' history is seeded for the reads; the first is the one with 5,000 contacts."""
        return self.reps[LIVE_REPS:]

    def share(self, post: str, rep: str) -> str:
        return self.tokens.issue(post, 1, rep, new_id())[0]


def build_world(env: dict[str, str], url: str, reps: int, posts: int) -> World:
    settings = load_settings(env)
    db = open_database(settings, migrate=True)
    try:
        identity = IdentityStore(db, 0)
        edge = bearer(identity.create_user("bench web edge", Role.SERVICE)[2])
        rep_ids = [new_id() for _ in range(reps)]
        rep_tokens = [bearer(identity.create_user(f"销售{i:02d}", Role.REP, f"reps/{r}")[2]) for i, r in enumerate(rep_ids)]
    finally:
        db.dispose()
    post_ids = [new_id() for _ in range(posts)]
    with psycopg.connect(url) as conn, conn.cursor().copy(
            "COPY tracking_posts (post_id, revision, title, topics, topic_names, expected_ms) FROM STDIN") as copy:
        for i, post in enumerate(post_ids):
            pair = [TOPICS[i % len(TOPICS)], TOPICS[(i * 3 + 1) % len(TOPICS)]]
            if pair[0] == pair[1]:
                pair = pair[:1]
            copy.write_row((post, 1, f"第 {i} 期：5岁小姑娘的创造力启蒙三步走", _json([t for t, _ in pair]),
                            _json([n for _, n in pair]), EXPECTED_MS))
    return World(env, url, edge, ShareTokens(list(settings.share_token_keys)), post_ids, list(zip(rep_ids, rep_tokens, strict=True)))


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def start_views(address: str, world: World, count: int, threads: int, prefix: str,
                visitors: Callable[[int], str] | None = None, shares: Callable[[int], str] | None = None) -> list[str]:
    """``count`` StartView calls from ``threads`` clients; the view names in order."""
    links = [world.share(p, r) for p in world.posts for r, _ in world.live_reps]
    visitor_of = visitors or (lambda i: f"{prefix}{i:08d}v")
    share_of = shares or (lambda i: links[i % len(links)])
    names: list[str] = [""] * count
    errors: list[str] = []

    def client(index: int) -> None:
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = pb_grpc.TrackingServiceStub(channel)
            for i in range(index, count, threads):
                try:
                    reply = stub.StartView(pb.StartViewRequest(
                        share_token=share_of(i), visitor_id=visitor_of(i), user_agent=UA,
                        client_ip=f"10.{(i >> 8) & 255}.{i & 255}.{7 + index}"), metadata=world.edge, timeout=30)
                except grpc.RpcError as err:
                    errors.append(f"{err.code().name}: {err.details()}")  # type: ignore[attr-defined]
                    return
                names[i] = reply.view

    run_clients(client, threads)
    if errors:
        raise RuntimeError(f"StartView failed: {errors[0]} ({len(errors)} clients failed)")
    return names


# ---- 1. ingest ----------------------------------------------------------------------------------------------------------


@dataclass
class Ingested:
    events: int
    wall: float
    accepted: int
    throttled: int
    in_redis: int
    entries: int
    floor_events_per_s: float
    floor_entries_per_s: float
    payload_bytes: float  # mean stream entry size

    @property
    def rate(self) -> float:
        return self.accepted / self.wall


def messages(views: list[str], first: int, count: int, per_message: int = PER_MESSAGE) -> list[bytes]:
    """``count`` heartbeats from event index ``first``, ``per_message`` a message: event k is view k % V's heartbeat
    k // V + 1."""
    out, v = [], len(views)
    for start in range(first, first + count, per_message):
        out.append(pb.RecordEngagementRequest(heartbeats=[
            pb.Heartbeat(view=views[k % v], seq=k // v + 1, engaged_ms_delta=10_000, max_scroll_percent=min(100, k // v * 5))
            for k in range(start, min(start + per_message, first + count))]).SerializeToString())
    return out


def bench_ingest(address: str, world: World, plan: Plan) -> Ingested:
    views = start_views(address, world, math.ceil(plan.ingest_events / PER_VIEW), 8, "ing")
    share = plan.ingest_events // plan.ingest_clients
    per_client = [messages(views, c * share, share) for c in range(plan.ingest_clients)]
    totals = [[0, 0] for _ in range(plan.ingest_clients)]
    errors: list[str] = []
    barrier = threading.Barrier(plan.ingest_clients + 1)

    def client(index: int) -> None:
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            call = channel.stream_unary(RECORD_ENGAGEMENT, request_serializer=None,
                                        response_deserializer=pb.RecordEngagementResponse.FromString)
            mine = per_client[index]
            try:  # warm-up: the first message on its own stream (counted in the total, not in the time)
                reply = call(iter(mine[:1]), metadata=world.edge, timeout=60)
                totals[index][0] += reply.accepted
                totals[index][1] += reply.throttled
            except grpc.RpcError as err:
                errors.append(f"warm-up: {err.code().name}: {err.details()}")  # type: ignore[attr-defined]
                barrier.abort()
                return
            barrier.wait()
            for i in range(1, len(mine), plan.per_stream):
                try:
                    reply = call(iter(mine[i:i + plan.per_stream]), metadata=world.edge, timeout=120)
                except grpc.RpcError as err:
                    errors.append(f"{err.code().name}: {err.details()}")  # type: ignore[attr-defined]
                    return
                totals[index][0] += reply.accepted
                totals[index][1] += reply.throttled

    workers = [threading.Thread(target=client, args=(i,)) for i in range(plan.ingest_clients)]
    wall = run_together(workers, barrier, errors, "ingest clients")
    if errors:
        raise RuntimeError(f"RecordEngagement failed: {errors[0]}")
    warmup_events = sum(min(PER_MESSAGE, share) for _ in range(plan.ingest_clients))
    accepted = sum(t[0] for t in totals)
    throttled = sum(t[1] for t in totals)
    payloads, in_redis = read_back()
    floor_events, floor_entries = xadd_floor(payloads, plan.ingest_clients, plan.per_stream)
    return Ingested(share * plan.ingest_clients, wall, accepted - warmup_events, throttled, in_redis, len(payloads),
                    floor_events, floor_entries, sum(len(p) for p, _ in payloads) / max(1, len(payloads)))


def read_back() -> tuple[list[tuple[bytes, int]], int]:
    """Every heartbeat entry in the event log (payload, heartbeats in it) and the heartbeats in all."""
    client = redis.Redis.from_url(REDIS_URL)
    out: list[tuple[bytes, int]] = []
    try:
        for key in sorted(k.decode() for k in client.scan_iter(match=f"{DEFAULT_PREFIX}:[0-9]*")):
            start = "-"
            while page := client.xrange(key, min=start, max="+", count=500):
                start = "(" + page[-1][0].decode()
                for _id, fields in page:
                    batch = pb.IngestBatch.FromString(fields[b"payload"])
                    beats = sum(1 for e in batch.events if e.WhichOneof("kind") == "heartbeat")
                    if beats:
                        out.append((fields[b"payload"], beats))
    finally:
        client.close()
    return out, sum(n for _, n in out)


def xadd_floor(payloads: list[tuple[bytes, int]], threads: int, depth: int) -> tuple[float, float]:
    """The same payloads XADDed by ``threads`` redis-py clients, ``depth`` per pipeline: (events/s, entries/s)."""
    parts = [payloads[i::threads] for i in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def client(mine: list[tuple[bytes, int]]) -> None:
        r = redis.Redis.from_url(REDIS_URL)
        try:
            r.ping()
            barrier.wait()
            for i in range(0, len(mine), depth):
                pipe = r.pipeline(transaction=False)
                for payload, _ in mine[i:i + depth]:
                    pipe.xadd(FLOOR_KEY, {"payload": payload})
                pipe.execute()
        finally:
            r.close()

    workers = [threading.Thread(target=client, args=(p,)) for p in parts]
    for w in workers:
        w.start()
    barrier.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    wall = time.perf_counter() - began
    r = redis.Redis.from_url(REDIS_URL)
    try:
        r.delete(FLOOR_KEY)
    finally:
        r.close()
    return sum(n for _, n in payloads) / wall, len(payloads) / wall


# ---- 2. event -> tag lag --------------------------------------------------------------------------------------------------


@dataclass
class Lagged:
    lags: list[float]  # sorted, seconds; inf for a sample never seen within the limit
    polls: list[float]  # sorted GetContactProfile latencies of the polls, seconds
    fed: int
    fed_wall: float
    throttled: int
    drain: float  # s after the feed stopped until the consumers had applied everything
    views: int
    rate: int  # heartbeats/s the feeder was paced at


@dataclass
class Sample:
    rep_token: Metadata
    contact: str  # reps/{rep}/contacts/{id}
    view: str  # the third view, to send the measured heartbeat in


def prepare_samples(address: str, world: World, count: int, prefix: str) -> list[Sample]:
    """Per sample: a visitor opens one post three times (one visit); the first two views read 10 s each."""
    reps = world.live_reps
    links = {(i % len(reps)): world.share(world.posts[i % len(world.posts)], reps[i % len(reps)][0]) for i in range(len(reps))}
    views = start_views(address, world, count * 3, 4, f"{prefix}sample", visitors=lambda i: f"{prefix}sample{i // 3:06d}x",
                        shares=lambda i: links[(i // 3) % len(reps)])
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TrackingServiceStub(channel)
        beats = [pb.Heartbeat(view=views[3 * s + j], seq=1, engaged_ms_delta=10_000, max_scroll_percent=40)
                 for s in range(count) for j in range(2)]
        reply = stub.RecordEngagement(iter([pb.RecordEngagementRequest(heartbeats=beats)]), metadata=world.edge, timeout=30)
        if reply.accepted != len(beats):
            raise RuntimeError(f"sample set-up: {reply.accepted}/{len(beats)} heartbeats accepted")
    samples = []
    for s in range(count):
        rep_id, token = reps[s % len(reps)]
        samples.append(Sample(token, f"{rep_id}|{prefix}sample{s:06d}x", views[3 * s + 2]))
    return samples


def resolve_contacts(url: str, samples: list[Sample]) -> list[Sample]:
    with psycopg.connect(url) as conn:
        out = []
        for s in samples:
            rep_id, visitor = s.contact.split("|")
            row = conn.execute("SELECT contact_id FROM tracking_visitor_contacts WHERE visitor_id = %s AND rep_id = %s",
                               (visitor, rep_id)).fetchone()
            if row is None:
                raise RuntimeError(f"sample visitor {visitor} has no contact after the consumers caught up")
            out.append(Sample(s.rep_token, f"reps/{rep_id}/contacts/{row[0]}", s.view))
    return out


def bench_lag(address: str, world: World, plan: Plan, event_log: RedisEventLog, log_path: Path, prefix: str,
              views: int, rate: int) -> Lagged:
    """The lag with the consumers running now, ``rate`` heartbeats/s spread over ``views`` open views; ``prefix``
    keeps this run's visitors apart from an earlier run's."""
    count = int(plan.lag_seconds / plan.sample_every)
    samples = prepare_samples(address, world, count, prefix)
    background = start_views(address, world, views, 4, prefix)
    wait_applied(event_log, log_path, 300)
    samples = resolve_contacts(world.url, samples)
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TrackingServiceStub(channel)
        for s in samples:
            if stub.GetContactProfile(pb.GetContactProfileRequest(name=s.contact), metadata=s.rep_token, timeout=30).tags:
                raise RuntimeError(f"{s.contact} has a tag before its measured heartbeat")
    per_tick = rate // 20  # a message every 50 ms
    ticks = int(plan.lag_seconds * 20)
    load = messages(background, 0, per_tick * ticks, per_tick)  # a message a tick: the rate is per_tick × 20/s
    fed = [0, 0]
    fed_until = [0.0]  # when the feeder's last stream was acknowledged
    errors: list[str] = []
    began = time.perf_counter() + 0.2

    def feeder() -> None:
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            call = channel.stream_unary(RECORD_ENGAGEMENT, request_serializer=None,
                                        response_deserializer=pb.RecordEngagementResponse.FromString)

            def paced(first: int, last: int) -> Iterator[bytes]:
                for i in range(first, last):
                    delay = began + i / 20 - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    yield load[i]

            for i in range(0, len(load), 20):  # one stream per second of load
                try:
                    reply = call(paced(i, min(i + 20, len(load))), metadata=world.edge, timeout=60)
                except grpc.RpcError as err:
                    errors.append(f"feeder: {err.code().name}: {err.details()}")  # type: ignore[attr-defined]
                    return
                fed[0] += reply.accepted
                fed[1] += reply.throttled
            fed_until[0] = time.perf_counter()

    pending: list[tuple[Sample, float]] = []  # (sample, when its heartbeat was acknowledged)
    lags: list[float] = []
    polls: list[float] = []
    lock = threading.Lock()
    done = threading.Event()

    def watcher() -> None:
        """One poller for every sample in flight, one GetContactProfile per POLL: a bounded load, whatever the lag."""
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = pb_grpc.TrackingServiceStub(channel)
            while True:
                with lock:
                    batch = list(pending)
                if not batch and done.is_set():
                    return
                for sample, acked in batch:
                    asked = time.perf_counter()
                    try:
                        profile = stub.GetContactProfile(pb.GetContactProfileRequest(name=sample.contact),
                                                         metadata=sample.rep_token, timeout=30)
                    except grpc.RpcError as err:
                        errors.append(f"GetContactProfile: {err.code().name}: {err.details()}")  # type: ignore[attr-defined]
                        profile = pb.ContactProfile()
                    now = time.perf_counter()
                    polls.append(now - asked)
                    tagged = any(t.label.endswith("·关注") for t in profile.tags)
                    if tagged or now - acked > LAG_LIMIT:
                        with lock:
                            pending.remove((sample, acked))
                            lags.append(now - acked if tagged else math.inf)
                    time.sleep(POLL)
                if not batch:
                    time.sleep(POLL)

    feed = threading.Thread(target=feeder)
    watch = threading.Thread(target=watcher)
    feed.start()
    watch.start()
    try:
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = pb_grpc.TrackingServiceStub(channel)
            for i, sample in enumerate(samples):
                delay = began + plan.sample_every * (i + 0.5) - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                beat = pb.Heartbeat(view=sample.view, seq=1, engaged_ms_delta=10_000, max_scroll_percent=60)
                reply = stub.RecordEngagement(iter([pb.RecordEngagementRequest(heartbeats=[beat])]), metadata=world.edge,
                                              timeout=30)
                acked = time.perf_counter()
                if reply.accepted != 1:
                    raise RuntimeError(f"sampled heartbeat not accepted: {reply}")
                with lock:
                    pending.append((sample, acked))
        feed.join()
        fed_wall = fed_until[0] - began
        drain = wait_applied(event_log, log_path, 300)
    finally:
        done.set()
        feed.join()
        watch.join()
    if errors:
        raise RuntimeError(errors[0])
    return Lagged(sorted(lags), sorted(polls), fed[0], fed_wall, fed[1], drain, views, rate)


# ---- 3, 4. reads over a seeded history -------------------------------------------------------------------------------------


@dataclass
class History:
    contacts: list[tuple[str, str]]  # (rep id, contact id)
    lead_rep: str
    events: int  # rows in tracking_events
    views: int
    seconds: float


def seed_history(world: World, plan: Plan, now: datetime) -> History:
    """Contacts of the seed reps with views, visits, events, interest, lead scores and tags, as the aggregator keeps them."""
    began = time.perf_counter()
    rng = random.Random(11)
    reps = [r for r, _ in world.seed_reps]
    lead_rep = reps[0]
    rep_of = [lead_rep if i < plan.lead_contacts else reps[1 + i % (len(reps) - 1)] for i in range(plan.contacts)]
    contact_ids = [new_id() for _ in range(plan.contacts)]
    owner = list(range(plan.contacts)) + [rng.randrange(plan.contacts) for _ in range(plan.views - plan.contacts)]
    with psycopg.connect(world.url) as conn:
        posts = {row[0]: (row[1], row[2], row[3]) for row in conn.execute(
            "SELECT post_id, title, topics::text, topic_names::text FROM tracking_posts")}
    info = {p: (title, tuple(json.loads(t)), dict(zip(json.loads(t), json.loads(n), strict=False))) for p, (title, t, n) in posts.items()}
    post_ids = sorted(info)
    shares = {(r, p): new_id()[2:] for r in reps for p in post_ids}  # 24 characters, like a share token's id
    visits: list[list[interest.Visit]] = [[] for _ in range(plan.contacts)]
    view_rows = io.StringIO()
    visit_rows = io.StringIO()
    for i, c in enumerate(owner):
        recent = rep_of[c] == lead_rep
        if i < plan.contacts and recent:  # every contact of the lead rep was active this week
            age = timedelta(seconds=rng.uniform(600, 6 * 86_400))
        else:
            age = timedelta(seconds=rng.uniform(600, (14 if recent else 60) * 86_400))
        started = now - age
        post = post_ids[rng.randrange(len(post_ids))]
        engaged = rng.choice((rng.randint(3_000, 30_000), rng.randint(30_000, 400_000)))
        view_id = f"{new_id()}-{rng.getrandbits(64):016x}"
        title, topics, _ = info[post]
        visits[c].append(interest.Visit(view_id, post, title, topics, started, engaged, EXPECTED_MS))
        start_ms = int(started.timestamp() * 1000)
        state = ViewState(view_id, start_ms, engaged, 80, engaged // 10_000 + 1, start_ms + engaged, start_ms + engaged + 1000,
                          engaged // 10_000 + 1)
        ended = started + timedelta(milliseconds=engaged)
        view_rows.write("\t".join((view_id, view_id, contact_ids[c], f"seed{c:08d}v", shares[(rep_of[c], post)], rep_of[c],
                                   post, "1", new_id(), started.isoformat(), str(engaged), "80", "t", "f", "", "", "",
                                   "WeChat", _json(state.to_dict()))) + "\n")
        visit_rows.write("\t".join((view_id, contact_ids[c], f"seed{c:08d}v", rep_of[c], post, "1", started.isoformat(),
                                    ended.isoformat(), str(engaged), "f")) + "\n")
    rules = interest.DEFAULT_RULES
    contact_rows, interest_rows = io.StringIO(), io.StringIO()
    for c, cid in enumerate(contact_ids):
        mine = visits[c]
        scores: dict[str, interest.DecayedScore] = {}
        lead = interest.DecayedScore()
        headline = max(mine, key=lambda v: interest.strength_key(interest.visit_weight(v), v.started_at, leads.LEAD_HALF_LIFE))
        last = max(mine, key=lambda v: v.started_at)
        names: dict[str, str] = {}
        for v in mine:
            w = interest.visit_weight(v)
            names.update(info[v.post_id][2])
            lead = lead.add(w, v.started_at, leads.LEAD_HALF_LIFE)
            for t in v.topics:
                scores[t] = scores.get(t, interest.DecayedScore()).add(w, v.started_at)
        for t, score in scores.items():
            interest_rows.write(f"{cid}\t{t}\t{score.value!r}\t{score.at.isoformat() if score.at else ''}\n")
        tags = interest.evaluate_tags(mine, now, rules, topic_names=names,
                                      scores={t: sc.value_at(now) for t, sc in scores.items()})
        tag_json = [{"topic": t.topic, "label": t.label, "score": round(t.score, 6), "evidence": [
            {"visit": e.visit_id, "post": e.post_id, "title": e.post_title, "at": e.read_at.isoformat(),
             "engaged_seconds": e.engaged_seconds, "completeness": round(e.completeness, 4)} for e in t.evidence]}
            for t in tags]
        assert lead.at is not None
        last_activity = max(v.started_at + timedelta(milliseconds=v.engaged_ms) for v in mine)
        contact_rows.write("\t".join((cid, rep_of[c], "", f"客户{c:05d}", "t", (now - timedelta(days=90)).isoformat(),
                                      last_activity.isoformat(), repr(lead.value), lead.at.isoformat(),
                                      repr(interest.strength_key(lead.value, lead.at, leads.LEAD_HALF_LIFE)),
                                      headline.visit_id, repr(interest.strength_key(interest.visit_weight(headline),
                                                                                    headline.started_at, leads.LEAD_HALF_LIFE)),
                                      last.visit_id, _json(tag_json).replace("\\", "\\\\"))) + "\n")
    with psycopg.connect(world.url) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY tracking_reps (rep_id, team_id) FROM STDIN") as copy:
                for r in reps:
                    copy.write_row((r, ""))
            with cur.copy("COPY tracking_shares (share_id, parent_share_id, post_id, revision, rep_id, copy_id, create_time) "
                          "FROM STDIN") as copy:
                for (r, p), sid in shares.items():
                    copy.write_row((sid, "", p, 1, r, new_id(), now - timedelta(days=90)))
            for table, columns, data in (
                ("tracking_contacts", "id, rep_id, team_id, display_name, named, create_time, last_activity, lead_value, "
                 "lead_at, lead_key, headline_visit, headline_key, last_visit, tags", contact_rows),
                ("tracking_views", "id, visit_id, contact_id, visitor_id, share_id, rep_id, post_id, revision, copy_id, "
                 "started_at, engaged_ms, max_scroll_percent, closed, bot, bot_reason, ip_hash, referrer_host, "
                 "user_agent_family, state", view_rows),
                ("tracking_visits", "id, contact_id, visitor_id, rep_id, post_id, revision, started_at, last_activity, "
                 "engaged_ms, bot", visit_rows),
                ("tracking_interest", "contact_id, topic, value, at", interest_rows),
            ):
                with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    copy.write(data.getvalue())
            with cur.copy("COPY tracking_visitor_contacts (visitor_id, rep_id, contact_id) FROM STDIN") as copy:
                for c, cid in enumerate(contact_ids):
                    copy.write_row((f"seed{c:08d}v", rep_of[c], cid))
            cur.execute(
                "INSERT INTO tracking_events (view_id, seq, engaged_ms, max_scroll_percent, received_at) "
                "SELECT v.id, g, 10000, LEAST(100, g * 10), v.started_at + g * interval '10 seconds' "
                "FROM tracking_views v CROSS JOIN generate_series(1, %s) AS g WHERE v.rep_id = ANY(%s)",
                (plan.events_per_view, reps))
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")
        events = conn.execute("SELECT count(*) FROM tracking_events").fetchone()[0]  # type: ignore[index]
        views = conn.execute("SELECT count(*) FROM tracking_views").fetchone()[0]  # type: ignore[index]
    return History(list(zip(rep_of, contact_ids, strict=True)), lead_rep, int(events), int(views), time.perf_counter() - began)


def get_contact_profile(world: World, history: History) -> reads.CallFactory:
    """A random contact of any seed rep each call, as that rep."""
    tokens = dict(world.seed_reps)

    def factory(channel: grpc.Channel, index: int) -> Callable[[], object]:
        stub = pb_grpc.TrackingServiceStub(channel)
        rng = random.Random(index)

        def call() -> object:
            rep, contact = history.contacts[rng.randrange(len(history.contacts))]
            return stub.GetContactProfile(pb.GetContactProfileRequest(name=f"reps/{rep}/contacts/{contact}"),
                                          metadata=tokens[rep], timeout=30)

        first = call()
        if not first.timeline or not first.topic_scores:  # type: ignore[attr-defined]
            raise AssertionError(f"GetContactProfile: an empty profile: {first}")
        return call

    return factory


def list_leads(world: World, history: History) -> reads.CallFactory:
    token = dict(world.seed_reps)[history.lead_rep]
    request = pb.ListLeadsRequest(parent=f"reps/{history.lead_rep}", page_size=50)

    def factory(channel: grpc.Channel, _index: int) -> Callable[[], object]:
        stub = pb_grpc.TrackingServiceStub(channel)
        first = stub.ListLeads(request, metadata=token, timeout=30)
        if len(first.leads) != 50 or not first.next_page_token or not first.leads[0].reason:
            raise AssertionError(f"ListLeads: expected a full page of leads with reasons, got {len(first.leads)}")
        return lambda: stub.ListLeads(request, metadata=token, timeout=30)

    return factory


def count_leads(world: World, history: History, address: str) -> int:
    """Every lead of the lead rep, page by page (all 5,000 must be candidates)."""
    token = dict(world.seed_reps)[history.lead_rep]
    total, page = 0, ""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TrackingServiceStub(channel)
        while True:
            reply = stub.ListLeads(pb.ListLeadsRequest(parent=f"reps/{history.lead_rep}", page_size=1000, page_token=page),
                                   metadata=token, timeout=60)
            total += len(reply.leads)
            page = reply.next_page_token
            if not page:
                return total


# ---- the rows ----------------------------------------------------------------------------------------------------------------


def lag_row(plan: Plan, lag: Lagged, count: int) -> dict[str, str]:
    seen = [x for x in lag.lags if math.isfinite(x)]
    p95 = percentile(lag.lags, 95)
    print(f"  lag p50 {percentile(lag.lags, 50):.2f}s p95 {p95:.2f}s max {lag.lags[-1]:.2f}s ({len(seen)}/{len(lag.lags)} "
          f"seen); fed {lag.fed / lag.fed_wall:,.0f}/s, {lag.throttled} throttled; drained {lag.drain:.2f}s after", flush=True)
    return {
        "figure": f"Event → tag visible in GetContactProfile, p95 of {len(lag.lags)} sampled contacts, "
                  f"{lag.rate:,} heartbeats/s for {plan.lag_seconds:.0f}s over {lag.views:,} views "
                  f"({lag.rate / lag.views:g}/s each), {count} consumer process{'es' if count > 1 else ''} — "
                  "PostgreSQL + Redis Streams",
        "measured": f"{p95:.2f} s",
        "target": f"≤ {TARGET_LAG:g} s" if lag.rate <= plan.lag_rate else f"— ({lag.rate / plan.lag_rate:g}× the target's rate)",
        "baseline": f"p50 {percentile(lag.lags, 50):.2f} s, max {lag.lags[-1]:.2f} s; fed {lag.fed / lag.fed_wall:,.0f}/s, "
                    f"{lag.throttled} throttled; backlog applied {lag.drain:.1f} s after the feed stopped; "
                    f"{len(lag.polls)} polls, p50 {ms(percentile(lag.polls, 50))}",
        **({"ratio": meets(p95 <= TARGET_LAG),
            "score": Score(f"event → tag lag p95, {lag.views:,} views, {count} consumer{'s' if count > 1 else ''}", p95, TARGET_LAG, "s")}
           if lag.rate <= plan.lag_rate else {"ratio": "—"}),
    }


def meets(ok: bool) -> str:
    return "meets target" if ok else "misses target"


def run(quick: bool) -> list[dict[str, str]]:
    plan = QUICK if quick else FULL
    rows: list[dict[str, str]] = []
    try:
        probe = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        probe.ping()
        probe.close()
    except redis.RedisError as err:
        return [{"figure": "Tracking service", "measured": "skipped", "target": "—",
                 "baseline": f"Redis at {REDIS_URL}: {err.__class__.__name__}: {err}", "ratio": "—"}]
    with tempfile.TemporaryDirectory(prefix="contentops-bench-tracking-") as tmp, contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_database())
        except Exception as err:  # noqa: BLE001 - reported as a row instead
            return [{"figure": "Tracking service — PostgreSQL", "measured": "skipped", "target": "—",
                     "baseline": f"{err.__class__.__name__}: {err}", "ratio": "—"}]
        clean_redis()
        stack.callback(clean_redis)
        root = Path(tmp)
        log = root / "tracking.log"
        env = {"CONTENTOPS_SECRET_KEY": "bench-secret", "CONTENTOPS_DATA_DIR": str(root / "data"), "DATABASE_URL": url,
               "REDIS_URL": REDIS_URL, "LOG_LEVEL": "WARNING", "DATABASE_AUTO_MIGRATE": "0"}
        world = build_world(env, url.replace("postgresql+psycopg://", "postgresql://"), LIVE_REPS + SEED_REPS, POSTS)
        address = stack.enter_context(tracking_server(env, log))

        print("  tracking ingest: RecordEngagement streams, no consumer ...", flush=True)
        ing = bench_ingest(address, world, plan)
        print(f"  ingest {ing.rate:,.0f} heartbeats/s ({ing.accepted:,} in {ing.wall:.2f}s), {ing.throttled} throttled, "
              f"{ing.in_redis:,} in Redis; XADD floor {ing.floor_events_per_s:,.0f}/s", flush=True)
        views = math.ceil(plan.ingest_events / PER_VIEW)
        intact = ing.in_redis == ing.accepted + plan.ingest_clients * PER_MESSAGE and ing.throttled == 0
        ratio = ing.rate / ing.floor_events_per_s
        rows.append({
            "figure": f"Tracking ingest: RecordEngagement, {plan.ingest_clients} clients × streams of {plan.per_stream} "
                      f"messages × {PER_MESSAGE} heartbeats over {views:,} views, no consumer — PostgreSQL + Redis Streams "
                      f"({ing.accepted:,} heartbeats in {ing.wall:.1f}s)",
            "measured": f"{ing.rate:,.0f} heartbeats/s",
            "target": f"≥ {TARGET_INGEST:,}/s, every event in Redis before ack",
            "baseline": f"redis-py XADD pipelines of the same {ing.entries:,} entries (~{ing.payload_bytes / 1024:.0f} KiB "
                        f"each), {plan.ingest_clients} threads × {plan.per_stream}: {ing.floor_events_per_s:,.0f} heartbeats/s",
            "ratio": f"{ratio:.3f} ({meets(ing.rate >= TARGET_INGEST)})",
            "score": Score("tracking ingest, heartbeats", ing.rate, TARGET_INGEST, "/s", higher_is_better=True,
                           floor=ing.floor_events_per_s),
        })
        rows.append({
            "figure": "↳ heartbeats in the Redis stream after the run / acknowledged (warm-up included); throttled",
            "measured": f"{ing.in_redis:,} / {ing.accepted + plan.ingest_clients * PER_MESSAGE:,}; {ing.throttled}",
            "target": "equal; 0", "baseline": "—", "ratio": "ok" if intact else "MISMATCH"})
        if not intact:
            raise RuntimeError(f"ingest: {ing.in_redis} heartbeats in Redis, {ing.accepted} acknowledged, "
                               f"{ing.throttled} throttled")
        clean_redis()  # the ingest run's entries are not the consumers' business

        event_log = RedisEventLog.from_url(REDIS_URL)
        stack.callback(event_log.close)
        runs = [(v, c, plan.lag_rate) for v in plan.lag_views for c in plan.consumers]
        runs.append((max(plan.lag_views), max(plan.consumers), plan.headroom_rate))
        for views, count, rate in runs:
            print(f"  tracking lag: {count} consumer(s), {rate:,} heartbeats/s over {views:,} views for "
                  f"{plan.lag_seconds:.0f}s ...", flush=True)
            with consumers(env, count, log):
                lag = bench_lag(address, world, plan, event_log, log, f"lag{views}v{count}c{rate}r", views, rate)
            rows.append(lag_row(plan, lag, count))
            if lag.throttled or not all(math.isfinite(x) for x in lag.lags):
                print(f"  warning: {lag.throttled} heartbeats throttled, {sum(not math.isfinite(x) for x in lag.lags)} tags "
                      f"never seen within {LAG_LIMIT:.0f}s", flush=True)

        print(f"  tracking reads: seeding {plan.contacts:,} contacts, {plan.views:,} views ...", flush=True)
        history = seed_history(world, plan, datetime.now(UTC))
        leads_total = count_leads(world, history, address)
        print(f"  seeded in {history.seconds:.1f}s: {history.events:,} events, {history.views:,} views; "
              f"the lead rep has {leads_total:,} leads", flush=True)
        if leads_total != plan.lead_contacts:
            raise RuntimeError(f"ListLeads: {leads_total} leads for the lead rep, expected {plan.lead_contacts}")
        calls = {"health Check (floor)": reads.health_check(), "GetContactProfile": get_contact_profile(world, history),
                 "ListLeads": list_leads(world, history)}
        loads = reads.interleaved(address, 1, calls, total=plan.calls, max_seconds=plan.max_seconds, rounds=plan.rounds,
                                  warmup=plan.warmup)
        for label, load in loads.items():
            print(f"  {label:<22} p50 {ms(percentile(load.latencies, 50)):>10}  p99 {ms(percentile(load.latencies, 99)):>10}"
                  f"  ({len(load.latencies)} calls)" + (f"  {load.errors} errors ({load.first_error})" if load.errors else ""),
                  flush=True)
        floor = loads["health Check (floor)"]
        for label, target, what in (
            ("GetContactProfile", TARGET_PROFILE, f"random contacts of {SEED_REPS} reps, {history.events:,} events, "
                                                  f"{history.views:,} views, {plan.contacts:,} contacts in PostgreSQL"),
            ("ListLeads", TARGET_LEADS, f"first page of 50, a rep with {plan.lead_contacts:,} contacts (all leads)"),
        ):
            load = loads[label]
            if load.errors:
                raise RuntimeError(f"{label}: {load.errors} errors, first: {load.first_error}")
            for q in (50, 99):
                value, base = percentile(load.latencies, q), percentile(floor.latencies, q)
                rows.append({
                    "figure": f"{label} p{q}, 1 client, {what} ({len(load.latencies)} calls)",
                    "measured": ms(value),
                    "target": f"≤ {target * 1000:g} ms" if q == 99 else "—",
                    "baseline": f"health Check p{q}: {ms(base)}",
                    "ratio": f"{value / base:.1f}×" + (f" ({meets(value <= target)})" if q == 99 else ""),
                    **({"score": Score(f"{label} p99", value * 1000, target * 1000, "ms", floor=base * 1000)} if q == 99 else {}),
                })
    return rows


if __name__ == "__main__":
    run_alone(__doc__, run)
