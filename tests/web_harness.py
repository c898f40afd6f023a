"""The web edge served for real (uvicorn on a loopback port) in front of the tracking harness's services."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from services.web.app import build_app
from services.web.backends import Backends

from . import infra
from .tracking_harness import Track


@dataclass
class Web:
    track: Track
    url: str  # http://127.0.0.1:<port>


def serve_web(track: Track) -> Iterator[Web]:
    """The edge on a free port, calling the harness's distribution and tracking servers with a service token; the
    tracking ingest back on real time (browsers read in real time)."""
    assert track.addresses is not None
    token = dict(track.edge)["authorization"].removeprefix("Bearer ")
    settings = track.app.settings.replace(distribution_addr=track.addresses["distribution"],
                                          tracking_addr=track.addresses["tracking"], web_service_token=token)
    track.app.ingest.clock = time.time
    port = infra.free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(settings, Backends(settings, token)), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the web edge did not start"
        time.sleep(0.02)
    try:
        yield Web(track, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(10)
