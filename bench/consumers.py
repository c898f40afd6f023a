"""Scale-out of the tracking ingest: several consumer processes in one group share one backlog, partitioned by viewer.

Setup (not timed): a fresh PostgreSQL database; ``python -m services.tracking``
on loopback with the event log spread over PARTITIONS Redis streams (crc32 of
the viewer, ``TRACKING_STREAM_PARTITIONS``), this benchmark's own Redis
database; ``views`` StartView calls, applied by two consumers.

Then, for each consumer count in turn (1, 2, 4): that many ``python -m
services.tracking.consumer`` processes start in one group and, once each has
logged that it reads, a burst of ``rounds`` heartbeats per view is acknowledged
by RecordEngagement as fast as 4 clients can send them (round r holds every
view's r-th heartbeat, so each stream entry's heartbeats are all different
views, as at browser cadence, where a view sends one every 10 s); the clock runs
from the first heartbeat sent until every partition is read and acknowledged. Afterwards the database must hold exactly what was
acknowledged: one stored event per (view, seq) with its 10,000 engaged
milliseconds, so 0 lost and 0 counted twice, and each consumer's share
of the entries is read from its own log. CPU is read per process (psutil):
the consumers', and PostgreSQL's (every ``postgres`` process on the machine).

On this 2-core machine the consumers share the cores with PostgreSQL and Redis,
so more consumers cannot go much faster here; what the run shows is that the
group splits the work without loss or double counting, and the CPU each view
costs, from which the README's scale-out plan works out the consumers and cores
for 10× the single-machine ingest rate.

``python -m bench.consumers [--quick]`` prints the rows on their own.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import psycopg
import redis

from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.tracking.streams import DEFAULT_PREFIX, RedisEventLog

from .common import ROOT, clean_environ, delete_redis_keys, postgres_database, run_alone, run_clients, stop_process
from .tracking import LIVE_REPS, POSTS, RECORD_ENGAGEMENT, TARGET_INGEST, build_world, messages, start_views, tracking_server

REDIS_DB = 7  # this benchmark's own Redis database (bench/tracking.py 10, bench/web.py 8, bench/campaign.py 15)
REDIS_URL = f"{(os.environ.get('BENCH_REDIS_URL') or 'redis://127.0.0.1:6379/0').rsplit('/', 1)[0]}/{REDIS_DB}"
KEY_PATTERNS = (f"{DEFAULT_PREFIX}:*", "contentops:tracking:rl:*")
PARTITIONS = 4
DELTA_MS = 10_000  # every heartbeat's engaged delta (bench.tracking.messages)
FEEDERS = 4
PER_STREAM = 20  # messages per RecordEngagement stream
STARTED = re.compile(r"tracking consumer \S+ started")
STOPPED = re.compile(r"tracking consumer (\S+) stopped: ConsumerStats\(batches=(\d+), acked=(\d+)")


@dataclass(frozen=True)
class Plan:
    views: int
    rounds: int  # heartbeats per view in each drain's backlog
    consumers: tuple[int, ...]


FULL = Plan(views=50_000, rounds=3, consumers=(1, 2, 4))
QUICK = Plan(views=4_000, rounds=2, consumers=(1, 2, 4))


@dataclass
class Drain:
    consumers: int
    heartbeats: int  # acknowledged by RecordEngagement
    fed: float  # s the backlog took to be acknowledged (the consumers running): the single-machine ingest rate
    wall: float  # first heartbeat sent -> every one applied and acknowledged
    lost: int  # acknowledged heartbeats the database does not show (negative: counted twice)
    extra_ms: int  # engaged ms stored beyond the acknowledged deltas (negative: missing)
    shares: dict[str, int]  # consumer name -> entries it acknowledged
    cpu_consumers: float  # s, all consumer processes
    cpu_postgres: float  # s, every postgres process

    @property
    def rate(self) -> float:
        return self.heartbeats / self.wall


def totals(url: str) -> tuple[int, int]:
    """(engaged ms of every stored heartbeat, stored heartbeats): one row per applied (view, seq).

    Not the views' engaged time: that is capped by the wall time each view has been open, and a backlog is fed
    faster than a reader reads.
    """
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(sum(engaged_ms), 0), count(*) FROM tracking_events").fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def postgres_cpu() -> float:
    seconds = 0.0
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "postgres":
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                seconds += t.user + t.system
    return seconds


def feed(address: str, edge: tuple[tuple[str, str], ...], views: list[str], first: int, count: int) -> int:
    """Acknowledge ``count`` heartbeats (event index ``first`` on) over RecordEngagement streams; the number accepted."""
    payloads = messages(views, first, count)
    accepted = [0] * FEEDERS
    errors: list[str] = []

    def client(index: int) -> None:
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            call = channel.stream_unary(RECORD_ENGAGEMENT, request_serializer=None,
                                        response_deserializer=pb.RecordEngagementResponse.FromString)
            mine = payloads[index::FEEDERS]
            for i in range(0, len(mine), PER_STREAM):
                try:
                    reply = call(iter(mine[i:i + PER_STREAM]), metadata=edge, timeout=120)
                except grpc.RpcError as err:
                    errors.append(f"{err.code().name}: {err.details()}")  # type: ignore[attr-defined]
                    return
                if reply.throttled:
                    errors.append(f"{reply.throttled} heartbeats throttled")
                accepted[index] += reply.accepted

    run_clients(client, FEEDERS)
    if errors:
        raise RuntimeError(f"RecordEngagement: {errors[0]}")
    return sum(accepted)


@contextlib.contextmanager
def consumer_group(env: dict[str, str], names: list[str], log_path: Path) -> Iterator[list[psutil.Process]]:
    """``python -m services.tracking.consumer`` processes in one group; stopped with SIGTERM (they log their stats)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with log_path.open("ab") as log:
            for name in names:
                procs.append(subprocess.Popen([sys.executable, "-m", "services.tracking.consumer", "--name", name],
                                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                              env=clean_environ(**{**env, "LOG_LEVEL": "INFO", "LOG_FORMAT": "text"})))
        yield [psutil.Process(p.pid) for p in procs]
    finally:
        for proc in procs:
            stop_process(proc)


