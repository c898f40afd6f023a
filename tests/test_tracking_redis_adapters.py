"""The Redis adapters the production tracking service uses besides the stream: view rate limits and live activity."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.shared.errors import Unavailable
from services.tracking.activity import RedisHub
from services.tracking.aggregate import Activity
from services.tracking.domain.ratelimit import VISITOR_VIEWS
from services.tracking.limits import AsyncViewLimiter, RedisRateLimiter

from . import infra


@pytest.fixture
def redis_url() -> str:
    infra.require("Redis", infra.port_open(infra.REDIS_URL, 6379), infra.REDIS_URL)
    return infra.REDIS_URL


def test_a_flooding_visitor_is_limited_across_servers_and_others_are_not(redis_url: str) -> None:
    prefix = f"test:rl:{uuid.uuid4().hex[:8]}:"
    one, two = RedisRateLimiter(redis_url, prefix), RedisRateLimiter(redis_url, prefix)  # two servers, one state
    try:
        flood = "visitor:flood0001"
        allowed = sum(1 for i in range(VISITOR_VIEWS.burst + 20) if (one if i % 2 else two).allow_views([flood]))
        assert VISITOR_VIEWS.burst <= allowed <= VISITOR_VIEWS.burst + 2  # the burst, shared by both servers
        assert not one.allow_views([flood])
        assert one.allow_views(["visitor:someone-else"]) and two.allow_views(["visitor:someone-else"])
        # A denied check charges no key: the other visitor behind the same network is not penalised.
        assert not one.allow_views([flood, "ip:shared-net"])
        assert one.allow_views(["visitor:third-one", "ip:shared-net"])
    finally:
        keys = one.client.keys(prefix + "*")
        if keys:
            one.client.delete(*keys)
        one.close()
        two.close()


def test_the_edges_async_view_limits_share_the_tracking_services_state_in_redis(redis_url: str) -> None:
    prefix = f"test:rl:{uuid.uuid4().hex[:8]}:"
    service = RedisRateLimiter(redis_url, prefix)

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        down = aioredis.Redis.from_url(f"redis://127.0.0.1:{infra.free_port()}/0", socket_connect_timeout=1)
        edge = AsyncViewLimiter(client, prefix)
        try:
            flood = "visitor:flood0002"
            allowed = 0
            for i in range(VISITOR_VIEWS.burst + 20):  # the edge and the tracking service take turns
                allowed += await edge.allow_views([flood]) if i % 2 else service.allow_views([flood])
            assert VISITOR_VIEWS.burst <= allowed <= VISITOR_VIEWS.burst + 2
            assert not await edge.allow_views([flood]) and not service.allow_views([flood])
            assert await edge.allow_views(["visitor:someone-else", "ip:shared-net"])
            with pytest.raises(Unavailable):
                await AsyncViewLimiter(down, prefix).allow_views(["visitor:anyone"])
        finally:
            await client.aclose()
            await down.aclose()

    try:
        asyncio.run(run())
    finally:
        keys = service.client.keys(prefix + "*")
        if keys:
            service.client.delete(*keys)
        service.close()


def test_live_activity_reaches_every_listener_of_that_rep_only(redis_url: str) -> None:
    rep, other = f"r{uuid.uuid4().hex[:10]}", f"o{uuid.uuid4().hex[:10]}"
    hub = RedisHub(redis_url)
    got: list[Activity] = []
    alive = threading.Event()
    alive.set()

    def listen() -> None:
        for a in hub.listen(rep, alive.is_set):
            got.append(a)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while hub.client.pubsub_numsub(f"contentops:tracking:activity:{rep}")[0][1] == 0:
        assert time.monotonic() < deadline, "the listener never subscribed"
        time.sleep(0.02)
    now = datetime.now(UTC).replace(microsecond=0)
    hub.publish([Activity(other, "c0", "p1", pb.ACTIVITY_KIND_VIEW_STARTED, "别人的客户 正在阅读《x》", now),
                 Activity(rep, "c1", "p1", pb.ACTIVITY_KIND_VIEW_STARTED, "优优妈妈 正在阅读《x》", now)])
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    alive.clear()
    thread.join(5)
    hub.close()
    assert [(a.rep_id, a.contact_id, a.message, a.at) for a in got] == [(rep, "c1", "优优妈妈 正在阅读《x》", now)]
