"""The edge's gRPC clients: one asyncio channel per service, every call with a deadline and the request's id.

Calls carry the edge's own service token unless a page acts for a signed-in
user, whose token it then passes on: the services, not the edge, decide what
that user may see.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from services.protos.contentops.content.v1 import content_pb2_grpc as cpb_grpc
from services.protos.contentops.distribution.v1 import distribution_pb2_grpc as dpb_grpc
from services.protos.contentops.identity.v1 import identity_pb2_grpc as ipb_grpc
from services.protos.contentops.tracking.v1 import tracking_pb2_grpc as tpb_grpc
from services.shared.grpcclient import aio_channel
from services.shared.settings import Settings

DEADLINE = 3.0  # s: a page waits no longer for any one service


def request_id(request: Any) -> str:
    """The id RequestIds gave this request (logged, shown on error pages, sent to the services)."""
    return str(request.scope.get("state", {}).get("request_id", ""))


@dataclass
class Backends:
    settings: Settings
    service_token: str
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    content: cpb_grpc.ContentServiceStub | None = None
    identity: ipb_grpc.IdentityServiceStub | None = None
    distribution: dpb_grpc.DistributionServiceStub | None = None
    tracking: tpb_grpc.TrackingServiceStub | None = None

    def open(self) -> None:
        """Open the channels (inside the running event loop)."""
        content = aio_channel(self.settings.content_addr)  # content and identity share a server
        dist = aio_channel(self.settings.distribution_addr)
        track = aio_channel(self.settings.tracking_addr)
        self.channels = [content, dist, track]
        self.content = cpb_grpc.ContentServiceStub(content)
        self.identity = ipb_grpc.IdentityServiceStub(content)
        self.distribution = dpb_grpc.DistributionServiceStub(dist)
        self.tracking = tpb_grpc.TrackingServiceStub(track)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.channels))

    def metadata(self, request_id: str, token: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token or self.service_token}"), ("x-request-id", request_id))

    @staticmethod
    async def call(method: Any, request: Any, metadata: Iterable[tuple[str, str]], timeout: float = DEADLINE) -> Any:
        return await method(request, metadata=tuple(metadata), timeout=timeout)
