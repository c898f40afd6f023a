import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartViewRequest(_message.Message):
    __slots__ = ("share_token", "visitor_id", "user_agent", "referrer")
    SHARE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VISITOR_ID_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    REFERRER_FIELD_NUMBER: _ClassVar[int]
    share_token: str
    visitor_id: str
    user_agent: str
    referrer: str
    def __init__(self, share_token: _Optional[str] = ..., visitor_id: _Optional[str] = ..., user_agent: _Optional[str] = ..., referrer: _Optional[str] = ...) -> None: ...

class StartViewResponse(_message.Message):
    __slots__ = ("view",)
    VIEW_FIELD_NUMBER: _ClassVar[int]
    view: str
    def __init__(self, view: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("view", "seq", "engaged_ms_delta", "max_scroll_percent")
    VIEW_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ENGAGED_MS_DELTA_FIELD_NUMBER: _ClassVar[int]
    MAX_SCROLL_PERCENT_FIELD_NUMBER: _ClassVar[int]
    view: str
    seq: int
    engaged_ms_delta: int
    max_scroll_percent: int
    def __init__(self, view: _Optional[str] = ..., seq: _Optional[int] = ..., engaged_ms_delta: _Optional[int] = ..., max_scroll_percent: _Optional[int] = ...) -> None: ...

class RecordEngagementRequest(_message.Message):
    __slots__ = ("heartbeats",)
    HEARTBEATS_FIELD_NUMBER: _ClassVar[int]
    heartbeats: _containers.RepeatedCompositeFieldContainer[Heartbeat]
    def __init__(self, heartbeats: _Optional[_Iterable[_Union[Heartbeat, _Mapping]]] = ...) -> None: ...

class RecordEngagementResponse(_message.Message):
    __slots__ = ("accepted", "duplicates")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class EndViewRequest(_message.Message):
    __slots__ = ("view",)
    VIEW_FIELD_NUMBER: _ClassVar[int]
    view: str
    def __init__(self, view: _Optional[str] = ...) -> None: ...

class EndViewResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Contact(_message.Message):
    __slots__ = ("name", "display_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ...) -> None: ...

class ContactLink(_message.Message):
    __slots__ = ("contact", "share_token")
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    SHARE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    contact: Contact
    share_token: str
    def __init__(self, contact: _Optional[_Union[Contact, _Mapping]] = ..., share_token: _Optional[str] = ...) -> None: ...

class CreateContactLinkRequest(_message.Message):
    __slots__ = ("parent", "post", "contact_display_name")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    POST_FIELD_NUMBER: _ClassVar[int]
    CONTACT_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    parent: str
    post: str
    contact_display_name: str
    def __init__(self, parent: _Optional[str] = ..., post: _Optional[str] = ..., contact_display_name: _Optional[str] = ...) -> None: ...

class InterestTag(_message.Message):
    __slots__ = ("topic", "label", "score", "evidence")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    topic: str
    label: str
    score: float
    evidence: _containers.RepeatedCompositeFieldContainer[Evidence]
    def __init__(self, topic: _Optional[str] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., evidence: _Optional[_Iterable[_Union[Evidence, _Mapping]]] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("post", "post_title", "read_time", "engaged_seconds")
    POST_FIELD_NUMBER: _ClassVar[int]
    POST_TITLE_FIELD_NUMBER: _ClassVar[int]
    READ_TIME_FIELD_NUMBER: _ClassVar[int]
    ENGAGED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    post: str
    post_title: str
    read_time: _timestamp_pb2.Timestamp
    engaged_seconds: int
    def __init__(self, post: _Optional[str] = ..., post_title: _Optional[str] = ..., read_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., engaged_seconds: _Optional[int] = ...) -> None: ...

class ContactProfile(_message.Message):
    __slots__ = ("contact", "tags", "timeline")
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    contact: Contact
    tags: _containers.RepeatedCompositeFieldContainer[InterestTag]
    timeline: _containers.RepeatedCompositeFieldContainer[Evidence]
    def __init__(self, contact: _Optional[_Union[Contact, _Mapping]] = ..., tags: _Optional[_Iterable[_Union[InterestTag, _Mapping]]] = ..., timeline: _Optional[_Iterable[_Union[Evidence, _Mapping]]] = ...) -> None: ...

class GetContactProfileRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Lead(_message.Message):
    __slots__ = ("contact", "reason", "talking_point", "score")
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TALKING_POINT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    contact: Contact
    reason: str
    talking_point: str
    score: float
    def __init__(self, contact: _Optional[_Union[Contact, _Mapping]] = ..., reason: _Optional[str] = ..., talking_point: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class ListLeadsRequest(_message.Message):
    __slots__ = ("parent", "day", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    DAY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    day: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., day: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLeadsResponse(_message.Message):
    __slots__ = ("leads", "next_page_token")
    LEADS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    leads: _containers.RepeatedCompositeFieldContainer[Lead]
    next_page_token: str
    def __init__(self, leads: _Optional[_Iterable[_Union[Lead, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchActivityRequest(_message.Message):
    __slots__ = ("rep",)
    REP_FIELD_NUMBER: _ClassVar[int]
    rep: str
    def __init__(self, rep: _Optional[str] = ...) -> None: ...

class WatchActivityResponse(_message.Message):
    __slots__ = ("message", "event_time", "contact", "post")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    POST_FIELD_NUMBER: _ClassVar[int]
    message: str
    event_time: _timestamp_pb2.Timestamp
    contact: str
    post: str
    def __init__(self, message: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., contact: _Optional[str] = ..., post: _Optional[str] = ...) -> None: ...

class EraseContactRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class EraseContactResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
