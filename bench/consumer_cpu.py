"""CPU per distinct view of the tracking consumer's apply path: consumer Python and the PostgreSQL backend, apart.

The lag benchmark (bench/tracking.py) measures wall time on a shared machine; this
measures what bounds it, CPU time, in process and without Redis or gRPC: a fresh
PostgreSQL database, ``views`` views started (StartView events, each view its own
visitor and so its own anonymous contact, spread over 10 reps and 20 posts of two
topics, as the lag benchmark's browser-cadence feed has them), then ``rounds``
rounds in which every view gets one heartbeat of 10 s (browser cadence: every
heartbeat in a batch is another view's), fed to ``Aggregator.handle_batch`` as
stream entries of 250 heartbeats, ``batch`` views per read batch (the consumer
reads 200 entries: up to 50,000 heartbeats, applied in transactions of 1,000
views). Reported per heartbeat round: this process's CPU (user + system) and the
PostgreSQL backends' (every backend connected to the database, read with psutil),
each divided by the views applied.

``python -m bench.consumer_cpu [--views N] [--rounds M] [--batch B] [--profile FILE]``
"""

from __future__ import annotations

import argparse
import cProfile
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psutil
import psycopg

from bench.common import PG_ADMIN_URL, postgres_database
from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.shared.db import Database
from services.shared.ids import new_id
from services.shared.migrate import upgrade_all
from services.tracking.aggregate import Aggregator
from services.tracking.models import PostInfoRow
from services.tracking.streams import Entry

REPS = 10
POSTS = 20
TOPICS = [f"topic{i}" for i in range(8)]
PER_ENTRY = 250  # heartbeats per stream entry (the lag benchmark's message)
INTERVAL_MS = 10_000
HOT_TABLES = ("tracking_views", "tracking_visits", "tracking_contacts", "tracking_interest")


@dataclass
class Cpu:
    python: float
    postgres: float


