"""The soak's clients, doing what real ones do, and what each was told was done.

- ``WebLoad`` (asyncio, aiohttp; in a process of its own, ``WebProcess``): readers open a rep's share page on the web
  edge (GET /s/{token}: GetRepCopy behind it, the view started by the edge in Redis) at a fixed rate, open loop, each from one of many loopback
  /24 networks (127.0.N.x, so the per-network limits see many networks, as they would), then send beacons
  (POST /t/beat) every ``interval`` with their visitor cookie, the last one ending the view.
- ``HeartbeatLoad`` (gRPC, as any other client of the ingest API does it): views started with StartView, then heartbeats batched into one
  RecordEngagement message every 100 ms, each view one heartbeat per ``interval``.
- ``Editor`` (gRPC): every ``every`` seconds uploads 1-3 new photos, creates a post targeting one team and publishes it.

Every client retries what the service says to retry (gRPC UNAVAILABLE or DEADLINE_EXCEEDED, HTTP 503, a dropped
connection) with the same request, as a browser or an SDK would: the (view, seq) of a heartbeat is its idempotency
key, CreatePost and UploadAsset carry a request id, PublishPost is sent without an etag (publishing a live post again
is a no-op). The ``Ledger`` keeps what was acknowledged, and what was sent without an answer either way ("in doubt":
the client gave up, it may or may not be stored); ``Errors`` keeps every error a client saw, with its time.

Engaged time never outruns the wall clock here (a view's deltas add up to at most the time since its StartView was
acknowledged), so the service's wall-time cap never binds and a view's stored engaged time must equal the sum of its
stored heartbeats' deltas exactly.
"""

from __future__ import annotations

import asyncio
import heapq
import io
import itertools
import json
import multiprocessing
import queue
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import grpc
from PIL import Image, ImageDraw, ImageOps

from services.protos.contentops.content.v1 import content_pb2 as cpb
from services.protos.contentops.content.v1 import content_pb2_grpc as cpb_grpc
from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb
from services.protos.contentops.tracking.v1 import tracking_pb2_grpc as tpb_grpc

from .campaign import DEMO, POST_TEMPLATE

UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
      "MicroMessenger/8.0.47")
RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
RETRY_STATUS = frozenset({503})
GRPC_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0
BACKOFF = (0.2, 2.0)  # first and longest wait between retries, seconds (with jitter)
MAX_PER_MESSAGE = 500
# A reader keeps its connection between beacons, as a browser does; dropped well before the edge closes an idle one
# (WEB_KEEPALIVE_SECONDS, 75 s), so no request races a server-side close. (At 2 s, under uvicorn's old 5 s, nearly
# every beacon opened a connection: anyio's connect path cost this process's event loop so much that from ~200 s
# into a run it could not keep up and its own connects timed out.)
KEEPALIVE_S = 30.0
Metadata = tuple[tuple[str, str], ...]
T = TypeVar("T")


