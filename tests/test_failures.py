"""Bad input and broken backends get a clear error, and lose nothing.

- The database down (closed port, or dropped mid-test): UNAVAILABLE, not INTERNAL,
  both when the token check meets it and when a use case does; a connection
  killed under the pool is replaced, one killed inside a write rolls it back.
- The blob store failing mid-upload (the stream breaking inside the real local
  or S3 store, or the store itself failing, before or after it stored the bytes):
  no asset row and no blob or temporary file left; a retry then works.
- The blob stored but the row never landing: the blob is removed again.
- S3 down: UNAVAILABLE for uploads and downloads, no row.
- Failed CreatePost / UpdatePost / PublishPost, whether refused up front or
  failing half-way through their transaction: no post, revision, topic link,
  idempotency or outbox row, no event, the etag unchanged.
"""

from __future__ import annotations

import errno
import io
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import grpc
import pytest
from PIL import Image
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from services.content import store
from services.content.__main__ import build_server
from services.content.api import content_spec
from services.content.app import ContentApp
from services.content.events import InProcessEvents
from services.content.models import AssetRow, IdempotencyRow, OutboxRow, PostRow, PostTopicRow, RevisionRow
from services.protos.contentops.content.v1 import content_pb2 as cpb
from services.protos.contentops.content.v1 import content_pb2_grpc
from services.protos.contentops.identity.v1 import identity_pb2 as ipb
from services.protos.contentops.identity.v1 import identity_pb2_grpc
from services.shared.blobstore import BlobStore, blob_store_from_settings
from services.shared.errors import Unavailable
from services.shared.grpcserver import GrpcServer
from services.shared.identity.api import identity_spec
from services.shared.identity.domain import Principal, Role
from services.shared.settings import Settings, load_settings

from . import infra

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
WELL_FORMED_TOKEN = (("authorization", "Bearer co_" + "a" * 26 + "_" + "b" * 43),)
STAFF = Principal(id="0" * 26, display_name="stub admin", role=Role.ADMIN)


def image(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (seed % 256, (seed * 7) % 256, 90)).save(buf, "JPEG")
    return buf.getvalue()


def make_settings(tmp_path: Path, **env: str) -> Settings:
    base = {"CONTENTOPS_DATA_DIR": str(tmp_path / "data"), "CONTENTOPS_SECRET_KEY": "test-secret",
            "AUTH_CACHE_SECONDS": "0"}
    return load_settings({**base, **env})


@dataclass
class Served:
    app: ContentApp
    content: content_pb2_grpc.ContentServiceStub
    identity: identity_pb2_grpc.IdentityServiceStub

    def md(self, role: Role = Role.EDITOR) -> tuple[tuple[str, str], ...]:
        _, _, secret = self.app.identity.create_user(f"{role.value} user", role)
        return (("authorization", f"Bearer {secret}"),)


@contextmanager
def serve(app: ContentApp, authenticate: Callable[[str, str], Principal] | None = None) -> Iterator[Served]:
    """The content process's server around ``app``; ``authenticate`` replaces the token
    check (so a test can reach the use cases while the identity tables are gone)."""
    if authenticate is None:
        server = build_server(app, "127.0.0.1:0")
    else:
        server = GrpcServer([content_spec(app.service, app.tokens), identity_spec(app.identity, app.tokens)],
                            authenticate, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Served(app, content_pb2_grpc.ContentServiceStub(channel), identity_pb2_grpc.IdentityServiceStub(channel))
    finally:
        channel.close()
        server.stop(grace=1)


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that is bound but never listens: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def rpc_error(call: Callable[..., Any], *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):  # server streaming: errors arrive while reading
            list(result)
    return err.value


def count(app: ContentApp, model: Any) -> int:
    with app.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(model)))


def counts(app: ContentApp) -> dict[str, int]:
    models = (AssetRow, PostRow, RevisionRow, PostTopicRow, IdempotencyRow, OutboxRow)
    return {m.__tablename__: count(app, m) for m in models}


