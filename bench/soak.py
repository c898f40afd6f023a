"""``make soak`` / ``python -m bench.soak [--minutes M | --seconds S]``: every process for real, under load, with faults.

Every process of deploy/Procfile runs on its own (content, distribution and tracking servers, the web edge, two
Celery worker nodes of one pool process each, Celery beat, two tracking consumers), on stores of the soak's own: a
PostgreSQL cluster made for the run (``pg_createcluster``, dropped afterwards), a Redis with AOF fsynced on every
write, and S3 (moto in its own process, or MinIO when MINIO_ENDPOINT is set). All on loopback.

For the whole run, at once (bench/soak_load.py): an editor publishes a campaign every ``--campaign-every`` seconds
(1-3 new 1080 px photos, one team of ``--reps-per-team`` reps); readers open share pages on the web edge at
``--page-rate`` and send beacons (``--beacon-rate`` in all); batched RecordEngagement heartbeats at
``--heartbeat-rate``. Meanwhile, spread over the run (each at least once; twice from 8 minutes on):

- a Celery worker node SIGKILLed (with its pool process) while a campaign renders, and a new one started;
- Redis SIGKILLed, and started again on the same port and folder (the AOF is all it has);
- a tracking consumer SIGKILLed while it holds entries, and a new one (a new name) started: the group reclaims
  what the dead one held (``--min-idle-ms``);
- PostgreSQL stopped for ``--pg-down`` seconds, then started.

Then the load stops, the consumers drain and the campaigns finish (the beat's sweep re-queues what a killed worker
held once its lease runs out), and the report (printed, and written to bench/out/soak.md) checks: every acknowledged heartbeat and beacon
stored once with its engaged time, nothing double-counted; exactly one ready copy per targeted rep per campaign;
clients saw only UNAVAILABLE / 503, and only during an outage; no process died on its own. It also gives the rates
reached, the fault timeline, and every process's memory at the start, at the end and at its peak, and the CPU it used.
The exit status is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import kombu.exceptions
import psutil
import psycopg
import redis

from services.protos.contentops.distribution.v1 import distribution_pb2 as dpb
from services.protos.contentops.distribution.v1 import distribution_pb2_grpc as dpb_grpc
from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb
from services.shared.celery_app import make_celery
from services.shared.healthcheck import check
from services.shared.identity.domain import Role
from services.shared.identity.store import IdentityStore
from services.shared.migrate import open_database
from services.shared.settings import load_settings
from services.tracking.streams import DEFAULT_GROUP, DEFAULT_PREFIX, RedisEventLog, stream_key

from . import soak_report as report
from .common import ROOT, clean_environ, free_port, percentile, s3_endpoint
from .soak_infra import AofRedis, Fleet, PgCluster, Usage, postgres_cluster, wait_until
from .soak_load import (
    Campaign,
    Clock,
    Editor,
    Errors,
    HeartbeatLoad,
    HeartbeatPlan,
    Ledger,
    TokenPool,
    WebPlan,
    WebProcess,
)

OUT = ROOT / "bench" / "out" / "soak.md"
VENV_BIN = ROOT / ".venv" / "bin"
PY = sys.executable
FAULTS = ("worker", "redis", "consumer", "postgres")
SLOTS = (0.1, 0.3, 0.5, 0.7)  # where in each round each fault goes
ROUND_SECONDS = 240  # one round of the four faults per this much of the run (at least one)
RENDER_CHUNK = "contentops.distribution.render_chunk"
STREAM = stream_key(DEFAULT_PREFIX, 0)  # TRACKING_STREAM_PARTITIONS is 1 here
SAMPLE_EVERY = 5.0  # s between memory samples and process checks
DRAIN_SECONDS = 300  # at most, after the load, for the consumers and the campaigns to finish (never a speed check)


@dataclass(frozen=True)
class Options:
    seconds: float
    page_rate: float
    beacon_rate: float
    beacon_interval: float
    heartbeat_rate: float
    heartbeat_interval: float
    beats_per_view: int
    campaign_every: float
    teams: int
    reps_per_team: int
    image_side: int
    consumers: int
    workers: int
    redis_down: float
    pg_down: float
    min_idle_ms: int
    resweep_seconds: float
    lease_seconds: float
    grace: float
    out: Path
    keep_logs: Path | None


TARGET_RATES = {"pages": 500, "beacons": 10_000, "heartbeats": 5_000}  # per second, from the issues
CPU_SIDES = {"customer traffic": ("web", "tracking", "distribution", "consumer", "redis", "postgres"),
             "campaigns": ("content", "worker", "beat", "moto"), "load generator": ("load generator",)}


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=(__doc__ or "").split("\n\n")[0])
    length = p.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES") or 10), help="load duration")
    length.add_argument("--seconds", type=float, help="load duration in seconds (short runs: the test)")
    # Defaults: a tenth of the issues' targets (500 pages/s, 10,000 beacons/s, 5,000 heartbeats/s), about what 2 cores
    # carry with every process, the stores and this load generator on them (the report's CPU column says where it goes).
    p.add_argument("--page-rate", type=float, default=50, help="customer pages/s through the web edge")
    p.add_argument("--beacon-rate", type=float, default=1000, help="beacons/s through the web edge (per page: rate / page rate)")
    p.add_argument("--beacon-interval", type=float, default=2.0, help="s between one reader's beacons")
    p.add_argument("--heartbeat-rate", type=float, default=500, help="heartbeats/s over gRPC RecordEngagement (batched)")
    p.add_argument("--heartbeat-interval", type=float, default=5.0, help="s between one view's heartbeats")
    p.add_argument("--beats-per-view", type=int, default=12)
    p.add_argument("--campaign-every", type=float, help="s between campaigns (default 60, less on short runs)")
    p.add_argument("--teams", type=int, default=4)
    p.add_argument("--reps-per-team", type=int, default=150, help="reps a campaign targets (one team)")
    p.add_argument("--image-side", type=int, default=1080, help="px of the campaign photos")
    p.add_argument("--consumers", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="Celery worker nodes (one pool process each)")
    p.add_argument("--redis-down", type=float, default=5.0, help="s between Redis's SIGKILL and its restart")
    p.add_argument("--pg-down", type=float, default=15.0, help="s PostgreSQL is stopped")
    p.add_argument("--min-idle-ms", type=int, default=10_000, help="consumers reclaim entries idle this long on another")
    p.add_argument("--resweep-seconds", type=float, default=20.0, help="CAMPAIGN_RESWEEP_SECONDS: copies never taken re-queued")
    p.add_argument("--lease-seconds", type=float, default=60.0, help="CAMPAIGN_LEASE_SECONDS: a dead worker's copies re-queued")
    p.add_argument("--grace", type=float, default=15.0, help="s after an outage ends when clients may still see UNAVAILABLE")
    p.add_argument("--out", type=Path, default=OUT, help="where the Markdown report goes")
    p.add_argument("--keep-logs", type=Path, help="copy every process's log here at the end")
    a = p.parse_args(argv)
    seconds = a.seconds if a.seconds is not None else a.minutes * 60
    return Options(seconds, a.page_rate, a.beacon_rate, a.beacon_interval, a.heartbeat_rate, a.heartbeat_interval,
                   a.beats_per_view, a.campaign_every or min(60.0, max(10.0, seconds / 5)), a.teams, a.reps_per_team,
                   a.image_side, a.consumers, a.workers, a.redis_down, a.pg_down, a.min_idle_ms, a.resweep_seconds,
                   a.lease_seconds, a.grace, a.out, a.keep_logs)


def fault_plan(seconds: float) -> list[tuple[float, str]]:
    """(seconds into the load, fault): every fault once per round, rounds spread evenly over the run."""
    rounds = max(1, int(seconds // ROUND_SECONDS))
    length = seconds / rounds
    return [(r * length + slot * length, kind) for r in range(rounds) for slot, kind in zip(SLOTS, FAULTS, strict=True)]


@dataclass
class Stores:
    cluster: PgCluster
    database_url: str
    redis: AofRedis
    s3_label: str
    pg_starts: int = 1


@dataclass
class World:
    admin: tuple[tuple[str, str], ...]
    editor: tuple[tuple[str, str], ...]
    edge_token: str
    client: tuple[tuple[str, str], ...]  # the heartbeat client (a service token, as the edge has)
    teams: dict[str, list[str]] = field(default_factory=dict)  # team id -> rep ids


def settled(condition: Callable[[], bool], seconds: float, every: float) -> float | None:
    """Seconds until ``condition`` held; None if not within ``seconds``."""
    try:
        return wait_until(condition, "", seconds, every)
    except RuntimeError:
        return None


def tasks_in_hand(log: str, task: str) -> int:
    """Tasks a Celery worker's log shows received but not finished (succeeded, failed, retried)."""
    received = set(re.findall(rf"Task {re.escape(task)}\[([0-9a-f-]+)\] received", log))
    done = set(re.findall(rf"Task {re.escape(task)}\[([0-9a-f-]+)\] (?:succeeded|raised|retry)", log))
    return len(received - done)