class Clock:
    """Seconds since the load began (monotonic: one clock for every process on the machine)."""

    def __init__(self, t0: float | None = None) -> None:
        self.t0 = time.monotonic() if t0 is None else t0

    def restart(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0


# ---- what the clients saw -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientError:
    at: float  # seconds into the load
    source: str  # page, beacon, StartView, RecordEngagement, UploadAsset, CreatePost, PublishPost
    code: str  # a gRPC status name, "HTTP 503", or a transport error's class name


class Errors:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.items: list[ClientError] = []
        self._lock = threading.Lock()

    def add(self, source: str, code: str) -> None:
        with self._lock:
            self.items.append(ClientError(self.clock.now(), source, code))

    def extend(self, items: list[ClientError]) -> None:
        """Errors another process saw (on the same clock), kept in time order."""
        with self._lock:
            self.items.extend(items)
            self.items.sort(key=lambda e: e.at)


@dataclass
class ViewLedger:
    origin: str  # "page" (web edge: page + beacons) or "grpc" (StartView + RecordEngagement)
    acked: dict[int, int] = field(default_factory=dict)  # seq -> engaged ms delta, acknowledged
    doubt: dict[int, int] = field(default_factory=dict)  # seq -> delta, sent but never answered either way


class Ledger:
    """Views whose start was acknowledged, and per view the heartbeats acknowledged (and those in doubt); how many
    of each kind were acknowledged in each second of the load."""

    KINDS = ("pages", "beacons", "grpc_views", "heartbeats")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.views: dict[str, ViewLedger] = {}  # view id (without "views/")
        self.per_second: dict[str, Counter[int]] = {k: Counter() for k in self.KINDS}
        self.answers: dict[str, list[float]] = {}  # kind of request -> seconds each answered attempt took
        self._lock = threading.Lock()

    def absorb(self, views: dict[str, ViewLedger], per_second: dict[str, Counter[int]], answers: dict[str, list[float]]) -> None:
        """What another process's ledger holds (its views are its own: no view is in both)."""
        with self._lock:
            self.views.update(views)
            for kind, counts in per_second.items():
                self.per_second[kind].update(counts)
            for kind, took in answers.items():
                self.answers.setdefault(kind, []).extend(took)

    def answered(self, kind: str, seconds: float) -> None:
        """An attempt that got its answer took ``seconds`` (as the client saw it: queueing in this process included)."""
        with self._lock:
            self.answers.setdefault(kind, []).append(seconds)

    def timed(self, kind: str, call: Callable[[], T]) -> Callable[[], T]:
        """``call``, noting how long each attempt that returns took."""
        def attempt() -> T:
            began = time.perf_counter()
            out = call()
            self.answered(kind, time.perf_counter() - began)
            return out
        return attempt

    @property
    def counts(self) -> dict[str, int]:
        return {k: sum(c.values()) for k, c in self.per_second.items()}

    def rate(self, kind: str, start: float, end: float) -> float:
        """Acknowledged per second over [start, end) (whole seconds into the load)."""
        return sum(n for s, n in self.per_second[kind].items() if start <= s < end) / max(1.0, end - start)

    def _count(self, kind: str) -> None:
        self.per_second[kind][int(self.clock.now())] += 1

    def started(self, view: str, origin: str) -> None:
        with self._lock:
            self.views[view.removeprefix("views/")] = ViewLedger(origin)
            self._count("pages" if origin == "page" else "grpc_views")

    def acked(self, view: str, seq: int, delta: int) -> None:
        with self._lock:
            entry = self.views[view.removeprefix("views/")]
            entry.doubt.pop(seq, None)
            if seq not in entry.acked:
                entry.acked[seq] = delta
                self._count("beacons" if entry.origin == "page" else "heartbeats")

    def in_doubt(self, view: str, seq: int, delta: int) -> None:
        with self._lock:
            entry = self.views[view.removeprefix("views/")]
            if seq not in entry.acked:
                entry.doubt[seq] = delta


class TokenPool:
    """Share tokens of ready copies (the links reps have shared), refreshed as campaigns render."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = list(tokens)

    def replace(self, tokens: list[str]) -> None:
        if tokens:
            self.tokens = list(tokens)

    def pick(self, rng: random.Random) -> str:
        return rng.choice(self.tokens)


def _pause(delay: float) -> float:
    """Sleep ``delay`` with jitter; the next, longer delay."""
    time.sleep(delay * random.uniform(0.5, 1.0))
    return min(BACKOFF[1], delay * 2)


class GaveUp(Exception):
    """A retried call abandoned because the soak is stopping: its outcome is unknown."""


def call_until_done(call: Callable[[], T], source: str, errors: Errors, abort: threading.Event) -> T:
    """``call()`` again after UNAVAILABLE / DEADLINE_EXCEEDED until it answers; any other error is raised. ``abort``
    set: GaveUp instead of another try."""
    delay = BACKOFF[0]
    while True:
        try:
            return call()
        except grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
            errors.add(source, code.name)
            if code not in RETRY_CODES:
                raise
        if abort.is_set():
            raise GaveUp(source)
        delay = _pause(delay)


# ---- customer pages and beacons through the web edge -----------------------------------------------------------------------


VIEW_RE = re.compile(r'data-view="(views/[^"]+)"')
UNTRACKED = "200 without a view"  # served while tracking was down: not an error for the reader, allowed only in an outage
VISITOR_RE = re.compile(r"co_vid=([^;]+)")


@dataclass
class WebPlan:
    page_rate: float  # pages/s
    beacons_per_page: int
    interval: float  # s between a reader's beacons
    networks: int = 32


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, read whole."""

    status: int
    text: str
    set_cookie: str


class WebLoad:
    """Readers through the web edge; ``run`` is a thread's (or process's) target. aiohttp, not httpx: at this
    concurrency httpx's connection pool cost about 3.5 ms of this process's CPU per request against aiohttp's 0.2 ms
    (measured side by side against one uvicorn), and the readers, not the edge, became what the soak measured."""

    def __init__(self, base_url: str, plan: WebPlan, tokens: TokenPool, ledger: Ledger, errors: Errors) -> None:
        self.base_url = base_url
        self.plan = plan
        self.tokens = tokens
        self.ledger = ledger
        self.errors = errors
        self.rng = random.Random(1)
        # Links some reader opened: the services have served their copy, so it is cached (an outage of PostgreSQL
        # should not stop them opening; errors on them are counted apart).
        self.opened: set[str] = set()

    def run(self, stop: threading.Event) -> None:
        asyncio.run(self._main(stop))

    def client(self, network: int) -> aiohttp.ClientSession:
        """Readers from loopback network 127.0.``network``.0/24; no cookie jar (each page is a new reader: a cookie
        the edge set for one must never reach the next). Call in a running event loop."""
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.{network}.1", 0), limit=200, keepalive_timeout=KEEPALIVE_S)
        return aiohttp.ClientSession(self.base_url, connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     headers={"user-agent": UA}, timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT))

    @staticmethod
    async def fetch(client: aiohttp.ClientSession, method: str, path: str, **options: Any) -> Answer:
        async with client.request(method, path, **options) as response:
            return Answer(response.status, await response.text(), response.headers.get("set-cookie", ""))

    async def _main(self, stop: threading.Event) -> None:
        clients = [self.client(n) for n in range(1, self.plan.networks + 1)]
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        began = loop.time()
        i = 0
        try:
            while not stop.is_set():
                delay = began + i / self.plan.page_rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = loop.create_task(self._reader(clients[i % len(clients)], stop))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    async def _retrying(self, source: str, send: Callable[[], Any], stop: threading.Event, ok: int,
                        failed: Callable[[], str] | None = None) -> Answer | None:
        """Send until the answer is ``ok``; None once an answer says not to retry, or ``stop`` is set first. Errors are
        counted under ``failed()`` if given (at the time of each error), else under ``source``."""
        delay = BACKOFF[0]
        while True:
            try:
                began = time.perf_counter()
                answer: Answer = await send()
                if answer.status == ok:
                    self.ledger.answered(source, time.perf_counter() - began)
                    return answer
                self.errors.add(failed() if failed else source, f"HTTP {answer.status}")
                if answer.status not in RETRY_STATUS:
                    return None
            except (aiohttp.ClientError, TimeoutError) as err:
                self.errors.add(failed() if failed else source, err.__class__.__name__)
            if stop.is_set():
                return None
            await asyncio.sleep(delay * self.rng.uniform(0.5, 1.0))
            delay = min(BACKOFF[1], delay * 2)

    async def _reader(self, client: aiohttp.ClientSession, stop: threading.Event) -> None:
        token = self.tokens.pick(self.rng)
        page = await self._retrying("page", lambda: self.fetch(client, "GET", f"/s/{token}"), stop, 200,
                                    lambda: "page (link opened before)" if token in self.opened else "page")
        if page is None:
            return
        self.opened.add(token)
        view, visitor = VIEW_RE.search(page.text), VISITOR_RE.search(page.set_cookie)
        if view is None and visitor is None and 'data-view=""' in page.text:
            self.errors.add("page", UNTRACKED)  # the reader got the post; tracking was down, so no view (and no beacons)
            return
        if view is None or visitor is None:
            self.errors.add("page", "no view or visitor in the page")
            return
        self.ledger.started(view.group(1), "page")
        headers = {"cookie": f"co_vid={visitor.group(1)}", "content-type": "text/plain;charset=UTF-8"}  # as sendBeacon
        last = self.plan.beacons_per_page
        for seq in range(1, last + 1):
            await asyncio.sleep(self.plan.interval)
            if stop.is_set():
                return
            delta = self.rng.randint(int(self.plan.interval * 500), int(self.plan.interval * 1000))
            body = json.dumps({"view": view.group(1), "seq": seq, "engaged_ms": delta, "scroll": min(100, seq * 7),
                               "end": seq == last}).encode()
            answer = await self._retrying("beacon", lambda b=body: self.fetch(client, "POST", "/t/beat", data=b, headers=headers),
                                          stop, 204)
            if answer is None:
                self.ledger.in_doubt(view.group(1), seq, delta)
                return
            self.ledger.acked(view.group(1), seq, delta)


