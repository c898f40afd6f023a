"""Render locks: concurrent requests for the same not-yet-rendered copy render it once.

Production uses a Redis lock (redis-py's ``Lock``: SET NX PX with a token, released
only by its owner, expiring if the holder dies). The embedded default, a single
process, uses a per-key ``threading.Lock``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Protocol

from services.shared.errors import Unavailable


class RenderLocks(Protocol):
    def hold(self, key: str, timeout: float) -> contextlib.AbstractContextManager[None]: ...


class LocalLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        if not lock.acquire(timeout=timeout):
            raise Unavailable("copy is being rendered by another request; retry")
        try:
            yield
        finally:
            lock.release()


class RedisLocks:
    def __init__(self, redis_url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[None]:
        import redis

        # The lock expires after 2x the wait so a crashed holder cannot block a copy forever.
        lock = self.client.lock(f"contentops:render:{key}", timeout=max(timeout * 2, 30), blocking_timeout=timeout)
        try:
            acquired = lock.acquire()
        except redis.RedisError as err:
            raise Unavailable("render lock unavailable (Redis), retry") from err
        if not acquired:
            raise Unavailable("copy is being rendered by another request; retry")
        try:
            yield
        finally:
            with contextlib.suppress(redis.RedisError):
                lock.release()