def upload(content: Any, md: Any, data: bytes, request_id: str = "") -> cpb.Asset:
    messages = [cpb.UploadAssetRequest(metadata=cpb.AssetMetadata(filename="p.jpg", request_id=request_id))]
    messages += [cpb.UploadAssetRequest(chunk=data[i : i + 500]) for i in range(0, len(data), 500)]
    return content.UploadAsset(iter(messages), metadata=md)


def post_content(**changes: Any) -> cpb.PostContent:
    c = cpb.PostContent(title="Spring sale", body="Spring sale: [[today|this week]] only")
    for key, value in changes.items():
        if isinstance(value, list):
            getattr(c, key).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(c, key).CopyFrom(value)
        else:
            setattr(c, key, value)
    return c


# ---- database down ----------------------------------------------------------------------


def dead_db_calls(served: Served, md: Any) -> dict[str, Callable[[], Any]]:
    c, i = served.content, served.identity
    name = "posts/" + "a" * 26
    return {
        "GetPost": lambda: c.GetPost(cpb.GetPostRequest(name=name), metadata=md),
        "ListPosts": lambda: c.ListPosts(cpb.ListPostsRequest(), metadata=md),
        "CreatePost": lambda: c.CreatePost(cpb.CreatePostRequest(content=post_content()), metadata=md),
        "UpdatePost": lambda: c.UpdatePost(cpb.UpdatePostRequest(
            post=cpb.Post(name=name, content=post_content()), update_mask={"paths": ["*"]}), metadata=md),
        "PublishPost": lambda: c.PublishPost(cpb.PublishPostRequest(name=name), metadata=md),
        "ListPostRevisions": lambda: c.ListPostRevisions(cpb.ListPostRevisionsRequest(parent=name), metadata=md),
        "CreateTopic": lambda: c.CreateTopic(cpb.CreateTopicRequest(topic=cpb.Topic(display_name="T")), metadata=md),
        "ListTopics": lambda: c.ListTopics(cpb.ListTopicsRequest(), metadata=md),
        "GetAsset": lambda: c.GetAsset(cpb.GetAssetRequest(name="assets/" + "a" * 26), metadata=md),
        "DownloadAsset": lambda: c.DownloadAsset(cpb.DownloadAssetRequest(name="assets/" + "a" * 26), metadata=md),
        "UploadAsset": lambda: upload(c, md, image(1)),
        "ListUsers": lambda: i.ListUsers(ipb.ListUsersRequest(), metadata=md),
        "CreateUser": lambda: i.CreateUser(ipb.CreateUserRequest(
            user=ipb.User(display_name="New", role=ipb.ROLE_EDITOR)), metadata=md),
    }


