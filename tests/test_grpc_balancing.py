"""Scale-out of the gRPC services: clients spread calls over every replica, servers make clients re-resolve.

A headless Kubernetes Service resolves to every ready pod; here a static
``ipv4:`` target with two loopback servers stands for it (the same resolver
result, without DNS).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.shared.grpcclient import aio_channel, channel
from services.shared.grpcserver import GrpcServer

from .helpers import wait_for

WHO = "/test.Who/Name"


@pytest.fixture
def two_servers() -> Iterator[str]:
    """Two servers answering ``WHO`` with their own name; the target that resolves to both."""
    servers, ports = [], []
    for name in ("a", "b"):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.unary_unary_rpc_method_handler(lambda _req, _ctx, name=name: name.encode())
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Who", {"Name": handler}),))
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servers.append(server)
    try:
        yield "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)
    finally:
        for server in servers:
            server.stop(None)


def names_seen(ch: grpc.Channel, calls: int) -> Counter[str]:
    who = ch.unary_unary(WHO)
    return Counter(who(b"", timeout=10, wait_for_ready=True).decode() for _ in range(calls))


def test_a_client_channel_spreads_calls_over_every_address_of_its_target(two_servers: str) -> None:
    seen: Counter[str] = Counter()
    with channel(two_servers) as ch:
        wait_for(lambda: len(seen.update(names_seen(ch, 10)) or seen) == 2, "calls reaching both servers")
        # once both are connected, round-robin takes turns exactly
        assert names_seen(ch, 40) == Counter({"a": 20, "b": 20})


def test_grpcs_default_channel_would_send_every_call_to_one_server(two_servers: str) -> None:
    """What the test above guards against: pick_first, gRPC's default, pins a process to one replica."""
    with grpc.insecure_channel(two_servers) as ch:
        assert len(names_seen(ch, 40)) == 1


def test_the_web_edges_aio_channel_spreads_calls_too(two_servers: str) -> None:
    async def run() -> Counter[str]:
        seen: Counter[str] = Counter()
        async with aio_channel(two_servers) as ch:
            who = ch.unary_unary(WHO)
            for _ in range(500):
                seen[(await who(b"", timeout=10, wait_for_ready=True)).decode()] += 1
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.01)
        return seen

    assert set(asyncio.run(run())) == {"a", "b"}


def test_servers_close_aged_connections_so_clients_re_resolve_and_reach_new_replicas() -> None:
    """With GRPC_MAX_CONNECTION_AGE_SECONDS the server sends GOAWAY to an old connection and, after the grace, ends
    what still runs on it (here a health Watch that would otherwise stay open until its 30 s deadline); the client's
    next call connects (and resolves) again."""
    server = GrpcServer([], lambda _token: None, "127.0.0.1:0", max_workers=4, grace_seconds=0.5,
                        max_connection_age_seconds=1.0)
    server.start()
    try:
        with channel(f"127.0.0.1:{server.port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
            with pytest.raises(grpc.RpcError) as ended:
                for reply in watch:
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert ended.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED, "the aged connection was never closed"
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=10, wait_for_ready=True).status == \
                health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(0)
