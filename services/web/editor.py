"""The editor console: compose and edit posts, preview the reps' copies, publish or schedule, read the analytics.

Every page acts with the signed-in editor's own token: the services decide what
an editor may do. Pages (all for editors and admins):

- ``GET /editor``: the posts, newest first, filterable by state;
- ``GET /editor/posts/new`` and ``POST /editor/posts``: compose a post;
- ``GET|POST /editor/posts/{id}``: edit it (UpdatePost with the etag the form was
  read at: someone else's save in between is reported, the text typed kept);
- ``GET /editor/posts/{id}/preview``: sample reps' copies with their differences
  from the canonical text marked, the capacity estimate, the distinctness report;
- ``POST /editor/posts/{id}/publish``: now, or at a time in the service's zone;
- ``GET /editor/posts/{id}/analytics``: aggregates only (never a contact);
- ``GET /editor/assets/{id}``: a bounded thumbnail of an uploaded image.

Uploads are refused at the edge before they reach the content service when they
are too large or plainly not images; the service checks again (type by magic
bytes, pixel count) and its refusal is shown on the form, naming the file, with
everything the editor typed kept. Nothing here is rendered with ``|safe``: the
diff highlighting is ``Markup`` built from ``markupsafe.escape``-d segments.
"""

from __future__ import annotations

import asyncio
import difflib
import io
import unicodedata
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from markupsafe import Markup, escape
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Message

from services.content.domain import alternatives
from services.content.domain.assets import SNIFF_BYTES, sniff_mime
from services.content.domain.posts import MAX_BODY, MAX_IMAGES, MAX_TITLE
from services.content.domain.templates import ALLOWED_VARIABLES
from services.protos.contentops.content.v1 import content_pb2 as cpb
from services.protos.contentops.distribution.v1 import distribution_pb2 as dpb
from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb
from services.shared.errors import InvalidArgument

from .backends import request_id
from .customer import ImageCache
from .sessions import MAX_FORM_BYTES, User, checked_form, signed_in

EDITORS = ("editor", "admin")
SAMPLE_REPS = 5  # copies shown on the preview
MAX_LISTED = 1000  # topics / teams offered on the form
MAX_FILE_PARTS = 100  # file parts a form may carry (empty inputs count); more than MAX_IMAGES is refused on the form
UPLOAD_CHUNK = 256 * 1024
UPLOAD_TIMEOUT = 60.0
REPORT_TIMEOUT = 20.0  # the distinctness report compares images: slower than a page's usual deadline
THUMB_PX = 320
MAX_TREE_NODES = 300
MAX_TREE_DEPTH = 20
MAX_VARIANTS = 50
MAX_REP_LOOKUPS = 100
thumbs = ImageCache(16 * 1024 * 1024)  # by asset name: an asset's bytes never change

STATES = {cpb.POST_STATE_DRAFT: ("draft", "草稿"), cpb.POST_STATE_SCHEDULED: ("scheduled", "已排期"),
          cpb.POST_STATE_PUBLISHED: ("published", "已发布"), cpb.POST_STATE_ARCHIVED: ("archived", "已归档")}
STATE_FILTERS = {"draft": cpb.POST_STATE_DRAFT, "scheduled": cpb.POST_STATE_SCHEDULED,
                 "published": cpb.POST_STATE_PUBLISHED, "archived": cpb.POST_STATE_ARCHIVED}
POSITIONS = [(cpb.BADGE_POSITION_BOTTOM_RIGHT, "右下角"), (cpb.BADGE_POSITION_BOTTOM_LEFT, "左下角"),
             (cpb.BADGE_POSITION_TOP_RIGHT, "右上角"), (cpb.BADGE_POSITION_TOP_LEFT, "左上角")]
UPDATE_PATHS = ["content.title", "content.body", "content.images", "content.topics", "content.variation",
                "content.target_teams"]
FIELD_LABELS = [("content.title", "标题"), ("content.body", "正文"), ("content.images", "图片"), ("content.topics", "话题"),
                ("content.variation.protected_phrases", "保护短语"), ("content.variation.rep_template", "销售模板"),
                ("content.variation.badge_position", "角标位置"), ("content.target_teams", "目标团队"),
                ("topic.display_name", "新话题"), ("display_name", "新话题"), ("publish_time", "发布时间")]