def after(seconds: float | None) -> str:
    return f"{seconds:.1f} s after" if seconds is not None else f"NOT within {DRAIN_SECONDS} s of"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


class Soak:
    def __init__(self, opts: Options, tmp: Path, stores: Stores, s3_env: dict[str, str]) -> None:
        self.opts = opts
        self.tmp = tmp
        self.stores = stores
        self.addresses = {k: f"127.0.0.1:{free_port()}" for k in ("CONTENT_GRPC_ADDR", "DISTRIBUTION_GRPC_ADDR",
                                                                  "TRACKING_GRPC_ADDR", "WEB_ADDR")}
        self.env = clean_environ(
            DATABASE_URL=stores.database_url, DATABASE_AUTO_MIGRATE="0", REDIS_URL=stores.redis.url, **s3_env,
            CONTENTOPS_DATA_DIR=str(tmp / "data"), CONTENTOPS_SECRET_KEY="soak-secret", LOG_LEVEL="WARNING",
            SCHEDULER_INTERVAL_SECONDS="5", CAMPAIGN_RESWEEP_SECONDS=f"{opts.resweep_seconds:g}",
            CAMPAIGN_LEASE_SECONDS=f"{opts.lease_seconds:g}", SHUTDOWN_GRACE_SECONDS="5",
            PYTHONPATH=str(ROOT), PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}", **self.addresses)
        self.fleet = Fleet(self.env, ROOT, tmp / "logs")
        self.usage = Usage()
        self.clock = Clock()
        self.errors = Errors(self.clock)
        self.ledger = Ledger(self.clock)
        self.web_pid: int | None = None  # the web readers' process (WebProcess), once the load began
        self.faults: list[report.Fault] = []
        self.backlog: list[tuple[float, int, int]] = []  # (monotonic, lag, pending) of the tracking log
        self.dead_letters = 0
        self.dead_reasons: Counter[str] = Counter()
        self.passed = False
        self.celery = make_celery(load_settings(self.env))
        self._closing: list[Callable[[], None]] = []

    # ---- processes ---------------------------------------------------------------------------------------------------------

    def start_processes(self) -> None:
        for role in ("content", "distribution", "tracking"):
            self.fleet.start(role, [PY, "-m", f"services.{role}"])
        self.fleet.start("web", [PY, "-m", "services.web"], env={"WEB_SERVICE_TOKEN": self.world.edge_token})
        for addr in ("CONTENT_GRPC_ADDR", "DISTRIBUTION_GRPC_ADDR", "TRACKING_GRPC_ADDR"):
            wait_until(lambda a=addr: check(self.addresses[a], timeout=1)[0], f"{addr} to serve", 120, every=0.5)
        wait_until(self._web_up, "the web edge", 120, every=0.5)
        for _ in range(self.opts.workers):
            self.start_worker()
        self.fleet.start("beat", ["celery", "-A", "services.worker", "beat", "--loglevel=INFO", "--schedule",
                                  str(self.tmp / "celerybeat-schedule"), "--pidfile", str(self.tmp / "celerybeat.pid")])
        for _ in range(self.opts.consumers):
            self.start_consumer()
        for worker in self.fleet.live("worker"):
            self.wait_worker(worker.name)

    def _web_up(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://{self.addresses['WEB_ADDR']}/healthz", timeout=1).status_code == 200
        return False

    def start_worker(self) -> str:
        name = self.fleet.next_name("worker")
        self.fleet.start("worker", ["celery", "-A", "services.worker", "worker", "-Q", "content,distribution,tracking",
                                    "--loglevel=INFO", "-n", f"{name}@soak", "--concurrency=1"], name=name)
        return name

    def wait_worker(self, name: str) -> float:
        return wait_until(lambda: self.pong(name), f"Celery worker {name} to answer a ping", 120, every=0.5)

    def pong(self, name: str) -> bool:
        """Whether the worker node answers a ping, over a new broker connection (a pooled one may predate a Redis restart)."""
        try:
            with self.celery.connection_for_write() as conn:
                return bool(self.celery.control.ping(destination=[f"{name}@soak"], timeout=1, connection=conn))
        except (redis.RedisError, OSError, kombu.exceptions.OperationalError):
            return False

    def start_consumer(self) -> str:
        name = self.fleet.next_name("consumer")
        self.fleet.start("consumer", [PY, "-m", "services.tracking.consumer", "--name", name,
                                      "--min-idle-ms", str(self.opts.min_idle_ms)], name=name)
        return name

    def pids(self) -> dict[str, tuple[int, bool]]:
        """Every process to sample: name -> (pid, with its children)."""
        out = {m.name: (m.proc.pid, True) for m in self.fleet.live()}
        if self.stores.redis.pid:
            out[f"redis-server #{self.stores.redis.starts}"] = (self.stores.redis.pid, False)
        if (pg := self.stores.cluster.postmaster_pid()) and psutil.pid_exists(pg):
            out[f"postgres #{self.stores.pg_starts} (postmaster + backends)"] = (pg, True)
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if "moto.server" in " ".join(child.cmdline()):
                    out["moto S3"] = (child.pid, False)
        out["load generator (this process)"] = (os.getpid(), False)
        if self.web_pid and psutil.pid_exists(self.web_pid):
            out["load generator (web readers)"] = (self.web_pid, False)
        return out

    def monitor(self, stop: threading.Event) -> None:
        """Memory and CPU samples, backlog samples, and supervision (a process that exits on its own is recorded and started again)."""
        log = RedisEventLog.from_url(self.stores.redis.url)
        try:
            while True:
                for exited in self.fleet.restart_exited():
                    print(f"  !! {exited.name} exited on its own ({exited.code}); started again", flush=True)
                self.usage.sample(self.pids(), time.monotonic())
                self.sample_backlog(log)
                if stop.wait(SAMPLE_EVERY):
                    return
        finally:
            log.close()

    # ---- the world: users, teams, reps, a first campaign ----------------------------------------------------------------

    def migrate_and_make_users(self) -> None:
        subprocess.run([str(VENV_BIN / "contentops"), "migrate"], env=self.env, cwd=ROOT, check=True, capture_output=True)
        db = open_database(load_settings(self.env), migrate=False)
        try:
            identity = IdentityStore(db, 0)
            self.world = World(admin=bearer(identity.create_user("soak admin", Role.ADMIN)[2]),
                               editor=bearer(identity.create_user("soak editor", Role.EDITOR)[2]),
                               edge_token=identity.create_user("soak web edge", Role.SERVICE)[2],
                               client=bearer(identity.create_user("soak heartbeat client", Role.SERVICE)[2]))
        finally:
            db.dispose()

    def make_reps(self) -> None:
        with grpc.insecure_channel(self.addresses["DISTRIBUTION_GRPC_ADDR"]) as channel:
            stub = dpb_grpc.DistributionServiceStub(channel)
            for t in range(self.opts.teams):
                team = stub.CreateTeam(dpb.CreateTeamRequest(team=dpb.Team(name=f"teams/soak-{t}", display_name=f"Soak {t}")),
                                       metadata=self.world.admin, timeout=30).name.removeprefix("teams/")
                self.world.teams[team] = [
                    stub.CreateRep(dpb.CreateRepRequest(rep=dpb.Rep(
                        display_name=f"销售{t}-{i:03d}", signature="祝您生活愉快", store=f"门店{i % 37}", region="上海",
                        team=f"teams/{team}")), metadata=self.world.admin, timeout=30).name.removeprefix("reps/")
                    for i in range(self.opts.reps_per_team)]

    def ready_tokens(self, limit: int = 2000) -> list[str]:
        with psycopg.connect(self.pg_dsn, connect_timeout=3) as conn:
            rows = conn.execute("SELECT share_token FROM distribution_copies WHERE state = 'ready' AND share_token IS NOT NULL "
                                "ORDER BY random() LIMIT %s", (limit,)).fetchall()
        return [r[0] for r in rows]

    @property
    def pg_dsn(self) -> str:
        return self.stores.database_url.replace("postgresql+psycopg://", "postgresql://")

    def pending_copies(self, post: str | None = None) -> int:
        """Copies not ready yet (of one post, or of every campaign)."""
        with psycopg.connect(self.pg_dsn, connect_timeout=3) as conn:
            q = ("SELECT count(*) FROM distribution_copies c JOIN distribution_campaigns k ON k.id = c.campaign_id "
                 "WHERE c.state <> 'ready'" + (" AND k.post_id = %s" if post else ""))
            row = conn.execute(q, (post.removeprefix("posts/"),) if post else ()).fetchone()
        return int(row[0]) if row else 0

    def campaign_planned(self, post: str) -> bool:
        with psycopg.connect(self.pg_dsn, connect_timeout=3) as conn:
            return conn.execute("SELECT 1 FROM distribution_campaigns WHERE post_id = %s",
                                (post.removeprefix("posts/"),)).fetchone() is not None

    # ---- faults ---------------------------------------------------------------------------------------------------------

    def inject(self, fault: report.Fault, editor: Editor) -> None:
        getattr(self, f"fault_{fault.kind}")(fault, editor)

    def rendering(self, name: str) -> int:
        """render_chunk tasks the worker node ``name`` has in hand, from its log."""
        return tasks_in_hand(self.fleet.log_tail(name, 10_000_000), RENDER_CHUNK)

    def fault_worker(self, fault: report.Fault, editor: Editor) -> None:
        """SIGKILL a worker node (and its pool process) while it renders a campaign's chunk; a supervisor starts a new one."""
        campaign = editor.wait_published_after(self.clock.t0 + fault.planned, self.opts.campaign_every + 60)
        busy, deadline = None, time.monotonic() + 60
        while busy is None and time.monotonic() < deadline:
            busy = next((w.name for w in self.fleet.live("worker") if self.rendering(w.name)), None)
            time.sleep(0.1)
        victim = self.fleet.procs[busy] if busy else self.fleet.live("worker")[0]
        what = f"campaign #{campaign.index} ({self.pending_copies(campaign.post)} of its copies not ready)" if campaign else "?"
        tree = [victim.proc.pid] + [c.pid for c in psutil.Process(victim.proc.pid).children(recursive=True)]
        fault.began = self.clock.now()
        self.fleet.kill(victim.name)
        in_hand = self.rendering(victim.name)
        new = self.start_worker()
        took = self.wait_worker(new)
        fault.ended = self.clock.now()
        fault.detail = (f"SIGKILL {victim.name} (pids {', '.join(map(str, tree))}) with {in_hand} render_chunk task(s) in hand, "
                        f"during {what}; started {new}, answering a ping {took:.1f} s later")
        if campaign is not None:
            threading.Thread(target=self._campaign_done, args=(fault, campaign), daemon=True).start()

    def _campaign_done(self, fault: report.Fault, campaign: Campaign) -> None:
        """When the killed node's campaign had every copy ready (what it held comes back once its lease runs out)."""
        def done() -> bool:
            try:
                return self.pending_copies(campaign.post) == 0
            except psycopg.Error:
                return False  # PostgreSQL stopped by another fault: ask again
        if settled(done, DRAIN_SECONDS, 1.0) is None:
            fault.detail += f"; campaign #{campaign.index} NOT all ready within {DRAIN_SECONDS} s of the kill"
        else:  # timed from the kill, not from when this thread began waiting
            fault.detail += f"; campaign #{campaign.index} all ready {self.clock.now() - fault.began:.1f} s after the kill"

    def fault_redis(self, fault: report.Fault, _editor: Editor) -> None:
        """SIGKILL Redis (no shutdown save; the AOF is all that is left), then start it on the same port and folder."""
        r = self.stores.redis
        pid, aof = r.pid, sum(f.stat().st_size for f in r.directory.rglob("*.aof*") if f.is_file())
        fault.began = self.clock.now()
        r.kill()
        time.sleep(self.opts.redis_down)
        loaded = r.start()
        fault.ended = self.clock.now()
        fault.detail = (f"SIGKILL redis-server (pid {pid}, AOF {aof / 1024 / 1024:.1f} MB); down {fault.ended - fault.began:.1f} s "
                        f"(answering {loaded:.1f} s after the restart)")

    def consumers_pending(self, client: redis.Redis) -> dict[str, int]:
        return {_text(c["name"]): int(c["pending"]) for c in client.xinfo_consumers(STREAM, DEFAULT_GROUP)}

    @staticmethod
    def held_events(client: redis.Redis, consumer: str) -> Counter[str]:
        """The kinds of events (started, heartbeat, ended) in the entries pending on ``consumer``."""
        ids = [p["message_id"] for p in client.xpending_range(STREAM, DEFAULT_GROUP, "-", "+", 10_000, consumername=consumer)]
        pipe = client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(STREAM, entry_id, entry_id)
        kinds: Counter[str] = Counter()
        for found in pipe.execute() if ids else []:
            for _id, fields in found:
                kinds.update(e.WhichOneof("kind") for e in tpb.IngestBatch.FromString(fields[b"payload"]).events)
        return kinds

    def fault_consumer(self, fault: report.Fault, _editor: Editor) -> None:
        """SIGKILL a consumer while it holds entries with a view's start (their heartbeats then arrive before the start
        can be reclaimed: what the group must not lose); a new one (new name) starts; the group reclaims what it held."""
        client = redis.Redis.from_url(self.stores.redis.url, socket_timeout=5)
        self._closing.append(client.close)
        live = [m.name for m in self.fleet.live("consumer")]
        patience = time.monotonic() + 10
        victim = None
        while victim is None:  # poll; after 10 s one holding anything will do, after 30 s any
            pending = self.consumers_pending(client)
            holders = [n for n in live if pending.get(n, 0)]
            starts = [n for n in holders if self.held_events(client, n)["started"]]
            for name in starts or (holders if time.monotonic() > patience else []):
                victim = self.freeze_holding(client, name)
                if victim:
                    break
            if victim is None and time.monotonic() > patience + 20:
                victim = live[0]
        fault.began = self.clock.now()
        self.fleet.kill(victim)
        held = self.consumers_pending(client).get(victim, 0)
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.held_events(client, victim).items()))
        new = self.start_consumer()
        fault.ended = self.clock.now()
        fault.detail = f"SIGKILL {victim} holding {held} entries ({kinds or 'no events'}); started {new}"

        def gone() -> bool:
            try:
                return self.consumers_pending(client).get(victim, 0) == 0
            except redis.RedisError:
                return False  # Redis restarting: ask again

        def reclaimed() -> None:
            took = settled(gone, 180, 0.5)
            if took is None:
                fault.error = f"{victim}'s pending entries NOT reclaimed within 180 s"
            else:
                fault.detail += f"; all {victim}'s pending entries reclaimed {took:.1f} s after the kill"

        threading.Thread(target=reclaimed, daemon=True).start()

    def freeze_holding(self, client: redis.Redis, name: str) -> str | None:
        """SIGSTOP the consumer if it still holds entries once stopped (a consumer lingering between batches holds
        none most of the time, so the kill must not race its ack): its name, frozen; else None, running again."""
        pid = self.fleet.procs[name].proc.pid
        os.kill(pid, signal.SIGSTOP)
        holding = False
        try:
            holding = bool(self.consumers_pending(client).get(name, 0))
        finally:
            if not holding:
                os.kill(pid, signal.SIGCONT)
        return name if holding else None

    def fault_postgres(self, fault: report.Fault, _editor: Editor) -> None:
        fault.began = self.clock.now()
        self.stores.cluster.stop()
        time.sleep(self.opts.pg_down)
        self.stores.cluster.start()
        self.stores.pg_starts += 1
        fault.ended = self.clock.now()
        fault.detail = f"pg_ctlcluster stop -m fast; started again; down {fault.ended - fault.began:.1f} s"

    # ---- the run ----------------------------------------------------------------------------------------------------------

    def run(self) -> str:
        started_at = dt.datetime.now(dt.UTC)
        print(f"  soak: PostgreSQL cluster {self.stores.cluster.name} on {self.stores.cluster.port}, Redis (AOF) on "
              f"{self.stores.redis.port}, {self.stores.s3_label}", flush=True)
        self.migrate_and_make_users()
        self.start_processes()
        monitor_stop = threading.Event()
        monitor = threading.Thread(target=self.monitor, args=(monitor_stop,), daemon=True)
        monitor.start()
        self.make_reps()
        editor = Editor(self.addresses["CONTENT_GRPC_ADDR"], self.world.editor, sorted(self.world.teams), self.errors,
                        self.opts.campaign_every, self.opts.image_side)
        self._closing.append(editor.close)
        never = threading.Event()
        first = editor.publish(0, never)
        wait_until(lambda: self.campaign_planned(first.post) and self.pending_copies(first.post) == 0,
                   "the first campaign to render", 300, every=0.5)
        tokens = TokenPool(self.ready_tokens())
        print(f"  soak: {len(self.fleet.live())} processes up, {sum(map(len, self.world.teams.values()))} reps in "
              f"{len(self.world.teams)} teams, first campaign rendered; load for {self.opts.seconds:.0f} s", flush=True)
        load_began = self.run_load(editor, tokens)
        drain = self.drain(editor)
        self.usage.sample(self.pids(), time.monotonic())
        monitor_stop.set()
        monitor.join()
        audits = self.audit(editor)
        self.fleet.stop_all()
        return self.write_report(started_at, load_began, editor, drain, *audits)

    def run_load(self, editor: Editor, tokens: TokenPool) -> float:
        o = self.opts
        self.clock.restart()
        web = WebProcess(f"http://{self.addresses['WEB_ADDR']}",
                         WebPlan(o.page_rate, max(1, round(o.beacon_rate / o.page_rate)), o.beacon_interval), tokens, self.clock)
        beats = HeartbeatLoad(self.addresses["TRACKING_GRPC_ADDR"], self.world.client,
                              HeartbeatPlan(o.heartbeat_rate, o.heartbeat_interval, o.beats_per_view), tokens, self.ledger,
                              self.errors)
        self._closing.append(beats.close)
        stop, abort = threading.Event(), threading.Event()
        web.start()
        self.web_pid = web.process.pid
        threads = [threading.Thread(target=beats.starter, args=(stop, abort), name="starter"),
                   threading.Thread(target=beats.sender, args=(stop, abort), name="sender"),
                   threading.Thread(target=editor.run, args=(stop, abort), name="editor"),
                   threading.Thread(target=self.refresh_tokens, args=(tokens, web, stop), name="tokens")]
        for t in threads:
            t.start()
        timer = threading.Timer(60, abort.set)  # calls still retrying a minute after the load: given up, in doubt
        try:
            self.inject_faults(editor)
        except BaseException:
            abort.set()  # the soak itself failed: stop the clients at once
            raise
        finally:
            load_seconds = self.clock.now()
            print(f"  {load_seconds:6.1f} s  load stops", flush=True)
            stop.set()
            timer.start()
            web.stop(self.ledger, self.errors)
            for t in threads:
                t.join()
            timer.cancel()
        return load_seconds

    def inject_faults(self, editor: Editor) -> None:
        """Each fault at its time (a fault that overran delays the next), then the rest of the load."""
        for at, kind in fault_plan(self.opts.seconds):
            fault = report.Fault(kind, at)
            self.faults.append(fault)
            if self.clock.now() < at:
                time.sleep(at - self.clock.now())
            print(f"  {self.clock.now():6.1f} s  fault: {kind} ...", flush=True)
            try:
                self.inject(fault, editor)
            except Exception as err:  # noqa: BLE001 - reported (and failed) in the report; the load goes on
                fault.error = f"the soak could not complete this fault: {err.__class__.__name__}: {err}"
            print(f"  {self.clock.now():6.1f} s  {fault.detail} {fault.error}", flush=True)
        if self.clock.now() < self.opts.seconds:
            time.sleep(self.opts.seconds - self.clock.now())

    def refresh_tokens(self, tokens: TokenPool, web: WebProcess, stop: threading.Event) -> None:
        while not stop.wait(15):
            with contextlib.suppress(psycopg.Error):
                ready = self.ready_tokens()
                tokens.replace(ready)
                web.replace_tokens(ready)

    def drain(self, editor: Editor) -> dict[str, float | None]:
        """Seconds after the load until the consumers applied everything and every campaign's copies were ready (None:
        not within DRAIN_SECONDS; the report says so and the checks count what was there)."""
        began = time.monotonic()
        log = RedisEventLog.from_url(self.stores.redis.url)
        try:
            out = {"tracking": settled(lambda: (lambda s: s.lag == 0 and s.pending == 0)(log.stats()), DRAIN_SECONDS, 0.5)}
            self.dead_letters = log.stats().dead_letters
            self.dead_reasons = Counter(d.reason for d in log.dead_letters(count=10_000))
        finally:
            log.close()
        copies = settled(lambda: all(self.campaign_planned(c.post) for c in editor.campaigns) and self.pending_copies() == 0,
                         DRAIN_SECONDS, 1.0)
        out["copies"] = None if copies is None else time.monotonic() - began
        return out

    def sample_backlog(self, log: RedisEventLog) -> None:
        with contextlib.suppress(Exception):  # Redis is down: no sample
            stats = log.stats()
            self.backlog.append((time.monotonic(), stats.lag, stats.pending))

    # ---- the checks -----------------------------------------------------------------------------------------------------------

    def audit(self, editor: Editor) -> tuple[report.TrackingAudit, list[report.CampaignAudit]]:
        with psycopg.connect(self.pg_dsn) as conn:
            views = dict(conn.execute("SELECT id, engaged_ms FROM tracking_views").fetchall())
            events: dict[str, dict[int, int]] = {}
            for view, seq, ms in conn.execute("SELECT view_id, seq, engaged_ms FROM tracking_events"):
                events.setdefault(view, {})[int(seq)] = int(ms)
            tracking = report.audit_tracking(self.ledger.views, {k: int(v) for k, v in views.items()}, events)
            campaigns = [self.audit_one(conn, c) for c in editor.campaigns]
        return tracking, campaigns

    def audit_one(self, conn: psycopg.Connection, c: Campaign) -> report.CampaignAudit:
        post_id = c.post.removeprefix("posts/")
        rows = conn.execute("SELECT id FROM distribution_campaigns WHERE post_id = %s", (post_id,)).fetchall()
        copies = conn.execute(
            "SELECT c.rep_id, c.state, c.images, c.share_token IS NOT NULL, c.render_time FROM distribution_copies c "
            "JOIN distribution_campaigns k ON k.id = c.campaign_id WHERE k.post_id = %s", (post_id,)).fetchall()
        records = [report.CopyRecord(rep, state, tuple(i["key"] for i in images or []), token)
                   for rep, state, images, token, _ in copies]
        out = report.audit_campaign(c.post, c.team, c.images, self.world.teams[c.team], len(rows), records)
        times = [t for *_, t in copies if t is not None]
        if times:
            out.rendered_after = max(times).timestamp() - c.published_wall
        return out

    def outages(self) -> list[report.Outage]:
        return [report.Outage(f.kind, f.began, f.ended) for f in self.faults if f.kind in ("redis", "postgres")]

    def checks(self, tracking: report.TrackingAudit, campaigns: list[report.CampaignAudit], errors: list[report.ErrorRow],
               drain: dict[str, float | None]) -> list[report.Check]:
        bad_campaigns = [a for a in campaigns if not a.ok]
        bad_errors = [r for r in errors if not r.allowed]
        injected = {f.kind for f in self.faults if f.injected}
        return [
            report.Check("acknowledged heartbeats and beacons stored: 0 lost", not tracking.lost and not tracking.views_missing,
                         f"{len(tracking.lost)} lost of {tracking.events_acked:,} acknowledged ({tracking.lost_ms:,} ms); "
                         f"{len(tracking.views_missing)} of {tracking.views_acked:,} acknowledged views missing"),
            report.Check("nothing double-counted", not tracking.phantom and not tracking.delta_mismatch and not tracking.double_ms,
                         f"{tracking.double_ms:,} ms over; {len(tracking.phantom)} stored heartbeats no client sent; "
                         f"{len(tracking.delta_mismatch)} with another delta"),
            report.Check("each view's engaged time = the sum of its acknowledged deltas", not tracking.engaged_mismatch,
                         f"{len(tracking.engaged_mismatch)} views differ; {tracking.acked_ms:,} ms acknowledged, "
                         f"{tracking.stored_ms:,} ms stored"),
            report.Check("no dead letters", self.dead_letters == 0, f"{self.dead_letters} in the dead-letter stream" + "".join(
                f"; {n} × “{reason}”" for reason, n in self.dead_reasons.most_common(3))),
            report.Check("exactly one ready copy per targeted rep per campaign", not bad_campaigns and bool(campaigns),
                         f"{len(campaigns) - len(bad_campaigns)}/{len(campaigns)} campaigns exact; "
                         f"{sum(a.ready for a in campaigns):,} copies for {sum(a.targeted for a in campaigns):,} targeted reps"),
            report.Check("clients saw only UNAVAILABLE / 503, only during outages; never INTERNAL / 500", not bad_errors,
                         "; ".join(f"{r.source} {r.code} ×{r.count - r.in_outage if r.code in report.ALLOWED_IN_OUTAGE else r.count}"
                                   f"{' outside outages' if r.code in report.ALLOWED_IN_OUTAGE else ''}" for r in bad_errors)
                         or f"{sum(r.count for r in errors):,} errors, all allowed"),
            report.Check("no process exited on its own", not self.fleet.unexpected,
                         ", ".join(f"{e.name} ({e.code})" for e in self.fleet.unexpected) or "none"),
            report.Check("every fault injected, and recovered from", injected == set(FAULTS) and not any(f.error for f in self.faults),
                         ", ".join(f"{f.kind}{' (' + f.error + ')' if f.error else ''}" for f in self.faults if f.injected) or "none"),
            report.Check(f"consumers caught up and every copy rendered within {DRAIN_SECONDS} s of the load's end",
                         None not in drain.values(), f"log applied {after(drain['tracking'])}, copies ready {after(drain['copies'])} "
                                                     "the load"),
        ]

    # ---- the report --------------------------------------------------------------------------------------------------------

    def write_report(self, started_at: dt.datetime, load_seconds: float, editor: Editor, drain: dict[str, float | None],
                     tracking: report.TrackingAudit, campaigns: list[report.CampaignAudit]) -> str:
        errors = report.classify_errors(self.errors.items, self.outages(), self.opts.grace)
        checks = self.checks(tracking, campaigns, errors, drain)
        t0 = self.clock.t0
        backlog = [(t - t0, lag + pending) for t, lag, pending in self.backlog if t >= t0]
        exits = [f"- {e.name} exited with {e.code}; log tail:\n\n```\n{e.log_tail[-1500:]}\n```" for e in self.fleet.unexpected]
        self.passed = all(c.ok for c in checks)
        sections = [
            ("Load", self.rate_lines(load_seconds, editor)),
            ("Engaged time: acknowledged against stored", report.accounting_lines(tracking)),
            ("Campaigns: copies", report.campaign_lines([(c.index, a) for c, a in zip(editor.campaigns, campaigns, strict=True)])),
            ("Errors clients saw", report.error_lines(errors, self.opts.grace)),
            ("Fault timeline", report.timeline_lines(self.faults)),
            ("Tracking log backlog", report.backlog_lines(backlog, self.faults, load_seconds, SAMPLE_EVERY)),
            ("Processes: memory (RSS) and CPU", [*report.usage_lines(self.usage, t0, SAMPLE_EVERY), "",
                                                 *self.cost_lines()]),
            *([("Processes that exited on their own", exits)] if exits else []),
        ]
        return report.render("Soak: every process, under load, with faults", self.setup_lines(started_at, load_seconds, drain),
                             checks, sections)

    def setup_lines(self, started_at: dt.datetime, load_seconds: float, drain: dict[str, float | None]) -> list[str]:
        o = self.opts
        return [
            f"{started_at:%Y-%m-%d %H:%M} UTC, {platform.node()}: {os.cpu_count()} cores shared by every process and the load "
            f"generator; load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())} at the end. Load for "
            f"{load_seconds:.0f} s; the consumers had applied everything {after(drain['tracking'])} it, every copy "
            f"was ready {after(drain['copies'])} it.",
            "",
            f"Processes (each its own OS process): content, distribution, tracking, web edge, {o.workers} Celery worker nodes "
            f"(`--concurrency=1`), Celery beat, {o.consumers} tracking consumers (`--min-idle-ms {o.min_idle_ms}`). Stores: "
            f"PostgreSQL {self.stores.cluster.version} cluster `{self.stores.cluster.name}` (made for the run), Redis with "
            f"`appendonly yes, appendfsync always`, {self.stores.s3_label}; all on loopback.",
        ]

    def rate_lines(self, load_seconds: float, editor: Editor) -> list[str]:
        """Configured against acknowledged rates: over the whole load, and once every reader's ramp is over."""
        o, counts = self.opts, self.ledger.counts
        per_page = max(1, round(o.beacon_rate / o.page_rate))
        ramp = min(load_seconds / 2, max(per_page * o.beacon_interval, o.beats_per_view * o.heartbeat_interval))
        lines = [f"| load | configured | acknowledged | whole load | steady ({ramp:.0f} s to the end: every reader started) |",
                 "|---|---:|---:|---:|---:|"]
        for kind, what, target in (
            ("pages", "customer pages (GET /s/{token}: GetRepCopy, and the view started by the edge in Redis)", o.page_rate),
            ("beacons", f"beacons (POST /t/beat, {per_page} per page, every {o.beacon_interval:g} s)", o.page_rate * per_page),
            ("heartbeats", f"heartbeats (RecordEngagement, batched; a view's every {o.heartbeat_interval:g} s)", o.heartbeat_rate),
            ("grpc_views", "StartView over gRPC (the views of those heartbeats)", o.heartbeat_rate / o.beats_per_view),
        ):
            lines.append(f"| {what} | {target:,.4g}/s | {counts[kind]:,} | {counts[kind] / load_seconds:,.1f}/s | "
                         f"{self.ledger.rate(kind, ramp, load_seconds):,.1f}/s |")
        lines += [f"| campaigns ({o.reps_per_team} reps, 1-3 photos of {o.image_side} px) | every {o.campaign_every:g} s | "
                  f"{len(editor.campaigns) - 1} during the load (+1 before it) | | |", "",
                  "| request, as the load generator saw it | answered | p50 | p95 | p99 | max |", "|---|---:|---:|---:|---:|---:|"]
        for kind, took in sorted(self.ledger.answers.items()):
            took = sorted(took)
            lines.append(f"| {kind} | {len(took):,} | " + " | ".join(f"{1000 * percentile(took, q):,.1f} ms" for q in (50, 95, 99))
                         + f" | {1000 * took[-1]:,.0f} ms |")
        return [*lines, "",
                "The issues' targets (5,000 heartbeats/s, 500 pages/s, 10,000 beacons/s) are for the services alone; here every "
                "process, PostgreSQL, Redis, S3 and the load generator share the cores. Answer times are from the attempt that "
                "got its answer (a retried request counts its last attempt), and include waiting in the load generator's own "
                "event loop and threads."]

    def cost_lines(self) -> list[str]:
        """What the customer traffic cost in CPU, and that cost scaled to the issues' target rates."""
        o = self.opts
        if not self.usage.tracks:
            return []
        cores = {side: self.usage.cores(lambda name, p=prefixes: name.startswith(p)) for side, prefixes in CPU_SIDES.items()}
        scale = max(TARGET_RATES["pages"] / o.page_rate, TARGET_RATES["beacons"] / (o.page_rate * max(1, round(o.beacon_rate / o.page_rate))),
                    TARGET_RATES["heartbeats"] / o.heartbeat_rate)
        traffic = cores["customer traffic"]
        return [f"Cores on average over the run: customer traffic (web edge, tracking, distribution, consumers, Redis, "
                f"PostgreSQL) {traffic:.2f}; campaigns (content, workers, beat, S3) {cores['campaigns']:.2f}; the load "
                f"generator {cores['load generator']:.2f}. The issues' targets (500 pages/s, 10,000 beacons/s, 5,000 "
                f"heartbeats/s) are up to {scale:.3g}× these rates: at the same cost per request the customer traffic alone "
                f"would take about {traffic * scale:.0f} cores, against {os.cpu_count()} here."]

    def close(self) -> None:
        for close in self._closing:
            with contextlib.suppress(Exception):
                close()
        self.fleet.stop_all()
        if self.opts.keep_logs:
            shutil.copytree(self.tmp / "logs", self.opts.keep_logs, dirs_exist_ok=True)


@contextlib.contextmanager
def stores(tmp: Path) -> Iterator[tuple[Stores, dict[str, str]]]:
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(postgres_cluster())
        url = cluster.create_database("contentops")
        aof = AofRedis(tmp / "redis")
        aof.start()
        stack.callback(aof.stop)
        s3, label = stack.enter_context(s3_endpoint("soak"))
        yield Stores(cluster, url, aof, label), s3


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="contentops-soak-") as tmp_name, stores(Path(tmp_name)) as (st, s3):
        soak = Soak(opts, Path(tmp_name), st, s3)
        try:
            text = soak.run()
        finally:
            soak.close()
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(text, encoding="utf-8")
    print(text, flush=True)
    print(f"  report written to {opts.out}", flush=True)
    return 0 if soak.passed else 1


if __name__ == "__main__":
    sys.exit(main())
