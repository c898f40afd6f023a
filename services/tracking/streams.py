"""Tracking's event log: client heartbeat batches in Redis Streams, applied by a consumer group.

Why a log: the API acknowledges a client's batch only once the batch is in Redis
(production Redis runs with AOF), and the aggregator applies it to PostgreSQL at its
own pace. One stream entry holds one client batch (an opaque payload, a serialized
protobuf), so 50,000 events/s is a few hundred XADDs/s.

Layout (``prefix`` defaults to ``contentops:tracking:events``)::

    <prefix>:<p>     partition p of N (N=1 by default): entries {payload}
    <prefix>:dead    dead letters: {payload, partition, source_id, reason, deliveries}

Producers pick the partition explicitly (``partition_for(viewer id)``: crc32 mod N,
the same in every process), so a viewer's batches stay in one stream and N streams
spread over consumers or Redis shards. Consumers read all partitions, or the ones
they are pinned to.

Delivery is at least once; applying is idempotent on (view, seq), so a redelivery
costs time, never a double count. An entry stays pending on the consumer that read
it until acked; if that consumer dies, ``reclaim`` takes entries idle for
``min_idle_ms`` (XAUTOCLAIM). XAUTOCLAIM does not return delivery counts, so
reclaim follows it with one pipelined ``XPENDING <id> <id> 1`` per claimed entry:
the claim just reset their idle time, so no one else can take them in between
unless this consumer stalls for ``min_idle_ms``; an entry found owned by someone
else is skipped. An entry delivered more than ``max_deliveries`` times is poison:
reclaim moves it to the dead-letter stream (XADD there and XACK here in one
MULTI), so nothing is silently dropped.

Trimming (``trim``) removes only acknowledged entries: XTRIM MINID to the oldest
id still pending in any group, or, with nothing pending, to just past the group's
last-delivered id. Entries appended before any group exists are never trimmed.
The dead-letter stream is never trimmed here: someone must look at it.

Consumers come and go (a crash, a deploy: every process has its own name), and
Redis keeps every name in the group until told otherwise. ``forget_consumers``
removes the ones idle for long with nothing pending, checking and deleting in one
Lua script per stream: XGROUP DELCONSUMER drops a consumer's pending entries with
it, so a consumer that read entries between a check and a delete would lose them
for good. A consumer removed while alive is simply re-created by its next read.

``stats`` counts the entries no consumer has been handed yet (lag) itself, in one Lua script
per stream, up to ``LAG_COUNT_LIMIT``. Redis's own counter (XINFO GROUPS lag) goes wrong on
Redis 7.0 after a restart: XREADGROUP writes only XCLAIM ... LASTID to the AOF, which moves
the group's last-delivered id on replay but not its read counter, so every entry read since
the last AOF rewrite stays counted as unread for good (and an XDEL in the unread range also
leaves it counted). When the count disagrees with the counter, the script sets the counter
right (XGROUP SETID at the same id with ENTRIESREAD), in the same script so no read slips in
between. A backlog past the limit is reported from the counter if Redis has one, else
counted on in further bounded calls.

``delete_where`` serves privacy erasure: it scans every partition and the
dead-letter stream with XRANGE in pages and XDELs (and XACKs) matching entries.

``MemoryEventLog`` (eventlog_memory.py) is the embedded default with the same
semantics, so ``run_consumer`` runs unchanged on both.
"""

from __future__ import annotations

import enum
import functools
import logging
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import redis

from services.shared.errors import Unavailable

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "contentops:tracking:events"
DEFAULT_GROUP = "tracking-aggregator"
DEFAULT_MAX_DELIVERIES = 5
MAX_BLOCK_MS = 5000  # XREADGROUP BLOCK stays well under the client's socket timeout
SOCKET_TIMEOUT_S = 10.0
PAGE = 500  # XRANGE page for delete_where and lag counting
LAG_COUNT_LIMIT = 10_000  # entries ``stats`` counts per stream in one script call: it blocks Redis ~8 ms at 10,000
FORGET_AFTER_MS = 3_600_000  # consumers idle this long with nothing pending leave the group

