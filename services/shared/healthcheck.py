"""``python -m services.shared.healthcheck [ADDR]``: ask a gRPC server if it is serving.

Container health checks run this: it calls the standard ``grpc.health.v1``
Check RPC and exits 0 when the answer is SERVING, 1 otherwise (not serving,
draining after SIGTERM, unreachable, timed out). ``ADDR`` defaults to
``CONTENT_GRPC_ADDR``; a wildcard listen address (``0.0.0.0:50051``,
``[::]:50051``) is probed on loopback. It reads the one environment variable
itself instead of calling ``load_settings``, which could write a secret key
file as a side effect.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .settings import SETTINGS

_WILDCARD = {"", "0.0.0.0", "[::]", "::", "*"}


def default_address() -> str:
    default = next(s.default for s in SETTINGS if s.env == "CONTENT_GRPC_ADDR")
    return os.environ.get("CONTENT_GRPC_ADDR") or default


def probe_address(address: str) -> str:
    """Where to connect to reach a server listening on ``address``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    if host in _WILDCARD:
        host = "[::1]" if host in {"[::]", "::"} else "127.0.0.1"
    return f"{host}:{port}"


def check(address: str, service: str = "", timeout: float = 3.0) -> tuple[bool, str]:
    """(serving?, what to print) for one Check RPC."""
    target = probe_address(address)
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
            return False, f"{target}: {code.name if code else 'error'}: {err.details()}"  # type: ignore[attr-defined]
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{target}: {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.shared.healthcheck",
                                     description="gRPC health check; exit 0 when SERVING")
    parser.add_argument("address", nargs="?", help="host:port (default: CONTENT_GRPC_ADDR)")
    parser.add_argument("--service", default="", help="service name to ask about (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    try:
        ok, message = check(args.address or default_address(), args.service, args.timeout)
    except ValueError as err:
        print(f"healthcheck: {err}", file=sys.stderr)
        return 1  # Docker reserves exit code 2
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
