"""The Celery application: Redis broker, settings from the Celery docs' advice.

- ``acks_late`` + ``task_reject_on_worker_lost``: a task whose worker dies is
  redelivered, not lost (tasks are idempotent, so a second run is harmless);
- ``worker_prefetch_multiplier=1``: long renders do not queue behind each other;
- ``visibility_timeout`` (1 h) longer than any task or countdown, or Redis
  would hand a running task to a second worker;
- beat runs the scheduled-publish and outbox sweeps;
- task durations (by outcome) and failures go to Prometheus (services/shared/metrics.py).
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery
from celery.signals import task_failure, task_postrun, task_prerun, worker_init

from . import metrics
from .settings import Settings

VISIBILITY_TIMEOUT = 3600

TASK_MODULES = ["services.content.tasks", "services.distribution.tasks", "services.tracking.tasks"]


_started: dict[str, float] = {}


@task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


@task_postrun.connect
def _task_finished(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    began = _started.pop(task_id or "", None)
    if began is not None and task is not None:
        metrics.TASK_SECONDS.labels(task.name, (state or "UNKNOWN").lower()).observe(time.perf_counter() - began)


@task_failure.connect
def _task_failed(sender: Any = None, **_: Any) -> None:
    metrics.TASK_FAILURES.labels(getattr(sender, "name", "unknown")).inc()


def serve_worker_metrics(settings: Settings) -> None:
    """A worker's /metrics: with prefork, tasks run in child processes, so their samples are shared through
    prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set before the worker starts)."""
    if not settings.metrics_addr:
        return
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        host, _, port = settings.metrics_addr.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    else:  # --pool threads/solo: one process holds every sample
        metrics.serve_metrics(settings.metrics_addr)


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
                "schedule": max(30.0, settings.scheduler_interval_seconds),
            },
            "purge-raw-tracking-events": {
                "task": "contentops.tracking.purge_events",
                "schedule": 3600.0,
            },
        },
    )
    worker_init.connect(lambda **_: serve_worker_metrics(settings), weak=False)
    return app