def test_database_down_gives_unavailable(tmp_path: Path) -> None:
    with refused_port() as port:
        settings = make_settings(tmp_path, DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{port}/contentops")
        app = ContentApp.build(settings, events=InProcessEvents(), migrate=False)
        try:
            # The token check is the first thing to need the database.
            with serve(app) as served:
                for name, call in dead_db_calls(served, WELL_FORMED_TOKEN).items():
                    err = rpc_error(call)
                    assert (err.code(), name) == (UNAVAILABLE, name), err.details()
                    assert "database" in err.details()
            # With the token check stubbed out, each use case meets the dead database itself.
            with serve(app, authenticate=lambda _id, _secret: STAFF) as served:
                for name, call in dead_db_calls(served, WELL_FORMED_TOKEN).items():
                    err = rpc_error(call)
                    assert (err.code(), name) == (UNAVAILABLE, name), err.details()
                    assert "database" in err.details()
            assert app.blobs.keys() == []  # the upload stopped before storing anything
        finally:
            app.close()


def _pg_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_database_lost_mid_test(pg_url: str, tmp_path: Path) -> None:
    # Tokens stay cached, so the calls below reach the use cases' own queries.
    settings = make_settings(tmp_path, DATABASE_URL=pg_url, AUTH_CACHE_SECONDS="600")
    app = ContentApp.build(settings, events=InProcessEvents(), migrate=False)
    try:
        with serve(app) as served:
            md = served.md(Role.ADMIN)
            post = served.content.CreatePost(cpb.CreatePostRequest(content=post_content()), metadata=md)
            # Every pooled connection killed under the pool: the next call reconnects and works.
            with infra._pg_admin() as conn:
                killed = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE datname = %s AND pid <> pg_backend_pid()", (_pg_name(pg_url),))
                assert killed.fetchone()[0] >= 1
            assert served.content.GetPost(cpb.GetPostRequest(name=post.name), metadata=md).etag == post.etag
            # The database gone for good: UNAVAILABLE, never INTERNAL.
            with infra._pg_admin() as conn:
                conn.execute(f'DROP DATABASE "{_pg_name(pg_url)}" WITH (FORCE)')
            for name, call in dead_db_calls(served, md).items():
                err = rpc_error(call)
                assert (err.code(), name) == (UNAVAILABLE, name), err.details()
    finally:
        app.close()


def test_connection_killed_inside_a_write_rolls_it_back(pg_url: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path, DATABASE_URL=pg_url)
    app = ContentApp.build(settings, events=InProcessEvents(), migrate=False)
    original = store.set_head_topics

    def kill_own_connection(s: Any, post_id: str, topics: Any) -> None:
        # The post and its revision are already flushed; now the server drops the session.
        pid = s.execute(text("SELECT pg_backend_pid()")).scalar()
        with infra._pg_admin() as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        original(s, post_id, topics)

    try:
        with serve(app) as served:
            md = served.md(Role.EDITOR)
            before = counts(app)
            monkeypatch.setattr(store, "set_head_topics", kill_own_connection)
            err = rpc_error(served.content.CreatePost, cpb.CreatePostRequest(content=post_content()), metadata=md)
            assert err.code() == UNAVAILABLE, err.details()
            monkeypatch.undo()
            assert counts(app) == before
            served.content.CreatePost(cpb.CreatePostRequest(content=post_content()), metadata=md)
            assert counts(app)["content_posts"] == before["content_posts"] + 1
    finally:
        app.close()


# ---- blob store failing --------------------------------------------------------------------


class BreaksAfter:
    """A readable stream that gives ``budget`` bytes of ``data`` and then raises ``error``."""

    def __init__(self, data: BinaryIO, budget: int, error: BaseException) -> None:
        self.data, self.budget, self.error = data, budget, error

    def read(self, n: int = -1) -> bytes:
        if self.budget <= 0:
            raise self.error
        chunk = self.data.read(self.budget if n is None or n < 0 else min(n, self.budget))
        self.budget -= len(chunk)
        return chunk


class FlakyBlobs:
    """The real store, with ``put`` replaced by a failure while ``fail`` is set."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.fail: Callable[[BlobStore, str, BinaryIO, int, str], None] | None = None
        self.stored: list[str] = []

    def put(self, key: str, data: BinaryIO, length: int, content_type: str) -> None:
        if self.fail is not None:
            self.fail(self.inner, key, data, length, content_type)
        else:
            self.inner.put(key, data, length, content_type)
        self.stored.append(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _stream_breaks(error: BaseException) -> Callable[..., None]:
    def fail(inner: BlobStore, key: str, data: BinaryIO, length: int, ct: str) -> None:
        inner.put(key, BreaksAfter(data, 100, error), length, ct)  # type: ignore[arg-type]
    return fail


def _store_fails(error: BaseException, after_storing: bool = False) -> Callable[..., None]:
    def fail(inner: BlobStore, key: str, data: BinaryIO, length: int, ct: str) -> None:
        if after_storing:  # e.g. S3 stored the object but the response never arrived
            inner.put(key, data, length, ct)
        else:
            data.read(100)
        raise error
    return fail


INTERNAL = grpc.StatusCode.INTERNAL
PUT_FAILURES = {
    # The real store reads a stream that breaks half-way: the adapter's own clean-up runs.
    "stream OSError inside the real store": (_stream_breaks(OSError(errno.EIO, "Input/output error")), UNAVAILABLE),
    "stream RuntimeError inside the real store": (_stream_breaks(RuntimeError("bug in a reader")), INTERNAL),
    # The store itself fails after reading part of the stream.
    "store Unavailable after a partial read": (_store_fails(Unavailable("blob store unavailable")), UNAVAILABLE),
    "store RuntimeError after a partial read": (_store_fails(RuntimeError("bug in the store")), INTERNAL),
    # The store wrote the object and then failed: the upload failed, so the object must go.
    "store Unavailable after storing": (_store_fails(Unavailable("response lost"), after_storing=True), UNAVAILABLE),
}


def _ready(settings: Settings) -> BlobStore:
    blobs = blob_store_from_settings(settings)
    if hasattr(blobs, "ensure_bucket"):
        blobs.ensure_bucket()  # type: ignore[attr-defined]
    return blobs


@pytest.mark.parametrize("failure", list(PUT_FAILURES))
def test_blob_store_failing_mid_upload_leaves_nothing(settings: Settings, failure: str) -> None:
    fail, code = PUT_FAILURES[failure]
    blobs = FlakyBlobs(_ready(settings))
    app = ContentApp.build(settings, blobs=blobs, events=InProcessEvents(), migrate=True)
    try:
        with serve(app) as served:
            md = served.md()
            request_id = str(uuid.uuid4())
            blobs.fail = fail
            err = rpc_error(upload, served.content, md, image(2), request_id)
            assert err.code() == code, err.details()
            if code == INTERNAL:
                assert "request id" in err.details()
            assert (count(app, AssetRow), count(app, IdempotencyRow)) == (0, 0)
            assert blobs.inner.keys() == []  # no object, no temporary file
            # Nothing stale blocks the retry, with the same request id.
            blobs.fail = None
            asset = upload(served.content, md, image(2), request_id)
            assert blobs.inner.keys() == blobs.stored
            assert served.content.GetAsset(cpb.GetAssetRequest(name=asset.name), metadata=md).sha256 == asset.sha256
    finally:
        app.close()


class WritesFail:
    """The database, except that a write transaction cannot start (it went down)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def write(self) -> Any:
        raise Unavailable("database unavailable, retry later")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def _remember_raises(error: BaseException) -> Callable[..., None]:
    def remember(*args: Any, **kwargs: Any) -> None:
        raise error
    return remember


ROW_FAILURES = {
    # store.remember_request runs after the asset row is flushed, inside the same transaction.
    "row insert fails after flush": ("remember", _remember_raises(RuntimeError("bug")), INTERNAL),
    "row insert meets a constraint": ("remember", _remember_raises(IntegrityError("INSERT", {}, Exception("dup"))),
                                      UNAVAILABLE),
    "database down before the row": ("db", None, UNAVAILABLE),
}


@pytest.mark.parametrize("failure", list(ROW_FAILURES))
def test_blob_removed_when_its_row_never_lands(settings: Settings, failure: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    how, replacement, code = ROW_FAILURES[failure]
    blobs = FlakyBlobs(_ready(settings))
    app = ContentApp.build(settings, blobs=blobs, events=InProcessEvents(), migrate=True)
    try:
        with serve(app) as served:
            md = served.md()
            if how == "remember":
                monkeypatch.setattr(store, "remember_request", replacement)
            else:
                monkeypatch.setattr(app.service, "db", WritesFail(app.db))
            err = rpc_error(upload, served.content, md, image(3), str(uuid.uuid4()))
            assert err.code() == code, err.details()
            monkeypatch.undo()
            assert len(blobs.stored) == 1, "the blob was stored before the row failed"
            assert count(app, AssetRow) == 0
            assert blobs.inner.keys() == []
    finally:
        app.close()


# ---- S3 down -------------------------------------------------------------------------------


def test_s3_down_gives_unavailable(pg_url: str, s3_server: infra.S3Server, tmp_path: Path) -> None:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    up = make_settings(tmp_path / "up", DATABASE_URL=pg_url, **s3_server.env(bucket))
    healthy = ContentApp.build(up, events=InProcessEvents(), migrate=False)
    try:
        with serve(healthy) as served:
            md = served.md()
            stored = upload(served.content, md, image(4))
        with refused_port() as port:
            env = {**s3_server.env(bucket), "MINIO_ENDPOINT": f"127.0.0.1:{port}"}
            down = ContentApp.build(make_settings(tmp_path / "down", DATABASE_URL=pg_url, **env),
                                    events=InProcessEvents(), migrate=False)
            try:
                with serve(down) as served:
                    err = rpc_error(upload, served.content, md, image(5), str(uuid.uuid4()))
                    assert err.code() == UNAVAILABLE, err.details()
                    assert (count(down, AssetRow), count(down, IdempotencyRow)) == (1, 0)
                    err = rpc_error(served.content.DownloadAsset, cpb.DownloadAssetRequest(name=stored.name),
                                    metadata=md)
                    assert err.code() == UNAVAILABLE, err.details()
                    # Metadata and presigned URLs need no S3 round trip.
                    got = served.content.GetAsset(cpb.GetAssetRequest(name=stored.name), metadata=md)
                    assert got.sha256 == stored.sha256 and got.download_uri
            finally:
                down.close()
        assert healthy.blobs.keys() == [f"originals/{stored.name.split('/')[1]}"]
    finally:
        healthy.close()


# ---- posts: a failed change changes nothing ------------------------------------------------------


def _seed_refs(harness: Any, md: Any) -> tuple[cpb.Topic, cpb.Asset]:
    topic = harness.content.CreateTopic(cpb.CreateTopicRequest(topic=cpb.Topic(display_name="Spring")), metadata=md)
    return topic, upload(harness.content, md, image(6))


def test_failed_create_post_leaves_no_rows(harness: Any) -> None:
    md = harness.md(Role.EDITOR)
    topic, asset = _seed_refs(harness, md)
    before = counts(harness.app)
    missing_asset, missing_topic = "assets/" + "0" * 26, "topics/missing"
    request_id = str(uuid.uuid4())
    refused = {
        "content.images[1]:": post_content(images=[asset.name, missing_asset]),
        "content.topics[1]:": post_content(topics=[topic.name, missing_topic]),
        "content.body:": post_content(body="[[never closed"),
        "content.title:": post_content(title="x" * 121),
        "content.variation.rep_template:": post_content(variation=cpb.VariationSettings(rep_template="{{ rep }}")),
    }
    for field_name, content in refused.items():
        err = rpc_error(harness.content.CreatePost, cpb.CreatePostRequest(content=content, request_id=request_id),
                        metadata=md)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert err.details().startswith(field_name), err.details()
        assert counts(harness.app) == before
    # The request id was not used up by the failures.
    good = cpb.CreatePostRequest(content=post_content(images=[asset.name], topics=[topic.name]), request_id=request_id)
    first = harness.content.CreatePost(good, metadata=md)
    assert harness.content.CreatePost(good, metadata=md).name == first.name
    after = counts(harness.app)
    assert after["content_posts"] == before["content_posts"] + 1
    assert after["content_revisions"] == before["content_revisions"] + 1


def test_create_post_failing_half_way_rolls_back(harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    md = harness.md(Role.EDITOR)
    topic, _ = _seed_refs(harness, md)
    before = counts(harness.app)
    original = store.set_head_topics

    def fails_after(*args: Any) -> None:
        original(*args)  # the post, its revision and topic links are flushed by now
        raise RuntimeError("crash half-way")

    monkeypatch.setattr(store, "set_head_topics", fails_after)
    err = rpc_error(harness.content.CreatePost,
                    cpb.CreatePostRequest(content=post_content(topics=[topic.name]), request_id=str(uuid.uuid4())),
                    metadata=md)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert counts(harness.app) == before


def _revisions(harness: Any, post: cpb.Post, md: Any) -> list[str]:
    response = harness.content.ListPostRevisions(cpb.ListPostRevisionsRequest(parent=post.name), metadata=md)
    return [r.name for r in response.revisions]


def test_failed_updates_add_no_revision(harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    md = harness.md(Role.EDITOR)
    topic, asset = _seed_refs(harness, md)
    post = harness.content.CreatePost(cpb.CreatePostRequest(content=post_content(topics=[topic.name])), metadata=md)

    def update(paths: list[str], etag: str = "", **changes: Any) -> cpb.UpdatePostRequest:
        return cpb.UpdatePostRequest(post=cpb.Post(name=post.name, etag=etag, content=post_content(**changes)),
                                     update_mask={"paths": paths})

    refused = [
        (update(["content.title"], etag="0" * 16, title="New"), grpc.StatusCode.ABORTED, ""),
        (update(["content.body"], body="[[oops"), grpc.StatusCode.INVALID_ARGUMENT, "content.body:"),
        (update(["content.body"], body="x" * 2001), grpc.StatusCode.INVALID_ARGUMENT, "content.body:"),
        (update(["content.topics"], topics=["topics/missing"]), grpc.StatusCode.INVALID_ARGUMENT,
         "content.topics[0]:"),
        (update(["content.images"], images=[asset.name, asset.name]), grpc.StatusCode.INVALID_ARGUMENT,
         "content.images[1]:"),
        (update(["content.state"]), grpc.StatusCode.INVALID_ARGUMENT, "update_mask.paths[0]:"),
        (update([]), grpc.StatusCode.INVALID_ARGUMENT, "update_mask:"),
        (update(["content.variation.protected_phrases"],
                variation=cpb.VariationSettings(protected_phrases=["not in the body"])),
         grpc.StatusCode.INVALID_ARGUMENT, "content.variation.protected_phrases[0]:"),
    ]
    before = counts(harness.app)
    for request, code, prefix in refused:
        err = rpc_error(harness.content.UpdatePost, request, metadata=md)
        assert err.code() == code, err.details()
        assert err.details().startswith(prefix), err.details()
        assert counts(harness.app) == before
        assert _revisions(harness, post, md) == [post.head_revision]
        assert harness.content.GetPost(cpb.GetPostRequest(name=post.name), metadata=md).etag == post.etag

    # Failing after the post row was updated and the revision flushed: all rolled back.
    original = store.insert_revision

    def fails_after(*args: Any) -> None:
        original(*args)
        raise RuntimeError("crash half-way")

    monkeypatch.setattr(store, "insert_revision", fails_after)
    err = rpc_error(harness.content.UpdatePost, update(["content.title"], etag=post.etag, title="New"), metadata=md)
    assert err.code() == grpc.StatusCode.INTERNAL
    monkeypatch.undo()
    again = harness.content.GetPost(cpb.GetPostRequest(name=post.name), metadata=md)
    assert (again.etag, again.head_revision, again.content.title) == (post.etag, post.head_revision, "Spring sale")
    assert counts(harness.app) == before

    # A good update still works with the etag the failures left alone.
    updated = harness.content.UpdatePost(update(["content.title"], etag=post.etag, title="New"), metadata=md)
    assert len(_revisions(harness, post, md)) == 2 and updated.content.title == "New"

    # Archived: no more revisions.
    harness.content.ArchivePost(cpb.ArchivePostRequest(name=post.name), metadata=md)
    err = rpc_error(harness.content.UpdatePost, update(["content.title"], title="Newer"), metadata=md)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(_revisions(harness, post, md)) == 2


def test_failed_publish_changes_nothing(harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    md = harness.md(Role.EDITOR)
    post = harness.content.CreatePost(cpb.CreatePostRequest(content=post_content()), metadata=md)
    before = counts(harness.app)

    err = rpc_error(harness.content.PublishPost, cpb.PublishPostRequest(name=post.name, etag="f" * 16), metadata=md)
    assert err.code() == grpc.StatusCode.ABORTED

    def add_event_fails(*args: Any) -> None:
        raise RuntimeError("outbox write failed")

    monkeypatch.setattr(store, "add_event", add_event_fails)  # after the post row was updated
    err = rpc_error(harness.content.PublishPost, cpb.PublishPostRequest(name=post.name, etag=post.etag), metadata=md)
    assert err.code() == grpc.StatusCode.INTERNAL
    monkeypatch.undo()

    again = harness.content.GetPost(cpb.GetPostRequest(name=post.name), metadata=md)
    assert (again.state, again.etag, again.published_revision) == (cpb.POST_STATE_DRAFT, post.etag, "")
    revision = harness.content.GetPostRevision(cpb.GetPostRevisionRequest(name=post.head_revision), metadata=md)
    assert not revision.HasField("publish_time")
    assert counts(harness.app) == before and harness.received == []

    live = harness.content.PublishPost(cpb.PublishPostRequest(name=post.name, etag=post.etag), metadata=md)
    assert live.state == cpb.POST_STATE_PUBLISHED and len(harness.received) == 1