NOTICES = {"created": "草稿已创建。Draft created.", "saved": "已保存。Saved.",
           "published": "已发布：销售现在可以拿到各自的文案。Published: reps get their copies now.",
           "scheduled": "已排期，到时自动发布。Scheduled: it goes live at the time shown."}


# ---- the form's state ---------------------------------------------------------------------------------------


@dataclass
class Draft:
    """What the post form shows: a post's content, or what the editor typed (kept when a save is refused)."""

    title: str = ""
    body: str = ""
    images: list[str] = field(default_factory=list)  # assets/{id}, in display order
    topics: list[str] = field(default_factory=list)
    new_topic: str = ""
    protected: str = ""  # one phrase per line
    rep_template: str = ""
    badge_enabled: bool = False
    badge_position: int = cpb.BADGE_POSITION_BOTTOM_RIGHT
    teams: list[str] = field(default_factory=list)
    request_id: str = ""  # makes a double-submitted create one post
    etag: str = ""  # the version the edit form was read at

    @classmethod
    def of(cls, post: cpb.Post) -> Draft:
        c, v = post.content, post.content.variation
        return cls(c.title, c.body, list(c.images), list(c.topics), "", "\n".join(v.protected_phrases), v.rep_template,
                   v.badge_enabled, v.badge_position or cpb.BADGE_POSITION_BOTTOM_RIGHT, list(c.target_teams), "", post.etag)

    @classmethod
    def from_form(cls, form: FormData) -> Draft:
        removed = set(_texts(form, "remove"))
        kept: list[tuple[int, int, str]] = []
        for i, name in enumerate(dict.fromkeys(_texts(form, "image"))):
            if name in removed:
                continue
            order = _text(form, f"order:{name}").strip()
            kept.append((int(order) if order.isascii() and order.isdigit() and len(order) < 4 else i + 1, i, name))
        position = _text(form, "badge_position")
        rid = _text(form, "request_id")
        try:
            rid = str(uuid.UUID(rid))
        except ValueError:
            rid = str(uuid.uuid4())
        return cls(
            title=_text(form, "title"), body=_lines(_text(form, "body")), images=[n for *_, n in sorted(kept)],
            topics=list(dict.fromkeys(_texts(form, "topic"))), new_topic=_text(form, "new_topic").strip(),
            protected=_lines(_text(form, "protected")), rep_template=_lines(_text(form, "rep_template")),
            badge_enabled=_text(form, "badge_enabled") == "on",
            badge_position=int(position) if position in {str(p) for p, _ in POSITIONS} else cpb.BADGE_POSITION_BOTTOM_RIGHT,
            teams=list(dict.fromkeys(_texts(form, "team"))), request_id=rid, etag=_text(form, "etag"))

    def phrases(self) -> list[str]:
        return list(dict.fromkeys(p.strip() for p in self.protected.split("\n") if p.strip()))

    def content(self) -> cpb.PostContent:
        return cpb.PostContent(
            title=self.title.strip(), body=self.body, images=self.images, topics=self.topics, target_teams=self.teams,
            variation=cpb.VariationSettings(protected_phrases=self.phrases(), rep_template=self.rep_template,
                                            badge_enabled=self.badge_enabled, badge_position=self.badge_position))  # type: ignore[arg-type]


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _texts(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str) and v]


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _md(edge, request: Request, user: User) -> tuple[tuple[str, str], ...]:  # type: ignore[no-untyped-def]
    return edge.backends.metadata(request_id(request), user.token)


def _post_id(request: Request) -> str:
    return str(request.path_params["post_id"])


def _when(edge, ts: timestamp_pb2.Timestamp) -> str:  # type: ignore[no-untyped-def]
    """A timestamp as the editor reads it, in the service's time zone ("" when unset)."""
    if not ts.seconds:
        return ""
    return datetime.fromtimestamp(ts.seconds, ZoneInfo(edge.settings.tracking_timezone)).strftime("%Y-%m-%d %H:%M")