@dataclass
class WebResult:
    """What a ``WebProcess`` saw, sent back to the parent's ledger when it ends."""

    views: dict[str, ViewLedger]
    per_second: dict[str, Counter[int]]
    answers: dict[str, list[float]]
    errors: list[ClientError]


def _web_process(base_url: str, plan: WebPlan, tokens: list[str], t0: float, stop: Any, updates: Any, results: Any) -> None:
    clock = Clock(t0)
    ledger, errors, pool = Ledger(clock), Errors(clock), TokenPool(tokens)
    done = threading.Event()

    def follow() -> None:  # the parent's stop, and its token refreshes
        while not stop.is_set():
            try:
                pool.replace(updates.get(timeout=0.2))
            except queue.Empty:
                pass
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    try:
        WebLoad(base_url, plan, pool, ledger, errors).run(done)
    except Exception as err:  # noqa: BLE001 - an error the report fails on, with what the readers had seen by then
        errors.add("page", f"the readers' process failed: {err.__class__.__name__}: {err}")
    results.put(WebResult(ledger.views, ledger.per_second, ledger.answers, errors.items))


class WebProcess:
    """``WebLoad`` in a process of its own: its event loop gets a core's worth of Python to itself instead of sharing
    this process's GIL with the gRPC clients, the editor and the monitor. In one process, a few hundred requests a
    second queued behind the others for seconds, and the clients' own connects timed out (what make soak then
    reported as the edge's errors). Its ledger and errors join the parent's when it ends."""

    def __init__(self, base_url: str, plan: WebPlan, tokens: TokenPool, clock: Clock) -> None:
        ctx = multiprocessing.get_context("spawn")  # not fork: this process runs threads (gRPC's among them)
        self._stop, self._updates, self._results = ctx.Event(), ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(target=_web_process, name="soak web readers", daemon=True,
                                   args=(base_url, plan, list(tokens.tokens), clock.t0, self._stop, self._updates, self._results))

    def start(self) -> None:
        self.process.start()

    def replace_tokens(self, tokens: list[str]) -> None:
        if tokens:
            self._updates.put(list(tokens))

    def stop(self, ledger: Ledger, errors: Errors, timeout: float = 120.0) -> None:
        """Stop the readers (each finishes its request in hand), and add what they saw to ``ledger`` and ``errors``."""
        self._stop.set()
        result: WebResult = self._results.get(timeout=timeout)
        self.process.join(timeout=30)
        ledger.absorb(result.views, result.per_second, result.answers)
        errors.extend(result.errors)


