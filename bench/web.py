"""The web edge under load: the customer page at a fixed rate, and the beacon endpoint's throughput (the issue's targets).

Everything runs as its own process on loopback, as production runs it: ``python -m services.distribution`` and
``python -m services.tracking`` on PostgreSQL, S3 (moto, or MinIO when MINIO_ENDPOINT is set) and Redis (db 8:
only the keys this benchmark makes are deleted), and the edge under ``uvicorn --factory bench.web:edge_app``
(``services.web.app.build_app`` from the environment, wrapped in a timing middleware) with ``--workers 1`` and
``--workers 2`` (one per core: what this machine would run). ``REDIS_URL`` is set, so beacons take the fast path
(``services.web.edge_ingest.RedisIngest``: straight to tracking's Redis streams, micro-batched). The tracking
consumer does not run (the aggregator is its own process and scales on its own; bench/tracking.py measures it).
The floor is ``bench.web:noop_app``: a Starlette app whose POST /t/beat reads the body and answers 204 and whose
GET /s/{token} answers a fixed page, under the same uvicorn options, the same timing middleware and the same
load generators, in the same run. uvicorn picks its event loop and HTTP parser as installed (uvloop and
httptools when present, else asyncio and h11); the rows say which.

Client addresses: all load comes from 127.0.0.1, but real readers come from many networks and the edge and the
tracking service rate-limit per visitor and per /24. So the edge runs with uvicorn's proxy headers (trusted from
127.0.0.1 only) and every request carries an ``X-Forwarded-For`` from 10.0.0.0/8 spread over thousands of /24s
(and every beacon its own visitor cookie): the limits are checked as for real traffic but never bite.

1. Customer page: GET /s/{token} (10 reps' share links, 5 with --quick, each a ready copy of a 9-image post; the
   page itself, not its images) at a fixed 500 requests/s, open loop, for 20 s (5 s with --quick) after a warm-up,
   from an asyncio generator in this process (raw HTTP/1.1 keep-alive connections, a new one whenever all are
   busy). Every page is a new reader: GetRepCopy on the distribution service (cached by the edge for 5 s), and the
   view started by the edge itself in Redis (the view limits' script, then a batched XADD), as in production; the
   tracking service is not called. Server time is measured in the
   edge process: the timing middleware, outermost, from the ASGI call to the response start, sent back in a
   ``server-timing`` header; the client-observed time (from when the request was due, so a late generator counts
   against the server, not for it) is reported beside it, as is how late the generator sent.
2. Beacons: wrk (Debian's ``wrk``, 2 threads, 64 connections) POSTs valid beacons, each for one of 20,000 views
   (signed with the tracking service's key, as StartView would), seqs counting up, so none is a duplicate or
   throttled; closed loop, the edge and the floor taking turns in rounds of 10 s (3 s with --quick). Afterwards
   every heartbeat in the Redis streams is counted: it must equal the 204s wrk saw, up to the requests in flight
   when wrk stopped (sent, maybe written, never counted by wrk).

wrk, Redis, both servers and the generator share this machine's 2 cores.
``python -m bench.web [--quick]`` prints the rows on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import (
    ROOT,
    Backend,
    Score,
    clean_environ,
    delete_redis_keys,
    free_port,
    ms,
    percentile,
    postgres_database,
    run_alone,
    s3_endpoint,
    service_process,
    stop_process,
)

REDIS_DB = 8  # this benchmark's own Redis database (tests use 9 and 11-14, bench/tracking.py 10, bench/campaign.py 15)
REDIS_URL = f"{(os.environ.get('BENCH_REDIS_URL') or 'redis://127.0.0.1:6379/0').rsplit('/', 1)[0]}/{REDIS_DB}"
KEY_PATTERNS = ("contentops:tracking:*",)
PAGE_RATE = 500  # requests/s
TARGET_PAGE_P99 = 0.030  # s, server time
TARGET_BEACONS = 10_000  # requests/s
WRK_THREADS = 2
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47"


@dataclass(frozen=True)
class Plan:
    reps: int
    page_seconds: float
    page_warmup: float
    beacon_seconds: float
    beacon_rounds: int
    connections: int
    views: int
    workers: tuple[int, ...]


FULL = Plan(reps=10, page_seconds=20, page_warmup=3, beacon_seconds=10, beacon_rounds=3, connections=64, views=20_000,
            workers=(1, 2))
QUICK = Plan(reps=5, page_seconds=5, page_warmup=1, beacon_seconds=3, beacon_rounds=1, connections=64, views=20_000,
             workers=(1, 2))


# ---- the apps uvicorn serves (``--factory bench.web:edge_app`` / ``bench.web:noop_app``) --------------------------------


class ServerTiming:
    """Outermost ASGI middleware: the time from the app being called to the response start, as ``server-timing``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def timed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - began) * 1000
                message["headers"] = [*message.get("headers", []), (b"server-timing", f"app;dur={took:.3f}".encode())]
            await send(message)

        await self.app(scope, receive, timed)


