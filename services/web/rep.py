"""The rep's page (phone first): the posts for me, my copy with one-tap "copy text" and "save image", my share
link and per-contact links, my leads today and what my customers are reading right now.

Every call carries the rep's own token, so the services decide what the rep may
see (their own copies and contacts only).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from zoneinfo import ZoneInfo

import grpc
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from services.protos.contentops.distribution.v1 import distribution_pb2 as dpb
from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb

from . import live
from .backends import request_id
from .customer import fit_for_phone, images
from .sessions import MAX_FORM_BYTES, User, checked_form, signed_in

MAX_CONTACT_NAME = 40
CONTACTS_SHOWN = 200
COPY_STATES = {dpb.COPY_STATE_PENDING: "待生成", dpb.COPY_STATE_READY: "已生成", dpb.COPY_STATE_FAILED: "生成失败"}


def _md(edge, request: Request, user: User) -> tuple[tuple[str, str], ...]:  # type: ignore[no-untyped-def]
    return edge.backends.metadata(request_id(request), user.token)


def _unlinked(edge, request: Request) -> Response:  # type: ignore[no-untyped-def]
    return edge.error(request, 403, "账号未关联销售", "Your account is not linked to a rep profile yet; ask headquarters.")


@signed_in("rep")
async def home(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    if not user.rep:
        return _unlinked(edge, request)
    b = edge.backends
    md = _md(edge, request, user)
    posts, leads = await asyncio.gather(
        b.call(b.distribution.ListRepPosts, dpb.ListRepPostsRequest(parent=user.rep, page_size=50), md),
        b.call(b.tracking.ListLeads, tpb.ListLeadsRequest(parent=user.rep, page_size=20), md))
    return edge.page(request, "rep_home.html", {
        "posts": [{"id": p.post.removeprefix("posts/"), "title": p.title, "excerpt": p.excerpt,
                   "state": COPY_STATES.get(p.copy_state, ""),
                   "published": p.publish_time.ToDatetime(tzinfo=ZoneInfo(edge.settings.tracking_timezone))}
                  for p in posts.posts],
        "leads": [lead_view(lead) for lead in leads.leads],
    })


def lead_view(lead: tpb.Lead, rep_name: str = "") -> dict[str, object]:
    rep_id, _, contact_id = lead.contact.name.removeprefix("reps/").partition("/contacts/")
    return {"name": lead.contact.display_name, "named": lead.contact.named, "reason": lead.reason,
            "talking_point": lead.talking_point, "href": f"/contacts/{rep_id}/{contact_id}", "rep_name": rep_name,
            "score": lead.score}


async def _copy(edge, request: Request, user: User) -> dpb.RepCopy:  # type: ignore[no-untyped-def]
    b = edge.backends
    post = f"posts/{request.path_params['post_id']}"
    # a copy not rendered yet is rendered on demand: allow it longer than a page's usual deadline
    return await b.call(b.distribution.GetRepCopy, dpb.GetRepCopyRequest(post=post, rep=user.rep),
                        _md(edge, request, user), timeout=20)


async def _post_page(edge, request: Request, user: User, link: dict[str, str] | None = None,  # type: ignore[no-untyped-def]
                     problem: str = "", status: int = 200, copy: dpb.RepCopy | None = None) -> Response:
    """The copy page (``copy``: when the caller has fetched it already)."""
    if not user.rep:
        return _unlinked(edge, request)
    b = edge.backends
    md = _md(edge, request, user)
    listing = b.call(b.tracking.ListContacts, tpb.ListContactsRequest(parent=user.rep, page_size=CONTACTS_SHOWN), md)
    if copy is None:
        copy, contacts = await asyncio.gather(_copy(edge, request, user), listing)
    else:
        contacts = await listing
    post_id = request.path_params["post_id"]
    return edge.page(request, "rep_post.html", {
        "post_id": post_id, "text": copy.text,
        "images": [{"index": i, "width": img.width, "height": img.height} for i, img in enumerate(copy.images)],
        "share_url": str(request.url_for("share", token=copy.share_token)),
        "contacts": [{"name": c.name, "display_name": c.display_name} for c in contacts.contacts if c.named],
        "link": link, "problem": problem,
    }, status=status)


@signed_in("rep")
async def post(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    return await _post_page(edge, request, user)


@signed_in("rep")
async def contact_link(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    """A link for one named contact (a one-to-one chat): whoever opens it is that contact from then on."""
    if not user.rep:
        return _unlinked(edge, request)
    form = await checked_form(request, max_part_size=MAX_FORM_BYTES, max_files=0)
    existing = str(form.get("contact") or "")
    new_name = str(form.get("display_name") or "").strip()
    if not existing and not new_name:
        return await _post_page(edge, request, user, problem="请填写客户称呼，或选择已有客户。Name the contact.", status=400)
    if len(new_name) > MAX_CONTACT_NAME:
        return await _post_page(edge, request, user, problem=f"客户称呼最多 {MAX_CONTACT_NAME} 个字。", status=400)
    b = edge.backends
    md = _md(edge, request, user)
    copy = await _copy(edge, request, user)
    try:
        made = await b.call(b.tracking.CreateContactLink, tpb.CreateContactLinkRequest(
            parent=user.rep, share_token=copy.share_token, contact=existing,
            contact_display_name="" if existing else new_name), md)
    except grpc.aio.AioRpcError as err:
        if err.code() is not grpc.StatusCode.INVALID_ARGUMENT:
            raise
        return await _post_page(edge, request, user, problem=err.details() or "无法创建链接", status=400, copy=copy)
    return await _post_page(edge, request, user, link={
        "name": made.contact.display_name, "url": str(request.url_for("share", token=made.share_token))}, copy=copy)


@signed_in("rep")
async def image(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    """One of my copy's images: the full image to save (``?download=1``), or a phone-sized one to look at."""
    copy = await _copy(edge, request, user)
    index = request.path_params["index"]
    if not 0 <= index < len(copy.images):
        return edge.error(request, 404, "图片不存在", "No such image.")
    img = copy.images[index]
    b = edge.backends
    md = _md(edge, request, user)
    download = request.query_params.get("download") == "1"
    key = (img.name, img.sha256)
    cached = None if download else images.get(key)
    if cached is None:
        data = b"".join([m.chunk async for m in b.distribution.DownloadCopyImage(
            dpb.DownloadCopyImageRequest(name=img.name), metadata=md, timeout=10)])
        if download:
            ext = {"image/png": "png", "image/webp": "webp"}.get(img.mime_type, "jpg")
            filename = f"contentops-{request.path_params['post_id'][-6:]}-{index + 1}.{ext}"
            return Response(data, media_type=img.mime_type or "image/jpeg", headers={
                "content-disposition": f"attachment; filename=\"{filename}\"; filename*=UTF-8''{urllib.parse.quote(filename)}",
                "cache-control": "private, no-store"})
        cached = await run_in_threadpool(fit_for_phone, data)
        images.put(key, cached)
    return Response(cached[0], media_type=cached[1], headers={"cache-control": "private, max-age=3600"})


@signed_in("rep")
async def activity(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    if not user.rep:
        return _unlinked(edge, request)
    return live.stream(edge, request, user, [user.rep])


ROUTES = [
    ("/rep", home, ["GET"], "rep"),
    ("/rep/posts/{post_id}", post, ["GET"], "rep_post"),
    ("/rep/posts/{post_id}/links", contact_link, ["POST"], "rep_contact_link"),
    ("/rep/posts/{post_id}/images/{index:int}", image, ["GET"], "rep_image"),
    ("/rep/activity", activity, ["GET"], "rep_activity"),
]