# ---- views and batched heartbeats over gRPC ------------------------------------------------------------------------------------


@dataclass
class HeartbeatPlan:
    rate: float  # heartbeats/s
    interval: float  # s between one view's heartbeats
    beats_per_view: int
    tick: float = 0.1  # s between RecordEngagement messages


@dataclass(order=True)
class _Due:
    at: float  # monotonic
    view: str = field(compare=False)
    seq: int = field(compare=False)


class HeartbeatLoad:
    """StartView at ``rate / beats_per_view`` per second; each view's heartbeats batched with the others'."""

    def __init__(self, address: str, md: Metadata, plan: HeartbeatPlan, tokens: TokenPool, ledger: Ledger,
                 errors: Errors) -> None:
        self.address = address
        self.md = md
        self.plan = plan
        self.tokens = tokens
        self.ledger = ledger
        self.errors = errors
        self.rng = random.Random(2)
        self._due: list[_Due] = []
        self._lock = threading.Lock()
        self.channel = grpc.insecure_channel(address)
        self.stub = tpb_grpc.TrackingServiceStub(self.channel)

    def starter(self, stop: threading.Event, abort: threading.Event) -> None:
        """StartView for a new reader at a fixed rate (as many as views end), open loop."""
        every = self.plan.beats_per_view / self.plan.rate
        began, i = time.monotonic(), 0
        while not stop.is_set():
            delay = began + i * every - time.monotonic()
            if delay > 0:
                stop.wait(delay)
                continue
            i += 1
            request = tpb.StartViewRequest(share_token=self.tokens.pick(self.rng), visitor_id=f"soak{uuid.uuid4().hex[:20]}",
                                           user_agent=UA, client_ip=f"10.{i % 200}.{(i // 200) % 250}.{i % 250 + 1}")
            try:
                reply = call_until_done(self.ledger.timed("StartView", lambda r=request: self.stub.StartView(
                    r, metadata=self.md, timeout=GRPC_TIMEOUT)), "StartView", self.errors, stop)
            except (GaveUp, grpc.RpcError):
                continue
            self.ledger.started(reply.view, "grpc")
            with self._lock:
                heapq.heappush(self._due, _Due(time.monotonic() + self.plan.interval, reply.view, 1))

    def _take_due(self) -> list[_Due]:
        now = time.monotonic()
        out = []
        with self._lock:
            while self._due and self._due[0].at <= now and len(out) < MAX_PER_MESSAGE:
                out.append(heapq.heappop(self._due))
        return out

    def sender(self, stop: threading.Event, abort: threading.Event) -> None:
        """Every tick, one RecordEngagement message of the heartbeats due; retried whole until acknowledged with
        nothing throttled (resending is harmless: the server deduplicates on (view, seq))."""
        while not stop.is_set():
            due = self._take_due()
            if not due:
                stop.wait(self.plan.tick)
                continue
            beats = [(d, self.rng.randint(int(self.plan.interval * 500), int(self.plan.interval * 1000))) for d in due]
            message = tpb.RecordEngagementRequest(heartbeats=[
                tpb.Heartbeat(view=d.view, seq=d.seq, engaged_ms_delta=delta, max_scroll_percent=min(100, d.seq * 9))
                for d, delta in beats])
            try:
                self._send(message, abort)
            except (GaveUp, grpc.RpcError):
                for d, delta in beats:
                    self.ledger.in_doubt(d.view, d.seq, delta)
                continue
            with self._lock:
                for d, delta in beats:
                    self.ledger.acked(d.view, d.seq, delta)
                    if d.seq < self.plan.beats_per_view:
                        heapq.heappush(self._due, _Due(d.at + self.plan.interval, d.view, d.seq + 1))
            if len(due) < MAX_PER_MESSAGE:
                stop.wait(self.plan.tick)

    def _send(self, message: tpb.RecordEngagementRequest, abort: threading.Event) -> None:
        delay = BACKOFF[0]
        while True:
            reply = call_until_done(self.ledger.timed("RecordEngagement", lambda: self.stub.RecordEngagement(
                iter([message]), metadata=self.md, timeout=GRPC_TIMEOUT)), "RecordEngagement", self.errors, abort)
            if not reply.throttled:
                return
            self.errors.add("RecordEngagement", "throttled")
            if abort.is_set():
                raise GaveUp("RecordEngagement")
            delay = _pause(delay)

    def close(self) -> None:
        self.channel.close()


