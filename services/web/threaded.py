"""The web edge on a thread of a process that does other things (the one-process runner, tests)."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

START_TIMEOUT_S = 20.0


class ThreadedServer:
    """uvicorn serving ``app`` on ``host:port`` from a daemon thread; ``start`` returns once it accepts connections
    (RuntimeError if it cannot), ``stop`` lets in-flight requests finish."""

    def __init__(self, app: Any, host: str, port: int, **config: Any) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, lifespan="on", **config))
        self.thread = threading.Thread(target=self.server.run, name="web-edge", daemon=True)

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the web edge could not start on {self.server.config.host}:{self.server.config.port}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
