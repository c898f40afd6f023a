"""``python -m services.distribution``: serve the distribution gRPC service."""

from __future__ import annotations

import logging

from services.shared.grpcserver import GrpcServer
from services.shared.logs import configure_logging
from services.shared.metrics import serve_metrics
from services.shared.settings import Settings, load_settings

from .api import distribution_spec
from .app import DistributionApp

log = logging.getLogger("services.distribution")


def build_server(app: DistributionApp, address: str | None = None) -> GrpcServer:
    s = app.settings
    return GrpcServer([distribution_spec(app.service, app.tokens)], app.identity.authenticate,
                      address or s.distribution_addr, max_workers=s.grpc_max_workers,
                      grace_seconds=s.shutdown_grace_seconds, max_connection_age_seconds=s.grpc_max_connection_age_seconds)


def main(settings: Settings | None = None) -> None:
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)
    serve_metrics(settings.metrics_addr)
    app = DistributionApp.build(settings)
    server = build_server(app)
    server.install_signal_handlers(app.close)
    server.start()
    log.info("distribution service listening on %s (port %d)", settings.distribution_addr, server.port)
    server.wait()


if __name__ == "__main__":
    main()
