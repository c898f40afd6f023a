"""Logging set-up for every process: structured JSON lines (python-json-logger) carrying the request id.

The request id is a context variable: the web edge sets it for each HTTP request
and sends it on in gRPC metadata (``x-request-id``); each service's interceptor
sets it for the RPC it serves. A log record factory copies it onto every record,
so any line logged while serving a request (by our code or a library's) names
the request, whichever handler formats it.

``LOG_FORMAT=text`` gives one plain line per record instead (a terminal).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_factory_installed = False


def _install_record_factory() -> None:
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def json_formatter() -> logging.Formatter:
    return JsonFormatter("%(levelname)s %(name)s %(message)s %(request_id)s",
                         rename_fields={"levelname": "level", "name": "logger"}, timestamp="time",  # ISO 8601, UTC
                         json_ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    _install_record_factory()
    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level, logging.INFO))
    # Alembic narrates every migration check at INFO; only its problems matter at start-up.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


class Throttle:
    """At most one yes per ``seconds``: for a warning that would otherwise repeat on every call (during an outage,
    say, where a metric counts the calls)."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self._last = float("-inf")
        self._lock = threading.Lock()

    def due(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.seconds:
                return False
            self._last = now
            return True


_install_record_factory()  # records made before configure_logging (tests, libraries) carry the id too
