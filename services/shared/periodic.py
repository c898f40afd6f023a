"""In-process periodic jobs for the embedded default (Celery beat's stand-in).

In production Celery beat schedules the same functions; here a daemon thread
runs them every ``interval`` seconds until stopped. A failing job is logged and
retried on the next tick.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicRunner:
    def __init__(self, interval: float, jobs: dict[str, Callable[[], object]]) -> None:
        self.interval = interval
        self.jobs = jobs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="periodic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_once(self) -> None:
        for name, job in self.jobs.items():
            try:
                job()
            except Exception:
                log.exception("periodic job %s failed; retrying next tick", name)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)
