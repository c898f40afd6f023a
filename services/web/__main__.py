"""``python -m services.web``: the HTTP edge (uvicorn), in front of the services at *_GRPC_ADDR."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from services.shared.identity.store import IdentityStore
from services.shared.logs import configure_logging
from services.shared.migrate import open_database
from services.shared.settings import load_settings

from .app import build_app
from .backends import Backends
from .servicetoken import stored_service_token

log = logging.getLogger("services.web")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.web", description=__doc__)
    parser.add_argument("--service-token-file", type=Path, help="when WEB_SERVICE_TOKEN is empty: keep the edge's "
                        "service token in this file, making one in the database if need be (make run)")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    token = settings.web_service_token
    if not token and args.service_token_file:
        db = open_database(settings)
        try:
            token = stored_service_token(IdentityStore(db), args.service_token_file)
        finally:
            db.dispose()
    if not token:
        raise SystemExit("WEB_SERVICE_TOKEN is empty: create one with `contentops admin create-user --role service "
                         "--name web` and set it")
    os.environ["WEB_SERVICE_TOKEN"] = token  # for the worker processes, which load the settings afresh
    host, _, port = settings.web_addr.rpartition(":")
    # WEB_WORKERS processes share the port. Our JSON logging (log_config=None), and no access log: paths carry share
    # tokens and sign-in tokens; requests are counted in /metrics instead. Idle connections stay open
    # WEB_KEEPALIVE_SECONDS (uvicorn's default is 5 s): a reader's beacons, 10 s apart, and a balancer's pooled
    # upstream connections are reused instead of racing the edge's close of them.
    uvicorn.run("services.web.__main__:app_from_env", factory=True, workers=settings.web_workers,
                timeout_keep_alive=settings.web_keepalive_seconds,
                host=host or "127.0.0.1", port=int(port), log_level=settings.log_level.lower(), proxy_headers=False,
                server_header=False, log_config=None, access_log=False)


def app_from_env() -> Starlette:
    """The edge as one uvicorn worker process builds it (from the environment)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return build_app(settings, Backends(settings, settings.web_service_token))

if __name__ == "__main__":
    main()
