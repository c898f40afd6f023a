"""``python -m services.tracking``: serve the tracking gRPC service.

On the embedded default the aggregator runs in this process; in production run
``python -m services.tracking.consumer`` beside it (as many as the load needs).
"""

from __future__ import annotations

import logging

from services.shared.grpcserver import GrpcServer
from services.shared.logs import configure_logging
from services.shared.metrics import serve_metrics
from services.shared.settings import Settings, load_settings

from .api import tracking_spec
from .app import TrackingApp

log = logging.getLogger("services.tracking")


def build_server(app: TrackingApp, address: str | None = None) -> GrpcServer:
    s = app.settings
    return GrpcServer([tracking_spec(app.ingest, app.service, app.hub, app.tokens)], app.identity.authenticate,
                      address or s.tracking_addr, max_workers=s.grpc_max_workers, grace_seconds=s.shutdown_grace_seconds,
                      max_connection_age_seconds=s.grpc_max_connection_age_seconds)


def main(settings: Settings | None = None) -> None:
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)
    serve_metrics(settings.metrics_addr)
    app = TrackingApp.build(settings)
    server = build_server(app)
    server.install_signal_handlers(app.close)
    server.start()
    log.info("tracking service listening on %s (port %d)", settings.tracking_addr, server.port)
    server.wait()


if __name__ == "__main__":
    main()
