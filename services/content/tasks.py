"""Celery tasks of the content service: thin, idempotent wrappers over use cases."""

from __future__ import annotations

from celery import shared_task

from .app import get_app


@shared_task(name="contentops.content.publish_due_posts", ignore_result=False)
def publish_due_posts() -> int:
    # Idempotent: a post goes live once; a second run finds nothing due.
    return get_app().service.publish_due_posts()


@shared_task(name="contentops.content.relay_outbox", ignore_result=False)
def relay_outbox() -> int:
    # At least once by design: consumers dedupe on event_id.
    return get_app().service.relay_outbox()