def edge_app() -> Any:
    """The edge as ``python -m services.web`` builds it, from the environment, timed."""
    from services.shared.settings import load_settings
    from services.web.app import build_app
    from services.web.backends import Backends

    settings = load_settings()
    return ServerTiming(build_app(settings, Backends(settings, settings.web_service_token)))


def noop_app() -> Any:
    """The floor: Starlette and uvicorn doing nothing but reading the beacon / answering a fixed page."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    async def beat(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    async def page(_request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>ok</title><p>ok</p>")

    return ServerTiming(Starlette(routes=[Route("/t/beat", beat, methods=["POST"]), Route("/s/{token}", page)]))


def server_stack() -> str:
    """Which event loop and HTTP parser uvicorn's "auto" picks here."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{loop} + {http}"


@contextlib.contextmanager
def uvicorn_process(factory: str, workers: int, env: dict[str, str], log_path: Path) -> Iterator[int]:
    """``uvicorn --factory <factory> --workers N`` on a loopback port; yields the port once /healthz-ish answers."""
    import httpx

    port = free_port()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), "--log-level", "warning", "--no-access-log", "--no-server-header",
             "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"],
            cwd=ROOT, env=clean_environ(**env), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{factory} exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/s/x", timeout=1).status_code in (200, 404):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{factory} did not answer within 60s: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(0.5 * workers)  # every worker up (each answers once its lifespan has run)
        yield port
    finally:
        stop_process(proc)


# ---- 1. the customer page at a fixed rate ------------------------------------------------------------------------------------


@dataclass
class PageLoad:
    server: list[float] = field(default_factory=list)  # s, from server-timing, sorted
    client: list[float] = field(default_factory=list)  # s, from when the request was due, sorted
    late: list[float] = field(default_factory=list)  # s, how late the generator sent, sorted
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    first_error: str = ""
    sent: int = 0  # counted (after the warm-up)
    total: int = 0  # warm-up included
    wall: float = 0.0
    connections: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU ms per page (warm-up included), by process


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" not in headers:
        raise RuntimeError(f"no content-length in a response ({status})")
    return status, headers, await reader.readexactly(int(headers["content-length"]))


MAX_IDLE_S = 2.0  # a kept-alive connection idle longer is dropped (uvicorn closes them after 5 s)


async def open_loop(port: int, paths: list[str], rate: float, seconds: float, warmup: float) -> PageLoad:
    """GET ``paths`` in turn at ``rate`` requests/s for ``warmup + seconds``; the warm-up's are not counted."""
    loop = asyncio.get_running_loop()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []  # most recently used last
    total = int(rate * (warmup + seconds))
    out = PageLoad(total=total)
    start = loop.time() + 0.2
    counted_from = start + warmup

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while idle:
            reader, writer, since = idle.pop()
            if loop.time() - since < MAX_IDLE_S:
                return reader, writer
            writer.close()
        out.connections += 1
        return await asyncio.open_connection("127.0.0.1", port)

    async def one(i: int, due: float) -> None:
        try:
            reader, writer = await connection()
            sent = loop.time()
            xff = f"10.{i % 250}.{(i // 250) % 8}.9"  # 2,000 networks: 0.25 pages/s each
            writer.write(f"GET {paths[i % len(paths)]} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n"
                         f"X-Forwarded-For: {xff}\r\n\r\n".encode())
            status, headers, _body = await _read_response(reader)
            done = loop.time()
            idle.append((reader, writer, done))
        except Exception as err:  # noqa: BLE001 - counted and reported
            out.errors += 1
            out.first_error = out.first_error or f"{err.__class__.__name__}: {err}"
            return
        if due < counted_from:
            return
        out.statuses[status] = out.statuses.get(status, 0) + 1
        timing = re.search(r"dur=([0-9.]+)", headers.get("server-timing", ""))
        if timing:
            out.server.append(float(timing.group(1)) / 1000)
        out.client.append(done - due)
        out.late.append(sent - due)

    tasks = set()
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if due >= counted_from:
            out.sent += 1
    while tasks:
        await asyncio.gather(*list(tasks))
    out.wall = loop.time() - counted_from
    for _, writer, _ in idle:
        writer.close()
    for values in (out.server, out.client, out.late):
        values.sort()
    return out


