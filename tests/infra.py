"""Real backing services for the tests: PostgreSQL, Redis, an S3 server, MinIO.

On CI (``CI`` set) a missing PostgreSQL or Redis fails the test instead of
skipping it, and ``.ci/run`` also fails a run that skipped anything.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import pytest

PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def require(service: str, reachable: bool, why: str = "") -> None:
    if reachable:
        return
    message = f"needs {service} ({why or 'not reachable'})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: on CI this must not be skipped")
    pytest.skip(message)


def port_open(url: str, default_port: int) -> bool:
    parsed = urlparse(url.replace("+psycopg", ""))
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg

    dsn = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(dsn, autocommit=True)


@contextmanager
def pg_database(template: str | None = None) -> Iterator[str]:
    """A new, empty (or templated) PostgreSQL database, dropped afterwards."""
    require("PostgreSQL", port_open(PG_ADMIN_URL, 5432), PG_ADMIN_URL)
    name = f"co_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class S3Server:
    """moto's ThreadedMotoServer on loopback, or a real MinIO when MINIO_ENDPOINT is set."""

    def __init__(self) -> None:
        self.real = bool(os.environ.get("MINIO_ENDPOINT"))
        self._server = None
        if self.real:
            self.endpoint = os.environ["MINIO_ENDPOINT"]
            self.access_key = os.environ.get("MINIO_ACCESS_KEY", "minioadmin")
            self.secret_key = os.environ.get("MINIO_SECRET_KEY", "minioadmin")
        else:
            from moto.server import ThreadedMotoServer

            port = free_port()
            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            self._server.start()
            self.endpoint = f"127.0.0.1:{port}"
            self.access_key = "testing"
            self.secret_key = "testing"

    def env(self, bucket: str) -> dict[str, str]:
        return {
            "MINIO_ENDPOINT": self.endpoint,
            "MINIO_ACCESS_KEY": self.access_key,
            "MINIO_SECRET_KEY": self.secret_key,
            "MINIO_BUCKET": bucket,
        }

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
