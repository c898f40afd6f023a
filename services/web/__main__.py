"""``python -m services.web``: the HTTP edge (uvicorn), in front of the services at *_GRPC_ADDR."""

from __future__ import annotations

import logging

import uvicorn

from services.shared.logs import configure_logging
from services.shared.settings import load_settings

from .app import build_app
from .backends import Backends

log = logging.getLogger("services.web")


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.web_service_token:
        raise SystemExit("WEB_SERVICE_TOKEN is empty: create a ROLE_SERVICE user and token (contentops user create ...)")
    host, _, port = settings.web_addr.rpartition(":")
    app = build_app(settings, Backends(settings, settings.web_service_token))
    uvicorn.run(app, host=host or "127.0.0.1", port=int(port), log_level=settings.log_level.lower(), proxy_headers=False,
                server_header=False)


if __name__ == "__main__":
    main()