class Meter:
    """This process's CPU and that of every PostgreSQL backend connected to ``dbname`` (sampled before and after)."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.me = psutil.Process()
        self.admin = psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        self.backends: dict[int, psutil.Process] = {}

    def _pg(self) -> float:
        rows = self.admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.dbname,)).fetchall()
        for (pid,) in rows:
            if pid not in self.backends:
                try:
                    self.backends[pid] = psutil.Process(pid)
                except psutil.NoSuchProcess:
                    pass
        total = 0.0
        for pid, proc in list(self.backends.items()):
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                del self.backends[pid]
        return total

    def sample(self) -> Cpu:
        t = self.me.cpu_times()
        return Cpu(t.user + t.system, self._pg())

    def close(self) -> None:
        self.admin.close()


def start(view: str, visitor: str, rep: str, post: str, at_ms: int) -> pb.IngestEvent:
    return pb.IngestEvent(received_ms=at_ms, started=pb.ViewStarted(
        view=view, visitor_id=visitor, share_id=f"s{rep[-8:]}{post[-8:]}", post=post, revision=1, rep=rep, team="team1",
        copy_id=f"copy{rep[-8:]}", user_agent_family="WeChat", ip_hash="0" * 32, referrer_host="weixin.qq.com"))


def beat(view: str, seq: int, at_ms: int) -> pb.IngestEvent:
    return pb.IngestEvent(received_ms=at_ms, heartbeat=pb.Heartbeat(view=view, seq=seq, engaged_ms_delta=INTERVAL_MS,
                                                                    max_scroll_percent=min(100, seq * 5)))


def entries(events: list[pb.IngestEvent]) -> Iterator[Entry]:
    for i in range(0, len(events), PER_ENTRY):
        yield Entry(f"{i}-0", pb.IngestBatch(events=events[i:i + PER_ENTRY]).SerializeToString())


def measure(meter: Meter, work: Callable[[], None]) -> Cpu:
    before = meter.sample()
    work()
    after = meter.sample()
    return Cpu(after.python - before.python, after.postgres - before.postgres)


def run(views: int, rounds: int, batch: int, profile: str | None) -> None:
    with postgres_database() as url:
        db = Database(url, pool_size=2)
        upgrade_all(db, ("tracking",))
        posts = [new_id() for _ in range(POSTS)]
        reps = [new_id() for _ in range(REPS)]
        with db.write() as s:
            for i, post in enumerate(posts):
                pair = sorted({TOPICS[i % len(TOPICS)], TOPICS[(i * 3 + 1) % len(TOPICS)]})
                s.add(PostInfoRow(post_id=post, revision=1, title=f"第 {i} 期", topics=pair,
                                  topic_names=[f"话题{t}" for t in pair], expected_ms=120_000))
        t0 = int(time.time() * 1000) - (rounds + 1) * INTERVAL_MS
        now = [datetime.fromtimestamp(t0 / 1000, UTC)]
        agg = Aggregator(db, clock=lambda: now[0])
        names = [f"{new_id()}-{i:016x}" for i in range(views)]
        meter = Meter(url.rsplit("/", 1)[1])
        try:
            def feed(events: list[pb.IngestEvent]) -> None:
                for i in range(0, len(events), batch):
                    bad, _, retry = agg.handle_batch(list(entries(events[i:i + batch])))
                    if bad or retry:
                        raise RuntimeError(f"{len(bad)} dead-lettered, {len(retry)} put back")

            starts = [start(v, f"visitor{i:08d}", reps[i % REPS], posts[i % POSTS], t0 + i * 5_000 // views)
                      for i, v in enumerate(names)]
            cpu = measure(meter, lambda: feed(starts))
            print(f"starts: {views:,} views: python {cpu.python / views * 1000:.3f} ms/view, "
                  f"postgres {cpu.postgres / views * 1000:.3f} ms/view", flush=True)
            profiler = cProfile.Profile() if profile else None
            totals = Cpu(0.0, 0.0)
            for r in range(1, rounds + 1):
                at = t0 + r * INTERVAL_MS
                now[0] = datetime.fromtimestamp((at + INTERVAL_MS) / 1000, UTC)
                beats = [beat(v, r, at + i * 5_000 // views) for i, v in enumerate(names)]
                if profiler and r > 1:
                    profiler.enable()
                cpu = measure(meter, lambda b=beats: feed(b))  # type: ignore[misc]
                if profiler:
                    profiler.disable()
                if r > 1:  # the first round makes every visit's interest rows; the later ones are the steady state
                    totals = Cpu(totals.python + cpu.python, totals.postgres + cpu.postgres)
                print(f"round {r}: {views:,} views: python {cpu.python / views * 1000:.3f} ms/view, postgres "
                      f"{cpu.postgres / views * 1000:.3f} ms/view, total {(cpu.python + cpu.postgres) / views * 1000:.3f}",
                      flush=True)
            if rounds > 1:
                n = views * (rounds - 1)
                print(f"rounds 2..{rounds} (steady state): python {totals.python / n * 1000:.3f} ms/view, postgres "
                      f"{totals.postgres / n * 1000:.3f} ms/view, total {(totals.python + totals.postgres) / n * 1000:.3f} ms/view",
                      flush=True)
            if profiler and profile:
                profiler.dump_stats(profile)
                print(f"profile of rounds 2..{rounds} in {profile}")
        finally:
            meter.close()
            db.dispose()  # its backends exit and flush their statistics
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            for _ in range(20):  # a backend reports its counters as it exits, a moment after the client closed
                rows = conn.execute("SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = ANY(%s) "
                                    "ORDER BY relname", (list(HOT_TABLES),)).fetchall()
                if sum(r[1] for r in rows) >= views * rounds:
                    break
                time.sleep(0.1)
                conn.execute("SELECT pg_stat_clear_snapshot()")
            print("HOT updates: " + ", ".join(f"{name[len('tracking_'):]} {hot / max(1, upd):.0%} of {upd:,}" for name, upd, hot in rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.consumer_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=50_000, help="heartbeats per handle_batch call (a consumer read)")
    parser.add_argument("--profile", help="write a cProfile of the heartbeat rounds after the first here")
    args = parser.parse_args(argv)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    run(args.views, args.rounds, args.batch, args.profile)


if __name__ == "__main__":
    main()
