"""Content, distribution and tracking together, for the tracking tests.

On the embedded backend the tracking log is in memory; on the production
backend (PostgreSQL + S3) it is a Redis stream with a prefix of its own, so
tests never see each other's entries. The aggregator runs in-process either way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.distribution.__main__ import build_server as build_distribution_server
from services.distribution.app import DistributionApp
from services.protos.contentops.content.v1 import content_pb2 as cpb
from services.protos.contentops.distribution.v1 import distribution_pb2 as dpb
from services.protos.contentops.distribution.v1 import distribution_pb2_grpc as dpb_grpc
from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.protos.contentops.tracking.v1 import tracking_pb2_grpc as pb_grpc
from services.shared.identity.domain import Role
from services.tracking.__main__ import build_server
from services.tracking.app import TrackingApp
from services.tracking.ingest import SimulatedClock
from services.tracking.streams import RedisEventLog

from . import infra
from .helpers import upload_messages

DEMO = Path(__file__).resolve().parent.parent / "services" / "demo_data"
Metadata = tuple[tuple[str, str], ...]


@dataclass
class Track:
    harness: object
    dist: DistributionApp
    app: TrackingApp
    stub: pb_grpc.TrackingServiceStub
    dstub: dpb_grpc.DistributionServiceStub
    edge: Metadata  # the web edge's service token
    admin: Metadata
    editor: Metadata
    clock: SimulatedClock  # the ingest's receive clock, starting now
    channel: grpc.Channel | None = None  # the tracking server's channel, for raw calls to any method (fuzzing)
    addresses: dict[str, str] | None = None  # where the distribution and tracking servers listen

    def rep(self, name: str, team: str = "") -> tuple[dpb.Rep, Metadata]:
        principal, md = self.harness.user(Role.REP, name)  # type: ignore[attr-defined]
        rep = self.dstub.CreateRep(dpb.CreateRepRequest(rep=dpb.Rep(display_name=name, team=team, user=principal.name)),
                                   metadata=self.admin)
        return rep, md

    def team(self, team_id: str, name: str) -> None:
        self.dstub.CreateTeam(dpb.CreateTeamRequest(team=dpb.Team(name=f"teams/{team_id}", display_name=name)),
                              metadata=self.admin)

    def sales(self, team_id: str) -> Metadata:
        principal, _token, secret = self.harness.app.identity.create_user(  # type: ignore[attr-defined]
            f"manager of {team_id}", Role.SALES, "", f"teams/{team_id}")
        return (("authorization", f"Bearer {secret}"),)

    def topic(self, topic_id: str, name: str) -> str:
        t = self.harness.content.CreateTopic(cpb.CreateTopicRequest(  # type: ignore[attr-defined]
            topic_id=topic_id, topic=cpb.Topic(display_name=name)), metadata=self.editor)
        return t.name

    def publish(self, title: str, body: str, topics: list[str], images: int = 1) -> str:
        h = self.harness
        assets = [h.content.UploadAsset(upload_messages(p.read_bytes(), p.name), metadata=self.editor).name  # type: ignore[attr-defined]
                  for p in sorted(DEMO.glob("*.jpg"))[:images]]
        post = h.content.CreatePost(cpb.CreatePostRequest(content=cpb.PostContent(  # type: ignore[attr-defined]
            title=title, body=body, images=assets, topics=topics)), metadata=self.editor)
        h.content.PublishPost(cpb.PublishPostRequest(name=post.name), metadata=self.editor)  # type: ignore[attr-defined]
        return post.name

    def share_token(self, post: str, rep: dpb.Rep, md: Metadata) -> str:
        return self.dstub.GetRepCopy(dpb.GetRepCopyRequest(post=post, rep=rep.name), metadata=md).share_token

    def read(self, token: str, seconds: int, visitor: str = "", ua: str = "Mozilla/5.0 (iPhone) MicroMessenger/8.0",
             ip: str = "203.0.113.7") -> pb.StartViewResponse:
        """A customer opens the link and reads for ``seconds`` (a heartbeat per 10 s of simulated server time), then
        leaves: the server's clock moves with the heartbeats, as it would for a real reader."""
        started = self.stub.StartView(pb.StartViewRequest(share_token=token, visitor_id=visitor, user_agent=ua,
                                                          client_ip=ip), metadata=self.edge)
        beats = (seconds + 9) // 10
        for i in range(beats):
            delta = min(10_000, seconds * 1000 - i * 10_000)
            self.clock.advance(delta / 1000)
            self.stub.RecordEngagement(iter([pb.RecordEngagementRequest(heartbeats=[pb.Heartbeat(
                view=started.view, seq=i + 1, engaged_ms_delta=delta, max_scroll_percent=min(100, 20 * (i + 1)))])]),
                metadata=self.edge)
        self.stub.EndView(pb.EndViewRequest(view=started.view, last_seq=beats), metadata=self.edge)
        return started

    def settle(self) -> None:
        assert self.app.wait_applied(20), "the tracking consumer did not catch up"