ROLES = (("services.distribution", "distribution"), ("services.tracking", "tracking"), ("edge_app", "edge"),
         ("noop_app", "no-op"))


def cpu_by_role() -> dict[str, float]:
    """CPU seconds so far (user + system) of this process (the generator), its descendants by role (a uvicorn
    worker counts as its supervisor's), and Redis (INFO cpu)."""
    import redis

    ticks = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, float, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        procs[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks, cmd)

    def role(pid: int) -> str | None:
        while pid in procs and pid != os.getpid():
            ppid, _, cmd = procs[pid]
            found = next((name for key, name in ROLES if key in cmd), None)
            if found:
                return found
            pid = ppid
        return None

    out: dict[str, float] = {}
    for pid, (_, cpu, _) in procs.items():
        if (name := role(pid)) is not None:
            out[name] = out.get(name, 0.0) + cpu
    times = os.times()
    out["generator"] = times.user + times.system
    out["wrk"] = times.children_user + times.children_system  # children that exited: wrk runs (uvicorn is stopped later)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        info = client.info("cpu")
        out["redis"] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    finally:
        client.close()
    return out


def cpu_per(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """CPU ms per request by role, between two ``cpu_by_role`` readings."""
    return {k: (after.get(k, 0.0) - before.get(k, 0.0)) * 1000 / count for k in after if after.get(k, 0.0) > before.get(k, 0.0)}


def cpu_text(per: dict[str, float], unit: str = "ms") -> str:
    """``edge 1.23, tracking 0.90, ...``, biggest first; idle bystanders (under 2 % of the total) left out."""
    scale = 1000 if unit == "µs" else 1
    floor = 0.02 * sum(per.values())
    return ", ".join(f"{k} {v * scale:.{0 if unit == 'µs' else 2}f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1])
                     if v >= floor)


# ---- 2. beacons with wrk --------------------------------------------------------------------------------------------------------------

WRK_SCRIPT = r"""
local views = {}
for line in io.lines("%(views)s") do views[#views + 1] = line end
local nviews = #views
local threads = %(threads)d
local setup_next = 0
local tid = 0
local offset = 0
local counter = 0

function setup(thread)
  thread:set("thread_index", setup_next)
  setup_next = setup_next + 1
end

function init(args)
  tid = thread_index or 0
  offset = tonumber(args[1] or "0")
end

function request()
  local k = offset + tid + threads * counter
  counter = counter + 1
  local body = string.format('{"view":"%%s","seq":%%d,"engaged_ms":%%d,"scroll":%%d,"end":false}',
                             views[(k %% nviews) + 1], math.floor(k / nviews) + 1, 1000 + k %% 9000, k %% 101)
  local headers = {}
  headers["Content-Type"] = "text/plain;charset=UTF-8"
  headers["Cookie"] = "co_vid=reader" .. (k %% 200000)
  headers["X-Forwarded-For"] = "10." .. (k %% 250) .. "." .. (math.floor(k / 250) %% 200) .. ".7"
  return wrk.format("POST", "/t/beat", headers, body)
end

function done(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"non2xx":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
                         '"timeout":%%d,"p50_us":%%d,"p99_us":%%d}\n', summary.requests, summary.duration,
                         summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write,
                         summary.errors.timeout, math.floor(latency:percentile(50)), math.floor(latency:percentile(99))))
end
"""


@dataclass
class Wrk:
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50: float  # s
    p99: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def run_wrk(port: int, script: Path, seconds: float, connections: int, offset: int) -> Wrk:
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script),
           f"http://127.0.0.1:{port}/t/beat", "--", str(offset)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    found = re.search(r"WRKJSON (\{.*\})", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-1500:]} {done.stderr[-1500:]}")
    d = json.loads(found.group(1))
    return Wrk(d["requests"], d["duration_us"] / 1e6, d["non2xx"], d["connect"] + d["read"] + d["write"] + d["timeout"],
               d["p50_us"] / 1e6, d["p99_us"] / 1e6)


