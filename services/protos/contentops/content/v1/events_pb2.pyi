import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PostLifecycle(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POST_LIFECYCLE_UNSPECIFIED: _ClassVar[PostLifecycle]
    POST_LIFECYCLE_DRAFT: _ClassVar[PostLifecycle]
    POST_LIFECYCLE_SCHEDULED: _ClassVar[PostLifecycle]
    POST_LIFECYCLE_PUBLISHED: _ClassVar[PostLifecycle]
    POST_LIFECYCLE_ARCHIVED: _ClassVar[PostLifecycle]
    POST_LIFECYCLE_DELETED: _ClassVar[PostLifecycle]
POST_LIFECYCLE_UNSPECIFIED: PostLifecycle
POST_LIFECYCLE_DRAFT: PostLifecycle
POST_LIFECYCLE_SCHEDULED: PostLifecycle
POST_LIFECYCLE_PUBLISHED: PostLifecycle
POST_LIFECYCLE_ARCHIVED: PostLifecycle
POST_LIFECYCLE_DELETED: PostLifecycle

class PostPublishedEvent(_message.Message):
    __slots__ = ("event_id", "post", "revision", "content", "publish_time", "published_by")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    POST_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_BY_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    post: str
    revision: str
    content: PostContentSnapshot
    publish_time: _timestamp_pb2.Timestamp
    published_by: str
    def __init__(self, event_id: _Optional[str] = ..., post: _Optional[str] = ..., revision: _Optional[str] = ..., content: _Optional[_Union[PostContentSnapshot, _Mapping]] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., published_by: _Optional[str] = ...) -> None: ...

class PostChangedEvent(_message.Message):
    __slots__ = ("event_id", "post", "state", "version", "head_revision", "live_revision", "head_content", "change_time")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    POST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HEAD_REVISION_FIELD_NUMBER: _ClassVar[int]
    LIVE_REVISION_FIELD_NUMBER: _ClassVar[int]
    HEAD_CONTENT_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    post: str
    state: PostLifecycle
    version: int
    head_revision: str
    live_revision: str
    head_content: PostContentSnapshot
    change_time: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., post: _Optional[str] = ..., state: _Optional[_Union[PostLifecycle, str]] = ..., version: _Optional[int] = ..., head_revision: _Optional[str] = ..., live_revision: _Optional[str] = ..., head_content: _Optional[_Union[PostContentSnapshot, _Mapping]] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PostContentSnapshot(_message.Message):
    __slots__ = ("title", "body", "images", "topics", "protected_phrases", "rep_template", "badge_enabled", "badge_position", "target_teams", "topic_names")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    PROTECTED_PHRASES_FIELD_NUMBER: _ClassVar[int]
    REP_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    BADGE_ENABLED_FIELD_NUMBER: _ClassVar[int]
    BADGE_POSITION_FIELD_NUMBER: _ClassVar[int]
    TARGET_TEAMS_FIELD_NUMBER: _ClassVar[int]
    TOPIC_NAMES_FIELD_NUMBER: _ClassVar[int]
    title: str
    body: str
    images: _containers.RepeatedCompositeFieldContainer[ImageRef]
    topics: _containers.RepeatedScalarFieldContainer[str]
    protected_phrases: _containers.RepeatedScalarFieldContainer[str]
    rep_template: str
    badge_enabled: bool
    badge_position: int
    target_teams: _containers.RepeatedScalarFieldContainer[str]
    topic_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, title: _Optional[str] = ..., body: _Optional[str] = ..., images: _Optional[_Iterable[_Union[ImageRef, _Mapping]]] = ..., topics: _Optional[_Iterable[str]] = ..., protected_phrases: _Optional[_Iterable[str]] = ..., rep_template: _Optional[str] = ..., badge_enabled: _Optional[bool] = ..., badge_position: _Optional[int] = ..., target_teams: _Optional[_Iterable[str]] = ..., topic_names: _Optional[_Iterable[str]] = ...) -> None: ...

class ImageRef(_message.Message):
    __slots__ = ("asset", "sha256", "mime_type", "width", "height", "blob_key")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    BLOB_KEY_FIELD_NUMBER: _ClassVar[int]
    asset: str
    sha256: str
    mime_type: str
    width: int
    height: int
    blob_key: str
    def __init__(self, asset: _Optional[str] = ..., sha256: _Optional[str] = ..., mime_type: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., blob_key: _Optional[str] = ...) -> None: ...