def applied(event_log: RedisEventLog) -> bool:
    stats = event_log.stats()
    return stats.lag == 0 and stats.pending == 0


def drain(env: dict[str, str], url: str, address: str, edge: tuple[tuple[str, str], ...], views: list[str], count: int,
          index: int, rounds: int, event_log: RedisEventLog, log_dir: Path) -> Drain:
    before = totals(url)
    log_path = log_dir / f"consumers-{count}.log"
    names = [f"scale{count}-{i}" for i in range(count)]
    with consumer_group(env, names, log_path) as procs:
        deadline = time.monotonic() + 60
        while len(STARTED.findall(log_path.read_text(errors="replace"))) < count:  # imports done, reading the group
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumers did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        cpu0, pg0 = [cpu_seconds(p) for p in procs], postgres_cpu()
        began = time.perf_counter()
        heartbeats = feed(address, edge, views, first=index * rounds * len(views), count=rounds * len(views))
        fed = time.perf_counter() - began
        while not applied(event_log):
            if time.perf_counter() - began > 900:
                raise RuntimeError(f"{count} consumers did not drain within 900 s: {event_log.stats()}")
            time.sleep(0.05)
        wall = time.perf_counter() - began
        cpu = sum(cpu_seconds(p) - c for p, c in zip(procs, cpu0, strict=True))
        pg = postgres_cpu() - pg0
    shares = {m.group(1): int(m.group(3)) for m in STOPPED.finditer(log_path.read_text(errors="replace"))}
    after = totals(url)
    return Drain(count, heartbeats, fed, wall, heartbeats - (after[1] - before[1]), (after[0] - before[0]) - heartbeats * DELTA_MS,
                 shares, cpu, pg)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def run(quick: bool) -> list[dict[str, str]]:
    plan = QUICK if quick else FULL
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as err:
        return [{"figure": "Tracking consumers in one group", "measured": "skipped", "target": "—",
                 "baseline": f"Redis at {REDIS_URL}: {err}", "ratio": "—"}]
    with tempfile.TemporaryDirectory(prefix="contentops-bench-consumers-") as tmp, contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database())
        pg_url = url.replace("postgresql+psycopg://", "postgresql://")
        delete_redis_keys(REDIS_URL, KEY_PATTERNS)
        stack.callback(delete_redis_keys, REDIS_URL, KEY_PATTERNS)
        root = Path(tmp)
        env = {"CONTENTOPS_SECRET_KEY": "bench-secret", "CONTENTOPS_DATA_DIR": str(root / "data"), "DATABASE_URL": url,
               "REDIS_URL": REDIS_URL, "LOG_LEVEL": "WARNING", "DATABASE_AUTO_MIGRATE": "0",
               "TRACKING_STREAM_PARTITIONS": str(PARTITIONS)}
        world = build_world(env, pg_url, LIVE_REPS, POSTS)
        address = stack.enter_context(tracking_server(env, root / "tracking.log"))
        event_log = RedisEventLog.from_url(REDIS_URL, partitions=PARTITIONS)
        stack.callback(event_log.close)
        began = time.perf_counter()
        views = start_views(address, world, plan.views, 8, "scale")
        with consumer_group(env, ["seed-0", "seed-1"], root / "seed.log"):
            while not applied(event_log):
                time.sleep(0.1)
        print(f"  consumers: {plan.views:,} views started and applied in {time.perf_counter() - began:.1f}s; "
              f"{PARTITIONS} partitions", flush=True)
        drains: list[Drain] = []
        for index, count in enumerate(plan.consumers):
            d = drain(env, pg_url, address, world.edge, views, count, index, plan.rounds, event_log, root)
            drains.append(d)
            print(f"  {count} consumer(s): {d.heartbeats:,} heartbeats over {plan.views:,} views applied in {d.wall:.1f}s "
                  f"({d.rate:,.0f}/s); lost {d.lost}, extra ms {d.extra_ms}; shares {d.shares}; CPU consumers "
                  f"{d.cpu_consumers:.1f}s, PostgreSQL {d.cpu_postgres:.1f}s", flush=True)
            if d.lost or d.extra_ms or sum(d.shares.values()) == 0 or len(d.shares) != count:
                raise RuntimeError(f"{count} consumers: {d}")
        return rows(plan, drains)


