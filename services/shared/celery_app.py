"""The Celery application: Redis broker, settings from the Celery docs' advice.

- ``acks_late`` + ``task_reject_on_worker_lost``: a task whose worker dies is
  redelivered, not lost (tasks are idempotent, so a second run is harmless);
- ``worker_prefetch_multiplier=1``: long renders do not queue behind each other;
- ``visibility_timeout`` (1 h) longer than any task or countdown, or Redis
  would hand a running task to a second worker;
- beat runs the scheduled-publish and outbox sweeps.
"""

from __future__ import annotations

from celery import Celery

from .settings import Settings

VISIBILITY_TIMEOUT = 3600

TASK_MODULES = ["services.content.tasks", "services.distribution.tasks", "services.tracking.tasks"]


def make_celery(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise ValueError("REDIS_URL is not set: the embedded default runs tasks in-process, not on Celery")
    app = Celery("contentops", broker=settings.redis_url, backend=settings.redis_url, include=TASK_MODULES)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        timezone="UTC",
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        task_default_queue="content",
        task_routes={
            "contentops.content.*": {"queue": "content"},
            "contentops.distribution.*": {"queue": "distribution"},
            "contentops.tracking.*": {"queue": "tracking"},
        },
        beat_schedule={
            "publish-due-posts": {
                "task": "contentops.content.publish_due_posts",
                "schedule": settings.scheduler_interval_seconds,
            },
            "relay-content-outbox": {
                "task": "contentops.content.relay_outbox",
                "schedule": settings.scheduler_interval_seconds,
            },
            "redispatch-stale-copies": {
                "task": "contentops.distribution.redispatch_stale",
                "schedule": max(60.0, settings.scheduler_interval_seconds),
            },
            "purge-raw-tracking-events": {
                "task": "contentops.tracking.purge_events",
                "schedule": 3600.0,
            },
        },
    )
    return app
