"""Live activity for WatchActivity: the aggregator publishes, open streams listen.

Production: Redis pub/sub on ``contentops:tracking:activity:<rep id>``, so a
stream on any server hears what any consumer applied. Embedded default: an
in-process hub. Both deliver to listeners that are open at the time; activity
is live, not a history (the profile and leads are the history).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

import redis

from services.shared.errors import Unavailable

from .aggregate import Activity

CHANNEL = "contentops:tracking:activity:"
QUEUE_LIMIT = 1_000


class ActivityHub(Protocol):
    def publish(self, activities: list[Activity]) -> None: ...

    def listen(self, rep_id: str, alive: "callable[[], bool]") -> Iterator[Activity]:  # type: ignore[valid-type]
        """Activities for ``rep_id`` until ``alive()`` turns false (checked at least every second)."""


class MemoryHub:
    def __init__(self) -> None:
        self._listeners: dict[str, set[queue.Queue[Activity]]] = {}
        self._lock = threading.Lock()

    def publish(self, activities: list[Activity]) -> None:
        for a in activities:
            with self._lock:
                targets = list(self._listeners.get(a.rep_id, ()))
            for q in targets:
                try:
                    q.put_nowait(a)
                except queue.Full:
                    pass  # a stalled listener misses live events rather than holding memory

    def listen(self, rep_id: str, alive) -> Iterator[Activity]:  # type: ignore[no-untyped-def]
        q: queue.Queue[Activity] = queue.Queue(QUEUE_LIMIT)
        with self._lock:
            self._listeners.setdefault(rep_id, set()).add(q)
        try:
            while alive():
                try:
                    yield q.get(timeout=0.5)
                except queue.Empty:
                    continue
        finally:
            with self._lock:
                self._listeners.get(rep_id, set()).discard(q)


def _encode(a: Activity) -> str:
    return json.dumps({"rep": a.rep_id, "contact": a.contact_id, "post": a.post_id, "kind": a.kind,
                       "message": a.message, "at": a.at.isoformat()}, ensure_ascii=False)


def _decode(raw: bytes | str) -> Activity:
    d = json.loads(raw)
    return Activity(d["rep"], d["contact"], d["post"], int(d["kind"]), d["message"], datetime.fromisoformat(d["at"]))


class RedisHub:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=2)

    def publish(self, activities: list[Activity]) -> None:
        if not activities:
            return
        try:
            with self.client.pipeline(transaction=False) as p:
                for a in activities:
                    p.publish(CHANNEL + a.rep_id, _encode(a))
                p.execute()
        except redis.RedisError:
            pass  # live activity is best effort; the profile and leads already have the view

    def listen(self, rep_id: str, alive) -> Iterator[Activity]:  # type: ignore[no-untyped-def]
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANNEL + rep_id)
            while alive():
                message = pubsub.get_message(timeout=0.5)
                if message and message.get("type") == "message":
                    yield _decode(message["data"])
        except redis.RedisError as err:
            raise Unavailable(f"live activity unavailable: {err}") from None
        finally:
            pubsub.close()

    def close(self) -> None:
        self.client.close()