# ---- the editor: a campaign every so often ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Campaign:
    index: int
    post: str  # "posts/{id}"
    team: str  # team id
    images: int
    published: float  # monotonic, when PublishPost was acknowledged
    published_wall: float  # unix seconds


PHOTOS = sorted(DEMO.glob("*.jpg"))


def campaign_photos(index: int, count: int, side: int) -> list[bytes]:
    """``count`` JPEGs of the demo photos at ``side`` px, each marked with the campaign and slot, so every campaign's
    images are new bytes (new assets, new variants)."""
    out = []
    for k in range(count):
        with Image.open(PHOTOS[(index + k) % len(PHOTOS)]) as src:
            image = ImageOps.fit(src.convert("RGB"), (side, side), Image.Resampling.LANCZOS)
        ImageDraw.Draw(image).text((12, 12), f"soak #{index}.{k}", fill=(255, 255, 255))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def upload_messages(data: bytes, filename: str, request_id: str, chunk: int = 256 * 1024) -> Iterator[cpb.UploadAssetRequest]:
    yield cpb.UploadAssetRequest(metadata=cpb.AssetMetadata(filename=filename, request_id=request_id))
    for i in range(0, len(data), chunk):
        yield cpb.UploadAssetRequest(chunk=data[i:i + chunk])


