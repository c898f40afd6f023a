import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PostState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POST_STATE_UNSPECIFIED: _ClassVar[PostState]
    POST_STATE_DRAFT: _ClassVar[PostState]
    POST_STATE_SCHEDULED: _ClassVar[PostState]
    POST_STATE_PUBLISHED: _ClassVar[PostState]
    POST_STATE_ARCHIVED: _ClassVar[PostState]

class BadgePosition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BADGE_POSITION_UNSPECIFIED: _ClassVar[BadgePosition]
    BADGE_POSITION_BOTTOM_RIGHT: _ClassVar[BadgePosition]
    BADGE_POSITION_BOTTOM_LEFT: _ClassVar[BadgePosition]
    BADGE_POSITION_TOP_RIGHT: _ClassVar[BadgePosition]
    BADGE_POSITION_TOP_LEFT: _ClassVar[BadgePosition]
POST_STATE_UNSPECIFIED: PostState
POST_STATE_DRAFT: PostState
POST_STATE_SCHEDULED: PostState
POST_STATE_PUBLISHED: PostState
POST_STATE_ARCHIVED: PostState
BADGE_POSITION_UNSPECIFIED: BadgePosition
BADGE_POSITION_BOTTOM_RIGHT: BadgePosition
BADGE_POSITION_BOTTOM_LEFT: BadgePosition
BADGE_POSITION_TOP_RIGHT: BadgePosition
BADGE_POSITION_TOP_LEFT: BadgePosition

class VariationSettings(_message.Message):
    __slots__ = ("protected_phrases", "rep_template", "badge_enabled", "badge_position")
    PROTECTED_PHRASES_FIELD_NUMBER: _ClassVar[int]
    REP_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    BADGE_ENABLED_FIELD_NUMBER: _ClassVar[int]
    BADGE_POSITION_FIELD_NUMBER: _ClassVar[int]
    protected_phrases: _containers.RepeatedScalarFieldContainer[str]
    rep_template: str
    badge_enabled: bool
    badge_position: BadgePosition
    def __init__(self, protected_phrases: _Optional[_Iterable[str]] = ..., rep_template: _Optional[str] = ..., badge_enabled: _Optional[bool] = ..., badge_position: _Optional[_Union[BadgePosition, str]] = ...) -> None: ...

class PostContent(_message.Message):
    __slots__ = ("title", "body", "images", "topics", "variation", "target_teams")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    VARIATION_FIELD_NUMBER: _ClassVar[int]
    TARGET_TEAMS_FIELD_NUMBER: _ClassVar[int]
    title: str
    body: str
    images: _containers.RepeatedScalarFieldContainer[str]
    topics: _containers.RepeatedScalarFieldContainer[str]
    variation: VariationSettings
    target_teams: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, title: _Optional[str] = ..., body: _Optional[str] = ..., images: _Optional[_Iterable[str]] = ..., topics: _Optional[_Iterable[str]] = ..., variation: _Optional[_Union[VariationSettings, _Mapping]] = ..., target_teams: _Optional[_Iterable[str]] = ...) -> None: ...

class Post(_message.Message):
    __slots__ = ("name", "content", "state", "author", "head_revision", "published_revision", "has_unpublished_changes", "scheduled_publish_time", "scheduled_revision", "create_time", "update_time", "publish_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    HEAD_REVISION_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_REVISION_FIELD_NUMBER: _ClassVar[int]
    HAS_UNPUBLISHED_CHANGES_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: PostContent
    state: PostState
    author: str
    head_revision: str
    published_revision: str
    has_unpublished_changes: bool
    scheduled_publish_time: _timestamp_pb2.Timestamp
    scheduled_revision: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    publish_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., content: _Optional[_Union[PostContent, _Mapping]] = ..., state: _Optional[_Union[PostState, str]] = ..., author: _Optional[str] = ..., head_revision: _Optional[str] = ..., published_revision: _Optional[str] = ..., has_unpublished_changes: _Optional[bool] = ..., scheduled_publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scheduled_revision: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class PostRevision(_message.Message):
    __slots__ = ("name", "content", "author", "create_time", "publish_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: PostContent
    author: str
    create_time: _timestamp_pb2.Timestamp
    publish_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., content: _Optional[_Union[PostContent, _Mapping]] = ..., author: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreatePostRequest(_message.Message):
    __slots__ = ("content", "request_id")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    content: PostContent
    request_id: str
    def __init__(self, content: _Optional[_Union[PostContent, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetPostRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListPostsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state", "topic", "author")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: PostState
    topic: str
    author: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[PostState, str]] = ..., topic: _Optional[str] = ..., author: _Optional[str] = ...) -> None: ...

class ListPostsResponse(_message.Message):
    __slots__ = ("posts", "next_page_token")
    POSTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    posts: _containers.RepeatedCompositeFieldContainer[Post]
    next_page_token: str
    def __init__(self, posts: _Optional[_Iterable[_Union[Post, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdatePostRequest(_message.Message):
    __slots__ = ("post", "update_mask")
    POST_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    post: Post
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, post: _Optional[_Union[Post, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeletePostRequest(_message.Message):
    __slots__ = ("name", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeletePostResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ArchivePostRequest(_message.Message):
    __slots__ = ("name", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class PublishPostRequest(_message.Message):
    __slots__ = ("name", "publish_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    publish_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class ListPostRevisionsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPostRevisionsResponse(_message.Message):
    __slots__ = ("revisions", "next_page_token")
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    revisions: _containers.RepeatedCompositeFieldContainer[PostRevision]
    next_page_token: str
    def __init__(self, revisions: _Optional[_Iterable[_Union[PostRevision, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetPostRevisionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Topic(_message.Message):
    __slots__ = ("name", "display_name", "description", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    description: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateTopicRequest(_message.Message):
    __slots__ = ("topic", "topic_id", "request_id")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    topic: Topic
    topic_id: str
    request_id: str
    def __init__(self, topic: _Optional[_Union[Topic, _Mapping]] = ..., topic_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetTopicRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListTopicsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTopicsResponse(_message.Message):
    __slots__ = ("topics", "next_page_token")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedCompositeFieldContainer[Topic]
    next_page_token: str
    def __init__(self, topics: _Optional[_Iterable[_Union[Topic, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateTopicRequest(_message.Message):
    __slots__ = ("topic", "update_mask")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    topic: Topic
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, topic: _Optional[_Union[Topic, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class Asset(_message.Message):
    __slots__ = ("name", "sha256", "mime_type", "size_bytes", "width", "height", "filename", "create_time", "download_uri")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_URI_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    mime_type: str
    size_bytes: int
    width: int
    height: int
    filename: str
    create_time: _timestamp_pb2.Timestamp
    download_uri: str
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., mime_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., filename: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., download_uri: _Optional[str] = ...) -> None: ...

class UploadAssetRequest(_message.Message):
    __slots__ = ("metadata", "chunk")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    metadata: AssetMetadata
    chunk: bytes
    def __init__(self, metadata: _Optional[_Union[AssetMetadata, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class AssetMetadata(_message.Message):
    __slots__ = ("filename", "request_id")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    filename: str
    request_id: str
    def __init__(self, filename: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetAssetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DownloadAssetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DownloadAssetResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...
