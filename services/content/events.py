"""Where the content service's events go once their transaction has committed.

The outbox table is the source of truth; a sink only transports. Two sinks:

- ``InProcessEvents`` (embedded default): calls handlers registered in this
  process, e.g. the distribution service's when it runs alongside;
- ``CeleryEvents`` (production): sends a task to the ``distribution`` queue,
  where the distribution service's workers consume it.

Delivery is at least once; consumers deduplicate on ``event_id``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from services.protos.contentops.content.v1 import events_pb2

if TYPE_CHECKING:
    from .domain.posts import Post, Revision
    from .models import AssetRow

log = logging.getLogger(__name__)

POST_PUBLISHED = "content.post_published"
POST_CHANGED = "content.post_changed"
# The Celery tasks the consuming services register for each event, and their queues: one message per consumer.
TASKS_FOR_TOPIC: dict[str, tuple[tuple[str, str], ...]] = {
    POST_PUBLISHED: (("contentops.distribution.post_published", "distribution"),
                     ("contentops.tracking.post_published", "tracking")),
    POST_CHANGED: (("contentops.distribution.post_changed", "distribution"),),
}


class EventSink(Protocol):
    def publish(self, topic: str, payload: bytes) -> None: ...


class InProcessEvents:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Callable[[bytes], None]]] = {}

    def subscribe(self, topic: str, handler: Callable[[bytes], None]) -> None:
        self._handlers.setdefault(topic, []).append(handler)

    def subscribe_all(self, handlers: "dict[str, Callable[[bytes], object]]") -> None:
        for topic, handler in handlers.items():
            self.subscribe(topic, handler)  # type: ignore[arg-type]

    def publish(self, topic: str, payload: bytes) -> None:
        handlers = self._handlers.get(topic, [])
        if not handlers:
            log.info("event %s: no in-process subscriber yet", topic)
        for handler in handlers:
            handler(payload)


class CeleryEvents:
    def __init__(self, celery_app: object) -> None:
        self.celery = celery_app

    def publish(self, topic: str, payload: bytes) -> None:
        # JSON is Celery's safe serializer; protobuf bytes travel base64-encoded.
        # Fire and forget: nobody reads these results. With one, send_task also subscribes to the
        # result backend (a subscription and a stored result per event), and while Redis is down
        # each publish then blocks ~20 s in the backend's reconnect retries instead of failing fast.
        for task, queue in TASKS_FOR_TOPIC[topic]:  # a consumer that got it before dedupes on event_id
            self.celery.send_task(task, args=[base64.b64encode(payload).decode()], queue=queue,  # type: ignore[attr-defined]
                                  ignore_result=True)


def decode_payload(arg: str) -> bytes:
    return base64.b64decode(arg)


def build_snapshot(revision: "Revision", assets: "list[AssetRow]",
                   topic_names: "dict[str, str] | None" = None) -> events_pb2.PostContentSnapshot:
    c = revision.content
    names = topic_names or {}
    return events_pb2.PostContentSnapshot(
        title=c.title,
        body=c.body,
        images=[
            events_pb2.ImageRef(asset=f"assets/{a.id}", sha256=a.sha256, mime_type=a.mime_type, width=a.width,
                                height=a.height, blob_key=a.blob_key)
            for a in assets
        ],
        topics=[f"topics/{t}" for t in c.topics],
        protected_phrases=list(c.variation.protected_phrases),
        rep_template=c.variation.rep_template,
        badge_enabled=c.variation.badge_enabled,
        badge_position=c.variation.badge_position.value,
        target_teams=[f"teams/{t}" for t in c.target_teams],
        topic_names=[names.get(t, t) for t in c.topics],
    )


def build_published_event(event_id: str, revision: "Revision", assets: "list[AssetRow]", by: str,
                          now: datetime, topic_names: "dict[str, str] | None" = None) -> events_pb2.PostPublishedEvent:
    event = events_pb2.PostPublishedEvent(event_id=event_id, post=f"posts/{revision.post_id}", revision=revision.name,
                                          published_by=by, content=build_snapshot(revision, assets, topic_names))
    event.publish_time.FromDatetime(now)
    return event


def build_changed_event(event_id: str, post: "Post", head: "Revision | None", assets: "list[AssetRow]",
                        now: datetime, deleted: bool = False) -> events_pb2.PostChangedEvent:
    """``post`` as it is after the change (for a deletion: as it was, with ``deleted``)."""
    state = events_pb2.POST_LIFECYCLE_DELETED if deleted else events_pb2.PostLifecycle.Value(
        f"POST_LIFECYCLE_{post.state.name}")
    event = events_pb2.PostChangedEvent(
        event_id=event_id, post=post.name, state=state, version=post.version + (1 if deleted else 0),
        head_revision=f"{post.name}/revisions/{post.head_revision}",
        live_revision=f"{post.name}/revisions/{post.published_revision}" if post.published_revision else "",
    )
    if head is not None and not deleted:
        event.head_content.CopyFrom(build_snapshot(head, assets))
    event.change_time.FromDatetime(now)
    return event