def signed_views(secret: bytes, count: int) -> list[str]:
    """View names as StartView issues them (signed with the tracking service's key)."""
    from services.shared.ids import new_id
    from services.tracking.ingest import sign_view, view_key_for

    key = view_key_for(secret)
    return [f"views/{uid}-{sign_view(key, uid)}" for uid in (new_id() for _ in range(count))]


def heartbeats_in_redis(partitions: int = 1) -> int:
    import redis

    from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb
    from services.tracking.streams import DEFAULT_PREFIX, stream_key

    client = redis.Redis.from_url(REDIS_URL)
    total = 0
    try:
        for p in range(partitions):
            start = "-"
            while page := client.xrange(stream_key(DEFAULT_PREFIX, p), min=start, max="+", count=1000):
                start = "(" + page[-1][0].decode()
                for _id, fields in page:
                    batch = tpb.IngestBatch.FromString(fields[b"payload"])
                    total += sum(1 for e in batch.events if e.WhichOneof("kind") == "heartbeat")
    finally:
        client.close()
    return total


def clean_redis() -> None:
    delete_redis_keys(REDIS_URL, KEY_PATTERNS)


# ---- the run -------------------------------------------------------------------------------------------------------------------------


def meets(ok: bool) -> str:
    return "meets target" if ok else "misses target"


def _skip(figure: str, why: str) -> list[dict[str, str]]:
    return [{"figure": figure, "measured": "skipped", "target": "—", "baseline": why, "ratio": "—"}]


def share_links(address: str, seeded: Any) -> list[str]:
    import grpc

    from services.protos.contentops.distribution.v1 import distribution_pb2 as dpb
    from services.protos.contentops.distribution.v1 import distribution_pb2_grpc as dpb_grpc

    with grpc.insecure_channel(address) as channel:
        stub = dpb_grpc.DistributionServiceStub(channel)
        return [stub.GetRepCopy(dpb.GetRepCopyRequest(post=seeded.post, rep=rep), metadata=md, timeout=30).share_token
                for rep, md in seeded.reps]


def page_rows(plan: Plan, workers: int, page: PageLoad, floor: PageLoad, impl: str) -> list[dict[str, str]]:
    ok = page.statuses.get(200, 0)
    if page.errors or ok != len(page.client):
        raise RuntimeError(f"customer page: statuses {page.statuses}, {page.errors} errors ({page.first_error})")
    rate = len(page.client) / page.wall
    rows = []
    for q in (50, 99):
        value, base = percentile(page.server, q), percentile(floor.server, q)
        client, late = percentile(page.client, q), percentile(page.late, q)
        rows.append({
            "figure": f"Customer page GET /s/{{token}}, server time p{q}, {PAGE_RATE} req/s open loop for {plan.page_seconds:g}s "
                      f"({len(page.client):,} pages, {rate:.0f}/s, every one a new reader: GetRepCopy + a view started in Redis), "
                      f"uvicorn --workers {workers} ({impl}) — PostgreSQL + Redis",
            "measured": ms(value),
            "target": f"≤ {TARGET_PAGE_P99 * 1000:g} ms at {PAGE_RATE} req/s" if q == 99 else "—",
            "baseline": f"no-op page, same rate: p{q} {ms(base)}; client-observed p{q} {ms(client)} (no-op "
                        f"{ms(percentile(floor.client, q))}); generator late p{q} {ms(late)}",
            "ratio": f"{value / base:.0f}×" + (f" ({meets(value <= TARGET_PAGE_P99)})" if q == 99 else ""),
            **({"score": Score(f"customer page p99 at {PAGE_RATE}/s, {workers} web worker{'s' if workers > 1 else ''}",
                               value * 1000, TARGET_PAGE_P99 * 1000, "ms", floor=base * 1000)} if q == 99 else {}),
        })
    total = sum(page.cpu.values())
    rows.append({"figure": "↳ CPU per page, all processes (ms), and the cores that takes at the rate", "measured": f"{total:.2f} ms",
                 "target": "—", "baseline": cpu_text(page.cpu), "ratio": f"{total * PAGE_RATE / 1000:.2f} cores"})
    return rows


