"""Composition root of the distribution service."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta

from services.shared import metrics
from services.shared.apiutil import PageTokens
from services.shared.blobstore import BlobStore, blob_store_from_settings
from services.shared.db import Database
from services.shared.identity.store import IdentityStore
from services.shared.lazy import ProcessWide
from services.shared.migrate import open_database
from services.shared.settings import Settings, load_settings
from services.shared.sharetoken import ShareTokens

from .locks import LocalLocks, RedisLocks, RenderLocks
from .service import DistributionService, Fanout

log = logging.getLogger(__name__)


class CeleryFanout(Fanout):
    """Production: one Celery task per chunk of reps, on the ``distribution`` queue."""

    def __init__(self, celery_app: object) -> None:
        self.celery = celery_app

    def dispatch(self, campaign_id: str, chunks: list[list[str]]) -> None:
        for chunk in chunks:
            self.celery.send_task("contentops.distribution.render_chunk", args=[campaign_id, chunk],  # type: ignore[attr-defined]
                                  queue="distribution", ignore_result=True)


class InProcessFanout(Fanout):
    """Embedded default: chunks render on a small background pool in this process."""

    def __init__(self, workers: int = 2) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render")
        self.service: DistributionService | None = None
        self._pending: set[Future[int]] = set()
        self._lock = threading.Lock()

    def dispatch(self, campaign_id: str, chunks: list[list[str]]) -> None:
        assert self.service is not None
        service = self.service
        for chunk in chunks:
            future = self.pool.submit(service.render_chunk, campaign_id, chunk)
            with self._lock:
                self._pending.add(future)
            future.add_done_callback(self._done)

    def _done(self, future: Future[int]) -> None:
        with self._lock:
            self._pending.discard(future)
        _log_failure(future)

    def wait_idle(self, timeout: float | None = None) -> None:
        """Block until everything submitted so far has run (demo and tests)."""
        with self._lock:
            pending = list(self._pending)
        wait(pending, timeout=timeout)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=False)


def _log_failure(future: object) -> None:
    exc = future.exception()  # type: ignore[attr-defined]
    if exc is not None:
        log.error("in-process render chunk failed (the copy renders on demand instead): %s", exc)


@dataclass
class DistributionApp:
    settings: Settings
    db: Database
    blobs: BlobStore
    identity: IdentityStore
    service: DistributionService
    tokens: PageTokens
    fanout: Fanout

    @classmethod
    def build(cls, settings: Settings, *, blobs: BlobStore | None = None, fanout: Fanout | None = None,
              locks: RenderLocks | None = None, migrate: bool | None = None) -> "DistributionApp":
        db = open_database(settings, migrate)
        blobs = blobs or blob_store_from_settings(settings)
        if fanout is None:
            if settings.embedded_tasks:
                fanout = InProcessFanout()
            else:
                from services.shared.celery_app import make_celery

                fanout = CeleryFanout(make_celery(settings))
        if locks is None:
            locks = LocalLocks() if settings.embedded_tasks else RedisLocks(settings.redis_url)
        identity = IdentityStore.from_settings(db, settings)
        service = DistributionService(db, blobs, identity, ShareTokens(list(settings.share_token_keys)), locks,
                                      fanout, settings.campaign_chunk_size, settings.post_stale_seconds, settings.ready_copies,
                                      timedelta(seconds=settings.campaign_lease_seconds))
        if isinstance(fanout, InProcessFanout):
            fanout.service = service
        metrics.register_gauge("contentops_campaign_copies", "Copies of campaigns published in the last 7 days, by state",
                               ["state"], lambda: [([state], n) for state, n in service.copies_by_state().items()])
        return cls(settings, db, blobs, identity, service, PageTokens(settings.secret_key), fanout)

    def close(self) -> None:
        if isinstance(self.fanout, InProcessFanout):
            self.fanout.close()
        self.service.close()
        self.db.dispose()


# The process-wide app, built from the environment on first use (Celery workers use this).
get_app = ProcessWide(lambda: DistributionApp.build(load_settings()))