def _summary(edge, post: cpb.Post) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    key, label = STATES.get(post.state, ("unknown", "未知"))
    return {"id": post.name.removeprefix("posts/"), "name": post.name, "title": post.content.title, "state": key,
            "state_label": label, "changed": post.has_unpublished_changes, "images": len(post.content.images),
            "scheduled": _when(edge, post.scheduled_publish_time), "published": _when(edge, post.publish_time),
            "updated": _when(edge, post.update_time), "etag": post.etag}


def _friendly(details: str) -> str:
    """A service's INVALID_ARGUMENT detail ("content.body: ...") with the field named as the form names it."""
    for prefix, label in FIELD_LABELS:
        if details.startswith(prefix):
            return f"{label}：{details}"
    return details


# ---- the posts list ----------------------------------------------------------------------------------------


@signed_in(*EDITORS)
async def index(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    state = request.query_params.get("state", "")
    state = state if state in STATE_FILTERS else ""
    page = request.query_params.get("page", "")[:512]
    b = edge.backends
    listed = await b.call(b.content.ListPosts, cpb.ListPostsRequest(page_size=30, page_token=page,
                                                                    state=STATE_FILTERS.get(state, 0)), _md(edge, request, user))
    more = urlencode({k: v for k, v in (("state", state), ("page", listed.next_page_token)) if v})
    return edge.page(request, "editor_list.html", {
        "posts": [_summary(edge, p) for p in listed.posts], "state": state, "next_query": more if listed.next_page_token else "",
        "states": [("", "全部"), *((k, STATES[v][1]) for k, v in STATE_FILTERS.items())]})


# ---- compose and edit --------------------------------------------------------------------------------------


async def _listed(method: Any, request_type: Any, attr: str, md: tuple[tuple[str, str], ...]) -> list[Any]:
    """Every item of a paged list (topics, teams), up to MAX_LISTED."""
    items: list[Any] = []
    token = ""
    while len(items) < MAX_LISTED:
        page = await method(request_type(page_size=500, page_token=token), metadata=md, timeout=3)
        items += getattr(page, attr)
        token = page.next_page_token
        if not token:
            break
    return items


async def _form(edge, request: Request, user: User, draft: Draft, post: cpb.Post | None = None,  # type: ignore[no-untyped-def]
                problem: str = "", status: int = 200, notice: str = "") -> Response:
    b = edge.backends
    md = _md(edge, request, user)
    topics, teams = await asyncio.gather(_listed(b.content.ListTopics, cpb.ListTopicsRequest, "topics", md),
                                         _listed(b.distribution.ListTeams, dpb.ListTeamsRequest, "teams", md))
    topic_choices = [(t.name, t.display_name) for t in topics]
    team_choices = [(t.name, t.display_name) for t in teams]
    for chosen, choices in ((draft.topics, topic_choices), (draft.teams, team_choices)):  # never drop a choice unseen
        choices += [(n, n.split("/", 1)[-1]) for n in chosen if n not in {c for c, _ in choices}]
    if not draft.request_id and post is None:
        draft.request_id = str(uuid.uuid4())
    summary = _summary(edge, post) if post is not None else None
    return edge.page(request, "editor_form.html", {
        "draft": draft, "post": summary, "tab": "edit", "problem": problem, "notice": notice,
        "action": f"/editor/posts/{summary['id']}" if summary else "/editor/posts",
        "images": [{"name": n, "id": n.removeprefix("assets/")} for n in draft.images],
        "topics": topic_choices, "teams": team_choices, "positions": POSITIONS,
        "variables": ["{{ " + v + " }}" for v in ALLOWED_VARIABLES],
        "max_images": MAX_IMAGES, "max_mb": edge.settings.max_asset_bytes // (1024 * 1024),
        "max_title": MAX_TITLE, "max_body": MAX_BODY,
    }, status=status)


@signed_in(*EDITORS)
async def new(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    return await _form(edge, request, user, Draft())


@signed_in(*EDITORS)
async def edit(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    b = edge.backends
    post = await b.call(b.content.GetPost, cpb.GetPostRequest(name=f"posts/{_post_id(request)}"), _md(edge, request, user))
    return await _form(edge, request, user, Draft.of(post), post, notice=NOTICES.get(request.query_params.get("notice", ""), ""))


@signed_in(*EDITORS)
async def create(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    return await _save(edge, request, user, None)


@signed_in(*EDITORS)
async def update(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    return await _save(edge, request, user, _post_id(request))


class _TooLarge(Exception):
    pass


def _bounded(request: Request, limit: int) -> Request:
    """The request, its body cut off with _TooLarge past ``limit`` bytes (a chunked upload has no length to check)."""
    seen = 0
    receive = request.receive

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
        return message

    return Request(request.scope, counted)


async def _save(edge, request: Request, user: User, post_id: str | None) -> Response:  # type: ignore[no-untyped-def]
    max_bytes = edge.settings.max_asset_bytes
    limit = MAX_IMAGES * max_bytes + 1024 * 1024

    def too_large() -> Response:  # what was typed is lost here: the form was never read to the end
        mb = max_bytes // (1024 * 1024)
        return edge.error(request, 413, "上传太大", f"一次最多 {MAX_IMAGES} 张图片，每张不超过 {mb} MB。"
                          f"At most {MAX_IMAGES} images of {mb} MB each.")

    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return too_large()
    try:
        form = await checked_form(_bounded(request, limit), max_part_size=MAX_FORM_BYTES, max_files=MAX_FILE_PARTS,
                                  max_fields=1000)
    except _TooLarge:
        return too_large()
    except HTTPException as exc:  # a malformed form, too many parts
        return edge.error(request, 400, "表单无法读取", f"This form could not be read: {exc.detail}")
    try:
        return await _save_form(edge, request, user, post_id, form)
    finally:
        await form.close()


async def _save_form(edge, request: Request, user: User, post_id: str | None,  # type: ignore[no-untyped-def]
                     form: FormData) -> Response:
    b = edge.backends
    md = _md(edge, request, user)
    draft = Draft.from_form(form)
    post = None
    if post_id is not None:
        post = await b.call(b.content.GetPost, cpb.GetPostRequest(name=f"posts/{post_id}"), md)

    def again(problem: str, status: int = 400) -> Any:
        return _form(edge, request, user, draft, post, problem=problem, status=status)

    uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile) and (f.filename or f.size)]
    if len(draft.images) + len(uploads) > MAX_IMAGES:
        return await again(f"最多 {MAX_IMAGES} 张图片：已有 {len(draft.images)} 张，又选了 {len(uploads)} 张。"
                           f"At most {MAX_IMAGES} images: {len(draft.images)} kept and {len(uploads)} new.")
    problems = [p for up in uploads if (p := await _check_upload(up, edge.settings.max_asset_bytes))]
    if problems:
        return await again(" ".join(problems))
    for up in uploads:
        try:
            asset = await _upload(b, md, up)
        except grpc.aio.AioRpcError as err:
            if err.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
                raise
            detail = (err.details() or "").removeprefix("chunk: ")
            name = _filename(up)
            return await again(f"「{name}」无法上传：{_upload_reason(detail)}。{name} could not be uploaded: {detail}.")
        draft.images.append(asset.name)  # uploaded: kept by the re-shown form even if the save below is refused
    if draft.new_topic:
        try:
            topic = await _topic_named(b, md, draft.new_topic)
        except grpc.aio.AioRpcError as err:
            if err.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS):
                raise
            return await again(f"新话题无法创建。The new topic could not be made: {_friendly(err.details() or '')}")
        if topic.name not in draft.topics:
            draft.topics.append(topic.name)
        draft.new_topic = ""
    try:
        if post is None:
            saved = await b.call(b.content.CreatePost, cpb.CreatePostRequest(content=draft.content(),
                                                                              request_id=draft.request_id), md)
        else:
            saved = await b.call(b.content.UpdatePost, cpb.UpdatePostRequest(
                post=cpb.Post(name=post.name, content=draft.content(), etag=draft.etag),
                update_mask=field_mask_pb2.FieldMask(paths=UPDATE_PATHS)), md)
    except grpc.aio.AioRpcError as err:
        if err.code() is grpc.StatusCode.ABORTED and post is not None:
            draft.etag = post.etag  # saving again replaces their version: the editor's choice, after being told
            return await again("保存失败：在你编辑期间，别人修改了这篇内容。你输入的内容保留在下面；可以打开新窗口查看对方的版本，"
                               "再次保存会覆盖对方的修改。Someone else changed this post while you were editing; your text is "
                               "kept below, and saving again replaces their changes.", 409)
        if err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
            return await again(f"无法保存。Not saved: {_friendly(err.details() or err.code().name)}")
        raise
    notice = "created" if post is None else "saved"
    return RedirectResponse(f"/editor/posts/{saved.name.removeprefix('posts/')}?notice={notice}", status_code=303)


def _upload_reason(detail: str) -> str:
    """The content service's reason for refusing an image, in the editor's words."""
    for clue, reason in (("pixel limit", "图片尺寸太大（像素太多）"), ("byte limit", "文件太大"),
                         ("not a JPEG", "不是 JPEG、PNG 或 WebP 图片"), ("header", "图片已损坏或无法读取"),
                         ("do not parse", "图片已损坏或无法读取"), ("no pixels", "图片是空的"), ("filename", "文件名不能使用")):
        if clue in detail:
            return reason
    return "图片无法使用"


def _filename(up: UploadFile) -> str:
    """The file's own name, printable and bounded (the asset keeps it; the messages name it)."""
    name = (up.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()[:200]
    return name or "image"


async def _check_upload(up: UploadFile, max_bytes: int) -> str:
    """What is wrong with an upload that the edge can tell without the service ("" when nothing is)."""
    name = _filename(up)
    size = up.size or 0
    if size > max_bytes:
        return (f"「{name}」太大（{size / 1048576:.1f} MB），每张图片不超过 {max_bytes // 1048576} MB。"
                f"{name} is too large: at most {max_bytes // 1048576} MB per image.")
    if size == 0:
        return f"「{name}」是空文件。{name} is empty."
    await up.seek(0)
    head = await up.read(SNIFF_BYTES)
    await up.seek(0)
    if sniff_mime(head) is None:
        return f"「{name}」不是图片：只能上传 JPEG、PNG 或 WebP。{name} is not an image: upload a JPEG, PNG or WebP file."
    return ""


async def _upload(b, md: tuple[tuple[str, str], ...], up: UploadFile) -> cpb.Asset:  # type: ignore[no-untyped-def]
    async def messages() -> AsyncIterator[cpb.UploadAssetRequest]:
        yield cpb.UploadAssetRequest(metadata=cpb.AssetMetadata(filename=_filename(up)))
        await up.seek(0)
        while chunk := await up.read(UPLOAD_CHUNK):
            yield cpb.UploadAssetRequest(chunk=chunk)

    return await b.content.UploadAsset(messages(), metadata=md, timeout=UPLOAD_TIMEOUT)


async def _topic_named(b, md: tuple[tuple[str, str], ...], display_name: str) -> cpb.Topic:  # type: ignore[no-untyped-def]
    """The topic with this name: the existing one, or a new one."""
    for topic in await _listed(b.content.ListTopics, cpb.ListTopicsRequest, "topics", md):
        if topic.display_name == display_name:
            return topic
    return await b.call(b.content.CreateTopic, cpb.CreateTopicRequest(topic=cpb.Topic(display_name=display_name)), md)


# ---- thumbnails --------------------------------------------------------------------------------------------


@signed_in(*EDITORS)
async def thumbnail(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    name = f"assets/{request.path_params['asset_id']}"
    cached = thumbs.get((name, ""))
    if cached is None:
        b = edge.backends
        data = bytearray()
        async for message in b.content.DownloadAsset(cpb.DownloadAssetRequest(name=name), metadata=_md(edge, request, user),
                                                     timeout=15):
            data += message.chunk
            if len(data) > edge.settings.max_asset_bytes:
                return edge.error(request, 413, "图片太大", "This image is over the upload limit.")
        made = await run_in_threadpool(_thumb, bytes(data))
        if made is None:
            return edge.error(request, 415, "图片无法显示", "This image cannot be shown.")
        thumbs.put((name, ""), made)
        cached = made
    return Response(cached[0], media_type=cached[1], headers={"cache-control": "private, max-age=86400"})


def _thumb(data: bytes) -> tuple[bytes, str] | None:
    """At most THUMB_PX on its longer side, JPEG (PNG when it has transparency); None when it cannot be read."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at a fraction of the size
            im.thumbnail((THUMB_PX, THUMB_PX))
            out = io.BytesIO()
            if im.mode in ("RGBA", "LA", "P"):
                im.save(out, "PNG", optimize=True)
                return out.getvalue(), "image/png"
            im.convert("RGB").save(out, "JPEG", quality=80, optimize=True)
            return out.getvalue(), "image/jpeg"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


# ---- preview and publish -----------------------------------------------------------------------------------


def canonical(body: str) -> str:
    """The body as a copy without variation reads: each [[first|second]] as its first option."""
    try:
        return alternatives.canonical_text(alternatives.parse_body(body))
    except InvalidArgument:
        return body


def highlight(base: str, text: str) -> Markup:
    """``text`` escaped, with what differs from ``base`` (replaced or inserted characters) in <mark>."""
    out = []
    for op, _i1, _i2, j1, j2 in difflib.SequenceMatcher(None, base, text, autojunk=False).get_opcodes():
        if j1 == j2:  # deleted from base: nothing of the copy to show
            continue
        segment = escape(text[j1:j2])
        out.append(segment if op == "equal" else Markup("<mark>{}</mark>").format(segment))
    return Markup("").join(out)


async def _preview_page(edge, request: Request, user: User, post_id: str, problem: str = "",  # type: ignore[no-untyped-def]
                        status: int = 200) -> Response:
    b = edge.backends
    md = _md(edge, request, user)
    post = await b.call(b.content.GetPost, cpb.GetPostRequest(name=f"posts/{post_id}"), md)
    reps = (await b.call(b.distribution.ListReps, dpb.ListRepsRequest(page_size=SAMPLE_REPS), md)).reps
    base = canonical(post.content.body)
    preview, not_ready = None, ""
    if reps:
        try:
            preview = await b.call(b.distribution.PreviewCopies, dpb.PreviewCopiesRequest(
                post=post.name, sample_reps=[r.name for r in reps]), md, timeout=10)
        except grpc.aio.AioRpcError as err:
            if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE):
                raise
            not_ready = "预览还在准备，请稍后刷新。The preview is being prepared; reload in a moment."
    names = {r.name: r.display_name for r in reps}
    copies = []
    if preview is not None:
        marked = await run_in_threadpool(lambda: [highlight(base, c.text) for c in preview.copies])
        copies = [{"rep": c.rep, "display_name": names.get(c.rep, c.rep), "diff": m} for c, m in zip(preview.copies, marked, strict=True)]
    report, report_note = None, "发布之后才有差异报告。The distinctness report exists after publishing."
    if post.published_revision:
        try:
            report = await b.call(b.distribution.GetDistinctnessReport, dpb.GetDistinctnessReportRequest(post=post.name),
                                  md, timeout=REPORT_TIMEOUT)
        except grpc.aio.AioRpcError as err:
            if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                                  grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                raise
            report_note = "差异报告还在生成，请稍后刷新。The report is not ready yet; reload in a moment."
    tz = ZoneInfo(edge.settings.tracking_timezone)
    now = datetime.now(tz)
    return edge.page(request, "editor_preview.html", {
        "post": _summary(edge, post), "tab": "preview", "problem": problem, "copies": copies, "preview": preview,
        "not_ready": not_ready, "no_reps": not reps, "report": _report(report) if report is not None else None,
        "report_note": report_note, "timezone": edge.settings.tracking_timezone,
        "schedule_default": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"), "schedule_min": now.strftime("%Y-%m-%dT%H:%M"),
    }, status=status)


def _report(r: dpb.DistinctnessReport) -> dict[str, Any]:
    def spread(values: list[int]) -> str:
        if not values:
            return "—"
        ordered = sorted(values)
        return f"{ordered[0]} / {ordered[len(ordered) // 2]} / {ordered[-1]}"

    return {"revision": r.revision.rsplit("/", 1)[-1], "copies": r.copies, "text_duplicates": r.text_duplicates,
            "jaccard": f"{r.jaccard_min:.2f} / {r.jaccard_median:.2f} / {r.jaccard_max:.2f}",
            "image_byte_duplicates": r.image_byte_duplicates, "phash": spread(list(r.phash_distances)),
            "dhash": spread(list(r.dhash_distances)), "ssim_min": f"{r.ssim_min:.3f}",
            "protected_span_violations": r.protected_span_violations}


@signed_in(*EDITORS)
async def preview_page(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    return await _preview_page(edge, request, user, _post_id(request))


def parse_schedule(value: str, zone: str, now: datetime) -> datetime | None:
    """A datetime-local value ("2025-06-01T09:30") in ``zone``; None when it is now or past. ValueError if unreadable."""
    value = value.strip()
    if not value or len(value) > 32:
        raise ValueError(value)
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        at = at.replace(tzinfo=ZoneInfo(zone))
    return at if at > now else None


@signed_in(*EDITORS)
async def publish(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    post_id = _post_id(request)
    form = await checked_form(request, max_part_size=MAX_FORM_BYTES, max_files=0, max_fields=20)
    when = _text(form, "when")
    req = cpb.PublishPostRequest(name=f"posts/{post_id}", etag=_text(form, "etag"))
    if when == "schedule":
        raw = _text(form, "at")
        try:
            at = parse_schedule(raw, edge.settings.tracking_timezone, datetime.now(UTC))
        except ValueError:
            return await _preview_page(edge, request, user, post_id, status=400, problem=(
                f"无法识别的时间「{raw[:40]}」，请用日期时间选择器重新选择。"
                f"The time {raw[:40]!r} is not a date and time like 2025-06-01T09:30."))
        if at is not None:
            req.publish_time.CopyFrom(timestamp_pb2.Timestamp(seconds=int(at.timestamp())))
    elif when != "now":
        return await _preview_page(edge, request, user, post_id, status=400, problem="请选择立即发布或定时发布。Choose now or a time.")
    b = edge.backends
    try:
        post = await b.call(b.content.PublishPost, req, _md(edge, request, user))
    except grpc.aio.AioRpcError as err:
        if err.code() is grpc.StatusCode.ABORTED:
            return await _preview_page(edge, request, user, post_id, status=409, problem=(
                "发布失败：预览之后内容又被修改过。请查看下面的最新预览后再发布。"
                "This post changed after you previewed it: check the preview below and publish again."))
        if err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
            return await _preview_page(edge, request, user, post_id, status=400,
                                       problem=f"无法发布。Not published: {_friendly(err.details() or err.code().name)}")
        raise
    notice = "scheduled" if post.state == cpb.POST_STATE_SCHEDULED else "published"
    return RedirectResponse(f"/editor/posts/{post_id}?notice={notice}", status_code=303)


# ---- analytics ---------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} 分 {seconds % 60} 秒" if seconds >= 60 else f"{seconds} 秒"


def bar_class(value: int, largest: int) -> str:
    """A width class w0..w100 in steps of 5 (a stylesheet rule each: no inline style under the CSP)."""
    if largest <= 0 or value <= 0:
        return "w0"
    return f"w{max(5, round(value * 20 / largest) * 5)}"


def forward_tree(nodes: list[tpb.ShareNode], names: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
    """The shares as nested dicts (roots: the reps' own shares), at most MAX_TREE_NODES deep to MAX_TREE_DEPTH;
    and how many were left out."""
    by_id = {n.share_id: n for n in nodes}
    children: dict[str, list[tpb.ShareNode]] = {}
    roots = []
    for n in nodes:
        if n.parent_share_id and n.parent_share_id in by_id and n.parent_share_id != n.share_id:
            children.setdefault(n.parent_share_id, []).append(n)
        else:
            roots.append(n)
    shown = 0
    seen: set[str] = set()

    def build(n: tpb.ShareNode, depth: int) -> dict[str, Any] | None:
        nonlocal shown
        if shown >= MAX_TREE_NODES or depth > MAX_TREE_DEPTH or n.share_id in seen:
            return None
        shown += 1
        seen.add(n.share_id)
        kids = sorted(children.get(n.share_id, []), key=lambda c: (-c.views, c.share_id))
        return {"rep": names.get(n.rep, n.rep.removeprefix("reps/")), "views": n.views, "forward": depth > 0,
                "short": n.share_id[:6], "children": [c for k in kids if (c := build(k, depth + 1)) is not None]}

    tree = [t for r in sorted(roots, key=lambda r: (-r.views, r.share_id)) if (t := build(r, 0)) is not None]
    return tree, len(nodes) - shown


@signed_in(*EDITORS)
async def analytics(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    b = edge.backends
    md = _md(edge, request, user)
    post = await b.call(b.content.GetPost, cpb.GetPostRequest(name=f"posts/{_post_id(request)}"), md)

    async def optional(method: Any, req: Any, *absent: grpc.StatusCode) -> Any:
        """The answer, or None when the service says there is none yet (not published, being planned)."""
        try:
            return await b.call(method, req, md)
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION, *absent):
                return None
            raise

    a, campaign = await asyncio.gather(
        optional(b.tracking.GetPostAnalytics, tpb.GetPostAnalyticsRequest(post=post.name)),
        optional(b.distribution.GetCampaignStatus, dpb.GetCampaignStatusRequest(post=post.name), grpc.StatusCode.UNAVAILABLE))
    context: dict[str, Any] = {"post": _summary(edge, post), "tab": "analytics", "a": a, "campaign": campaign}
    if a is not None:
        wanted = list(dict.fromkeys([v.rep for v in a.variants] + [s.rep for s in a.top_spreaders]
                                    + [n.rep for n in a.forward_tree]))[:MAX_REP_LOOKUPS]
        found = await asyncio.gather(*(b.call(b.distribution.GetRep, dpb.GetRepRequest(name=r), md) for r in wanted),
                                     return_exceptions=True)
        names = {r.name: r.display_name for r in found if isinstance(r, dpb.Rep)}
        largest = max([h.views for h in a.engaged_histogram], default=0)
        variants = sorted(a.variants, key=lambda v: (-v.views, v.rep))[:MAX_VARIANTS]
        best = max((v.engaged_seconds_median for v in variants if v.views), default=0)
        tree, left_out = forward_tree(list(a.forward_tree), names)
        context.update({
            "p50": _duration(a.engaged_seconds_p50), "p90": _duration(a.engaged_seconds_p90),
            "histogram": [{"label": h.label, "views": h.views, "bar": bar_class(h.views, largest)} for h in a.engaged_histogram],
            "variants": [{"rep": names.get(v.rep, v.rep.removeprefix("reps/")), "views": v.views,
                          "median": _duration(v.engaged_seconds_median), "mean": _duration(v.engaged_seconds_mean),
                          "best": bool(v.views) and v.engaged_seconds_median == best and best > 0} for v in variants],
            "more_variants": max(0, len(a.variants) - MAX_VARIANTS),
            "spreaders": [{"rep": names.get(s.rep, s.rep.removeprefix("reps/")), "views": s.downstream_views, "depth": s.depth}
                          for s in a.top_spreaders],
            "tree": tree, "tree_left_out": left_out})
    if campaign is not None:
        context["progress"] = bar_class(campaign.rendered, campaign.total) if campaign.total else "w0"
    return edge.page(request, "editor_analytics.html", context)


ROUTES = [
    ("/editor", index, ["GET"], "editor"),
    ("/editor/posts/new", new, ["GET"], "editor_new"),
    ("/editor/posts", create, ["POST"], "editor_create"),
    ("/editor/posts/{post_id}", edit, ["GET"], "editor_post"),
    ("/editor/posts/{post_id}", update, ["POST"], "editor_update"),
    ("/editor/posts/{post_id}/preview", preview_page, ["GET"], "editor_preview"),
    ("/editor/posts/{post_id}/publish", publish, ["POST"], "editor_publish"),
    ("/editor/posts/{post_id}/analytics", analytics, ["GET"], "editor_analytics"),
    ("/editor/assets/{asset_id}", thumbnail, ["GET"], "editor_thumbnail"),
]
