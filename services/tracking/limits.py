"""Rate limits for the ingest API: GCRA (domain/ratelimit.py) with its state in memory or Redis.

Views are limited per visitor and per network (the hashed /24 or /48 an IP
belongs to) across every server, so the state lives in Redis in production (one
Lua call checks every key at once and charges them only if all allow). Heartbeats
are limited per view in this process only: a browser sends one per 10 s, so the
limit only ever bites a script, and a per-process check costs no round trip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import redis
import redis.asyncio as aioredis

from services.shared.errors import Unavailable

from .domain import ratelimit
from .domain.ratelimit import IP_VIEWS, VISITOR_HEARTBEATS, VISITOR_VIEWS, Limit

DEFAULT_PREFIX = "contentops:tracking:rl:"

_GCRA = """
local now = tonumber(ARGV[1])
local ok = true
local tats = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i]); local burst = tonumber(ARGV[2 * i + 1])
  local interval = 1.0 / rate
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat - now > (burst + 0.01) * interval then ok = false end
  tats[i] = {new_tat, math.ceil(burst / rate) + 1}
end
if not ok then return 0 end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, tostring(tats[i][1]), 'EX', tats[i][2])
end
return 1
"""


def _limit_for(key: str) -> Limit:
    return VISITOR_VIEWS if key.startswith("visitor:") else IP_VIEWS


class RateLimiter:
    """Memory state: the embedded default, and every process's heartbeat limit."""

    def __init__(self, heartbeats: Limit = VISITOR_HEARTBEATS) -> None:
        self.heartbeats = heartbeats
        self._state: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_sweep = time.monotonic() + 60

    def allow(self, keys: Sequence[str], limits: Sequence[Limit], cost: int = 1) -> bool:
        """Charge every key against its limit, or none of them if any is over."""
        now = time.monotonic()
        with self._lock:
            if now > self._next_sweep:  # forget keys that are back to full
                self._state = {k: v for k, v in self._state.items() if v > now}
                self._next_sweep = now + 60
            results = [ratelimit.allow(self._state.get(k), now, lim.rate, lim.burst, cost) for k, lim in zip(keys, limits, strict=True)]
            if not all(ok for ok, _ in results):
                return False
            for k, (_, state) in zip(keys, results, strict=True):
                assert state is not None
                self._state[k] = state
        return True

    def allow_views(self, keys: Sequence[str]) -> bool:
        return self.allow([f"v:{k}" for k in keys], [_limit_for(k) for k in keys])

    def allow_heartbeats(self, view_id: str, count: int) -> bool:
        return self.allow([f"h:{view_id}"], [self.heartbeats], count)


class RedisRateLimiter(RateLimiter):
    """Views limited across every server through Redis; heartbeats per process as above."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__()
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self.prefix = prefix
        self._script = self.client.register_script(_GCRA)

    def allow_views(self, keys: Sequence[str]) -> bool:
        try:
            return bool(self._script(*_gcra_call(self.prefix, keys)))
        except redis.RedisError as err:
            raise Unavailable(f"rate limiter unavailable: {err}") from None

    def close(self) -> None:
        self.client.close()


class AsyncViewLimiter:
    """``RedisRateLimiter.allow_views`` for an asyncio process (the web edge starting views itself): the same
    script, keys and limits, so a visitor's views count the same across the edge and the tracking service."""

    def __init__(self, client: aioredis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self._script = client.register_script(_GCRA)

    async def allow_views(self, keys: Sequence[str]) -> bool:
        try:
            return bool(await self._script(*_gcra_call(self.prefix, keys)))
        except redis.RedisError as err:
            raise Unavailable(f"rate limiter unavailable: {err}") from None


def _gcra_call(prefix: str, keys: Sequence[str]) -> tuple[list[str], list[float]]:
    """KEYS and ARGV for the GCRA script: now, then each key's rate and burst."""
    args: list[float] = [time.time()]
    for k in keys:
        limit = _limit_for(k)
        args += [limit.rate, limit.burst]
    return [prefix + k for k in keys], args
