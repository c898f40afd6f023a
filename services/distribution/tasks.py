"""Celery tasks of the distribution service: thin and idempotent.

``post_published`` plans a campaign once per revision (a redelivered event finds
the campaign and does nothing); ``post_changed`` keeps the post's state (an
older version arriving late changes nothing); ``render_chunk`` skips copies already rendered,
so a chunk redelivered after a worker was killed only finishes what was left.
Transient failures (database, blob store or Redis down) retry with backoff;
a copy that can never render (corrupt image, template error) is marked failed
with its reason and the chunk carries on.
"""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task

from services.content.events import decode_payload
from services.shared.errors import Unavailable

from .app import get_app


@shared_task(name="contentops.distribution.post_published", ignore_result=True,
             autoretry_for=(Unavailable,), retry_backoff=2, retry_backoff_max=60, max_retries=10)
def post_published(payload_b64: str) -> None:
    get_app().service.handle_post_published(decode_payload(payload_b64))


@shared_task(name="contentops.distribution.post_changed", ignore_result=True,
             autoretry_for=(Unavailable,), retry_backoff=2, retry_backoff_max=60, max_retries=10)
def post_changed(payload_b64: str) -> None:
    get_app().service.handle_post_changed(decode_payload(payload_b64))


@shared_task(name="contentops.distribution.render_chunk", ignore_result=True,
             autoretry_for=(Unavailable,), retry_backoff=2, retry_backoff_max=60, max_retries=10)
def render_chunk(campaign_id: str, rep_ids: list[str]) -> int:
    return get_app().service.render_chunk(campaign_id, rep_ids)


@shared_task(name="contentops.distribution.redispatch_stale", ignore_result=False)
def redispatch_stale(older_than_seconds: float | None = None) -> int:
    app = get_app()
    seconds = app.settings.campaign_resweep_seconds if older_than_seconds is None else older_than_seconds
    return app.service.redispatch_stale(timedelta(seconds=seconds))