class Editor:
    """Publishes a campaign every ``every`` seconds, to the teams in turn."""

    def __init__(self, address: str, md: Metadata, teams: list[str], errors: Errors, every: float, side: int = 1080) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = cpb_grpc.ContentServiceStub(self.channel)
        self.md = md
        self.teams = teams
        self.errors = errors
        self.every = every
        self.side = side
        self.campaigns: list[Campaign] = []
        self.published = threading.Condition()
        self.body = (DEMO / "post.txt").read_text(encoding="utf-8")

    def run(self, stop: threading.Event, abort: threading.Event) -> None:
        """A campaign at once, then one every ``every`` seconds until ``stop``; one in progress is finished."""
        began = time.monotonic()
        for j in itertools.count():
            delay = began + j * self.every - time.monotonic()
            if (delay > 0 and stop.wait(delay)) or stop.is_set():
                return
            try:
                self.publish(len(self.campaigns), abort)
            except GaveUp:
                return
            except grpc.RpcError:
                continue  # recorded in Errors; a campaign that could not be published is missing from the checks' input

    def publish(self, index: int, abort: threading.Event) -> Campaign:
        photos = campaign_photos(index, 1 + index % 3, self.side)
        assets = []
        for k, data in enumerate(photos):
            rid = str(uuid.uuid4())
            asset = call_until_done(lambda d=data, r=rid, n=k: self.stub.UploadAsset(
                upload_messages(d, f"soak-{index}-{n}.jpg", r), metadata=self.md, timeout=60), "UploadAsset", self.errors, abort)
            assets.append(asset.name)
        team = self.teams[index % len(self.teams)]
        content = cpb.PostContent(title=f"开放日第 {index + 1} 期：5岁小姑娘的创造力启蒙三步走", body=self.body, images=assets,
                                  target_teams=[f"teams/{team}"], variation=cpb.VariationSettings(
                                      protected_phrases=["400-820-1234"], badge_enabled=True, rep_template=POST_TEMPLATE))
        request = cpb.CreatePostRequest(content=content, request_id=str(uuid.uuid4()))
        post = call_until_done(lambda: self.stub.CreatePost(request, metadata=self.md, timeout=GRPC_TIMEOUT), "CreatePost",
                               self.errors, abort)
        call_until_done(lambda: self.stub.PublishPost(cpb.PublishPostRequest(name=post.name), metadata=self.md,
                                                      timeout=GRPC_TIMEOUT), "PublishPost", self.errors, abort)
        campaign = Campaign(index, post.name, team, len(assets), time.monotonic(), time.time())
        with self.published:
            self.campaigns.append(campaign)
            self.published.notify_all()
        return campaign

    def wait_published_after(self, at: float, timeout: float) -> Campaign | None:
        """The first campaign published at or after ``at`` (monotonic), waiting up to ``timeout``."""
        with self.published:
            self.published.wait_for(lambda: any(c.published >= at for c in self.campaigns), timeout)
            return next((c for c in self.campaigns if c.published >= at), None)

    def close(self) -> None:
        self.channel.close()
