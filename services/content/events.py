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
    from .domain.posts import Revision
    from .models import AssetRow

log = logging.getLogger(__name__)

POST_PUBLISHED = "content.post_published"
# The Celery task the distribution service registers for this event, and its queue.
TASK_FOR_TOPIC = {POST_PUBLISHED: ("contentops.distribution.post_published", "distribution")}


class EventSink(Protocol):
    def publish(self, topic: str, payload: bytes) -> None: ...


class InProcessEvents:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Callable[[bytes], None]]] = {}

    def subscribe(self, topic: str, handler: Callable[[bytes], None]) -> None:
        self._handlers.setdefault(topic, []).append(handler)

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
        task, queue = TASK_FOR_TOPIC[topic]
        # JSON is Celery's safe serializer; protobuf bytes travel base64-encoded.
        # Fire and forget: nobody reads these results. With one, send_task also subscribes to the
        # result backend (a subscription and a stored result per event), and while Redis is down
        # each publish then blocks ~20 s in the backend's reconnect retries instead of failing fast.
        self.celery.send_task(task, args=[base64.b64encode(payload).decode()], queue=queue,  # type: ignore[attr-defined]
                              ignore_result=True)


def decode_payload(arg: str) -> bytes:
    return base64.b64decode(arg)


def build_published_event(event_id: str, revision: "Revision", assets: "list[AssetRow]", by: str,
                          now: datetime) -> events_pb2.PostPublishedEvent:
    c = revision.content
    event = events_pb2.PostPublishedEvent(
        event_id=event_id,
        post=f"posts/{revision.post_id}",
        revision=revision.name,
        published_by=by,
        content=events_pb2.PostContentSnapshot(
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
        ),
    )
    event.publish_time.FromDatetime(now)
    return event