def run(quick: bool) -> list[dict[str, str]]:
    plan = QUICK if quick else FULL
    import redis

    if not shutil.which("wrk"):
        return _skip("Web edge", "wrk is not installed (apt-get install wrk)")
    try:
        probe = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        probe.ping()
        probe.close()
    except redis.RedisError as err:
        return _skip("Web edge", f"Redis at {REDIS_URL}: {err.__class__.__name__}: {err}")
    from services.shared.identity.domain import Role
    from services.shared.identity.store import IdentityStore
    from services.shared.migrate import open_database
    from services.shared.settings import load_settings

    from . import rep_copy

    impl = server_stack()
    rows: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="contentops-bench-web-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        try:
            url = stack.enter_context(postgres_database())
        except Exception as err:  # noqa: BLE001 - reported as a row instead
            return _skip("Web edge — PostgreSQL", f"{err.__class__.__name__}: {err}")
        s3, label = stack.enter_context(s3_endpoint("bench-web"))
        clean_redis()
        stack.callback(clean_redis)
        secret = "bench-secret"
        env = {"CONTENTOPS_SECRET_KEY": secret, "CONTENTOPS_DATA_DIR": str(root / "data"), "DATABASE_URL": url, **s3,
               "LOG_LEVEL": "WARNING"}
        backend = Backend("PostgreSQL", label, env)
        began = time.perf_counter()
        seeded = rep_copy.seed(backend, plan.reps)  # in-process rendering: before REDIS_URL is set
        db = open_database(load_settings(env), migrate=False)
        try:
            edge_token = IdentityStore(db, 0).create_user("bench web edge", Role.SERVICE)[2]
        finally:
            db.dispose()
        print(f"  web: seeded {plan.reps} reps' copies in {time.perf_counter() - began:.1f}s", flush=True)
        run_env = {**env, "REDIS_URL": REDIS_URL, "DATABASE_AUTO_MIGRATE": "0"}
        dist = stack.enter_context(service_process("services.distribution", "DISTRIBUTION_GRPC_ADDR",
                                                    {**env, "DATABASE_AUTO_MIGRATE": "0"}, root / "distribution.log"))
        track = stack.enter_context(service_process("services.tracking", "TRACKING_GRPC_ADDR", run_env, root / "tracking.log"))
        links = share_links(dist, seeded)
        edge_env = {**run_env, "DISTRIBUTION_GRPC_ADDR": dist, "TRACKING_GRPC_ADDR": track, "WEB_SERVICE_TOKEN": edge_token}
        views = root / "views.txt"
        views.write_text("\n".join(signed_views(secret.encode(), plan.views)) + "\n")
        script = root / "beacons.lua"
        script.write_text(WRK_SCRIPT % {"views": views, "threads": WRK_THREADS})
        offset = 0
        for workers in plan.workers:
            with uvicorn_process("bench.web:edge_app", workers, edge_env, root / f"edge-{workers}.log") as edge, \
                    uvicorn_process("bench.web:noop_app", workers, {}, root / f"noop-{workers}.log") as noop:
                print(f"  web: customer page at {PAGE_RATE}/s, {workers} worker(s) ({impl}) ...", flush=True)
                paths = [f"/s/{token}" for token in links]
                floor_page = asyncio.run(open_loop(noop, paths, PAGE_RATE, plan.page_seconds, plan.page_warmup))
                before = cpu_by_role()
                page = asyncio.run(open_loop(edge, paths, PAGE_RATE, plan.page_seconds, plan.page_warmup))
                page.cpu = cpu_per(before, cpu_by_role(), page.total)
                print(f"  page server p50 {ms(percentile(page.server, 50))} p99 {ms(percentile(page.server, 99))}; client p99 "
                      f"{ms(percentile(page.client, 99))}; late p99 {ms(percentile(page.late, 99))}; {page.statuses} "
                      f"{page.errors} errors; {page.connections} connections; no-op p99 {ms(percentile(floor_page.server, 99))}; "
                      f"CPU ms per page: {cpu_text(page.cpu)}", flush=True)
                rows += page_rows(plan, workers, page, floor_page, impl)

                clean_redis()  # the page run's views: the count below is the beacons' alone
                print(f"  web: beacons with wrk, {plan.beacon_rounds} round(s) of {plan.beacon_seconds:g}s each ...", flush=True)
                run_wrk(edge, script, 1, plan.connections, offset=900_000_000)  # warm-up (counted in Redis, not in the rate)
                run_wrk(noop, script, 1, plan.connections, offset=900_000_000)
                warm = heartbeats_in_redis()
                edge_runs: list[Wrk] = []
                floor_runs: list[Wrk] = []
                edge_cpu: dict[str, float] = {}
                floor_cpu: dict[str, float] = {}
                for r in range(plan.beacon_rounds):
                    for target, runs, cpu in ((noop, floor_runs, floor_cpu), (edge, edge_runs, edge_cpu)):
                        before = cpu_by_role()
                        runs.append(run_wrk(target, script, plan.beacon_seconds, plan.connections, offset))
                        for k, v in cpu_by_role().items():
                            cpu[k] = cpu.get(k, 0.0) + v - before.get(k, 0.0)
                    offset += 10_000_000  # each thread's k = offset + thread + threads × n: never twice the same
                    print(f"  round {r + 1}: edge {edge_runs[-1].rate:,.0f}/s, no-op {floor_runs[-1].rate:,.0f}/s", flush=True)
                in_redis = heartbeats_in_redis() - warm
            rows += beacon_rows(plan, workers, edge_runs, floor_runs, in_redis, impl,
                                cpu_per({}, edge_cpu, sum(w.requests for w in edge_runs)),
                                cpu_per({}, floor_cpu, sum(w.requests for w in floor_runs)))
            clean_redis()
    return rows


