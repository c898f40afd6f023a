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

class CopyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COPY_STATE_UNSPECIFIED: _ClassVar[CopyState]
    COPY_STATE_PENDING: _ClassVar[CopyState]
    COPY_STATE_READY: _ClassVar[CopyState]
    COPY_STATE_FAILED: _ClassVar[CopyState]
COPY_STATE_UNSPECIFIED: CopyState
COPY_STATE_PENDING: CopyState
COPY_STATE_READY: CopyState
COPY_STATE_FAILED: CopyState

class Rep(_message.Message):
    __slots__ = ("name", "display_name", "signature", "store", "region", "team", "contact_qr_asset", "user", "create_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    CONTACT_QR_ASSET_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    signature: str
    store: str
    region: str
    team: str
    contact_qr_asset: str
    user: str
    create_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., signature: _Optional[str] = ..., store: _Optional[str] = ..., region: _Optional[str] = ..., team: _Optional[str] = ..., contact_qr_asset: _Optional[str] = ..., user: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class Team(_message.Message):
    __slots__ = ("name", "display_name", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RepCopy(_message.Message):
    __slots__ = ("name", "rep", "revision", "text", "images", "share_token", "render_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REP_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SHARE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RENDER_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    rep: str
    revision: str
    text: str
    images: _containers.RepeatedCompositeFieldContainer[CopyImage]
    share_token: str
    render_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., rep: _Optional[str] = ..., revision: _Optional[str] = ..., text: _Optional[str] = ..., images: _Optional[_Iterable[_Union[CopyImage, _Mapping]]] = ..., share_token: _Optional[str] = ..., render_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CopyImage(_message.Message):
    __slots__ = ("name", "uri", "sha256", "width", "height", "mime_type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    sha256: str
    width: int
    height: int
    mime_type: str
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., sha256: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., mime_type: _Optional[str] = ...) -> None: ...

class DownloadCopyImageRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DownloadCopyImageResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...

class CreateRepRequest(_message.Message):
    __slots__ = ("rep", "request_id")
    REP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    rep: Rep
    request_id: str
    def __init__(self, rep: _Optional[_Union[Rep, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetRepRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListRepsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "team")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    team: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., team: _Optional[str] = ...) -> None: ...

class ListRepsResponse(_message.Message):
    __slots__ = ("reps", "next_page_token")
    REPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    reps: _containers.RepeatedCompositeFieldContainer[Rep]
    next_page_token: str
    def __init__(self, reps: _Optional[_Iterable[_Union[Rep, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateRepRequest(_message.Message):
    __slots__ = ("rep", "update_mask")
    REP_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    rep: Rep
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, rep: _Optional[_Union[Rep, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class CreateTeamRequest(_message.Message):
    __slots__ = ("team", "request_id")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    team: Team
    request_id: str
    def __init__(self, team: _Optional[_Union[Team, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListTeamsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTeamsResponse(_message.Message):
    __slots__ = ("teams", "next_page_token")
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    teams: _containers.RepeatedCompositeFieldContainer[Team]
    next_page_token: str
    def __init__(self, teams: _Optional[_Iterable[_Union[Team, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListRepPostsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRepPostsResponse(_message.Message):
    __slots__ = ("posts", "next_page_token")
    POSTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    posts: _containers.RepeatedCompositeFieldContainer[RepPost]
    next_page_token: str
    def __init__(self, posts: _Optional[_Iterable[_Union[RepPost, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RepPost(_message.Message):
    __slots__ = ("post", "revision", "title", "publish_time", "copy_state", "excerpt")
    POST_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    COPY_STATE_FIELD_NUMBER: _ClassVar[int]
    EXCERPT_FIELD_NUMBER: _ClassVar[int]
    post: str
    revision: str
    title: str
    publish_time: _timestamp_pb2.Timestamp
    copy_state: CopyState
    excerpt: str
    def __init__(self, post: _Optional[str] = ..., revision: _Optional[str] = ..., title: _Optional[str] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., copy_state: _Optional[_Union[CopyState, str]] = ..., excerpt: _Optional[str] = ...) -> None: ...

class GetRepCopyRequest(_message.Message):
    __slots__ = ("post", "rep")
    POST_FIELD_NUMBER: _ClassVar[int]
    REP_FIELD_NUMBER: _ClassVar[int]
    post: str
    rep: str
    def __init__(self, post: _Optional[str] = ..., rep: _Optional[str] = ...) -> None: ...

class PreviewCopiesRequest(_message.Message):
    __slots__ = ("post", "sample_reps")
    POST_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_REPS_FIELD_NUMBER: _ClassVar[int]
    post: str
    sample_reps: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, post: _Optional[str] = ..., sample_reps: _Optional[_Iterable[str]] = ...) -> None: ...

class PreviewCopiesResponse(_message.Message):
    __slots__ = ("copies", "capacity_estimate", "targeted_reps", "policy_met", "warning")
    COPIES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    TARGETED_REPS_FIELD_NUMBER: _ClassVar[int]
    POLICY_MET_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    copies: _containers.RepeatedCompositeFieldContainer[RepCopy]
    capacity_estimate: int
    targeted_reps: int
    policy_met: bool
    warning: str
    def __init__(self, copies: _Optional[_Iterable[_Union[RepCopy, _Mapping]]] = ..., capacity_estimate: _Optional[int] = ..., targeted_reps: _Optional[int] = ..., policy_met: _Optional[bool] = ..., warning: _Optional[str] = ...) -> None: ...

class GetCampaignStatusRequest(_message.Message):
    __slots__ = ("post",)
    POST_FIELD_NUMBER: _ClassVar[int]
    post: str
    def __init__(self, post: _Optional[str] = ...) -> None: ...

class CampaignStatus(_message.Message):
    __slots__ = ("post", "revision", "total", "rendered", "failures", "capacity_estimate", "policy_met", "warning")
    POST_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    RENDERED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    POLICY_MET_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    post: str
    revision: str
    total: int
    rendered: int
    failures: _containers.RepeatedCompositeFieldContainer[CopyFailure]
    capacity_estimate: int
    policy_met: bool
    warning: str
    def __init__(self, post: _Optional[str] = ..., revision: _Optional[str] = ..., total: _Optional[int] = ..., rendered: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[CopyFailure, _Mapping]]] = ..., capacity_estimate: _Optional[int] = ..., policy_met: _Optional[bool] = ..., warning: _Optional[str] = ...) -> None: ...

class CopyFailure(_message.Message):
    __slots__ = ("rep", "reason")
    REP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    rep: str
    reason: str
    def __init__(self, rep: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetDistinctnessReportRequest(_message.Message):
    __slots__ = ("post",)
    POST_FIELD_NUMBER: _ClassVar[int]
    post: str
    def __init__(self, post: _Optional[str] = ...) -> None: ...

class DistinctnessReport(_message.Message):
    __slots__ = ("post", "text_duplicates", "jaccard_min", "jaccard_median", "jaccard_max", "image_byte_duplicates", "phash_distances", "dhash_distances", "ssim_min", "protected_span_violations", "revision", "copies")
    POST_FIELD_NUMBER: _ClassVar[int]
    TEXT_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    JACCARD_MIN_FIELD_NUMBER: _ClassVar[int]
    JACCARD_MEDIAN_FIELD_NUMBER: _ClassVar[int]
    JACCARD_MAX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_BYTE_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    PHASH_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    DHASH_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    SSIM_MIN_FIELD_NUMBER: _ClassVar[int]
    PROTECTED_SPAN_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    post: str
    text_duplicates: int
    jaccard_min: float
    jaccard_median: float
    jaccard_max: float
    image_byte_duplicates: int
    phash_distances: _containers.RepeatedScalarFieldContainer[int]
    dhash_distances: _containers.RepeatedScalarFieldContainer[int]
    ssim_min: float
    protected_span_violations: int
    revision: str
    copies: int
    def __init__(self, post: _Optional[str] = ..., text_duplicates: _Optional[int] = ..., jaccard_min: _Optional[float] = ..., jaccard_median: _Optional[float] = ..., jaccard_max: _Optional[float] = ..., image_byte_duplicates: _Optional[int] = ..., phash_distances: _Optional[_Iterable[int]] = ..., dhash_distances: _Optional[_Iterable[int]] = ..., ssim_min: _Optional[float] = ..., protected_span_violations: _Optional[int] = ..., revision: _Optional[str] = ..., copies: _Optional[int] = ...) -> None: ...
