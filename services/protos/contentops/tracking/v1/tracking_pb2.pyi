import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActivityKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVITY_KIND_UNSPECIFIED: _ClassVar[ActivityKind]
    ACTIVITY_KIND_VIEW_STARTED: _ClassVar[ActivityKind]
    ACTIVITY_KIND_VIEW_ENDED: _ClassVar[ActivityKind]
ACTIVITY_KIND_UNSPECIFIED: ActivityKind
ACTIVITY_KIND_VIEW_STARTED: ActivityKind
ACTIVITY_KIND_VIEW_ENDED: ActivityKind

class StartViewRequest(_message.Message):
    __slots__ = ("share_token", "visitor_id", "user_agent", "referrer", "client_ip")
    SHARE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VISITOR_ID_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    REFERRER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    share_token: str
    visitor_id: str
    user_agent: str
    referrer: str
    client_ip: str
    def __init__(self, share_token: _Optional[str] = ..., visitor_id: _Optional[str] = ..., user_agent: _Optional[str] = ..., referrer: _Optional[str] = ..., client_ip: _Optional[str] = ...) -> None: ...

class StartViewResponse(_message.Message):
    __slots__ = ("view", "visitor_id", "forward_share_token", "heartbeat_interval_seconds", "bot")
    VIEW_FIELD_NUMBER: _ClassVar[int]
    VISITOR_ID_FIELD_NUMBER: _ClassVar[int]
    FORWARD_SHARE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BOT_FIELD_NUMBER: _ClassVar[int]
    view: str
    visitor_id: str
    forward_share_token: str
    heartbeat_interval_seconds: int
    bot: bool
    def __init__(self, view: _Optional[str] = ..., visitor_id: _Optional[str] = ..., forward_share_token: _Optional[str] = ..., heartbeat_interval_seconds: _Optional[int] = ..., bot: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("accepted", "throttled")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    throttled: int
    def __init__(self, accepted: _Optional[int] = ..., throttled: _Optional[int] = ...) -> None: ...

class EndViewRequest(_message.Message):
    __slots__ = ("view", "last_seq")
    VIEW_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    view: str
    last_seq: int
    def __init__(self, view: _Optional[str] = ..., last_seq: _Optional[int] = ...) -> None: ...

class EndViewResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Contact(_message.Message):
    __slots__ = ("name", "display_name", "named", "create_time", "last_activity_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    NAMED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    named: bool
    create_time: _timestamp_pb2.Timestamp
    last_activity_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., named: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_activity_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateContactLinkRequest(_message.Message):
    __slots__ = ("parent", "share_token", "contact", "contact_display_name")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SHARE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    CONTACT_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    parent: str
    share_token: str
    contact: str
    contact_display_name: str
    def __init__(self, parent: _Optional[str] = ..., share_token: _Optional[str] = ..., contact: _Optional[str] = ..., contact_display_name: _Optional[str] = ...) -> None: ...

class ContactLink(_message.Message):
    __slots__ = ("contact", "share_token")
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    SHARE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    contact: Contact
    share_token: str
    def __init__(self, contact: _Optional[_Union[Contact, _Mapping]] = ..., share_token: _Optional[str] = ...) -> None: ...

class ListContactsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListContactsResponse(_message.Message):
    __slots__ = ("contacts", "next_page_token")
    CONTACTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    contacts: _containers.RepeatedCompositeFieldContainer[Contact]
    next_page_token: str
    def __init__(self, contacts: _Optional[_Iterable[_Union[Contact, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("post", "post_title", "read_time", "engaged_seconds", "completeness", "description")
    POST_FIELD_NUMBER: _ClassVar[int]
    POST_TITLE_FIELD_NUMBER: _ClassVar[int]
    READ_TIME_FIELD_NUMBER: _ClassVar[int]
    ENGAGED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COMPLETENESS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    post: str
    post_title: str
    read_time: _timestamp_pb2.Timestamp
    engaged_seconds: int
    completeness: float
    description: str
    def __init__(self, post: _Optional[str] = ..., post_title: _Optional[str] = ..., read_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., engaged_seconds: _Optional[int] = ..., completeness: _Optional[float] = ..., description: _Optional[str] = ...) -> None: ...

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

class ContactProfile(_message.Message):
    __slots__ = ("contact", "tags", "timeline", "topic_scores")
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    TOPIC_SCORES_FIELD_NUMBER: _ClassVar[int]
    contact: Contact
    tags: _containers.RepeatedCompositeFieldContainer[InterestTag]
    timeline: _containers.RepeatedCompositeFieldContainer[Evidence]
    topic_scores: _containers.RepeatedCompositeFieldContainer[TopicScore]
    def __init__(self, contact: _Optional[_Union[Contact, _Mapping]] = ..., tags: _Optional[_Iterable[_Union[InterestTag, _Mapping]]] = ..., timeline: _Optional[_Iterable[_Union[Evidence, _Mapping]]] = ..., topic_scores: _Optional[_Iterable[_Union[TopicScore, _Mapping]]] = ...) -> None: ...

class TopicScore(_message.Message):
    __slots__ = ("topic", "score")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    topic: str
    score: float
    def __init__(self, topic: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class GetContactProfileRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Lead(_message.Message):
    __slots__ = ("contact", "reason", "talking_point", "score", "top_topic", "last_read")
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TALKING_POINT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TOP_TOPIC_FIELD_NUMBER: _ClassVar[int]
    LAST_READ_FIELD_NUMBER: _ClassVar[int]
    contact: Contact
    reason: str
    talking_point: str
    score: float
    top_topic: str
    last_read: Evidence
    def __init__(self, contact: _Optional[_Union[Contact, _Mapping]] = ..., reason: _Optional[str] = ..., talking_point: _Optional[str] = ..., score: _Optional[float] = ..., top_topic: _Optional[str] = ..., last_read: _Optional[_Union[Evidence, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("message", "event_time", "contact", "post", "kind")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    POST_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    message: str
    event_time: _timestamp_pb2.Timestamp
    contact: str
    post: str
    kind: ActivityKind
    def __init__(self, message: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., contact: _Optional[str] = ..., post: _Optional[str] = ..., kind: _Optional[_Union[ActivityKind, str]] = ...) -> None: ...

class GetPostAnalyticsRequest(_message.Message):
    __slots__ = ("post",)
    POST_FIELD_NUMBER: _ClassVar[int]
    post: str
    def __init__(self, post: _Optional[str] = ...) -> None: ...

class PostAnalytics(_message.Message):
    __slots__ = ("post", "views", "unique_viewers", "bot_views", "engaged_seconds_p50", "engaged_seconds_p90", "engaged_histogram", "variants", "top_spreaders", "forward_tree")
    POST_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_VIEWERS_FIELD_NUMBER: _ClassVar[int]
    BOT_VIEWS_FIELD_NUMBER: _ClassVar[int]
    ENGAGED_SECONDS_P50_FIELD_NUMBER: _ClassVar[int]
    ENGAGED_SECONDS_P90_FIELD_NUMBER: _ClassVar[int]
    ENGAGED_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    TOP_SPREADERS_FIELD_NUMBER: _ClassVar[int]
    FORWARD_TREE_FIELD_NUMBER: _ClassVar[int]
    post: str
    views: int
    unique_viewers: int
    bot_views: int
    engaged_seconds_p50: int
    engaged_seconds_p90: int
    engaged_histogram: _containers.RepeatedCompositeFieldContainer[EngagedBucket]
    variants: _containers.RepeatedCompositeFieldContainer[VariantStats]
    top_spreaders: _containers.RepeatedCompositeFieldContainer[Spreader]
    forward_tree: _containers.RepeatedCompositeFieldContainer[ShareNode]
    def __init__(self, post: _Optional[str] = ..., views: _Optional[int] = ..., unique_viewers: _Optional[int] = ..., bot_views: _Optional[int] = ..., engaged_seconds_p50: _Optional[int] = ..., engaged_seconds_p90: _Optional[int] = ..., engaged_histogram: _Optional[_Iterable[_Union[EngagedBucket, _Mapping]]] = ..., variants: _Optional[_Iterable[_Union[VariantStats, _Mapping]]] = ..., top_spreaders: _Optional[_Iterable[_Union[Spreader, _Mapping]]] = ..., forward_tree: _Optional[_Iterable[_Union[ShareNode, _Mapping]]] = ...) -> None: ...

class EngagedBucket(_message.Message):
    __slots__ = ("label", "views")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    label: str
    views: int
    def __init__(self, label: _Optional[str] = ..., views: _Optional[int] = ...) -> None: ...

class VariantStats(_message.Message):
    __slots__ = ("rep", "copy_id", "views", "engaged_seconds_median", "engaged_seconds_mean")
    REP_FIELD_NUMBER: _ClassVar[int]
    COPY_ID_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    ENGAGED_SECONDS_MEDIAN_FIELD_NUMBER: _ClassVar[int]
    ENGAGED_SECONDS_MEAN_FIELD_NUMBER: _ClassVar[int]
    rep: str
    copy_id: str
    views: int
    engaged_seconds_median: int
    engaged_seconds_mean: float
    def __init__(self, rep: _Optional[str] = ..., copy_id: _Optional[str] = ..., views: _Optional[int] = ..., engaged_seconds_median: _Optional[int] = ..., engaged_seconds_mean: _Optional[float] = ...) -> None: ...

class Spreader(_message.Message):
    __slots__ = ("share_id", "rep", "downstream_views", "depth")
    SHARE_ID_FIELD_NUMBER: _ClassVar[int]
    REP_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_VIEWS_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    share_id: str
    rep: str
    downstream_views: int
    depth: int
    def __init__(self, share_id: _Optional[str] = ..., rep: _Optional[str] = ..., downstream_views: _Optional[int] = ..., depth: _Optional[int] = ...) -> None: ...

class ShareNode(_message.Message):
    __slots__ = ("share_id", "parent_share_id", "rep", "views")
    SHARE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SHARE_ID_FIELD_NUMBER: _ClassVar[int]
    REP_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    share_id: str
    parent_share_id: str
    rep: str
    views: int
    def __init__(self, share_id: _Optional[str] = ..., parent_share_id: _Optional[str] = ..., rep: _Optional[str] = ..., views: _Optional[int] = ...) -> None: ...

class TagRule(_message.Message):
    __slots__ = ("name", "topic", "min_engaged_seconds", "min_visits", "window_days", "label", "min_score")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    MIN_ENGAGED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_VISITS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_DAYS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    name: str
    topic: str
    min_engaged_seconds: int
    min_visits: int
    window_days: int
    label: str
    min_score: float
    def __init__(self, name: _Optional[str] = ..., topic: _Optional[str] = ..., min_engaged_seconds: _Optional[int] = ..., min_visits: _Optional[int] = ..., window_days: _Optional[int] = ..., label: _Optional[str] = ..., min_score: _Optional[float] = ...) -> None: ...

class CreateTagRuleRequest(_message.Message):
    __slots__ = ("tag_rule",)
    TAG_RULE_FIELD_NUMBER: _ClassVar[int]
    tag_rule: TagRule
    def __init__(self, tag_rule: _Optional[_Union[TagRule, _Mapping]] = ...) -> None: ...

class ListTagRulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTagRulesResponse(_message.Message):
    __slots__ = ("tag_rules",)
    TAG_RULES_FIELD_NUMBER: _ClassVar[int]
    tag_rules: _containers.RepeatedCompositeFieldContainer[TagRule]
    def __init__(self, tag_rules: _Optional[_Iterable[_Union[TagRule, _Mapping]]] = ...) -> None: ...

class DeleteTagRuleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteTagRuleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EraseContactRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class EraseContactResponse(_message.Message):
    __slots__ = ("views_erased", "events_erased", "stream_entries_erased")
    VIEWS_ERASED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_ERASED_FIELD_NUMBER: _ClassVar[int]
    STREAM_ENTRIES_ERASED_FIELD_NUMBER: _ClassVar[int]
    views_erased: int
    events_erased: int
    stream_entries_erased: int
    def __init__(self, views_erased: _Optional[int] = ..., events_erased: _Optional[int] = ..., stream_entries_erased: _Optional[int] = ...) -> None: ...

class IngestBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[IngestEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[IngestEvent, _Mapping]]] = ...) -> None: ...

class IngestEvent(_message.Message):
    __slots__ = ("started", "heartbeat", "ended", "received_ms", "deferrals")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_MS_FIELD_NUMBER: _ClassVar[int]
    DEFERRALS_FIELD_NUMBER: _ClassVar[int]
    started: ViewStarted
    heartbeat: Heartbeat
    ended: EndViewRequest
    received_ms: int
    deferrals: int
    def __init__(self, started: _Optional[_Union[ViewStarted, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., ended: _Optional[_Union[EndViewRequest, _Mapping]] = ..., received_ms: _Optional[int] = ..., deferrals: _Optional[int] = ...) -> None: ...

class ViewStarted(_message.Message):
    __slots__ = ("view", "visitor_id", "share_id", "parent_share_id", "post", "revision", "rep", "team", "copy_id", "contact", "bot", "bot_reason", "ip_hash", "referrer_host", "user_agent_family")
    VIEW_FIELD_NUMBER: _ClassVar[int]
    VISITOR_ID_FIELD_NUMBER: _ClassVar[int]
    SHARE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SHARE_ID_FIELD_NUMBER: _ClassVar[int]
    POST_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    REP_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    COPY_ID_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    BOT_FIELD_NUMBER: _ClassVar[int]
    BOT_REASON_FIELD_NUMBER: _ClassVar[int]
    IP_HASH_FIELD_NUMBER: _ClassVar[int]
    REFERRER_HOST_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FAMILY_FIELD_NUMBER: _ClassVar[int]
    view: str
    visitor_id: str
    share_id: str
    parent_share_id: str
    post: str
    revision: int
    rep: str
    team: str
    copy_id: str
    contact: str
    bot: bool
    bot_reason: str
    ip_hash: str
    referrer_host: str
    user_agent_family: str
    def __init__(self, view: _Optional[str] = ..., visitor_id: _Optional[str] = ..., share_id: _Optional[str] = ..., parent_share_id: _Optional[str] = ..., post: _Optional[str] = ..., revision: _Optional[int] = ..., rep: _Optional[str] = ..., team: _Optional[str] = ..., copy_id: _Optional[str] = ..., contact: _Optional[str] = ..., bot: _Optional[bool] = ..., bot_reason: _Optional[str] = ..., ip_hash: _Optional[str] = ..., referrer_host: _Optional[str] = ..., user_agent_family: _Optional[str] = ...) -> None: ...
