"""The embedded default's event log: Redis Streams semantics in one process.

Same contract as ``RedisEventLog`` (ids ``<ms>-<seq>``, one consumer group,
pending entries per consumer, reclaim by idle time with delivery counts, poison to
dead letters, trim only below the oldest unacknowledged entry), so the consumer
loop and its tests run unchanged on both. Thread-safe: one condition guards
everything and wakes blocked readers on append.

Not durable: entries not yet applied are lost if the process dies. That is the
embedded default's trade (no Redis installed); production sets ``REDIS_URL``.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .streams import (
    DEFAULT_MAX_DELIVERIES,
    DeadLetter,
    Entry,
    LogStats,
    check_partitions,
    format_id,
    parse_id,
    partition_for,
    poison_reason,
)

Id = tuple[int, int]


@dataclass
class _Pending:
    consumer: str
    delivered_at: float  # clock() seconds
    deliveries: int


@dataclass
class _Partition:
    ids: list[Id]  # sorted, since ids only grow
    payloads: dict[Id, bytes]
    pending: dict[Id, _Pending]
    last_delivered: Id = (0, 0)


class MemoryEventLog:
    def __init__(self, *, partitions: int = 1, max_deliveries: int = DEFAULT_MAX_DELIVERIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        check_partitions(partitions, max_deliveries)
        self.partitions = partitions
        self.max_deliveries = max_deliveries
        self._clock = clock
        self._cond = threading.Condition()
        self._parts = [_Partition([], {}, {}) for _ in range(partitions)]
        self._dead: list[DeadLetter] = []
        self._last_id: Id = (0, 0)

    def partition_for(self, key: str | bytes) -> int:
        return partition_for(key, self.partitions)

    def append(self, entries: Sequence[bytes], *, partition: int) -> list[str]:
        part = self._parts[self._check_partition(partition)]
        with self._cond:
            ids = []
            for payload in entries:
                entry_id = self._new_id()
                part.ids.append(entry_id)
                part.payloads[entry_id] = bytes(payload)
                ids.append(format_id(entry_id))
            if ids:
                self._cond.notify_all()
            return ids

    def read(self, consumer: str, count: int, block_ms: int = 0, partitions: Sequence[int] | None = None) -> list[Entry]:
        parts = self._selected(partitions)
        per_partition = max(1, count // len(parts))
        deadline = time.monotonic() + max(block_ms, 0) / 1000
        with self._cond:
            while True:
                entries = [e for p in parts for e in self._deliver_new(p, consumer, per_partition)]
                remaining = deadline - time.monotonic()
                if entries or remaining <= 0:
                    return entries
                self._cond.wait(remaining)

    def _deliver_new(self, partition: int, consumer: str, count: int) -> list[Entry]:
        part = self._parts[partition]
        start = bisect.bisect_right(part.ids, part.last_delivered)
        now = self._clock()
        entries = []
        for entry_id in part.ids[start:start + count]:
            part.pending[entry_id] = _Pending(consumer, now, 1)
            part.last_delivered = entry_id
            entries.append(Entry(format_id(entry_id), part.payloads[entry_id], 1, partition))
        return entries

    def ack(self, entries: Iterable[Entry]) -> int:
        with self._cond:
            return sum(self._parts[e.partition].pending.pop(parse_id(e.id), None) is not None for e in entries)

    def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        entries: list[Entry] = []
        with self._cond:
            now = self._clock()
            for partition, part in enumerate(self._parts):
                for entry_id in sorted(part.pending):
                    if len(entries) >= count:
                        return entries
                    held = part.pending[entry_id]
                    if (now - held.delivered_at) * 1000 < min_idle_ms:
                        continue
                    held.consumer, held.delivered_at, held.deliveries = consumer, now, held.deliveries + 1
                    entry = Entry(format_id(entry_id), part.payloads[entry_id], held.deliveries, partition)
                    if held.deliveries > self.max_deliveries:
                        self._dead_letter(entry, poison_reason(held.deliveries, self.max_deliveries))
                    else:
                        entries.append(entry)
        return entries

    def forget_consumers(self, idle_ms: int, only: str | None = None) -> list[str]:
        return []  # consumers exist here only as holders of pending entries: nothing to forget

    def dead_letter(self, entry: Entry, reason: str) -> None:
        with self._cond:
            self._dead_letter(entry, reason)

    def _dead_letter(self, entry: Entry, reason: str) -> None:
        self._dead.append(DeadLetter(format_id(self._new_id()), entry.partition, entry.id, entry.payload, reason, entry.deliveries))
        self._parts[entry.partition].pending.pop(parse_id(entry.id), None)

    def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        with self._cond:
            return self._dead[:count]

    def stats(self) -> LogStats:
        with self._cond:
            return LogStats(
                length=sum(len(p.ids) for p in self._parts),
                pending=sum(len(p.pending) for p in self._parts),
                lag=sum(len(p.ids) - bisect.bisect_right(p.ids, p.last_delivered) for p in self._parts),
                dead_letters=len(self._dead),
            )

    def trim(self) -> int:
        removed = 0
        with self._cond:
            for part in self._parts:
                bound = min(part.pending) if part.pending else (part.last_delivered[0], part.last_delivered[1] + 1)
                cut = bisect.bisect_left(part.ids, bound)
                for entry_id in part.ids[:cut]:
                    del part.payloads[entry_id]
                del part.ids[:cut]
                removed += cut
        return removed

    def delete_where(self, match: Callable[[bytes], bool]) -> int:
        deleted = 0
        with self._cond:
            for part in self._parts:
                doomed = {i for i in part.ids if match(part.payloads[i])}
                if doomed:
                    part.ids = [i for i in part.ids if i not in doomed]
                    for entry_id in doomed:
                        del part.payloads[entry_id]
                        part.pending.pop(entry_id, None)
                    deleted += len(doomed)
            kept = [d for d in self._dead if not match(d.payload)]
            deleted += len(self._dead) - len(kept)
            self._dead = kept
        return deleted

    def close(self) -> None:
        pass

    def _new_id(self) -> Id:
        """Like Redis: wall-clock milliseconds, a sequence within one, never going backwards."""
        ms = time.time_ns() // 1_000_000
        last_ms, last_seq = self._last_id
        self._last_id = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return self._last_id

    def _check_partition(self, partition: int) -> int:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} out of range 0..{self.partitions - 1}")
        return partition

    def _selected(self, partitions: Sequence[int] | None) -> list[int]:
        if partitions is None:
            return list(range(self.partitions))
        if not partitions:
            raise ValueError("partitions: empty")
        return [self._check_partition(p) for p in partitions]
