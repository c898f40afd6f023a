"""Tracking's event log: heartbeat batches survive crashes between "in Redis" and "applied".

The shared contract runs on both logs (``memory``, the embedded default, and
``redis``, production's, on this machine's Redis, database 12):
- appended entries are read once per group, ack takes them off the pending list;
- a consumer that read and died: another one reclaims its entries once idle, with
  their delivery counts; a live consumer's recent entries are left alone;
- poison (delivered more than max_deliveries times) and unparseable entries land in
  the dead-letter stream with their reason, never silently dropped;
- the consumer loop acks only after the handler returned, retries the same batch
  through transient failures without acking, and isolates an entry that breaks it;
- trim drops acknowledged entries only; delete_where (privacy erasure) removes
  matching entries from every partition and the dead letters.
Redis only: a SIGKILLed consumer process, a Redis crash and restart on AOF with
appendfsync always (entries and pending list intact), a consumer riding out a Redis
outage, the group created idempotently, Redis down -> Unavailable, the lag counted\nright after Redis 7.0's AOF replay forgot reads.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError

from services.shared.errors import Unavailable
from services.tracking.eventlog_memory import MemoryEventLog
from services.tracking.streams import (
    RETRY_LATER,
    ConsumerStats,
    Entry,
    EventLog,
    LogStats,
    RedisEventLog,
    Verdict,
    caught_up,
    is_transient_error,
    partition_for,
    run_consumer,
)

from . import infra

REDIS_DB = 12  # this file's own database: flushed before and after
REDIS_URL = f"{infra.REDIS_URL.rsplit('/', 1)[0]}/{REDIS_DB}"
REPO = Path(__file__).resolve().parents[1]

MakeLog = Callable[..., EventLog]


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    infra.require("Redis", infra.port_open(REDIS_URL, 6379), REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(params=["memory", "redis"])
def make_log(request: pytest.FixtureRequest) -> MakeLog:
    """A factory of fresh, empty logs (each Redis one under its own key prefix)."""
    if request.param == "memory":
        return lambda **options: MemoryEventLog(**options)
    client = request.getfixturevalue("redis_client")
    return lambda **options: RedisEventLog(client, prefix=f"test:{uuid.uuid4().hex[:12]}", **options)


def payloads(entries: list[Entry]) -> list[bytes]:
    return [e.payload for e in entries]


def consume_until(log: EventLog, name: str, handle: Callable[[list[Entry]], list[tuple[Entry, str]]],
                  until: Callable[[ConsumerStats], bool], *, wait_s: float = 30, **options: Any) -> ConsumerStats:
    """Run the consumer loop in a thread until ``until`` holds (or give up after ``wait_s``), then stop it."""
    stop, stats, errors = threading.Event(), ConsumerStats(), []
    options = {"block_ms": 50, "min_idle_ms": 100, "reclaim_interval_s": 0.05, "trim_interval_s": None, **options}

    def run() -> None:
        try:
            run_consumer(log, name, handle, stop, stats=stats, **options)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            stop.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + wait_s
    while not until(stats) and not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(10)
    assert not errors, errors
    assert until(stats), f"consumer never got there: {stats}"
    return stats


# ---- the contract, on both logs ---------------------------------------------------------


def test_appended_entries_are_delivered_once_across_the_group(make_log: MakeLog) -> None:
    log = make_log()
    ids = log.append([b"a", b"b", b"c"], partition=0)
    first = log.read("c1", count=10)
    assert [(e.id, e.payload, e.deliveries) for e in first] == [(ids[0], b"a", 1), (ids[1], b"b", 1), (ids[2], b"c", 1)]
    assert log.read("c2", count=10) == []
    assert log.read("c1", count=10) == []


def test_ack_takes_entries_off_the_pending_list_for_good(make_log: MakeLog) -> None:
    log = make_log()
    log.append([b"a", b"b"], partition=0)
    entries = log.read("c1", count=10)
    assert log.stats().pending == 2
    assert log.ack(entries[:1]) == 1
    assert log.ack(entries[:1]) == 0
    assert log.stats().pending == 1
    assert payloads(log.reclaim("c2", min_idle_ms=0, count=10)) == [b"b"]


def test_a_crashed_consumers_entries_are_reclaimed_once_idle_and_a_live_ones_are_not(make_log: MakeLog) -> None:
    log = make_log()
    log.append([b"a", b"b"], partition=0)
    log.read("crashed", count=10)  # and never acks
    assert log.reclaim("rescuer", min_idle_ms=60_000, count=10) == []
    time.sleep(0.15)
    rescued = log.reclaim("rescuer", min_idle_ms=100, count=10)
    assert [(e.payload, e.deliveries) for e in rescued] == [(b"a", 2), (b"b", 2)]
    assert log.ack(rescued) == 2
    assert log.stats().pending == 0


def test_a_consumer_that_read_and_died_loses_nothing_to_the_next_consumer_loop(make_log: MakeLog) -> None:
    log = make_log()
    log.append([f"batch-{i}".encode() for i in range(5)], partition=0)
    log.read("crashed", count=3)  # three in hand, never acked
    applied: list[Entry] = []
    consume_until(log, "survivor", lambda batch: applied.extend(batch) or [], lambda s: s.acked >= 5, min_idle_ms=100)
    assert sorted(payloads(applied)) == [f"batch-{i}".encode() for i in range(5)]
    assert sorted(e.deliveries for e in applied) == [1, 1, 2, 2, 2]
    assert log.stats().pending == 0


def test_an_entry_delivered_more_than_max_deliveries_goes_to_dead_letters_with_its_reason(make_log: MakeLog) -> None:
    log = make_log(max_deliveries=2)
    [entry_id] = log.append([b"poison"], partition=0)
    log.read("c1", count=10)
    assert [e.deliveries for e in log.reclaim("c2", min_idle_ms=0, count=10)] == [2]
    assert log.reclaim("c3", min_idle_ms=0, count=10) == []
    [dead] = log.dead_letters()
    assert (dead.source_id, dead.partition, dead.payload, dead.deliveries) == (entry_id, 0, b"poison", 3)
    assert "delivered 3 times" in dead.reason
    assert (log.stats().pending, log.stats().dead_letters) == (0, 1)


def test_the_consumer_dead_letters_what_the_handler_cannot_parse_and_acks_the_rest(make_log: MakeLog) -> None:
    log = make_log()
    ids = log.append([b"ok-1", b"\xff garbage", b"ok-2"], partition=0)
    applied: list[bytes] = []

    def handle(batch: list[Entry]) -> list[tuple[Entry, str]]:
        applied.extend(e.payload for e in batch if e.payload.startswith(b"ok"))
        return [(e, "not a HeartbeatBatch: truncated message") for e in batch if not e.payload.startswith(b"ok")]

    stats = consume_until(log, "c1", handle, lambda s: s.acked + s.dead_lettered >= 3)
    assert applied == [b"ok-1", b"ok-2"]
    [dead] = log.dead_letters()
    assert (dead.source_id, dead.payload, dead.deliveries) == (ids[1], b"\xff garbage", 1)
    assert dead.reason == "not a HeartbeatBatch: truncated message"
    assert (stats.acked, stats.dead_lettered, log.stats().pending) == (2, 1, 0)


def test_an_entry_the_handler_asks_to_see_again_stays_pending_and_comes_back_on_reclaim(make_log: MakeLog) -> None:
    log = make_log()
    log.append([b"start-not-applied-yet", b"broken", b"ok"], partition=0)
    seen: list[tuple[bytes, int]] = []

    def handle(batch: list[Entry]) -> list[tuple[Entry, str | Verdict]]:
        seen.extend((e.payload, e.deliveries) for e in batch)
        verdicts: list[tuple[Entry, str | Verdict]] = []
        for e in batch:
            if e.payload == b"start-not-applied-yet" and e.deliveries == 1:
                verdicts.append((e, RETRY_LATER))
            elif e.payload == b"broken":
                verdicts.append((e, "retry later"))  # a reason that reads like the verdict is still a dead-letter reason
        return verdicts

    stats = consume_until(log, "c1", handle, lambda s: s.acked >= 2)
    assert (b"start-not-applied-yet", 2) in seen  # handed out again by the group's reclaim, not acked or dead-lettered
    assert (stats.later, stats.dead_lettered, stats.acked) == (1, 1, 2)
    [dead] = log.dead_letters()
    assert (dead.payload, dead.reason) == (b"broken", "retry later")
    assert log.stats().pending == 0


def test_a_transient_handler_failure_acks_nothing_and_retries_the_same_batch(make_log: MakeLog) -> None:
    log = make_log()
    log.append([b"a", b"b"], partition=0)
    calls: list[list[tuple[bytes, int]]] = []
    pending_during_calls: list[int] = []

    def handle(batch: list[Entry]) -> list[tuple[Entry, str]]:
        calls.append([(e.payload, e.deliveries) for e in batch])
        pending_during_calls.append(log.stats().pending)
        if len(calls) < 3:
            raise Unavailable("database unavailable, retry later")
        return []

    stats = consume_until(log, "c1", handle, lambda s: s.acked >= 2, max_backoff_s=0.1)
    assert calls == [[(b"a", 1), (b"b", 1)]] * 3
    assert pending_during_calls == [2, 2, 2]
    assert stats.transient_failures == 2
    assert (log.stats().pending, log.stats().dead_letters) == (0, 0)


def test_an_entry_that_keeps_breaking_the_handler_is_isolated_then_dead_lettered(make_log: MakeLog) -> None:
    log = make_log(max_deliveries=2)
    log.append([b"a", b"bomb", b"c"], partition=0)
    applied: list[bytes] = []

    def handle(batch: list[Entry]) -> list[tuple[Entry, str]]:
        if any(e.payload == b"bomb" for e in batch):
            raise KeyError("a bug, not an outage")
        applied.extend(payloads(batch))
        return []

    consume_until(log, "c1", handle, lambda s: log.stats().dead_letters == 1, min_idle_ms=50)
    assert sorted(applied) == [b"a", b"c"]
    [dead] = log.dead_letters()
    assert (dead.payload, dead.deliveries) == (b"bomb", 3)
    assert log.stats().pending == 0


def test_trim_drops_acknowledged_entries_and_never_pending_or_unread_ones(make_log: MakeLog) -> None:
    log = make_log()
    log.append([str(i).encode() for i in range(6)], partition=0)
    got = log.read("c1", count=4)
    log.ack([got[0], got[1], got[3]])  # "2" still pending, "4" and "5" unread
    assert log.trim() == 2
    assert log.stats().length == 4
    reclaimed = log.reclaim("c2", min_idle_ms=0, count=10)
    unread = log.read("c2", count=10)
    assert (payloads(reclaimed), payloads(unread)) == ([b"2"], [b"4", b"5"])
    log.ack(reclaimed + unread)
    assert log.trim() == 4
    assert log.stats() == LogStats(length=0, pending=0, lag=0, dead_letters=0)


def test_delete_where_erases_matching_entries_from_every_partition_and_the_dead_letters(make_log: MakeLog) -> None:
    log = make_log(partitions=2)
    log.append([b"A-1", b"B-1", b"A-3", b"B-3"], partition=0)
    log.append([b"A-2", b"B-2"], partition=1)
    in_hand = log.read("c1", count=8, partitions=[0])
    log.dead_letter(in_hand[2], "test")
    log.dead_letter(in_hand[3], "test")  # B-3
    # A-1 pending, A-2 unread, A-3 both acked-in-stream and dead-lettered
    assert log.delete_where(lambda payload: payload.startswith(b"A-")) == 4
    assert log.stats() == LogStats(length=4 - 2 + 1, pending=1, lag=1, dead_letters=1)
    assert payloads(log.reclaim("c2", min_idle_ms=0, count=10)) == [b"B-1"]
    assert payloads(log.read("c2", count=10)) == [b"B-2"]
    assert [d.payload for d in log.dead_letters()] == [b"B-3"]


def test_stats_count_held_pending_undelivered_and_dead_entries(make_log: MakeLog) -> None:
    log = make_log()
    log.append([b"1", b"2", b"3", b"4"], partition=0)
    got = log.read("c1", count=2)
    log.dead_letter(got[0], "bad")
    assert log.stats() == LogStats(length=4, pending=1, lag=2, dead_letters=1)
    log.delete_where(lambda payload: payload == b"3")  # a hole in the unread range: Redis stops tracking lag itself
    assert log.stats() == LogStats(length=3, pending=1, lag=1, dead_letters=1)


def test_consumers_pinned_to_a_partition_read_only_its_entries(make_log: MakeLog) -> None:
    log = make_log(partitions=3)
    for p in range(3):
        log.append([f"p{p}".encode()], partition=p)
    assert [(e.partition, e.payload) for e in log.read("pinned", count=10, partitions=[1])] == [(1, b"p1")]
    rest = log.read("any", count=10)
    assert sorted((e.partition, e.payload) for e in rest) == [(0, b"p0"), (2, b"p2")]
    assert log.ack(rest) == 2
    assert log.stats().pending == 1


def test_append_refuses_a_partition_that_does_not_exist(make_log: MakeLog) -> None:
    log = make_log(partitions=2)
    with pytest.raises(ValueError, match="partition"):
        log.append([b"x"], partition=2)
    with pytest.raises(ValueError, match="partition"):
        log.read("c", count=1, partitions=[-1])


def test_a_blocked_read_wakes_up_when_an_entry_arrives(make_log: MakeLog) -> None:
    log = make_log()
    timer = threading.Timer(0.2, lambda: log.append([b"late"], partition=0))
    timer.start()
    try:
        got = log.read("c1", count=10, block_ms=5000)
    finally:
        timer.join()
    assert payloads(got) == [b"late"]


def test_a_caught_up_consumer_lingers_so_what_arrives_meanwhile_is_one_batch(make_log: MakeLog) -> None:
    """The first entry after idling is applied at once; the next read waits out the linger, and what arrived
    during it (three appends) is handled as one batch."""
    log = make_log()
    batches: list[list[bytes]] = []

    def handle(batch: list[Entry]) -> list[tuple[Entry, str]]:
        batches.append(payloads(batch))
        return []

    def feed() -> None:
        while not batches:
            time.sleep(0.005)
        for payload in (b"b", b"c", b"d"):  # appended one by one, while the consumer lingers
            log.append([payload], partition=0)

    log.append([b"a"], partition=0)
    feeder = threading.Thread(target=feed)
    feeder.start()
    consume_until(log, "c1", handle, lambda stats: stats.acked == 4, linger_s=2.0, batch_size=10)
    feeder.join()
    assert batches == [[b"a"], [b"b", b"c", b"d"]]


def test_a_consumer_behind_reads_on_without_lingering(make_log: MakeLog) -> None:
    """Full batches mean more is waiting: with a linger of a minute, 200 entries in batches of 10 still drain."""
    log = make_log()
    for start in range(0, 200, 50):
        log.append([b"e%d" % i for i in range(start, start + 50)], partition=0)
    stats = consume_until(log, "c1", lambda batch: [], lambda stats: stats.acked == 200, linger_s=60.0, batch_size=10)
    assert stats.batches == 20


def test_a_stopped_consumer_does_not_wait_out_its_linger(make_log: MakeLog) -> None:
    log = make_log()
    log.append([b"a"], partition=0)
    stop, stats = threading.Event(), ConsumerStats()
    thread = threading.Thread(target=run_consumer, args=(log, "c1", lambda batch: [], stop), daemon=True,
                              kwargs={"stats": stats, "block_ms": 50, "trim_interval_s": None, "linger_s": 600.0})
    thread.start()
    while stats.acked < 1 and thread.is_alive():
        time.sleep(0.01)
    stop.set()
    thread.join(60)
    assert stats.acked == 1
    assert not thread.is_alive()  # it left its 600 s linger when told to stop


@pytest.mark.parametrize(("taken", "count", "partitions", "expected"), [
    ([], 10, 1, True),
    ([0] * 9, 10, 1, True),
    ([0] * 10, 10, 1, False),
    ([0] * 5 + [1] * 2, 10, 2, False),  # partition 0 gave its full share of 5: more may wait there
    ([0] * 4 + [1] * 4, 10, 2, True),
    ([2] * 3, 10, 3, False),  # a share of 3 with 3 partitions
    ([0], 1, 4, False),  # a share is at least one
])
def test_caught_up_means_no_partition_gave_its_full_share(taken: list[int], count: int, partitions: int,
                                                           expected: bool) -> None:
    batch = [Entry(f"{i}-0", b"x", 1, p) for i, p in enumerate(taken)]
    assert caught_up(batch, count, partitions) is expected


OPS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(1, 4)),
    st.tuples(st.just("read"), st.sampled_from("ab"), st.integers(1, 5)),
    st.tuples(st.just("ack"), st.sampled_from("ab"), st.integers(0, 6)),
    st.tuples(st.just("crash"), st.sampled_from("ab")),
    st.tuples(st.just("reclaim"), st.sampled_from("ab")),
    st.tuples(st.just("trim")),
), max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_whatever_consumers_do_trim_never_loses_an_unacknowledged_entry(make_log: MakeLog, ops: list[tuple[Any, ...]]) -> None:
    log = make_log(max_deliveries=1000)
    appended: set[bytes] = set()
    acked: set[bytes] = set()
    in_hand: dict[str, list[Entry]] = {"a": [], "b": []}
    for op in ops:
        if op[0] == "append":
            batch = [f"e{len(appended) + i}".encode() for i in range(op[1])]
            log.append(batch, partition=0)
            appended.update(batch)
        elif op[0] == "read":
            in_hand[op[1]] += log.read(op[1], count=op[2])
        elif op[0] == "ack" and in_hand[op[1]]:
            entry = in_hand[op[1]].pop(op[2] % len(in_hand[op[1]]))
            log.ack([entry])
            acked.add(entry.payload)
        elif op[0] == "crash":
            in_hand[op[1]] = []
        elif op[0] == "reclaim":
            in_hand[op[1]] += log.reclaim(op[1], min_idle_ms=0, count=100)
        elif op[0] == "trim":
            log.trim()
    log.trim()
    drained = log.reclaim("z", min_idle_ms=0, count=1000) + log.read("z", count=1000)
    assert set(payloads(drained)) == appended - acked
    assert len(drained) == len(appended - acked)
    assert log.stats().length >= len(appended - acked)


# ---- small pieces -----------------------------------------------------------------------


@given(key=st.text(max_size=40), partitions=st.integers(1, 64))
def test_a_keys_partition_is_in_range_and_the_same_for_its_bytes(key: str, partitions: int) -> None:
    p = partition_for(key, partitions)
    assert 0 <= p < partitions
    assert p == partition_for(key.encode(), partitions)


def test_a_keys_partition_is_the_same_in_every_process() -> None:
    keys = [f"viewer-{i}" for i in range(50)]
    script = "import sys; from services.tracking.streams import partition_for; print([partition_for(k, 7) for k in sys.argv[1:]])"
    outputs = {subprocess.run([sys.executable, "-c", script, *keys], cwd=REPO, capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert outputs == {f"{[partition_for(k, 7) for k in keys]}\n"}


@pytest.mark.parametrize(("error", "transient"), [
    (Unavailable("database unavailable"), True),
    (OperationalError("SELECT 1", {}, Exception("connection refused")), True),
    (redis.ConnectionError("refused"), True),
    (ConnectionResetError(), True),
    (KeyError("view"), False),
    (ValueError("bad wire type"), False),
])
def test_outages_count_as_transient_and_bugs_do_not(error: BaseException, transient: bool) -> None:
    assert is_transient_error(error) is transient


# ---- Redis only -------------------------------------------------------------------------


def test_append_returns_only_once_redis_holds_the_entries(redis_client: redis.Redis) -> None:
    log = RedisEventLog(redis_client, prefix=f"test:{uuid.uuid4().hex[:12]}")
    ids = log.append([b"x", b"y"], partition=0)
    seen_by_another_connection = redis.Redis.from_url(REDIS_URL)
    try:
        stored = seen_by_another_connection.xrange(log.keys[0])
    finally:
        seen_by_another_connection.close()
    assert [(i.decode(), f[b"payload"]) for i, f in stored] == [(ids[0], b"x"), (ids[1], b"y")]


def test_entries_appended_before_any_consumer_started_are_delivered(redis_client: redis.Redis) -> None:
    prefix = f"test:{uuid.uuid4().hex[:12]}"
    RedisEventLog(redis_client, prefix=prefix).append([b"early"], partition=0)
    first, second = RedisEventLog(redis_client, prefix=prefix), RedisEventLog(redis_client, prefix=prefix)
    first.stats()  # creates the group
    second.stats()  # BUSYGROUP: fine
    assert payloads(second.read("c1", count=10)) == [b"early"]


def test_a_stream_deleted_under_the_log_gets_its_group_back(redis_client: redis.Redis) -> None:
    log = RedisEventLog(redis_client, prefix=f"test:{uuid.uuid4().hex[:12]}")
    log.append([b"before"], partition=0)
    log.read("c1", count=10)
    redis_client.delete(log.keys[0])
    log.append([b"after"], partition=0)
    assert payloads(log.read("c1", count=10)) == [b"after"]


def test_redis_down_is_unavailable_to_producers_and_consumers() -> None:
    log = RedisEventLog.from_url(f"redis://127.0.0.1:{infra.free_port()}/0")
    try:
        with pytest.raises(Unavailable):
            log.append([b"x"], partition=0)
        with pytest.raises(Unavailable):
            log.read("c1", count=1)
    finally:
        log.close()


def group_members(log: RedisEventLog) -> dict[str, set[str]]:
    """Each consumer the group knows of, by name, with the streams it is known on."""
    members: dict[str, set[str]] = {}
    for key in log.keys:
        for consumer in log.client.xinfo_consumers(key, log.group):
            members.setdefault(consumer["name"].decode(), set()).add(key)
    return members


def test_idle_consumers_holding_nothing_leave_the_group_and_holders_stay(redis_client: redis.Redis) -> None:
    log = RedisEventLog(redis_client, prefix=f"test:{uuid.uuid4().hex[:12]}", partitions=2)
    for partition in (0, 1):
        log.append([b"a", b"b"], partition=partition)
    log.ack(log.read("finished", count=2))  # one entry from each stream, acked: holds nothing
    held = log.read("crashed", count=2)  # the other two, never acked
    assert len(held) == 2
    time.sleep(0.15)
    log.append([b"c"], partition=0)
    log.ack(log.read("alive", count=10))  # holds nothing either, but read just now
    assert set(group_members(log)) == {"finished", "crashed", "alive"}

    assert log.forget_consumers(100) == ["finished"]  # "crashed" holds entries, "alive" is not idle
    assert group_members(log) == {"crashed": set(log.keys), "alive": {log.keys[0]}}
    rescued = log.reclaim("rescuer", min_idle_ms=100, count=10)
    assert sorted(e.id for e in rescued) == sorted(e.id for e in held)  # nothing was lost with "finished"
    assert log.forget_consumers(0, only="alive") == ["alive"]
    time.sleep(0.15)
    assert log.forget_consumers(100) == ["crashed"]  # its entries moved to the rescuer
    assert log.stats().pending == 2
    assert log.forget_consumers(0) == []  # the rescuer holds them now (on each stream)
    log.ack(rescued)
    assert log.forget_consumers(0) == ["rescuer"]
    assert group_members(log) == {}


def test_forgetting_consumers_never_drops_entries_a_consumer_is_reading(redis_client: redis.Redis) -> None:
    """Forgetting races a consumer's reads: an entry read between a check and a delete would vanish from the
    pending list with the consumer (XGROUP DELCONSUMER), acked by nobody. The check and the delete are one step."""
    log = RedisEventLog(redis_client, prefix=f"test:{uuid.uuid4().hex[:12]}")
    log.append([b"x"] * 3000, partition=0)
    read: list[Entry] = []
    done = threading.Event()

    def reader() -> None:
        other = RedisEventLog(redis.Redis.from_url(REDIS_URL), prefix=log.prefix)
        try:
            while batch := other.read("reader", count=1):
                read.extend(batch)
        finally:
            done.set()
            other.close()

    thread = threading.Thread(target=reader)
    thread.start()
    forgotten = 0
    while not done.is_set():
        forgotten += len(log.forget_consumers(0, only="reader"))
    thread.join(30)
    assert len(read) == 3000
    assert log.stats().pending == 3000  # every entry read is still pending on someone, to be acked or reclaimed
    assert forgotten == 0  # it always held something


def test_the_consumer_loop_forgets_dead_consumers_and_leaves_the_group_when_stopped(redis_client: redis.Redis) -> None:
    log = RedisEventLog(redis_client, prefix=f"test:{uuid.uuid4().hex[:12]}")
    log.append([f"batch-{i}".encode() for i in range(5)], partition=0)
    log.read("crashed", count=2)
    log.ack(log.read("finished", count=1))
    consume_until(log, "survivor", lambda batch: [], lambda s: s.acked >= 4 and set(group_members(log)) <= {"survivor"},
                  min_idle_ms=100, forget_after_ms=100)
    assert group_members(log) == {}  # stopped holding nothing: it left too
    assert log.stats().pending == 0


CRASHING_CONSUMER = """
import sys, threading, time
from services.tracking.streams import RedisEventLog, run_consumer

