"""Celery tasks of the tracking service: thin and idempotent.

``post_published`` records a published revision's title, topics and expected
reading time (a redelivery finds it and does nothing); ``purge_events``, run
hourly by beat, drops raw heartbeats past the retention period.
"""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task

from services.content.events import decode_payload
from services.shared.errors import Unavailable

from .app import get_app


@shared_task(name="contentops.tracking.post_published", ignore_result=True,
             autoretry_for=(Unavailable,), retry_backoff=2, retry_backoff_max=60, max_retries=10)
def post_published(payload_b64: str) -> None:
    get_app().service.handle_post_published(decode_payload(payload_b64))


@shared_task(name="contentops.tracking.purge_events", ignore_result=False,
             autoretry_for=(Unavailable,), retry_backoff=2, max_retries=5)
def purge_events(older_than_days: float | None = None) -> int:
    app = get_app()
    days = app.settings.tracking_retention_days if older_than_days is None else older_than_days
    return app.service.purge_events(timedelta(days=days))
