"""The edge's ingest: where a customer page starts its view and sends its beacons, the tracking service over gRPC or
straight to its event log in Redis.

``edge_ingest_for(settings, backends)`` picks one; both have ``async record(view, seq, engaged_ms, scroll, end)``,
which returns once the beacon is recorded or raises ``BeaconRefused`` with the HTTP status to answer:

- ``GrpcIngest`` (the embedded default: no Redis, the tracking log lives in the tracking process's memory):
  RecordEngagement, then EndView when the page is left; the service checks the view id and the per-view limit.
- ``RedisIngest`` (``REDIS_URL`` set): what the tracking service's ingest does for RecordEngagement and
  EndView, done here, so a beacon costs no gRPC round trip: the view id's signature checked with the key the
  tracking service signs with (``ingest.view_key_for``; forged or unknown: 404, nothing written), the per-view
  heartbeat limit (tracking's in-process limiter: 429), and the same ``IngestEvent``s in an ``IngestBatch``
  appended to the same streams (``<prefix>:<partition>``, partitioned by view id like ``Ingest``), so the
  tracking consumer applies them unchanged. A beacon is answered only once Redis has acknowledged its entry.

Both also start the view a page is opened with (``start_view``): ``GrpcIngest`` calls StartView;
``RedisIngest`` does what StartView does, with the same code (``ingest.ViewStarts``: the share token's signature
and age, the input, the view id, the forward link) and the same per-visitor and per-network view limits in Redis
(``limits.AsyncViewLimiter``, the tracking service's script and keys), and appends the ``ViewStarted`` event through
the writer below. A page open was an edge → tracking gRPC call, about 0.7 ms of the tracking service's CPU; now it
costs the edge one Redis call for the limit and a share of a batched write.

Micro-batching (``RedisIngest``): a beacon appends its events to a pending list and awaits a future; one writer
task per process takes everything pending, groups it by partition into one ``IngestBatch`` per partition (as
``Ingest.record`` does for one RecordEngagement message carrying many views' heartbeats, at most
``MAX_HEARTBEATS_PER_CALL`` events each), XADDs them in one pipeline and resolves the futures; beacons that
arrive meanwhile wait for the next round. At low load a beacon is written alone at once; under load the rounds
grow, so Redis sees a few hundred XADDs/s instead of one per beacon. A failed write (Redis down, a timeout)
refuses that round's beacons with 503, never 204: an acknowledged beacon is in Redis. A write that failed after
Redis took it may leave a duplicate if the browser sends again; the consumer deduplicates on (view, seq).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb
from services.shared.errors import NotFound, ResourceExhausted, ServiceError, Unavailable
from services.shared.settings import Settings
from services.tracking.ingest import (
    MAX_HEARTBEATS_PER_CALL,
    TOO_MANY_VIEWS,
    ViewStarts,
    check_view,
    ended_event,
    heartbeat_event,
)
from services.tracking.limits import AsyncViewLimiter, RateLimiter
from services.tracking.streams import DEFAULT_PREFIX, entry_fields, partition_for, stream_key

from .backends import Backends

log = logging.getLogger("services.web")

REDIS_TIMEOUT_S = 2.0  # a beacon waits no longer for Redis (then 503; the browser's next heartbeat carries on)
MAX_PENDING = 20_000  # beacons waiting for a write, per process: beyond that Redis is not keeping up (503)
UNAVAILABLE = "tracking is unavailable; try again in a moment"
WARN_EVERY_S = 10.0


class BeaconRefused(Exception):
    """A beacon not recorded: the HTTP status and plain text to answer with."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {text}")
        self.status, self.text, self.headers = status, text, headers or {}


RATE_LIMITED = (429, "rate limited", {"retry-after": "10"})


class EdgeIngest(Protocol):
    def open(self) -> None:
        """Inside the running event loop, before the first beacon."""
        ...

    async def start_view(self, token: str, visitor: str, user_agent: str, referrer: str, client_ip: str,
                         request_id: str = "") -> tpb.StartViewResponse:
        """The view a page is opened with, once recorded; ``ServiceError`` or ``grpc.aio.AioRpcError`` otherwise."""
        ...

    async def record(self, view: str, seq: int, engaged_ms: int, scroll: int, end: bool, request_id: str = "") -> None:
        """Return once the beacon is recorded; ``BeaconRefused`` otherwise."""
        ...

    async def close(self) -> None: ...


def edge_ingest_for(settings: Settings, backends: Backends) -> EdgeIngest:
    """Straight to Redis when the tracking log is there (``REDIS_URL``), else through the tracking service."""
    if settings.redis_url:
        return RedisIngest.from_settings(settings)
    return GrpcIngest(backends)