def handle(batch):
    print(" ".join(e.id for e in batch), flush=True)
    time.sleep(3600)  # SIGKILLed here: read, not acked
    return []

run_consumer(RedisEventLog.from_url(sys.argv[1], prefix=sys.argv[2]), "doomed", handle, threading.Event())
"""


@pytest.mark.slow
def test_a_sigkilled_consumer_process_loses_nothing(redis_client: redis.Redis) -> None:
    prefix = f"test:{uuid.uuid4().hex[:12]}"
    log = RedisEventLog(redis_client, prefix=prefix)
    ids = log.append([f"batch-{i}".encode() for i in range(20)], partition=0)
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_CONSUMER, REDIS_URL, prefix], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        in_hand = proc.stdout.readline().split() if proc.stdout else []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
    assert in_hand == ids
    assert log.stats().pending == 20
    applied: list[Entry] = []
    consume_until(log, "survivor", lambda batch: applied.extend(batch) or [], lambda s: s.acked >= 20, min_idle_ms=100)
    assert sorted(e.id for e in applied) == sorted(ids)
    assert {e.deliveries for e in applied} == {2}
    assert log.stats().pending == 0


@contextmanager
def own_redis(directory: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of our own on AOF with fsync on every write; killed on the way out."""
    binary = shutil.which("redis-server")
    infra.require("redis-server", binary is not None, "binary not on PATH")
    assert binary is not None
    port = port or infra.free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--appendonly", "yes",
                             "--appendfsync", "always", "--save", "", "--logfile", str(directory / "redis.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = redis.Redis(port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                probe.ping()
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
            finally:
                probe.close()
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.slow
def test_entries_and_the_pending_list_survive_a_redis_crash_and_restart(tmp_path: Path) -> None:
    with own_redis(tmp_path) as (url, proc):
        log = RedisEventLog.from_url(url)
        ids = log.append([b"a", b"b", b"c", b"d"], partition=0)
        in_hand = log.read("c1", count=2)
        log.ack(in_hand[:1])
        log.close()
        proc.send_signal(signal.SIGKILL)  # no shutdown save: only the AOF remains
        proc.wait()
    with own_redis(tmp_path) as (url, _):
        log = RedisEventLog.from_url(url)
        try:
            assert log.stats() == LogStats(length=4, pending=1, lag=2, dead_letters=0)
            assert [(e.id, e.payload, e.deliveries) for e in log.reclaim("c2", min_idle_ms=0, count=10)] == [(ids[1], b"b", 2)]
            assert [(e.id, e.payload) for e in log.read("c2", count=10)] == [(ids[2], b"c"), (ids[3], b"d")]
        finally:
            log.close()


def _group_lag(client: redis.Redis, key: str) -> int | None:
    """Redis's own lag counter (XINFO GROUPS), None when it cannot tell."""
    (group,) = client.xinfo_groups(key)
    return None if group["lag"] is None else int(group["lag"])


@pytest.mark.slow
def test_lag_stays_true_after_a_restart_replays_reads_made_since_the_aof_rewrite(tmp_path: Path) -> None:
    with own_redis(tmp_path) as (url, proc):
        log = RedisEventLog.from_url(url)
        log.append([str(i).encode() for i in range(6)], partition=0)
        log.ack(log.read("c1", count=2))
        log.client.bgrewriteaof()  # the group and its read counter go into the AOF's base
        _wait_for(lambda: not int(log.client.info("persistence")["aof_rewrite_in_progress"])
                  and not int(log.client.info("persistence")["aof_rewrite_scheduled"]))
        log.ack(log.read("c1", count=2))  # logged as XCLAIM ... LASTID only: no read counter in the AOF
        assert log.stats().lag == 2
        log.close()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with own_redis(tmp_path) as (url, _):
        log = RedisEventLog.from_url(url)
        try:
            key = log.keys[0]
            if tuple(int(x) for x in log.client.info("server")["redis_version"].split(".")[:2]) == (7, 0):
                assert _group_lag(log.client, key) == 4  # the Redis 7.0 replay this works around: 2 reads forgotten
            assert log.stats().lag == 2
            assert _group_lag(log.client, key) == 2  # set right in Redis too, for anyone else reading XINFO
            log.append([b"6"], partition=0)
            assert payloads(log.read("c2", count=1)) == [b"4"]
            assert (log.stats().lag, _group_lag(log.client, key)) == (2, 2)
        finally:
            log.close()


@pytest.mark.parametrize("limit", [3, 10_000])
def test_a_backlog_past_the_count_limit_is_counted_on_or_taken_from_redis(redis_client: redis.Redis, limit: int,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.tracking.streams.LAG_COUNT_LIMIT", limit)
    log = RedisEventLog(redis_client, prefix=f"test:{uuid.uuid4().hex[:12]}")
    log.append([str(i).encode() for i in range(12)], partition=0)
    log.ack(log.read("c1", count=2))
    assert log.stats().lag == 10  # Redis's counter, or counted when under the limit
    log.delete_where(lambda payload: payload == b"5")  # a hole in the unread range: Redis keeps no counter
    assert _group_lag(redis_client, log.keys[0]) is None
    assert log.stats().lag == 9  # counted in calls of at most ``limit`` entries


@pytest.mark.slow
def test_the_consumer_loop_rides_out_a_redis_outage(tmp_path: Path) -> None:
    port = infra.free_port()
    applied: list[bytes] = []
    stop, stats, errors = threading.Event(), ConsumerStats(), []
    with own_redis(tmp_path, port) as (url, proc):
        producer, consumer_log = RedisEventLog.from_url(url), RedisEventLog.from_url(url)
        producer.append([b"before"], partition=0)

        def run() -> None:
            try:
                run_consumer(consumer_log, "c1", lambda batch: applied.extend(payloads(batch)) or [], stop, stats=stats,
                             block_ms=100, trim_interval_s=None, max_backoff_s=0.2)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            _wait_for(lambda: stats.acked >= 1)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            _wait_for(lambda: stats.transient_failures >= 1)
            with own_redis(tmp_path, port):
                producer.append([b"after"], partition=0)
                _wait_for(lambda: stats.acked >= 2)
        finally:
            stop.set()
            thread.join(10)
            producer.close()
            consumer_log.close()
    assert not errors, errors
    assert applied == [b"before", b"after"]


def _wait_for(condition: Callable[[], bool], wait_s: float = 30) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)
