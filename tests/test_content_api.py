"""The content service over gRPC, on the embedded default and on PostgreSQL + S3."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2

from services.content.api import ROLES
from services.protos.contentops.content.v1 import content_pb2 as pb
from services.protos.contentops.content.v1 import events_pb2
from services.protos.contentops.identity.v1 import identity_pb2 as ipb
from services.shared.apiutil import to_timestamp
from services.shared.identity.domain import Role

from .helpers import jpeg, new_request_id, post_content, upload_messages


def code_of(call, *args, **kwargs) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value.code()  # type: ignore[attr-defined]


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


@pytest.fixture
def editor(harness):  # type: ignore[no-untyped-def]
    return harness.md(Role.EDITOR)


def make_topic(harness, md, topic_id="early-education", label="早教"):  # type: ignore[no-untyped-def]
    return harness.content.CreateTopic(pb.CreateTopicRequest(topic=pb.Topic(display_name=label), topic_id=topic_id),
                                       metadata=md)


def make_asset(harness, md, seed=0):  # type: ignore[no-untyped-def]
    return harness.content.UploadAsset(upload_messages(jpeg(seed)), metadata=md)


def make_post(harness, md, **kw):  # type: ignore[no-untyped-def]
    return harness.content.CreatePost(pb.CreatePostRequest(content=post_content(**kw)), metadata=md)


# ---- topics -------------------------------------------------------------------------------


def test_topics_are_created_listed_and_renamed(harness, editor) -> None:
    t = make_topic(harness, editor)
    assert t.name == "topics/early-education" and t.display_name == "早教"
    generated = harness.content.CreateTopic(pb.CreateTopicRequest(topic=pb.Topic(display_name="亲子阅读")),
                                            metadata=editor)
    assert generated.name.startswith("topics/t-")
    renamed = harness.content.UpdateTopic(
        pb.UpdateTopicRequest(topic=pb.Topic(name=t.name, display_name="早期教育", etag=t.etag), update_mask=mask("display_name")),
        metadata=editor)
    assert renamed.display_name == "早期教育" and renamed.etag != t.etag
    assert code_of(harness.content.UpdateTopic, pb.UpdateTopicRequest(
        topic=pb.Topic(name=t.name, display_name="x", etag=t.etag), update_mask=mask("display_name")),
        metadata=editor) == grpc.StatusCode.ABORTED
    names = [x.display_name for x in harness.content.ListTopics(pb.ListTopicsRequest(), metadata=editor).topics]
    assert sorted(names) == ["亲子阅读", "早期教育"]


def test_duplicate_topics_are_refused(harness, editor) -> None:
    make_topic(harness, editor)
    assert code_of(make_topic, harness, editor) == grpc.StatusCode.ALREADY_EXISTS
    err = rpc_error(make_topic, harness, editor, topic_id="other")
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and "早教" in err.details()


def test_retried_create_topic_returns_the_first_result(harness, editor) -> None:
    rid = new_request_id()
    req = pb.CreateTopicRequest(topic=pb.Topic(display_name="早教"), request_id=rid)
    first = harness.content.CreateTopic(req, metadata=editor)
    again = harness.content.CreateTopic(req, metadata=editor)
    assert again.name == first.name
    assert len(harness.content.ListTopics(pb.ListTopicsRequest(), metadata=editor).topics) == 1


def test_topics_paginate_with_opaque_tokens(harness, editor) -> None:
    for i in range(5):
        make_topic(harness, editor, topic_id=f"topic-{i}", label=f"话题{i}")
    seen, token = [], ""
    while True:
        page = harness.content.ListTopics(pb.ListTopicsRequest(page_size=2, page_token=token), metadata=editor)
        assert len(page.topics) <= 2
        seen += [t.name for t in page.topics]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"topics/topic-{i}" for i in range(5)]


# ---- assets ---------------------------------------------------------------------------------


def test_upload_records_metadata_and_dedupes_by_sha256(harness, editor) -> None:
    data = jpeg(1, (80, 60))
    asset = harness.content.UploadAsset(upload_messages(data, "家长会.jpg"), metadata=editor)
    assert (asset.mime_type, asset.width, asset.height, asset.size_bytes) == ("image/jpeg", 80, 60, len(data))
    assert asset.filename == "家长会.jpg"
    again = harness.content.UploadAsset(upload_messages(data, "copy.jpg", chunk=7), metadata=editor)
    assert again.name == asset.name
    assert harness.app.blobs.keys("originals/") == [f"originals/{asset.name.split('/')[1]}"]  # one blob, no copy


def test_uploaded_bytes_come_back_by_download_and_by_url(harness, editor) -> None:
    data = jpeg(2, (120, 90))
    asset = harness.content.UploadAsset(upload_messages(data), metadata=editor)
    rep = harness.md(Role.REP)
    streamed = b"".join(m.chunk for m in harness.content.DownloadAsset(pb.DownloadAssetRequest(name=asset.name), metadata=rep))
    assert streamed == data
    got = harness.content.GetAsset(pb.GetAssetRequest(name=asset.name), metadata=rep)
    if harness.app.settings.minio_endpoint:
        assert "X-Amz-Signature=" in got.download_uri
        with urllib.request.urlopen(got.download_uri, timeout=10) as resp:  # presigned: no credentials needed
            assert resp.read() == data
    else:
        assert got.download_uri == ""  # the local store is downloaded through DownloadAsset


def test_unknown_asset_is_not_found(harness, editor) -> None:
    assert code_of(harness.content.GetAsset, pb.GetAssetRequest(name="assets/nope"), metadata=editor) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: list(harness.content.DownloadAsset(pb.DownloadAssetRequest(name="assets/nope"),
                                                             metadata=editor))) == grpc.StatusCode.NOT_FOUND


def test_retried_upload_with_request_id_returns_the_first_asset(harness, editor) -> None:
    rid = new_request_id()
    first = harness.content.UploadAsset(upload_messages(jpeg(3), request_id=rid), metadata=editor)
    again = harness.content.UploadAsset(upload_messages(jpeg(3), request_id=rid), metadata=editor)
    assert again.name == first.name


# ---- posts ------------------------------------------------------------------------------------


def test_create_and_get_a_post_with_images_and_topics(harness, editor) -> None:
    topic = make_topic(harness, editor)
    assets = [make_asset(harness, editor, i) for i in range(3)]
    post = make_post(harness, editor, images=[a.name for a in assets], topics=[topic.name])
    assert post.state == pb.POST_STATE_DRAFT
    assert post.head_revision == f"{post.name}/revisions/1" and post.published_revision == ""
    got = harness.content.GetPost(pb.GetPostRequest(name=post.name), metadata=editor)
    assert list(got.content.images) == [a.name for a in assets]
    assert list(got.content.topics) == [topic.name]
    assert got.content.variation.protected_phrases == ["早教中心开放日"]
    assert got.etag == post.etag


def test_create_refuses_missing_references_and_names_the_field(harness, editor) -> None:
    err = rpc_error(make_post, harness, editor, images=["assets/missing"])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("content.images[0]")
    err = rpc_error(make_post, harness, editor, topics=["topics/missing"])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("content.topics[0]")
    assert harness.content.ListPosts(pb.ListPostsRequest(), metadata=editor).posts == []


def test_retried_create_post_returns_the_first_post(harness, editor) -> None:
    req = pb.CreatePostRequest(content=post_content(), request_id=new_request_id())
    first = harness.content.CreatePost(req, metadata=editor)
    again = harness.content.CreatePost(req, metadata=editor)
    assert again.name == first.name
    assert len(harness.content.ListPosts(pb.ListPostsRequest(), metadata=editor).posts) == 1


def test_every_edit_is_a_revision_and_published_revisions_never_change(harness, editor) -> None:
    post = make_post(harness, editor, title="v1")
    post = harness.content.PublishPost(pb.PublishPostRequest(name=post.name), metadata=editor)
    edited = harness.content.UpdatePost(pb.UpdatePostRequest(
        post=pb.Post(name=post.name, etag=post.etag, content=pb.PostContent(title="v2")),
        update_mask=mask("content.title")), metadata=editor)
    assert edited.head_revision.endswith("/revisions/2") and edited.published_revision.endswith("/revisions/1")
    assert edited.state == pb.POST_STATE_PUBLISHED and edited.has_unpublished_changes
    assert edited.content.body == post.content.body  # fields outside the mask are kept
    live = harness.content.GetPostRevision(pb.GetPostRevisionRequest(name=f"{post.name}/revisions/1"), metadata=editor)
    assert live.content.title == "v1" and live.HasField("publish_time")
    revisions = harness.content.ListPostRevisions(pb.ListPostRevisionsRequest(parent=post.name), metadata=editor).revisions
    assert [r.content.title for r in revisions] == ["v2", "v1"]
    assert not revisions[0].HasField("publish_time")


def test_stale_etag_is_aborted_and_adds_no_revision(harness, editor) -> None:
    post = make_post(harness, editor)
    harness.content.UpdatePost(pb.UpdatePostRequest(post=pb.Post(name=post.name, etag=post.etag,
                                                                 content=pb.PostContent(title="a")),
                                                    update_mask=mask("content.title")), metadata=editor)
    stale = pb.UpdatePostRequest(post=pb.Post(name=post.name, etag=post.etag, content=pb.PostContent(title="b")),
                                 update_mask=mask("content.title"))
    assert code_of(harness.content.UpdatePost, stale, metadata=editor) == grpc.StatusCode.ABORTED
    revisions = harness.content.ListPostRevisions(pb.ListPostRevisionsRequest(parent=post.name), metadata=editor)
    assert len(revisions.revisions) == 2


def test_update_mask_is_required_and_checked(harness, editor) -> None:
    post = make_post(harness, editor)
    for paths, field in [((), "update_mask"), (("content.nope",), "update_mask.paths[0]"), (("name",), "update_mask.paths[0]")]:
        err = rpc_error(harness.content.UpdatePost, pb.UpdatePostRequest(post=pb.Post(name=post.name),
                                                                          update_mask=mask(*paths)), metadata=editor)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith(field)


def test_publish_emits_one_event_with_the_full_revision(harness, editor) -> None:
    topic = make_topic(harness, editor)
    asset = make_asset(harness, editor)
    post = make_post(harness, editor, images=[asset.name], topics=[topic.name])
    published = harness.content.PublishPost(pb.PublishPostRequest(name=post.name, etag=post.etag), metadata=editor)
    assert published.state == pb.POST_STATE_PUBLISHED and published.HasField("publish_time")
    harness.content.PublishPost(pb.PublishPostRequest(name=post.name), metadata=editor)  # retry: no second event
    assert len(harness.received) == 1
    event = events_pb2.PostPublishedEvent.FromString(harness.received[0])
    assert event.post == post.name and event.revision == f"{post.name}/revisions/1"
    assert event.content.title == "开放日" and list(event.content.topics) == [topic.name]
    assert [i.sha256 for i in event.content.images] == [asset.sha256]
    assert event.content.images[0].blob_key and harness.app.blobs.exists(event.content.images[0].blob_key)


def test_scheduled_post_goes_live_when_due(harness, editor) -> None:
    post = make_post(harness, editor)
    when = datetime.now(UTC) + timedelta(seconds=1)
    scheduled = harness.content.PublishPost(pb.PublishPostRequest(name=post.name, publish_time=to_timestamp(when)),
                                            metadata=editor)
    assert scheduled.state == pb.POST_STATE_SCHEDULED
    assert scheduled.scheduled_revision == f"{post.name}/revisions/1"
    assert harness.app.service.publish_due_posts() == 0  # not yet
    assert harness.received == []
    import time

    time.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()) + 0.05)
    assert harness.app.service.publish_due_posts() == 1
    assert harness.app.service.publish_due_posts() == 0  # idempotent
    live = harness.content.GetPost(pb.GetPostRequest(name=post.name), metadata=editor)
    assert live.state == pb.POST_STATE_PUBLISHED and live.published_revision.endswith("/revisions/1")
    assert len(harness.received) == 1


def test_only_drafts_can_be_deleted(harness, editor) -> None:
    draft = make_post(harness, editor)
    harness.content.DeletePost(pb.DeletePostRequest(name=draft.name, etag=draft.etag), metadata=editor)
    assert code_of(harness.content.GetPost, pb.GetPostRequest(name=draft.name), metadata=editor) == grpc.StatusCode.NOT_FOUND
    live = make_post(harness, editor)
    harness.content.PublishPost(pb.PublishPostRequest(name=live.name), metadata=editor)
    err = rpc_error(harness.content.DeletePost, pb.DeletePostRequest(name=live.name), metadata=editor)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "archive" in err.details()


def test_archived_posts_cannot_be_published_or_edited(harness, editor) -> None:
    post = make_post(harness, editor)
    archived = harness.content.ArchivePost(pb.ArchivePostRequest(name=post.name), metadata=editor)
    assert archived.state == pb.POST_STATE_ARCHIVED
    assert code_of(harness.content.PublishPost, pb.PublishPostRequest(name=post.name),
                   metadata=editor) == grpc.StatusCode.FAILED_PRECONDITION
    assert code_of(harness.content.UpdatePost, pb.UpdatePostRequest(post=pb.Post(name=post.name, content=pb.PostContent(
        title="x")), update_mask=mask("content.title")), metadata=editor) == grpc.StatusCode.FAILED_PRECONDITION


def test_list_posts_filters_and_paginates(harness, editor) -> None:
    topic = make_topic(harness, editor)
    other_editor = harness.md(Role.EDITOR)
    made = [make_post(harness, editor, title=f"p{i}", topics=[topic.name] if i % 2 else []) for i in range(7)]
    mine_other = make_post(harness, other_editor, title="other")
    harness.content.PublishPost(pb.PublishPostRequest(name=made[0].name), metadata=editor)

    def all_pages(**kw):  # type: ignore[no-untyped-def]
        names, token = [], ""
        while True:
            page = harness.content.ListPosts(pb.ListPostsRequest(page_size=3, page_token=token, **kw), metadata=editor)
            names += [p.content.title for p in page.posts]
            if not (token := page.next_page_token):
                return names

    assert all_pages() == ["other"] + [f"p{i}" for i in reversed(range(7))]  # newest first
    assert all_pages(topic=topic.name) == ["p5", "p3", "p1"]
    assert all_pages(state=pb.POST_STATE_PUBLISHED) == ["p0"]
    assert all_pages(author=mine_other.author) == ["other"]
    first = harness.content.ListPosts(pb.ListPostsRequest(page_size=3), metadata=editor)
    err = rpc_error(harness.content.ListPosts, pb.ListPostsRequest(page_size=3, page_token=first.next_page_token,
                                                                   topic=topic.name), metadata=editor)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("page_token")
    forged = first.next_page_token[:-3] + "abc"
    assert code_of(harness.content.ListPosts, pb.ListPostsRequest(page_token=forged),
                   metadata=editor) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(harness.content.ListPosts, pb.ListPostsRequest(page_size=-1),
                   metadata=editor) == grpc.StatusCode.INVALID_ARGUMENT


# ---- who may do what ------------------------------------------------------------------------------


def test_calls_without_a_valid_token_are_unauthenticated(harness) -> None:
    req = pb.ListPostsRequest()
    assert code_of(harness.content.ListPosts, req) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(harness.content.ListPosts, req, metadata=(("authorization", "Bearer nope"),)) == grpc.StatusCode.UNAUTHENTICATED
    fake = "co_" + "0" * 26 + "_" + "A" * 43
    assert code_of(harness.content.ListPosts, req, metadata=(("authorization", f"Bearer {fake}"),)) == grpc.StatusCode.UNAUTHENTICATED


def test_revoked_tokens_stop_working(harness) -> None:
    admin = harness.md(Role.ADMIN)
    created = harness.identity.CreateUser(ipb.CreateUserRequest(user=ipb.User(display_name="李编辑", role=ipb.ROLE_EDITOR)),
                                          metadata=admin)
    md = (("authorization", f"Bearer {created.secret}"),)
    harness.content.ListPosts(pb.ListPostsRequest(), metadata=md)
    harness.identity.RevokeToken(ipb.RevokeTokenRequest(name=created.token.name), metadata=md)  # one's own token
    assert code_of(harness.content.ListPosts, pb.ListPostsRequest(), metadata=md) == grpc.StatusCode.UNAUTHENTICATED


def test_tokens_are_stored_only_as_hashes(harness) -> None:
    from sqlalchemy import text

    _, md = harness.user(Role.EDITOR)
    secret = md[0][1].split(" ", 1)[1]
    with harness.app.db.read() as s:
        stored = [row[0] for row in s.execute(text("select secret_hash from identity_tokens"))]
    raw = secret.split("_", 2)[2]  # co_<token id>_<raw>; the raw part may itself contain "_"
    assert stored and all(secret not in h and raw not in h for h in stored)


def test_editors_may_not_manage_users(harness) -> None:
    editor = harness.md(Role.EDITOR)
    req = ipb.CreateUserRequest(user=ipb.User(display_name="x", role=ipb.ROLE_ADMIN))
    assert code_of(harness.identity.CreateUser, req, metadata=editor) == grpc.StatusCode.PERMISSION_DENIED
    other, _ = harness.user(Role.REP)
    listed = harness.identity.ListUsers(ipb.ListUsersRequest(), metadata=harness.md(Role.ADMIN))
    token_name = f"{other.name}/tokens/00000000000000000000000000"
    assert code_of(harness.identity.RevokeToken, ipb.RevokeTokenRequest(name=token_name),
                   metadata=editor) == grpc.StatusCode.PERMISSION_DENIED
    assert any(u.name == other.name for u in listed.users)


def test_anyone_may_ask_who_they_are_but_only_admins_read_other_users(harness) -> None:
    admin = harness.md(Role.ADMIN)
    created = harness.identity.CreateUser(ipb.CreateUserRequest(user=ipb.User(display_name="王销售", role=ipb.ROLE_SALES,
                                                                              team="teams/east")), metadata=admin)
    md = (("authorization", f"Bearer {created.secret}"),)
    me = harness.identity.GetUser(ipb.GetUserRequest(name="users/me"), metadata=md)
    assert (me.name, me.display_name, me.role, me.team) == (created.user.name, "王销售", ipb.ROLE_SALES, "teams/east")
    assert harness.identity.GetUser(ipb.GetUserRequest(name=created.user.name), metadata=md).name == me.name
    other, _ = harness.user(Role.REP)
    assert code_of(harness.identity.GetUser, ipb.GetUserRequest(name=other.name),
                   metadata=md) == grpc.StatusCode.PERMISSION_DENIED
    assert harness.identity.GetUser(ipb.GetUserRequest(name=other.name), metadata=admin).name == other.name
    assert code_of(harness.identity.GetUser, ipb.GetUserRequest(name="users/me")) == grpc.StatusCode.UNAUTHENTICATED


WRITES = {"CreatePost", "UpdatePost", "DeletePost", "ArchivePost", "PublishPost", "CreateTopic", "UpdateTopic",
          "UploadAsset", "ListPostRevisions", "GetPostRevision"}


def test_roles_table_covers_every_rpc() -> None:
    methods = set(pb.DESCRIPTOR.services_by_name["ContentService"].methods_by_name)
    assert set(ROLES) == methods


@pytest.mark.parametrize("role", [Role.REP, Role.SALES])
@pytest.mark.parametrize("method", sorted(WRITES))
def test_reps_and_sales_may_not_edit_posts(harness, role: Role, method: str) -> None:
    md = harness.md(role)
    service = pb.DESCRIPTOR.services_by_name["ContentService"].methods_by_name[method]
    call = getattr(harness.content, method)
    request = __import__("services.protos.contentops.content.v1.content_pb2", fromlist=["x"]).__dict__[
        service.input_type.name]()
    if service.client_streaming:
        assert code_of(call, iter([request]), metadata=md) == grpc.StatusCode.PERMISSION_DENIED
    else:
        assert code_of(call, request, metadata=md) == grpc.StatusCode.PERMISSION_DENIED


def test_reps_see_only_live_revisions_of_published_posts(harness, editor) -> None:
    rep = harness.md(Role.REP)
    draft = make_post(harness, editor, title="草稿")
    assert code_of(harness.content.GetPost, pb.GetPostRequest(name=draft.name), metadata=rep) == grpc.StatusCode.NOT_FOUND
    live = make_post(harness, editor, title="上线版")
    live = harness.content.PublishPost(pb.PublishPostRequest(name=live.name), metadata=editor)
    harness.content.UpdatePost(pb.UpdatePostRequest(post=pb.Post(name=live.name, content=pb.PostContent(title="未发布的修改")),
                                                    update_mask=mask("content.title")), metadata=editor)
    seen = harness.content.GetPost(pb.GetPostRequest(name=live.name), metadata=rep)
    assert seen.content.title == "上线版"
    listed = harness.content.ListPosts(pb.ListPostsRequest(), metadata=rep)
    assert [p.content.title for p in listed.posts] == ["上线版"]
    assert harness.content.ListPosts(pb.ListPostsRequest(state=pb.POST_STATE_DRAFT), metadata=rep).posts == []


def test_concurrent_uploads_of_the_same_photo_give_one_asset_and_one_blob(harness, editor) -> None:
    from concurrent.futures import ThreadPoolExecutor

    data = jpeg(7, (200, 150))
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: harness.content.UploadAsset(upload_messages(data, chunk=4096),
                                                                      metadata=editor), range(6)))
    assert len({a.name for a in results}) == 1
    assert harness.app.blobs.keys("originals/") == [f"originals/{results[0].name.split('/')[1]}"]
    streamed = b"".join(m.chunk for m in harness.content.DownloadAsset(pb.DownloadAssetRequest(name=results[0].name),
                                                                       metadata=editor))
    assert streamed == data


def test_target_teams_are_kept_and_travel_with_the_publish_event(harness, editor) -> None:
    content = post_content()
    content.target_teams.extend(["teams/east", "teams/north"])
    post = harness.content.CreatePost(pb.CreatePostRequest(content=content), metadata=editor)
    assert list(post.content.target_teams) == ["teams/east", "teams/north"]
    harness.content.PublishPost(pb.PublishPostRequest(name=post.name), metadata=editor)
    event = events_pb2.PostPublishedEvent.FromString(harness.received[0])
    assert list(event.content.target_teams) == ["teams/east", "teams/north"]
    bad = post_content()
    bad.target_teams.append("east")
    err = rpc_error(harness.content.CreatePost, pb.CreatePostRequest(content=bad), metadata=editor)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("content.target_teams[0]")
