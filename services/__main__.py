"""``python -m services`` (``make run``): every service and the web edge in one process, for the embedded default.

On the embedded default there is no broker, so the content service's publish
events reach the distribution and tracking services through an in-process
subscription, rendering runs on an in-process pool, and the tracking event log
is in memory with its consumer on a thread. With ``REDIS_URL`` set, run the services
as separate processes (``python -m services.content``, ``python -m
services.distribution``, ``python -m services.tracking``, ``python -m
services.tracking.consumer``, ``python -m services.web``) with Celery workers instead;
this runner refuses, so events are never split between an in-process subscriber and
the broker.

The web edge (uvicorn, on WEB_ADDR) runs on a thread of its own and calls the
services over gRPC like any other client, with WEB_SERVICE_TOKEN or, when that is
empty, a service token this runner keeps in the data folder.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta

from services.content.__main__ import build_server as build_content_server
from services.content.app import ContentApp
from services.content.events import InProcessEvents
from services.distribution.__main__ import build_server as build_distribution_server
from services.distribution.app import DistributionApp
from services.shared.identity.store import IdentityStore
from services.shared.logs import configure_logging
from services.shared.metrics import serve_metrics
from services.shared.periodic import PeriodicRunner
from services.shared.settings import load_settings
from services.tracking.__main__ import build_server as build_tracking_server
from services.tracking.app import TrackingApp
from services.web.app import build_app
from services.web.backends import Backends
from services.web.servicetoken import FILE_NAME, stored_service_token
from services.web.threaded import ThreadedServer

log = logging.getLogger("services")


def start_web(settings, identity: IdentityStore) -> ThreadedServer:  # type: ignore[no-untyped-def]
    token = settings.web_service_token or stored_service_token(identity, settings.data_dir / FILE_NAME)
    web_settings = settings.replace(web_service_token=token)
    host, _, port = settings.web_addr.rpartition(":")
    try:
        return ThreadedServer(build_app(web_settings, Backends(web_settings, token)), host or "127.0.0.1", int(port),
                              log_level="warning", server_header=False, log_config=None, access_log=False).start()
    except RuntimeError as err:
        raise SystemExit(str(err)) from None


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    serve_metrics(settings.metrics_addr)
    if not settings.embedded_tasks:
        raise SystemExit("REDIS_URL is set: run python -m services.content, python -m services.distribution and "
                         "Celery workers as separate processes")
    events = InProcessEvents()
    content = ContentApp.build(settings, events=events)
    distribution = DistributionApp.build(settings, blobs=content.blobs)
    tracking = TrackingApp.build(settings)
    events.subscribe_all(distribution.service.event_handlers())
    events.subscribe_all(tracking.service.event_handlers())
    servers = [build_content_server(content), build_distribution_server(distribution), build_tracking_server(tracking)]
    runner = PeriodicRunner(settings.scheduler_interval_seconds, {
        "publish_due_posts": content.service.publish_due_posts,
        "relay_outbox": content.service.relay_outbox,
        # Chunks the in-process pool could not finish (a store was down) are queued again.
        "redispatch_stale": lambda: distribution.service.redispatch_stale(
            timedelta(seconds=settings.campaign_resweep_seconds)),
        "purge_tracking_events": lambda: tracking.service.purge_events(timedelta(days=settings.tracking_retention_days)),
    })
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: draining for up to %.0fs", signum, settings.shutdown_grace_seconds)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for server in servers:
        server.start()
    runner.start()
    web = start_web(settings, content.identity)
    log.info("content on %s, distribution on %s, tracking on %s, web edge on http://%s (embedded default, data in %s)",
             settings.content_addr, settings.distribution_addr, settings.tracking_addr, settings.web_addr, settings.data_dir)
    print(f"ContentOps is running: open http://{settings.web_addr}/signin (Ctrl-C stops it)", flush=True)
    stopping.wait()
    web.stop(timeout=settings.shutdown_grace_seconds)
    drains = [threading.Thread(target=s.stop) for s in servers]  # both drain in parallel within the grace
    for t in drains:
        t.start()
    for t in drains:
        t.join()
    runner.stop()
    tracking.close()
    distribution.close()
    content.close()
    log.info("stopped")


if __name__ == "__main__":
    main()
