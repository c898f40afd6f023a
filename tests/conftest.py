"""Shared fixtures: settings for each backend, a running content server, clients."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from services.content.__main__ import build_server
from services.content.app import ContentApp
from services.content.events import InProcessEvents
from services.protos.contentops.content.v1 import content_pb2_grpc
from services.protos.contentops.identity.v1 import identity_pb2_grpc
from services.shared.db import Database
from services.shared.identity.domain import Principal, Role
from services.shared.migrate import upgrade_all
from services.shared.settings import Settings, load_settings

from . import infra
from .tracking_harness import Track, build_track
from .web_harness import Web, serve_web

# Backends every service test runs on: the embedded default and production's stores.
BACKENDS = ["embedded", "production"]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[infra.S3Server]:
    server = infra.S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated database that each test's database is cloned from (fast)."""
    with infra.pg_database() as url:
        db = Database(url)
        upgrade_all(db)
        db.dispose()
        yield url.rsplit("/", 1)[1]


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    with infra.pg_database(template=pg_template) as url:
        yield url


def make_settings(tmp_path: Path, **env: str) -> Settings:
    base = {"CONTENTOPS_DATA_DIR": str(tmp_path / "data"), "CONTENTOPS_SECRET_KEY": "test-secret",
            "AUTH_CACHE_SECONDS": "0"}
    base.update(env)
    return load_settings(base)


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "embedded":
        return make_settings(tmp_path)
    pg = request.getfixturevalue("pg_url")
    s3: infra.S3Server = request.getfixturevalue("s3_server")
    return make_settings(tmp_path, DATABASE_URL=pg, DATABASE_AUTO_MIGRATE="1",
                         **s3.env(f"test-{uuid.uuid4().hex[:12]}"))


@dataclass
class Harness:
    app: ContentApp
    address: str
    channel: grpc.Channel
    content: content_pb2_grpc.ContentServiceStub
    identity: identity_pb2_grpc.IdentityServiceStub
    events: InProcessEvents
    received: list[bytes] = field(default_factory=list)

    def user(self, role: Role, name: str = "") -> tuple[Principal, tuple[tuple[str, str], ...]]:
        principal, _token, secret = self.app.identity.create_user(name or f"{role.value} user", role)
        return principal, (("authorization", f"Bearer {secret}"),)

    def md(self, role: Role) -> tuple[tuple[str, str], ...]:
        return self.user(role)[1]


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    events = InProcessEvents()
    app = ContentApp.build(settings, events=events, migrate=True)
    server = build_server(app, "127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{server.port}"
    channel = grpc.insecure_channel(address)
    h = Harness(app, address, channel, content_pb2_grpc.ContentServiceStub(channel),
                identity_pb2_grpc.IdentityServiceStub(channel), events)
    events.subscribe("content.post_published", h.received.append)
    yield h
    channel.close()
    server.stop(grace=1)
    app.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"postgres: {infra.PG_ADMIN_URL}", f"redis: {infra.REDIS_URL}",
            f"s3: {'MinIO at ' + os.environ['MINIO_ENDPOINT'] if os.environ.get('MINIO_ENDPOINT') else 'moto (loopback)'}"]


# ---- the tracking harness (content + distribution + tracking) and the web edge in front of it --------------------


@pytest.fixture
def track(harness: Harness) -> Iterator[Track]:
    yield from build_track(harness)


@pytest.fixture
def web(track: Track) -> Iterator[Web]:
    yield from serve_web(track)
