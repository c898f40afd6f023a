"""Composition root of the content service: settings -> adapters -> use cases."""

from __future__ import annotations

from dataclasses import dataclass

from services.shared.apiutil import PageTokens
from services.shared.blobstore import BlobStore, blob_store_from_settings
from services.shared.db import Database
from services.shared.identity.store import IdentityStore
from services.shared.lazy import ProcessWide
from services.shared.migrate import open_database
from services.shared.settings import Settings, load_settings

from .events import CeleryEvents, EventSink, InProcessEvents
from .service import ContentService


@dataclass
class ContentApp:
    settings: Settings
    db: Database
    blobs: BlobStore
    events: EventSink
    identity: IdentityStore
    service: ContentService
    tokens: PageTokens

    @classmethod
    def build(cls, settings: Settings, *, blobs: BlobStore | None = None, events: EventSink | None = None,
              migrate: bool | None = None) -> "ContentApp":
        db = open_database(settings, migrate)
        blobs = blobs or blob_store_from_settings(settings)
        if events is None:
            if settings.embedded_tasks:
                events = InProcessEvents()
            else:
                from services.shared.celery_app import make_celery

                events = CeleryEvents(make_celery(settings))
        service = ContentService(db, blobs, events, max_asset_bytes=settings.max_asset_bytes,
                                 max_image_pixels=settings.max_image_pixels)
        return cls(settings, db, blobs, events, IdentityStore.from_settings(db, settings), service,
                   PageTokens(settings.secret_key))

    def close(self) -> None:
        self.db.dispose()


# The process-wide app, built from the environment on first use (Celery workers use this).
get_app = ProcessWide(lambda: ContentApp.build(load_settings()))