# KEYS[1] a stream; ARGV: group, min idle ms, only this consumer ("": any). Redis runs a script alone, so the
# pending count it reads is still true when it deletes.
_FORGET_CONSUMERS = """
local gone = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local field = {}
  for i = 1, #consumer, 2 do field[consumer[i]] = consumer[i + 1] end
  if field['pending'] == 0 and field['idle'] >= tonumber(ARGV[2]) and (ARGV[3] == '' or field['name'] == ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], field['name'])
    gone[#gone + 1] = field['name']
  end
end
return gone
"""

# Count the entries after ARGV[1] (an exclusive start, "(id"), at most ARGV[2], in XRANGE pages of ARGV[3]:
# returns the count and where to go on from, or '' when the stream ended first.
_COUNT_AFTER_FN = """
local function count_after(key, start, limit, page)
  local n = 0
  while n < limit do
    local want = math.min(page, limit - n)
    local items = redis.call('XRANGE', key, start, '+', 'COUNT', want)
    n = n + #items
    if #items < want then return n, '' end
    start = '(' .. items[#items][1]
  end
  return n, start
end
"""

_COUNT_AFTER = _COUNT_AFTER_FN + """
local n, cursor = count_after(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
return {n, cursor}
"""

# One partition's {length, pending, lag, cursor, repaired} for group ARGV[1]; see the module docstring. A cursor
# means Redis keeps no counter and more than ARGV[2] entries are unread: the caller counts on from it.
_GROUP_STATS = _COUNT_AFTER_FN + """
local length = redis.call('XLEN', KEYS[1])
local group
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local field = {}
  for i = 1, #g, 2 do field[g[i]] = g[i + 1] end
  if field['name'] == ARGV[1] then group = field end
end
if not group then return {length, 0, 0, '', 0} end
local counter = group['lag']  -- false when Redis cannot tell
if counter == 0 then return {length, group['pending'], 0, '', 0} end  -- a stale counter only ever over-counts
local n, cursor = count_after(KEYS[1], '(' .. group['last-delivered-id'], tonumber(ARGV[2]), tonumber(ARGV[3]))
if cursor ~= '' then
  if counter then return {length, group['pending'], math.max(counter, n), '', 0} end
  return {length, group['pending'], n, cursor, 0}
end
if counter and counter ~= n then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local added
  for i = 1, #info, 2 do if info[i] == 'entries-added' then added = info[i + 1] end end
  redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], group['last-delivered-id'], 'ENTRIESREAD', added - n)
  return {length, group['pending'], n, '', 1}
end
return {length, group['pending'], n, '', 0}
"""

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One stream entry as a consumer sees it. ``deliveries`` counts this delivery too."""

    id: str
    payload: bytes
    deliveries: int = 1
    partition: int = 0


@dataclass(frozen=True)
class DeadLetter:
    id: str  # id in the dead-letter stream
    partition: int
    source_id: str  # id the entry had in its partition
    payload: bytes
    reason: str
    deliveries: int


@dataclass(frozen=True)
class LogStats:
    length: int  # entries held in all partitions (acked but not yet trimmed included)
    pending: int  # delivered to a consumer, not acked
    lag: int  # appended, not yet delivered to any consumer
    dead_letters: int


class EventLog(Protocol):
    partitions: int

    def partition_for(self, key: str | bytes) -> int: ...

    def append(self, entries: Sequence[bytes], *, partition: int) -> list[str]:
        """Append payloads to one partition; return their ids once the log holds them."""
        ...

    def read(self, consumer: str, count: int, block_ms: int = 0, partitions: Sequence[int] | None = None) -> list[Entry]:
        """New entries for this consumer (about ``count`` in all); wait up to ``block_ms`` (<= 0: don't)."""
        ...

    def ack(self, entries: Iterable[Entry]) -> int: ...

    def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take entries pending on any consumer for ``min_idle_ms``; dead-letters poison ones."""
        ...

    def forget_consumers(self, idle_ms: int, only: str | None = None) -> list[str]:
        """Remove from the group the consumers (or just ``only``) idle at least ``idle_ms`` with nothing pending;
        return their names. Atomic per stream: a consumer that reads meanwhile keeps its entries."""
        ...

    def dead_letter(self, entry: Entry, reason: str) -> None: ...

    def dead_letters(self, count: int = 100) -> list[DeadLetter]: ...

    def stats(self) -> LogStats: ...

    def trim(self) -> int:
        """Drop acknowledged entries; return how many went."""
        ...

    def delete_where(self, match: Callable[[bytes], bool]) -> int:
        """Delete every entry (dead letters too) whose payload matches; return how many."""
        ...

    def close(self) -> None: ...


def partition_for(key: str | bytes, partitions: int) -> int:
    """Stable across processes and restarts (Python's ``hash`` is salted per process)."""
    data = key.encode() if isinstance(key, str) else key
    return zlib.crc32(data) % partitions


def stream_key(prefix: str, partition: int) -> str:
    """Partition ``partition``'s stream under ``prefix``: every producer names it so (RedisEventLog here, the web
    edge's asyncio writer for beacons), so consumers see one log."""
    return f"{prefix}:{partition}"


def entry_fields(payload: bytes) -> dict[str, bytes]:
    """A stream entry as every producer writes it: the serialized ``IngestBatch`` alone."""
    return {"payload": payload}


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def format_id(parsed: tuple[int, int]) -> str:
    return f"{parsed[0]}-{parsed[1]}"


def poison_reason(deliveries: int, max_deliveries: int) -> str:
    return f"poison: delivered {deliveries} times without being acknowledged (max_deliveries={max_deliveries})"


def check_partitions(partitions: int, max_deliveries: int) -> None:
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    if max_deliveries < 1:
        raise ValueError("max_deliveries must be at least 1")


def event_log_for(redis_url: str, *, partitions: int = 1, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> EventLog:
    """Redis when a URL is configured, else the in-process log of the embedded default."""
    if redis_url:
        return RedisEventLog.from_url(redis_url, partitions=partitions, max_deliveries=max_deliveries)
    from .eventlog_memory import MemoryEventLog

    return MemoryEventLog(partitions=partitions, max_deliveries=max_deliveries)


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _stream_items(response: Any) -> Iterator[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]]:
    """XREADGROUP replies come as [[key, entries], ...] or {key: entries} depending on redis-py's mode."""
    if not response:
        return
    pairs = response.items() if isinstance(response, dict) else response
    for key, items in pairs:
        yield key, items


class RedisEventLog:
    """The production log on Redis >= 7.0 (XAUTOCLAIM with deleted ids, XINFO GROUPS lag)."""

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, group: str = DEFAULT_GROUP,
                 partitions: int = 1, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        check_partitions(partitions, max_deliveries)
        self.client = client
        self.prefix = prefix
        self.group = group
        self.partitions = partitions
        self.max_deliveries = max_deliveries
        self.keys = [stream_key(prefix, p) for p in range(partitions)]
        self.dead_key = f"{prefix}:dead"
        self._partition_of = {key.encode(): p for p, key in enumerate(self.keys)}
        self._groups_ready = False
        self._cursors: dict[int, bytes | str] = {}  # XAUTOCLAIM cursor per partition
        self._forget = client.register_script(_FORGET_CONSUMERS)
        self._group_stats = client.register_script(_GROUP_STATS)
        self._count_after = client.register_script(_COUNT_AFTER)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisEventLog:
        client = redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=2, health_check_interval=30)
        return cls(client, **options)

    def partition_for(self, key: str | bytes) -> int:
        return partition_for(key, self.partitions)

    # ---- producing --------------------------------------------------------------------

    def append(self, entries: Sequence[bytes], *, partition: int) -> list[str]:
        key = self.keys[self._check_partition(partition)]
        if not entries:
            return []
        try:
            if len(entries) == 1:
                return [_str(self.client.xadd(key, entry_fields(entries[0])))]
            pipe = self.client.pipeline(transaction=False)
            for payload in entries:
                pipe.xadd(key, entry_fields(payload))
            return [_str(i) for i in pipe.execute()]
        except redis.RedisError as err:
            raise Unavailable(f"event log unavailable (Redis): {err}") from err

    # ---- consuming --------------------------------------------------------------------

    def read(self, consumer: str, count: int, block_ms: int = 0, partitions: Sequence[int] | None = None) -> list[Entry]:
        parts = self._parts(partitions)
        streams = {self.keys[p]: ">" for p in parts}
        block = min(block_ms, MAX_BLOCK_MS) if block_ms > 0 else None
        per_stream = max(1, count // len(parts))
        response = self._call(lambda: self.client.xreadgroup(self.group, consumer, streams, count=per_stream, block=block))
        entries = []
        for key, items in _stream_items(response):
            partition = self._partition_of[key if isinstance(key, bytes) else key.encode()]
            for entry_id, fields in items:
                payload = (fields or {}).get(b"payload")
                entry = Entry(_str(entry_id), payload or b"", 1, partition)
                if payload is None:
                    self.dead_letter(entry, "entry has no payload field")
                else:
                    entries.append(entry)
        return entries

    def ack(self, entries: Iterable[Entry]) -> int:
        by_partition: dict[int, list[str]] = {}
        for entry in entries:
            by_partition.setdefault(entry.partition, []).append(entry.id)
        if not by_partition:
            return 0

        def run() -> int:
            pipe = self.client.pipeline(transaction=False)
            for partition, ids in by_partition.items():
                pipe.xack(self.keys[partition], self.group, *ids)
            return sum(int(n) for n in pipe.execute())

        return self._call(run)

    def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        entries: list[Entry] = []
        for partition in range(self.partitions):
            room = count - len(entries)
            if room <= 0:
                break
            entries += self._call(functools.partial(self._reclaim_partition, partition, consumer, min_idle_ms, room))
        return entries

    def _reclaim_partition(self, partition: int, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        key = self.keys[partition]
        entries: list[Entry] = []
        while len(entries) < count:
            cursor = self._cursors.get(partition, "0-0")
            reply = self.client.xautoclaim(key, self.group, consumer, min_idle_ms, cursor, count=count - len(entries))
            next_cursor, claimed = reply[0], [(i, f) for i, f in reply[1] if i is not None]
            self._cursors[partition] = next_cursor
            if claimed:
                pipe = self.client.pipeline(transaction=False)
                for entry_id, _ in claimed:
                    pipe.xpending_range(key, self.group, entry_id, entry_id, 1)
                for (entry_id, fields), info in zip(claimed, pipe.execute(), strict=True):
                    if not info or _str(info[0]["consumer"]) != consumer:
                        continue  # acked or claimed by someone else since
                    deliveries = int(info[0]["times_delivered"])
                    entry = Entry(_str(entry_id), (fields or {}).get(b"payload", b""), deliveries, partition)
                    if deliveries > self.max_deliveries:
                        self.dead_letter(entry, poison_reason(deliveries, self.max_deliveries))
                    else:
                        entries.append(entry)
            if _str(next_cursor) == "0-0":
                break  # swept the whole pending list
        return entries

    def dead_letter(self, entry: Entry, reason: str) -> None:
        def run() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self.dead_key, {"payload": entry.payload, "partition": entry.partition, "source_id": entry.id,
                                      "reason": reason, "deliveries": entry.deliveries})
            pipe.xack(self.keys[entry.partition], self.group, entry.id)
            pipe.execute()

        self._call(run)

    def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        items = self._call(lambda: self.client.xrange(self.dead_key, count=count))
        return [DeadLetter(id=_str(i), partition=int(f[b"partition"]), source_id=_str(f[b"source_id"]), payload=f[b"payload"],
                           reason=_str(f[b"reason"]), deliveries=int(f[b"deliveries"])) for i, f in items]

    # ---- housekeeping -----------------------------------------------------------------

    def forget_consumers(self, idle_ms: int, only: str | None = None) -> list[str]:
        gone: set[str] = set()
        for key in self.keys:
            names = self._call(lambda key=key: self._forget(keys=[key], args=[self.group, idle_ms, only or ""]))  # type: ignore[misc]
            gone.update(_str(n) for n in names)
        return sorted(gone)

    def stats(self) -> LogStats:
        def run() -> LogStats:
            pipe = self.client.pipeline(transaction=False)
            for key in self.keys:
                self._group_stats(keys=[key], args=[self.group, LAG_COUNT_LIMIT, PAGE], client=pipe)
            pipe.xlen(self.dead_key)
            *parts, dead = pipe.execute()
            length = pending = lag = 0
            for key, (part_length, part_pending, part_lag, cursor, repaired) in zip(self.keys, parts, strict=True):
                length, pending = length + int(part_length), pending + int(part_pending)
                lag += int(part_lag)
                while cursor := _str(cursor):  # Redis keeps no counter (entries deleted unread): count on, a call at a time
                    more, cursor = self._count_after(keys=[key], args=[cursor, LAG_COUNT_LIMIT, PAGE])
                    lag += int(more)
                if repaired:
                    logger.warning("stream %s: Redis's lag counter for group %s was off (a restart replayed reads the AOF "
                                   "kept without it); set right at %d unread", key, self.group, part_lag)
            return LogStats(length=length, pending=pending, lag=lag, dead_letters=int(dead))

        return self._call(run)

    def trim(self) -> int:
        return sum(self._call(functools.partial(self._trim_partition, key)) for key in self.keys)

    def _trim_partition(self, key: str) -> int:
        # Order matters: last-delivered first, then pending. Both only move forward, so a
        # bound computed from the two is still safe when XTRIM runs.
        groups = self.client.xinfo_groups(key)
        if not groups:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for group in groups:
            pipe.xpending(key, group["name"])
        bound: tuple[int, int] | None = None
        for group, summary in zip(groups, pipe.execute(), strict=True):
            if int(summary["pending"]):
                candidate = parse_id(_str(summary["min"]))
            else:
                ms, seq = parse_id(_str(group["last-delivered-id"]))
                candidate = (ms, seq + 1)
            bound = candidate if bound is None else min(bound, candidate)
        assert bound is not None
        return int(self.client.xtrim(key, minid=format_id(bound), approximate=False))

    def delete_where(self, match: Callable[[bytes], bool]) -> int:
        deleted = 0
        for key in [*self.keys, self.dead_key]:
            deleted += self._call(functools.partial(self._delete_in, key, match))
        return deleted

    def _delete_in(self, key: str, match: Callable[[bytes], bool]) -> int:
        deleted, start = 0, "-"
        while page := self.client.xrange(key, min=start, max="+", count=PAGE):
            start = "(" + _str(page[-1][0])
            doomed = [entry_id for entry_id, fields in page if match(fields.get(b"payload", b""))]
            if not doomed:
                continue
            pipe = self.client.pipeline(transaction=True)
            pipe.xdel(key, *doomed)
            if key != self.dead_key:
                pipe.xack(key, self.group, *doomed)  # and out of the pending list, so it is never redelivered
            deleted += int(pipe.execute()[0])
        return deleted

    def close(self) -> None:
        self.client.close()

    # ---- plumbing ---------------------------------------------------------------------

    def _check_partition(self, partition: int) -> int:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} out of range 0..{self.partitions - 1}")
        return partition

    def _parts(self, partitions: Sequence[int] | None) -> list[int]:
        if partitions is None:
            return list(range(self.partitions))
        if not partitions:
            raise ValueError("partitions: empty")
        return [self._check_partition(p) for p in partitions]

    def _ensure_groups(self) -> None:
        """Create the group on every partition, idempotently. From id 0: entries appended
        before the first consumer started are delivered too."""
        if self._groups_ready:
            return
        for key in self.keys:
            try:
                self.client.xgroup_create(key, self.group, id="0", mkstream=True)
            except redis.ResponseError as err:
                if not str(err).startswith("BUSYGROUP"):
                    raise
        self._groups_ready = True

    def _call(self, fn: Callable[[], T]) -> T:
        """Run a group operation; recreate the group if the stream vanished; Redis trouble is Unavailable."""
        try:
            self._ensure_groups()
            try:
                return fn()
            except redis.ResponseError as err:
                if not (str(err).startswith("NOGROUP") or "no such key" in str(err)):
                    raise
                self._groups_ready = False  # the stream was deleted (FLUSHDB, a restart without AOF)
                self._ensure_groups()
                return fn()
        except redis.RedisError as err:
            raise Unavailable(f"event log unavailable (Redis): {err}") from err


# ---- the consumer loop ----------------------------------------------------------------


def is_transient_error(exc: BaseException) -> bool:
    """Worth retrying the same batch: a backing store is down (mirrors shared.db.translate_db_errors)."""
    if isinstance(exc, (Unavailable, ConnectionError, TimeoutError, redis.ConnectionError, redis.TimeoutError)):
        return True
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


@dataclass
class ConsumerStats:
    batches: int = 0
    acked: int = 0
    dead_lettered: int = 0  # by the handler's verdict (poison found on reclaim is counted by the log)
    transient_failures: int = 0  # handler or log calls retried after a back-off
    failed: int = 0  # entries left pending after a non-transient handler error: reclaimed later
    later: int = 0  # entries the handler asked to see again: left pending, reclaimed after min_idle_ms


# A handler's verdict on an entry it cannot finish yet (it waits on another entry, maybe held by a dead consumer):
# neither acked nor dead-lettered but left pending, so the group's reclaim hands it out again once it has been
# idle for min_idle_ms, paced, and the log's delivery count bounds how often (then it is dead-lettered as poison).
class Verdict(enum.Enum):
    RETRY_LATER = "retry later"


RETRY_LATER = Verdict.RETRY_LATER  # not a string: no dead-letter reason can be mistaken for it

# Entries to dead-letter with their reasons, or to leave pending with RETRY_LATER; the rest are acked.
HandleBatch = Callable[[list[Entry]], list[tuple[Entry, str | Verdict]]]


def run_consumer(log: EventLog, name: str, handle_batch: HandleBatch, stop: threading.Event, *,
                 batch_size: int = 200, block_ms: int = 1000, min_idle_ms: int = 60_000,
                 reclaim_interval_s: float = 15.0, trim_interval_s: float | None = 60.0, forget_after_ms: int = FORGET_AFTER_MS,
                 is_transient: Callable[[BaseException], bool] = is_transient_error,
                 max_backoff_s: float = 5.0, linger_s: float = 0.0, stats: ConsumerStats | None = None) -> ConsumerStats:
    """Apply the log through ``handle_batch`` until ``stop`` is set.

    ``handle_batch`` applies a batch idempotently and returns the entries it could not
    parse, with reasons; those are dead-lettered and the rest acked, only after it
    returned, so a crash before that leaves the batch pending for ``reclaim``. A
    transient error (database down) acks nothing: the same batch is retried after
    a back-off, without redelivery, so an outage never makes entries look poisonous.
    Any other error retries the entries one by one; one that still fails stays
    pending, and is dead-lettered once reclaimed more than ``max_deliveries`` times.
    Every ``reclaim_interval_s`` it reclaims entries idle on dead consumers, and removes from
    the group consumers idle ``forget_after_ms`` with nothing pending; every ``trim_interval_s``
    it trims acknowledged entries. Stopping, it leaves the group itself if it holds nothing.

    Once a read finds it caught up (no partition gave its full share of ``batch_size``), the next read waits
    until ``linger_s`` after it, so what arrives meanwhile is applied as one batch: a transaction's fixed cost
    (about 9 ms of CPU, consumer and PostgreSQL together) is paid per batch, not per handful of entries. An idle
    consumer still applies the first entry to arrive at once, and one that is behind reads on without pausing.
    """
    loop = _ConsumerLoop(log, name, handle_batch, stop, batch_size, block_ms, min_idle_ms, is_transient,
                         max_backoff_s, linger_s, stats or ConsumerStats())
    loop.run(reclaim_interval_s, trim_interval_s, forget_after_ms)
    try:
        log.forget_consumers(0, only=name)
    except Exception as exc:
        if not is_transient(exc):
            raise
        logger.warning("consumer %s: could not leave the group (%s); it is forgotten after %d ms idle", name, exc,
                       forget_after_ms)
    return loop.stats


def caught_up(batch: Sequence[Entry], count: int, partitions: int) -> bool:
    """Whether a read of ``count`` over ``partitions`` found every partition drained: none gave its full share."""
    share = max(1, count // partitions)
    taken = Counter(entry.partition for entry in batch)
    return all(n < share for n in taken.values())


_STOPPED = object()
_FAILED = object()


@dataclass
class _ConsumerLoop:
    log: EventLog
    name: str
    handle_batch: HandleBatch
    stop: threading.Event
    batch_size: int
    block_ms: int
    min_idle_ms: int
    is_transient: Callable[[BaseException], bool]
    max_backoff_s: float
    linger_s: float
    stats: ConsumerStats
    _delay: float = 0.0
    _next_read: float = 0.0  # monotonic time before which a caught-up consumer does not read again

    def run(self, reclaim_interval_s: float, trim_interval_s: float | None, forget_after_ms: int) -> None:
        next_reclaim = 0.0
        next_trim = time.monotonic() + (trim_interval_s or 0)
        while not self.stop.is_set():
            now = time.monotonic()
            try:
                batch: list[Entry] = []
                if now >= next_reclaim:
                    batch = self.log.reclaim(self.name, self.min_idle_ms, self.batch_size)
                    if len(batch) < self.batch_size:  # a full batch: more may wait, reclaim again next turn
                        next_reclaim = now + reclaim_interval_s
                        if gone := self.log.forget_consumers(forget_after_ms):
                            logger.info("consumer %s: removed %d idle consumers from the group: %s", self.name, len(gone),
                                        ", ".join(gone))
                if trim_interval_s and now >= next_trim:
                    self.log.trim()
                    next_trim = now + trim_interval_s
                if not batch:
                    if (wait := self._next_read - time.monotonic()) > 0 and self.stop.wait(wait):
                        break
                    batch = self.log.read(self.name, self.batch_size, self.block_ms)
                    self._next_read = time.monotonic() + self.linger_s if caught_up(batch, self.batch_size,
                                                                                    self.log.partitions) else 0.0
            except Exception as exc:
                if not self.is_transient(exc):
                    raise
                self._back_off("reading the event log", exc)
                continue
            self._delay = 0.0
            if batch:
                self.stats.batches += 1
                self._process(batch)

    def _process(self, batch: list[Entry]) -> None:
        rejects = self._handle(batch)
        if rejects is _STOPPED:
            return
        if rejects is _FAILED:
            if len(batch) == 1:
                self.stats.failed += 1
                return
            for entry in batch:  # isolate the entry that breaks the handler
                if self.stop.is_set():
                    return
                self._process([entry])
            return
        assert isinstance(rejects, list)
        reasons = {(e.partition, e.id): reason for e, reason in rejects}
        for entry in batch:
            reason = reasons.get((entry.partition, entry.id))
            if reason is RETRY_LATER:
                self.stats.later += 1
            elif isinstance(reason, str) and self._until_done(functools.partial(self.log.dead_letter, entry, reason)):
                self.stats.dead_lettered += 1
        keep = [e for e in batch if (e.partition, e.id) not in reasons]
        if keep and self._until_done(functools.partial(self.log.ack, keep)):
            self.stats.acked += len(keep)

    def _handle(self, batch: list[Entry]) -> object:
        while not self.stop.is_set():
            try:
                rejects = list(self.handle_batch(batch))
            except Exception as exc:
                if self.is_transient(exc):
                    self._back_off(f"applying {len(batch)} entries", exc)
                    continue
                logger.exception("handler failed on %d entries (first %s); left pending", len(batch), batch[0].id)
                return _FAILED
            self._delay = 0.0
            return rejects
        return _STOPPED

    def _until_done(self, call: Callable[[], object]) -> bool:
        """Retry a log call through transient failures; False if stopped first (the entries stay pending)."""
        while not self.stop.is_set():
            try:
                call()
            except Exception as exc:
                if not self.is_transient(exc):
                    raise
                self._back_off("settling a batch", exc)
                continue
            self._delay = 0.0
            return True
        return False

    def _back_off(self, doing: str, exc: BaseException) -> None:
        self.stats.transient_failures += 1
        self._delay = min(self.max_backoff_s, max(0.05, self._delay * 2))
        logger.warning("consumer %s: transient failure %s (%s); retrying in %.2fs", self.name, doing, exc, self._delay)
        self.stop.wait(self._delay)
