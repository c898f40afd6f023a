"""``python -m services.tracking.consumer [--name NAME]``: apply the event log to the database.

Run one or many (one consumer group): each reads its share of the streams; if
one dies, another reclaims what it had read but not acknowledged. SIGTERM stops
after the batch in hand.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading

from services.shared.logs import configure_logging
from services.shared.metrics import serve_metrics
from services.shared.settings import load_settings

from .app import TrackingApp
from .streams import run_consumer

log = logging.getLogger("services.tracking.consumer")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.tracking.consumer", description=__doc__)
    parser.add_argument("--name", default=f"{socket.gethostname()}-{os.getpid()}", help="consumer name in the group")
    parser.add_argument("--min-idle-ms", type=int, default=30_000, help="reclaim entries idle this long on dead consumers")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    serve_metrics(settings.metrics_addr)
    app = TrackingApp.build(settings, consume_in_process=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("tracking consumer %s started", args.name)
    try:
        stats = run_consumer(app.event_log, args.name, app.handle_batch, stop, min_idle_ms=args.min_idle_ms,
                             linger_s=settings.tracking_consumer_linger_seconds)
        log.info("tracking consumer %s stopped: %s", args.name, stats)
    finally:
        app.close()


if __name__ == "__main__":
    main()