def rows(plan: Plan, drains: list[Drain]) -> list[dict[str, str]]:
    out = []
    one = drains[0]
    for d in drains:
        total = sum(d.shares.values())
        split = " / ".join(f"{100 * n / total:.0f}%" for n in sorted(d.shares.values(), reverse=True))
        out.append({
            "figure": f"Tracking consumers in one group, {d.consumers} process{'es' if d.consumers > 1 else ''}: a backlog of "
                      f"{d.heartbeats:,} heartbeats over {plan.views:,} views (each entry's heartbeats all different "
                      f"views), {PARTITIONS} partitions by viewer",
            "measured": f"{d.rate:,.0f} heartbeats/s",
            "target": "0 lost, 0 counted twice",
            "baseline": f"applied in {d.wall:.1f} s (acknowledged in {d.fed:.1f} s); entries per consumer {split}; CPU per heartbeat: "
                        f"consumers {1000 * d.cpu_consumers / d.heartbeats:.3f} ms, PostgreSQL "
                        f"{1000 * d.cpu_postgres / d.heartbeats:.3f} ms",
            "ratio": f"{d.rate / one.rate:.2f}× 1 consumer; lost {d.lost}, extra ms {d.extra_ms}",
        })
    cpu = min((d.cpu_consumers + d.cpu_postgres) / d.heartbeats for d in drains)
    consumer_cpu = min(d.cpu_consumers / d.heartbeats for d in drains)
    ingest = max(d.heartbeats / d.fed for d in drains)
    ten_x = 10 * ingest
    out.append({
        "figure": f"↳ scale-out: cores to apply 10 × the measured single-machine ingest rate ({ingest:,.0f} heartbeats/s "
                  f"acknowledged into {PARTITIONS} partitions, same run) at browser cadence (EXTRAPOLATED)",
        "measured": f"{ten_x * cpu:.0f} cores ({ten_x * consumer_cpu:.0f} consumer processes)",
        "target": "—",
        "baseline": f"{ten_x:,.0f}/s × {1000 * cpu:.3f} ms CPU per heartbeat (consumers + PostgreSQL, best run above)",
        "ratio": f"ingest target {TARGET_INGEST:,}/s",
    })
    return out


if __name__ == "__main__":
    run_alone(__doc__, run)