# ---- through the tracking service -------------------------------------------------------------------------------


class GrpcIngest:
    """RecordEngagement (then EndView for the last beacon) on the tracking service, one call per beacon."""

    STATUS = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.RESOURCE_EXHAUSTED: 429}

    def __init__(self, backends: Backends) -> None:
        self.backends = backends  # opened and closed by the app

    def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def start_view(self, token: str, visitor: str, user_agent: str, referrer: str, client_ip: str,
                         request_id: str = "") -> tpb.StartViewResponse:
        b = self.backends
        return await b.call(b.tracking.StartView, tpb.StartViewRequest(
            share_token=token, visitor_id=visitor, user_agent=user_agent, referrer=referrer, client_ip=client_ip),
            b.metadata(request_id))

    async def record(self, view: str, seq: int, engaged_ms: int, scroll: int, end: bool, request_id: str = "") -> None:
        b = self.backends
        md = b.metadata(request_id)
        try:
            beat = tpb.Heartbeat(view=view, seq=seq, engaged_ms_delta=engaged_ms, max_scroll_percent=scroll)
            reply = await b.tracking.RecordEngagement(iter([tpb.RecordEngagementRequest(heartbeats=[beat])]),
                                                      metadata=md, timeout=3)
            if reply.throttled:  # the service's per-view limit: nothing was recorded
                raise BeaconRefused(*RATE_LIMITED)
            if end:
                await b.call(b.tracking.EndView, tpb.EndViewRequest(view=view, last_seq=seq), md)
        except grpc.aio.AioRpcError as err:
            status = self.STATUS.get(err.code(), 503)
            raise BeaconRefused(status, (err.details() or err.code().name) if status != 503 else UNAVAILABLE) from None


# ---- straight to the event log in Redis ---------------------------------------------------------------------------


@dataclass
class _Waiting:
    partition: int
    events: list[tpb.IngestEvent]
    done: asyncio.Future[None]
    starts_view: bool  # a page opened, not a beacon


@dataclass
class BatchStats:
    """What the writer did in this process (tests check that concurrent beacons share writes, and pages' views go
    through it)."""

    beacons: int = 0  # written and acknowledged
    views: int = 0  # views started (pages opened), written and acknowledged
    writes: int = 0  # pipelines sent (each one round trip)
    entries: int = 0  # stream entries (IngestBatch) appended
    failed: int = 0  # beacons and views refused because their write failed
    largest: int = 0  # most beacons and views in one write


class ViewLimiter(Protocol):
    async def allow_views(self, keys: list[str]) -> bool: ...


