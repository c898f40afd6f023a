"""gRPC servicer for ContentService: validate -> call the service -> map back.

Validation of request shape (names, page tokens, masks, enums) happens here;
content rules live in ``domain``; errors become status codes in the shared
interceptor.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from services.protos.contentops.content.v1 import content_pb2 as pb
from services.protos.contentops.content.v1 import content_pb2_grpc as pb_grpc
from services.shared.apiutil import (
    PageTokens,
    check_request_id,
    check_resource_id,
    check_text,
    from_timestamp,
    mask_paths,
    page_size,
    parse_name,
    to_timestamp,
)
from services.shared.errors import InvalidArgument
from services.shared.grpcserver import ServiceSpec, current_principal
from services.shared.identity.domain import Role

from .domain.posts import CONTENT_PATHS, BadgePosition, PostContent, PostState, Revision, Variation
from .domain.topics import Topic
from .models import AssetRow
from .service import ContentService, PostView

ALL = frozenset(Role)
EDITORS = frozenset({Role.ADMIN, Role.EDITOR})

ROLES = {
    "CreatePost": EDITORS,
    "GetPost": ALL,
    "ListPosts": ALL,
    "UpdatePost": EDITORS,
    "DeletePost": EDITORS,
    "ArchivePost": EDITORS,
    "PublishPost": EDITORS,
    "ListPostRevisions": EDITORS,
    "GetPostRevision": EDITORS,
    "CreateTopic": EDITORS,
    "GetTopic": ALL,
    "ListTopics": ALL,
    "UpdateTopic": EDITORS,
    "UploadAsset": EDITORS,
    "GetAsset": ALL,
    "DownloadAsset": ALL,
}

_STATE_TO_PB = {
    PostState.DRAFT: pb.POST_STATE_DRAFT,
    PostState.SCHEDULED: pb.POST_STATE_SCHEDULED,
    PostState.PUBLISHED: pb.POST_STATE_PUBLISHED,
    PostState.ARCHIVED: pb.POST_STATE_ARCHIVED,
}
_STATE_FROM_PB = {v: k for k, v in _STATE_TO_PB.items()}
MAX_FILENAME = 255
DOWNLOAD_CHUNK = 256 * 1024


# ---- proto <-> domain -------------------------------------------------------------


def content_from_pb(c: pb.PostContent) -> PostContent:
    images = tuple(parse_name(n, "assets", f"content.images[{i}]") for i, n in enumerate(c.images))
    topics = tuple(parse_name(n, "topics", f"content.topics[{i}]") for i, n in enumerate(c.topics))
    teams = tuple(parse_name(n, "teams", f"content.target_teams[{i}]") for i, n in enumerate(c.target_teams))
    v = c.variation
    if v.badge_position == pb.BADGE_POSITION_UNSPECIFIED:
        position = BadgePosition.BOTTOM_RIGHT
    else:
        try:
            position = BadgePosition(v.badge_position)
        except ValueError:
            raise InvalidArgument("content.variation.badge_position", f"unknown value {v.badge_position}") from None
    return PostContent(
        title=c.title,
        body=c.body,
        images=images,
        topics=topics,
        variation=Variation(tuple(v.protected_phrases), v.rep_template, v.badge_enabled, position),
        target_teams=teams,
    )


def content_to_pb(c: PostContent) -> pb.PostContent:
    v = c.variation
    return pb.PostContent(
        title=c.title,
        body=c.body,
        images=[f"assets/{a}" for a in c.images],
        topics=[f"topics/{t}" for t in c.topics],
        target_teams=[f"teams/{t}" for t in c.target_teams],
        variation=pb.VariationSettings(
            protected_phrases=list(v.protected_phrases),
            rep_template=v.rep_template,
            badge_enabled=v.badge_enabled,
            badge_position=v.badge_position.value,  # type: ignore[arg-type]
        ),
    )


def post_to_pb(view: PostView) -> pb.Post:
    p = view.post
    return pb.Post(
        name=p.name,
        content=content_to_pb(view.revision.content),
        state=_STATE_TO_PB[p.state],  # type: ignore[arg-type]
        author=f"users/{p.author_id}",
        head_revision=f"{p.name}/revisions/{p.head_revision}",
        published_revision=f"{p.name}/revisions/{p.published_revision}" if p.published_revision else "",
        has_unpublished_changes=p.has_unpublished_changes,
        scheduled_publish_time=to_timestamp(p.scheduled_time),
        scheduled_revision=f"{p.name}/revisions/{p.scheduled_revision}" if p.scheduled_revision else "",
        create_time=to_timestamp(p.create_time),
        update_time=to_timestamp(p.update_time),
        publish_time=to_timestamp(p.publish_time),
        etag=p.etag,
    )


def revision_to_pb(r: Revision) -> pb.PostRevision:
    return pb.PostRevision(
        name=r.name,
        content=content_to_pb(r.content),
        author=f"users/{r.author_id}",
        create_time=to_timestamp(r.create_time),
        publish_time=to_timestamp(r.publish_time),
    )


def topic_to_pb(t: Topic) -> pb.Topic:
    return pb.Topic(
        name=t.name,
        display_name=t.display_name,
        description=t.description,
        create_time=to_timestamp(t.create_time),
        update_time=to_timestamp(t.update_time),
        etag=t.etag,
    )


def asset_to_pb(a: AssetRow, download_uri: str = "") -> pb.Asset:
    return pb.Asset(
        name=f"assets/{a.id}",
        sha256=a.sha256,
        mime_type=a.mime_type,
        size_bytes=a.size_bytes,
        width=a.width,
        height=a.height,
        filename=a.filename,
        create_time=to_timestamp(a.create_time),
        download_uri=download_uri,
    )


def parse_revision_name(value: str, field: str = "name") -> tuple[str, int]:
    post, sep, number = value.rpartition("/revisions/")
    post_id = parse_name(post, "posts", field) if sep else parse_name("", "posts", field)
    # ASCII digits only: str.isdigit() accepts '²', which int() refuses, and int() refuses > 4300 digits.
    if (not (number.isascii() and number.isdigit()) or len(number) > 10 or number.startswith("0")
            or not 1 <= int(number) <= 2**31 - 1):
        raise InvalidArgument(field, "expected 'posts/<id>/revisions/<number>'")
    return post_id, int(number)


# ---- servicer -----------------------------------------------------------------------


class ContentServicer(pb_grpc.ContentServiceServicer):
    def __init__(self, service: ContentService, tokens: PageTokens) -> None:
        self.service = service
        self.tokens = tokens

    # posts

    def CreatePost(self, request: pb.CreatePostRequest, context: grpc.ServicerContext) -> pb.Post:
        request_id = check_request_id(request.request_id)
        content = content_from_pb(request.content)
        return post_to_pb(self.service.create_post(current_principal(), content, request_id))

    def GetPost(self, request: pb.GetPostRequest, context: grpc.ServicerContext) -> pb.Post:
        return post_to_pb(self.service.get_post(current_principal(), parse_name(request.name, "posts")))

    def ListPosts(self, request: pb.ListPostsRequest, context: grpc.ServicerContext) -> pb.ListPostsResponse:
        page_size(request.page_size)  # refused before anything else is looked at
        state = None
        if request.state != pb.POST_STATE_UNSPECIFIED:
            if request.state not in _STATE_FROM_PB:
                raise InvalidArgument("state", f"unknown value {request.state}")
            state = _STATE_FROM_PB[request.state]
        topic = parse_name(request.topic, "topics", "topic") if request.topic else None
        author = parse_name(request.author, "users", "author") if request.author else None
        who = current_principal()
        query = {"m": "ListPosts", "state": request.state, "topic": topic, "author": author, "role": who.role.value}
        views, token = self.tokens.page(
            request.page_size, request.page_token, query,
            lambda before, n: self.service.list_posts(who, state=state, topic=topic, author=author, before_id=before,
                                                      limit=n),
            lambda v: v.post.id)
        return pb.ListPostsResponse(posts=[post_to_pb(v) for v in views], next_page_token=token)

    def UpdatePost(self, request: pb.UpdatePostRequest, context: grpc.ServicerContext) -> pb.Post:
        post_id = parse_name(request.post.name, "posts", "post.name")
        paths = mask_paths(request.update_mask.paths, CONTENT_PATHS)
        if "*" in request.update_mask.paths:
            paths = {"content.title", "content.body", "content.images", "content.topics", "content.variation",
                     "content.target_teams"}
        new = content_from_pb(request.post.content)
        view = self.service.update_post(current_principal(), post_id, new, paths, request.post.etag)
        return post_to_pb(view)

    def DeletePost(self, request: pb.DeletePostRequest, context: grpc.ServicerContext) -> pb.DeletePostResponse:
        self.service.delete_post(parse_name(request.name, "posts"), request.etag)
        return pb.DeletePostResponse()

    def ArchivePost(self, request: pb.ArchivePostRequest, context: grpc.ServicerContext) -> pb.Post:
        post_id = parse_name(request.name, "posts")
        return post_to_pb(self.service.archive_post(current_principal(), post_id, request.etag))

    def PublishPost(self, request: pb.PublishPostRequest, context: grpc.ServicerContext) -> pb.Post:
        post_id = parse_name(request.name, "posts")
        at = from_timestamp(request.publish_time, "publish_time") if request.HasField("publish_time") else None
        return post_to_pb(self.service.publish_post(current_principal(), post_id, at, request.etag))

    def ListPostRevisions(
        self, request: pb.ListPostRevisionsRequest, context: grpc.ServicerContext
    ) -> pb.ListPostRevisionsResponse:
        post_id = parse_name(request.parent, "posts", "parent")
        revisions, token = self.tokens.page(
            request.page_size, request.page_token, {"m": "ListPostRevisions", "post": post_id},
            lambda before, n: self.service.list_revisions(post_id, before, n), lambda r: r.number, kind=int)
        return pb.ListPostRevisionsResponse(revisions=[revision_to_pb(r) for r in revisions], next_page_token=token)

    def GetPostRevision(self, request: pb.GetPostRevisionRequest, context: grpc.ServicerContext) -> pb.PostRevision:
        post_id, number = parse_revision_name(request.name)
        return revision_to_pb(self.service.get_revision(post_id, number))

    # topics

    def CreateTopic(self, request: pb.CreateTopicRequest, context: grpc.ServicerContext) -> pb.Topic:
        topic_id = check_resource_id(request.topic_id, "topic_id") if request.topic_id else ""
        request_id = check_request_id(request.request_id)
        topic = self.service.create_topic(current_principal(), topic_id, request.topic.display_name,
                                          request.topic.description, request_id)
        return topic_to_pb(topic)

    def GetTopic(self, request: pb.GetTopicRequest, context: grpc.ServicerContext) -> pb.Topic:
        return topic_to_pb(self.service.get_topic(parse_name(request.name, "topics")))

    def ListTopics(self, request: pb.ListTopicsRequest, context: grpc.ServicerContext) -> pb.ListTopicsResponse:
        topics, token = self.tokens.page(request.page_size, request.page_token, {"m": "ListTopics"},
                                         self.service.list_topics, lambda t: t.id)
        return pb.ListTopicsResponse(topics=[topic_to_pb(t) for t in topics], next_page_token=token)

    def UpdateTopic(self, request: pb.UpdateTopicRequest, context: grpc.ServicerContext) -> pb.Topic:
        topic_id = parse_name(request.topic.name, "topics", "topic.name")
        paths = mask_paths(request.update_mask.paths, ("display_name", "description"))
        topic = self.service.update_topic(
            topic_id,
            request.topic.display_name if "display_name" in paths else None,
            request.topic.description if "description" in paths else None,
            request.topic.etag,
        )
        return topic_to_pb(topic)

    # assets

    def UploadAsset(self, request_iterator: Iterator[pb.UploadAssetRequest], context: grpc.ServicerContext) -> pb.Asset:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("payload") != "metadata":
            raise InvalidArgument("metadata", "the first message must carry the asset's metadata")
        filename = check_text(first.metadata.filename, "metadata.filename", max_len=MAX_FILENAME)
        request_id = check_request_id(first.metadata.request_id, "metadata.request_id")

        def chunks() -> Iterator[bytes]:
            for message in request_iterator:
                if message.WhichOneof("payload") != "chunk":
                    raise InvalidArgument("metadata", "only the first message may carry metadata")
                yield message.chunk

        asset = self.service.upload_asset(current_principal(), filename, chunks(), request_id)
        return asset_to_pb(asset)

    def GetAsset(self, request: pb.GetAssetRequest, context: grpc.ServicerContext) -> pb.Asset:
        row, url = self.service.get_asset(parse_name(request.name, "assets"))
        return asset_to_pb(row, url)

    def DownloadAsset(
        self, request: pb.DownloadAssetRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadAssetResponse]:
        chunks = self.service.download_asset(parse_name(request.name, "assets"))
        return (pb.DownloadAssetResponse(chunk=c) for c in chunks)


def content_spec(service: ContentService, tokens: PageTokens) -> ServiceSpec:
    return ServiceSpec(
        add_to_server=pb_grpc.add_ContentServiceServicer_to_server,
        servicer=ContentServicer(service, tokens),
        full_name=pb.DESCRIPTOR.services_by_name["ContentService"].full_name,
        roles=ROLES,
    )