def build_track(harness, redis_prefix: str | None = None) -> Iterator[Track]:  # type: ignore[no-untyped-def]
    settings = harness.app.settings
    event_log = None
    if not settings.is_sqlite:
        infra.require("Redis", infra.port_open(infra.REDIS_URL, 6379), infra.REDIS_URL)
        event_log = RedisEventLog.from_url(infra.REDIS_URL, prefix=redis_prefix or f"test:trk:{uuid.uuid4().hex[:10]}")
    dist = DistributionApp.build(settings, blobs=harness.app.blobs, migrate=True)
    app = TrackingApp.build(settings, migrate=True, event_log=event_log, consume_in_process=True)
    clock = SimulatedClock(time.time())
    app.ingest.clock = clock
    harness.events.subscribe_all(dist.service.event_handlers())
    harness.events.subscribe_all(app.service.event_handlers())
    dserver = build_distribution_server(dist, "127.0.0.1:0")
    server = build_server(app, "127.0.0.1:0")
    dserver.start()
    server.start()
    dchannel = grpc.insecure_channel(f"127.0.0.1:{dserver.port}")
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Track(harness, dist, app, pb_grpc.TrackingServiceStub(channel), dpb_grpc.DistributionServiceStub(dchannel),
                    harness.md(Role.SERVICE), harness.md(Role.ADMIN), harness.md(Role.EDITOR), clock, channel,
                    {"distribution": f"127.0.0.1:{dserver.port}", "tracking": f"127.0.0.1:{server.port}"})
    finally:
        channel.close()
        dchannel.close()
        server.stop(grace=1)
        dserver.stop(grace=1)
        if event_log is not None:
            event_log.delete_where(lambda _: True)
        app.close()
        dist.close()


def pause_consumer(app: TrackingApp) -> None:
    """Stop the in-process consumer once it has caught up: what is appended from now on waits in the log, unapplied."""
    assert app.wait_applied(20), "the tracking consumer did not catch up"
    app._stop.set()
    if app._consumer is not None:
        app._consumer.join(10)
        assert not app._consumer.is_alive(), "the tracking consumer did not stop"
    assert app.event_log.stats().pending == 0, "the consumer stopped with entries in hand"


def resume_consumer(app: TrackingApp) -> None:
    """Start a fresh in-process consumer after ``pause_consumer`` (same name: it is the same group member)."""
    import threading

    app._stop = threading.Event()
    app.start_consumer("in-process")


def log_payloads(event_log: object) -> list[bytes]:
    """Every payload the event log holds: for Redis, XRANGE over every key under its prefix (partitions, dead
    letters, anything else there); otherwise whatever ``delete_where`` is shown (it deletes nothing here)."""
    if isinstance(event_log, RedisEventLog):
        found = []
        for key in sorted(event_log.client.scan_iter(match=f"{event_log.prefix}*")):
            if event_log.client.type(key) in (b"stream", "stream"):
                found += [value for _id, fields in event_log.client.xrange(key) for value in fields.values()]
        return found
    seen: list[bytes] = []
    event_log.delete_where(lambda payload: seen.append(payload) or False)  # type: ignore[attr-defined]
    return seen
