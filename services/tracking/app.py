"""Composition root of the tracking service.

Embedded default: the event log is in memory and a consumer thread in this
process applies it (nothing to install). Production: Redis Streams, and the
aggregator runs as its own process (``python -m services.tracking.consumer``),
as many as the load needs, in one consumer group.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.shared import metrics
from services.shared.apiutil import PageTokens
from services.shared.db import Database
from services.shared.identity.store import IdentityStore
from services.shared.lazy import ProcessWide
from services.shared.migrate import open_database
from services.shared.settings import Settings, load_settings
from services.shared.sharetoken import ShareTokens

from .activity import ActivityHub, MemoryHub, RedisHub
from .aggregate import Aggregator
from .eventlog_memory import MemoryEventLog
from .ingest import Ingest, ViewStarts
from .limits import RateLimiter, RedisRateLimiter
from .service import TrackingService
from .streams import Entry, EventLog, RedisEventLog, Verdict, run_consumer

log = logging.getLogger(__name__)


@dataclass
class TrackingApp:
    settings: Settings
    db: Database
    identity: IdentityStore
    event_log: EventLog
    aggregator: Aggregator
    hub: ActivityHub
    ingest: Ingest
    service: TrackingService
    tokens: PageTokens
    limiter: RateLimiter
    _consumer: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def build(cls, settings: Settings, *, migrate: bool | None = None, event_log: EventLog | None = None,
              consume_in_process: bool | None = None) -> "TrackingApp":
        db = open_database(settings, migrate)
        if event_log is None:
            event_log = (MemoryEventLog(partitions=settings.tracking_stream_partitions) if settings.embedded_tasks
                         else RedisEventLog.from_url(settings.redis_url, partitions=settings.tracking_stream_partitions))
        hub: ActivityHub = MemoryHub() if settings.embedded_tasks else RedisHub(settings.redis_url)
        limiter = RateLimiter() if settings.embedded_tasks else RedisRateLimiter(settings.redis_url)
        half_life = timedelta(days=settings.tracking_half_life_days)
        aggregator = Aggregator(db, half_life=half_life)
        share_tokens = ShareTokens(list(settings.share_token_keys))
        ingest = Ingest(event_log, ViewStarts.from_settings(settings, share_tokens), limiter)
        service = TrackingService(db, aggregator, share_tokens, event_log, tz=settings.tracking_timezone,
                                  half_life=half_life)
        app = cls(settings, db, IdentityStore.from_settings(db, settings), event_log, aggregator, hub, ingest,
                  service, PageTokens(settings.secret_key), limiter)
        if settings.embedded_tasks if consume_in_process is None else consume_in_process:
            app.start_consumer("in-process")

        def stream_figures() -> list[tuple[list[str], float]]:
            stats = event_log.stats()
            return [(["lag"], stats.lag), (["pending"], stats.pending), (["length"], stats.length),
                    (["dead_letters"], stats.dead_letters)]

        metrics.register_gauge("contentops_tracking_stream_entries", "Tracking event stream: entries not yet "
                               "delivered (lag), delivered but unacknowledged (pending), held, dead-lettered",
                               ["kind"], stream_figures)
        return app

    def handle_batch(self, entries: list[Entry]) -> list[tuple[Entry, str | Verdict]]:
        bad, activities, retry = self.aggregator.handle_batch(entries)
        if retry:  # appended before the batch is acked: put back, not lost
            by_partition: dict[int, list[pb.IngestEvent]] = {}
            for event in retry:
                view = event.heartbeat.view if event.WhichOneof("kind") == "heartbeat" else event.ended.view
                by_partition.setdefault(self.event_log.partition_for(view), []).append(event)
            for partition, events in by_partition.items():
                self.event_log.append([pb.IngestBatch(events=events).SerializeToString()], partition=partition)
        self.hub.publish(activities)
        return bad

    def start_consumer(self, name: str) -> None:
        self._consumer = threading.Thread(
            target=run_consumer, args=(self.event_log, name, self.handle_batch, self._stop),
            kwargs={"block_ms": 200, "linger_s": self.settings.tracking_consumer_linger_seconds},
            name=f"tracking-consumer-{name}", daemon=True)
        self._consumer.start()

    def wait_applied(self, timeout: float = 10.0) -> bool:
        """Block until the log has nothing unapplied (tests and the demo)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.event_log.stats()
            if stats.lag == 0 and stats.pending == 0:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._stop.set()
        if self._consumer is not None:
            self._consumer.join(timeout=10)
        for closeable in (self.hub, self.limiter, self.event_log):
            close = getattr(closeable, "close", None)
            if close is not None:
                close()
        self.db.dispose()


get_app = ProcessWide(lambda: TrackingApp.build(load_settings(), consume_in_process=False))