class RedisIngest:
    def __init__(self, url: str, starts: ViewStarts, *, prefix: str = DEFAULT_PREFIX, partitions: int = 1,
                 limiter: RateLimiter | None = None, view_limiter: ViewLimiter | None = None,
                 clock: Callable[[], float] = time.time, timeout: float = REDIS_TIMEOUT_S,
                 max_pending: int = MAX_PENDING) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.url = url
        self.starts = starts
        self.view_key = starts.view_key
        self.view_limiter = view_limiter  # None: the tracking service's, in this Redis (made by open)
        self.prefix = prefix
        self.partitions = partitions
        self.keys = [stream_key(prefix, p) for p in range(partitions)]
        self.limiter = limiter or RateLimiter()  # per view, in this process, as the tracking service's ingest
        self.clock = clock
        self.timeout = timeout
        self.max_pending = max_pending
        self.stats = BatchStats()
        self._client: aioredis.Redis | None = None
        self._pending: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None
        self._unlogged = 0  # refused since the last warning (an outage logs every WARN_EVERY_S, not every write)
        self._warned_at = -WARN_EVERY_S

    @classmethod
    def from_settings(cls, settings: Settings, *, prefix: str = DEFAULT_PREFIX, url: str | None = None) -> RedisIngest:
        """The tracking service's log: its Redis, its streams, its view key. ``prefix`` and ``url`` for tests."""
        return cls(url if url is not None else settings.redis_url, ViewStarts.from_settings(settings), prefix=prefix,
                   partitions=settings.tracking_stream_partitions)

    def open(self) -> None:
        self._client = aioredis.Redis.from_url(
            self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout, health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 1))  # a stale pooled connection: once more, at once
        if self.view_limiter is None:
            self.view_limiter = AsyncViewLimiter(self._client)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.wait([self._writer], timeout=self.timeout * 2)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def record(self, view: str, seq: int, engaged_ms: int, scroll: int, end: bool, request_id: str = "") -> None:
        try:
            view_id = check_view(self.view_key, view, "view")
        except ServiceError as err:
            raise BeaconRefused(404 if isinstance(err, NotFound) else 400, err.message) from None
        if not self.limiter.allow_heartbeats(view_id, 1):  # a flood from one page, not a browser
            raise BeaconRefused(*RATE_LIMITED)
        received = int(self.clock() * 1000)
        events = [heartbeat_event(view_id, seq, engaged_ms, scroll, received)]
        if end:
            events.append(ended_event(view_id, seq, received))
        await self._append(view_id, events, starts_view=False)

    async def start_view(self, token: str, visitor: str, user_agent: str, referrer: str, client_ip: str,
                         request_id: str = "") -> tpb.StartViewResponse:
        now = self.clock()
        opening = self.starts.open(token, visitor, user_agent, referrer, client_ip, now)
        assert self.view_limiter is not None, "open() first"
        if not await self.view_limiter.allow_views(opening.limit_keys):
            raise ResourceExhausted(TOO_MANY_VIEWS)
        started, event = self.starts.start(opening, int(now * 1000))
        try:
            await self._append(started.view, [event], starts_view=True)
        except BeaconRefused as refused:
            raise Unavailable(refused.text) from None
        return started.response()

    async def _append(self, view_id: str, events: list[tpb.IngestEvent], *, starts_view: bool) -> None:
        """Queue a view's events for the writer; return once Redis has them (``BeaconRefused`` 503 if not)."""
        if len(self._pending) >= self.max_pending:
            raise BeaconRefused(503, UNAVAILABLE, {"retry-after": "5"})
        loop = asyncio.get_running_loop()
        waiting = _Waiting(partition_for(view_id, self.partitions), events, loop.create_future(), starts_view)
        self._pending.append(waiting)
        if self._writer is None:  # it runs once the beacons already in hand have queued up too
            self._writer = loop.create_task(self._write_pending())
        await waiting.done

    def _warn(self, refused: int, reason: str) -> None:
        self._unlogged += refused
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            log.warning("beacons: %d not written to Redis since the last warning, answered 503 (%s)", self._unlogged, reason)
            self._unlogged, self._warned_at = 0, now

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: list[_Waiting]) -> None:
        by_partition: dict[int, list[tpb.IngestEvent]] = {}
        for w in batch:
            by_partition.setdefault(w.partition, []).extend(w.events)
        entries = [(p, tpb.IngestBatch(events=events[i:i + MAX_HEARTBEATS_PER_CALL]).SerializeToString())
                   for p, events in sorted(by_partition.items()) for i in range(0, len(events), MAX_HEARTBEATS_PER_CALL)]
        failed: dict[int, str] = {}
        try:
            if self._client is None:
                raise RedisError("not opened (the app's lifespan opens it)")
            pipe = self._client.pipeline(transaction=False)
            for p, payload in entries:
                pipe.xadd(self.keys[p], entry_fields(payload))
            replies = await pipe.execute(raise_on_error=False)
            for (p, _), reply in zip(entries, replies, strict=True):
                if isinstance(reply, Exception):
                    failed.setdefault(p, f"{reply.__class__.__name__}: {reply}")
        except (RedisError, OSError) as err:
            failed = {p: f"{err.__class__.__name__}: {err}" for p in by_partition}
        except Exception as err:  # a bug, not an outage: logged with its traceback; this round refused, the next tried
            log.exception("beacons: writing %d to Redis failed", len(batch))
            failed = {p: f"{err.__class__.__name__}: {err}" for p in by_partition}
        except BaseException:  # cancelled (shutting down): nothing is acknowledged unless written
            for w in batch:
                if not w.done.done():
                    w.done.set_exception(BeaconRefused(503, UNAVAILABLE, {"retry-after": "5"}))
            raise
        self.stats.writes += 1
        self.stats.entries += sum(p not in failed for p, _ in entries)
        self.stats.largest = max(self.stats.largest, len(batch))
        if failed:
            self._warn(sum(w.partition in failed for w in batch), next(iter(failed.values())))
        for w in batch:
            if w.partition in failed:
                self.stats.failed += 1
                if not w.done.done():
                    w.done.set_exception(BeaconRefused(503, UNAVAILABLE, {"retry-after": "5"}))
            else:
                if w.starts_view:
                    self.stats.views += 1
                else:
                    self.stats.beacons += 1
                if not w.done.done():  # a client gone meanwhile: written all the same
                    w.done.set_result(None)
