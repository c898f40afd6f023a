"""How the gRPC clients here connect: round-robin over every address the target resolves to.

A target such as ``dns:///content.contentops.svc:50051`` (a Kubernetes headless
Service: one DNS record per ready pod) gives one subchannel per replica, and
calls take turns over them; with gRPC's default (pick_first) every call of a
process would go to the one replica it happened to connect to. Servers close
connections after ``GRPC_MAX_CONNECTION_AGE_SECONDS`` (services/shared/grpcserver.py),
so clients re-resolve and new replicas get their share after a scale-out.
"""

from __future__ import annotations

import json

import grpc

SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
CHANNEL_OPTIONS = (("grpc.service_config", SERVICE_CONFIG),)


def channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)


def aio_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
