"""``python -m services.web`` keeps an idle connection open for WEB_KEEPALIVE_SECONDS, not uvicorn's 5 s default.

A reader's beacons come 10 s apart and a load balancer pools its upstream connections for about a minute: with 5 s,
nearly every beacon opened a new connection, and a balancer (or a client) could send on a connection the edge was
closing at that moment (make soak saw those as ReadError / RemoteProtocolError, and a client loop drowning in new
connections).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import infra

ROOT = Path(__file__).resolve().parents[1]
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: edge\r\nConnection: keep-alive\r\n\r\n"


@contextmanager
def edge(tmp_path: Path, keepalive: str | None) -> Iterator[int]:
    port = infra.free_port()
    env = {**os.environ, "WEB_ADDR": f"127.0.0.1:{port}", "WEB_SERVICE_TOKEN": "unused-by-healthz",
           "CONTENTOPS_DATA_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    env.pop("WEB_KEEPALIVE_SECONDS", None)
    if keepalive is not None:
        env["WEB_KEEPALIVE_SECONDS"] = keepalive
    proc = subprocess.Popen([sys.executable, "-m", "services.web"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not infra.port_open(f"http://127.0.0.1:{port}", port):
            assert proc.poll() is None, f"the edge exited: {proc.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the edge did not listen within 60 s"
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def answer(sock: socket.socket) -> bytes:
    """One response to /healthz (small: its headers and body arrive together), or b"" once the edge closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_an_idle_connection_outlives_uvicorns_5_s_default_and_serves_the_next_request(tmp_path: Path) -> None:
    with edge(tmp_path, None) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(REQUEST)
        assert answer(sock).startswith(b"HTTP/1.1 200")
        time.sleep(6.5)  # idle past uvicorn's default keep-alive (5 s)
        sock.sendall(REQUEST)
        assert answer(sock).startswith(b"HTTP/1.1 200"), "the edge closed an idle connection before WEB_KEEPALIVE_SECONDS"


def test_the_edge_closes_a_connection_idle_longer_than_web_keepalive_seconds(tmp_path: Path) -> None:
    with edge(tmp_path, "1") as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(REQUEST)
        assert answer(sock).startswith(b"HTTP/1.1 200")
        began = time.monotonic()
        assert sock.recv(1) == b"", "the edge kept an idle connection open past WEB_KEEPALIVE_SECONDS=1"
        assert time.monotonic() - began < 4  # by the 1 s keep-alive, not uvicorn's default 5 s or the socket's 10 s timeout
