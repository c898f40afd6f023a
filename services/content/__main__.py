"""``python -m services.content``: serve the content and identity gRPC services."""

from __future__ import annotations

import logging

from services.shared.grpcserver import GrpcServer
from services.shared.identity.api import identity_spec
from services.shared.logs import configure_logging
from services.shared.metrics import serve_metrics
from services.shared.periodic import PeriodicRunner
from services.shared.settings import Settings, load_settings

from .api import content_spec
from .app import ContentApp

log = logging.getLogger("services.content")


def build_server(app: ContentApp, address: str | None = None) -> GrpcServer:
    s = app.settings
    return GrpcServer(
        [content_spec(app.service, app.tokens), identity_spec(app.identity, app.tokens)],
        app.identity.authenticate,
        address or s.content_addr,
        max_workers=s.grpc_max_workers,
        grace_seconds=s.shutdown_grace_seconds,
        max_connection_age_seconds=s.grpc_max_connection_age_seconds,
    )


def main(settings: Settings | None = None) -> None:
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)
    serve_metrics(settings.metrics_addr)
    app = ContentApp.build(settings)
    server = build_server(app)
    runner = None
    if settings.embedded_tasks:  # production runs these on Celery beat + workers
        runner = PeriodicRunner(settings.scheduler_interval_seconds, {
            "publish_due_posts": app.service.publish_due_posts,
            "relay_outbox": app.service.relay_outbox,
        })

    def on_stop() -> None:
        if runner:
            runner.stop()
        app.close()

    server.install_signal_handlers(on_stop)
    server.start()
    if runner:
        runner.start()
    log.info("content service listening on %s (port %d)", settings.content_addr, server.port)
    server.wait()
    log.info("content service stopped")


if __name__ == "__main__":
    main()