def beacon_rows(plan: Plan, workers: int, edge: list[Wrk], floor: list[Wrk], in_redis: int, impl: str,
                edge_cpu: dict[str, float], floor_cpu: dict[str, float]) -> list[dict[str, str]]:
    requests, seconds = sum(w.requests for w in edge), sum(w.seconds for w in edge)
    floor_rate = sum(w.requests for w in floor) / sum(w.seconds for w in floor)
    rate = requests / seconds
    acked = requests - sum(w.non2xx for w in edge)
    refused = sum(w.non2xx for w in edge)
    in_flight = plan.connections * len(edge)
    intact = acked <= in_redis <= acked + in_flight and refused == 0 and not any(w.socket_errors for w in edge)
    print(f"  beacons {rate:,.0f}/s vs no-op {floor_rate:,.0f}/s; {acked:,} acknowledged, {in_redis:,} in Redis, "
          f"{refused} refused; CPU µs per beacon: {cpu_text(edge_cpu, 'µs')}; no-op: {cpu_text(floor_cpu, 'µs')}", flush=True)
    rows = [{
        "figure": f"Beacon POST /t/beat → validated, view id checked, rate-limited, in Redis before 204 (RedisIngest, "
                  f"micro-batched), wrk {WRK_THREADS} threads × {plan.connections} connections, {len(edge)} × "
                  f"{plan.beacon_seconds:g}s, uvicorn --workers {workers} ({impl}) — Redis Streams",
        "measured": f"{rate:,.0f} req/s",
        "target": f"≥ {TARGET_BEACONS:,} req/s",
        "baseline": f"no-op Starlette + uvicorn POST, same wrk, same workers: {floor_rate:,.0f} req/s; edge latency p50 "
                    f"{ms(percentile(sorted(w.p50 for w in edge), 50))}, p99 {ms(max(w.p99 for w in edge))}",
        "ratio": f"{rate / floor_rate:.2f} ({meets(rate >= TARGET_BEACONS)})",
        "score": Score(f"beacons, {workers} web worker{'s' if workers > 1 else ''}", rate, TARGET_BEACONS, "/s",
                       higher_is_better=True, floor=floor_rate),
    }, {
        "figure": "↳ heartbeats in the Redis streams / beacons acknowledged (204); refused or failed",
        "measured": f"{in_redis:,} / {acked:,}; {refused}",
        "target": "equal (+ at most the requests in flight when wrk stopped); 0",
        "baseline": f"in flight at most {in_flight}", "ratio": "ok" if intact else "MISMATCH",
    }, {
        "figure": "↳ CPU per beacon, by process (µs): edge / no-op run",
        "measured": cpu_text({k: v for k, v in edge_cpu.items() if k != "no-op"}, "µs"), "target": "—",
        "baseline": cpu_text({k: v for k, v in floor_cpu.items() if k != "edge"}, "µs"), "ratio": "—",
    }]
    if not intact:
        raise RuntimeError(f"beacons: {in_redis} heartbeats in Redis, {acked} acknowledged, {refused} refused")
    return rows


if __name__ == "__main__":
    run_alone(__doc__, run)
