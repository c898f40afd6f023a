"""The page a rep shares, and the beacon its script reports reading to.

The page is counted when it is served (a view started on the server: edge_ingest.py), so a
reader without JavaScript is still a view; the script then adds engaged time by the
tracking protocol (README, "Browser protocol"): visible and focused time only, a
heartbeat every 10 s, a flush with ``sendBeacon`` when the page is hidden or left.
If tracking is down (Redis, or the tracking service), the page is served without a
view, so the reader still reads (``contentops_untracked_pages_total`` counts it). Its
script then asks for the view itself (``POST /s/{token}/view``, backing off from 3 s to
a minute, only while the page is visible); once tracking answers, the reading from then
on is counted like any other. Nothing on it names the rep's contacts or other reps.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections import OrderedDict

import grpc
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from services.protos.contentops.distribution.v1 import distribution_pb2 as dpb
from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb
from services.shared.errors import ServiceError
from services.shared.logs import Throttle
from services.shared.metrics import UNTRACKED_PAGES
from services.shared.sharetoken import ShareToken
from services.tracking.ingest import expired, valid_visitor

from .backends import request_id
from .edge_ingest import BeaconRefused
from .limits import network_of

log = logging.getLogger("services.web")

VISITOR_COOKIE = "co_vid"
VISITOR_MAX_AGE = 365 * 86_400
MAX_BEACON_BYTES = 2_048
MAX_IMAGE_WIDTH = 720  # phones show posts at most this wide; the rep's page offers the full image to save
IMAGE_CACHE_BYTES = 64 * 1024 * 1024
COPY_CACHE_SECONDS = 5.0
# Starting the view failed with one of these: the tracking log or service is down, not the link. The page is served
# without a view rather than refused: a customer who tapped a link should read the post.
UNTRACKED_ON = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
untracked_warnings = Throttle()
MAX_DELTA_MS = 3_600_000  # the service caps further (the heartbeat interval plus slack)


class ImageCache:
    """Resized copy images by (image name, sha256): a copy image never changes, so an entry never goes stale."""

    def __init__(self, budget: int = IMAGE_CACHE_BYTES) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[tuple[str, str], tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[bytes, str] | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple[str, str], item: tuple[bytes, str]) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = item
            self.used += len(item[0])
            while self.used > self.budget and self._items:
                _, (data, _) = self._items.popitem(last=False)
                self.used -= len(data)


images = ImageCache()


def _share(edge, token: str) -> ShareToken:  # type: ignore[no-untyped-def]
    """The link's post and rep (the signature checked here; expiry is the tracking service's to judge)."""
    return edge.share_tokens.verify(token)


class CopyCache:
    """The live copy per (post, rep) for COPY_CACHE_SECONDS: a shared link is opened by many readers in a burst, and
    each asking the distribution service costs more CPU than the rest of the page. A new revision or an archive
    reaches readers at most that late (the distribution service's own post cache adds its second)."""

    def __init__(self, ttl: float = COPY_CACHE_SECONDS, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._items: dict[tuple[str, str], tuple[float, dpb.RepCopy]] = {}

    def get(self, key: tuple[str, str]) -> dpb.RepCopy | None:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, key: tuple[str, str], copy: dpb.RepCopy) -> None:
        if len(self._items) >= self.size:
            now = time.monotonic()
            self._items = {k: v for k, v in self._items.items() if v[0] >= now}
            if len(self._items) >= self.size:
                self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl, copy)


async def _copy(edge, share: ShareToken, md: tuple[tuple[str, str], ...]) -> dpb.RepCopy:  # type: ignore[no-untyped-def]
    """The rep's live copy the link names (cached briefly: CopyCache)."""
    key = (share.post_id, share.rep_id)
    cached = edge.copies.get(key)
    if cached is not None:
        return cached
    b = edge.backends
    copy = await b.call(b.distribution.GetRepCopy, dpb.GetRepCopyRequest(post=f"posts/{share.post_id}",
                                                                          rep=f"reps/{share.rep_id}"), md)
    edge.copies.put(key, copy)
    return copy


async def share_page(edge, request: Request) -> Response:  # type: ignore[no-untyped-def]
    token = request.path_params["token"]
    try:
        share = _share(edge, token)
    except ServiceError as err:
        return _refused(edge, request, _code(err))
    try:
        copy = await _copy(edge, share, edge.backends.metadata(request_id(request)))
    except grpc.aio.AioRpcError as err:
        return _refused(edge, request, err.code())
    try:
        started: tpb.StartViewResponse | None = await _start_view(edge, request, token)
    except (grpc.aio.AioRpcError, ServiceError) as err:
        code = _code(err)
        if code not in UNTRACKED_ON:
            return _refused(edge, request, code)
        if expired(share, time.time(), edge.settings.tracking_token_max_age_seconds):
            return _refused(edge, request, grpc.StatusCode.FAILED_PRECONDITION)  # what tracking would have said
        started = None  # tracking is down: the reader still gets the post; its script asks for the view later
        UNTRACKED_PAGES.labels(code.name).inc()
        if untracked_warnings.due():
            log.warning("share pages served without a view: tracking %s (%s) [request id %s]", code.name,
                        err.details() if isinstance(err, grpc.aio.AioRpcError) else err.message, request_id(request))
    response = edge.page(request, "share.html", {
        "paragraphs": copy.text.split("\n"), "token": token,
        "images": [{"index": i, "width": min(img.width, MAX_IMAGE_WIDTH),
                    "height": round(img.height * min(img.width, MAX_IMAGE_WIDTH) / img.width) if img.width else 0}
                   for i, img in enumerate(copy.images)],
        "view": started.view if started else "", "interval": (started.heartbeat_interval_seconds if started else 0) or 10,
        "forward": _forward(request, started) if started else "",
        "start": "" if started else str(request.url_for("share_view", token=token).path),
    }, headers={"cache-control": "no-store"})
    if started is not None:
        _visitor_cookie(edge, response, started)
    return response


async def share_view(edge, request: Request) -> Response:  # type: ignore[no-untyped-def]
    """POST /s/{token}/view: the view of a page that was served without one (tracking was down), started now.
    200 with the view, the heartbeat interval and the forward link as JSON (and the visitor cookie); 503 with
    Retry-After while tracking is still down; 404 / 410 / 429 as the page would be."""
    token = request.path_params["token"]
    try:
        _share(edge, token)
        started = await _start_view(edge, request, token)
    except (grpc.aio.AioRpcError, ServiceError) as err:
        code = _code(err)
        if code in UNTRACKED_ON:
            return PlainTextResponse("tracking unavailable", 503, headers={"retry-after": "10"})
        return _refused(edge, request, code)
    response = JSONResponse({"view": started.view, "interval": started.heartbeat_interval_seconds or 10,
                             "forward": _forward(request, started)}, headers={"cache-control": "no-store"})
    _visitor_cookie(edge, response, started)
    return response


def _code(err: grpc.aio.AioRpcError | ServiceError) -> grpc.StatusCode:
    return err.code() if isinstance(err, grpc.aio.AioRpcError) else getattr(grpc.StatusCode, err.status)


def _forward(request: Request, started: tpb.StartViewResponse) -> str:
    """The link a reader forwards: a child of the share, so the forward tree knows who passed it on."""
    return str(request.url_for("share", token=started.forward_share_token)) if started.forward_share_token else ""


def _visitor_cookie(edge, response: Response, started: tpb.StartViewResponse) -> None:  # type: ignore[no-untyped-def]
    response.set_cookie(VISITOR_COOKIE, started.visitor_id, max_age=VISITOR_MAX_AGE, httponly=True, samesite="lax",
                        secure=edge.cookie_secure)


async def _start_view(edge, request: Request, token: str) -> tpb.StartViewResponse:  # type: ignore[no-untyped-def]
    """The view this page open counts as: through the tracking service, or written by the edge itself (edge_ingest.py)."""
    visitor = request.cookies.get(VISITOR_COOKIE, "")
    return await edge.ingest.start_view(
        token, visitor if valid_visitor(visitor) else "",  # a cookie we did not issue: start afresh
        request.headers.get("user-agent", "")[:512], request.headers.get("referer", "")[:2048],
        request.client.host if request.client else "", request_id(request))


def _refused(edge, request: Request, code: grpc.StatusCode) -> Response:  # type: ignore[no-untyped-def]
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return edge.error(request, 410, "链接已失效", "This link has expired or the post was withdrawn.")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
        return edge.error(request, 404, "链接无效", "This link is not valid.")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return edge.error(request, 429, "请稍后再试", "Too many requests; try again in a moment.")
    log.warning("share page unavailable: %s [request id %s]", code.name, request_id(request))
    return edge.error(request, 503, "请稍后再试", "This page is being prepared; try again in a moment.")


async def share_image(edge, request: Request) -> Response:  # type: ignore[no-untyped-def]
    token, index = request.path_params["token"], request.path_params["index"]
    try:
        share = _share(edge, token)
    except ServiceError as err:
        return _refused(edge, request, _code(err))
    b = edge.backends
    md = b.metadata(request_id(request))
    try:
        copy = await _copy(edge, share, md)
        if not 0 <= index < len(copy.images):
            return edge.error(request, 404, "图片不存在", "No such image.")
        image = copy.images[index]
        key = (image.name, image.sha256)
        cached = images.get(key)
        if cached is None:
            data = b"".join([m.chunk async for m in b.distribution.DownloadCopyImage(
                dpb.DownloadCopyImageRequest(name=image.name), metadata=md, timeout=10)])
            cached = await run_in_threadpool(fit_for_phone, data)
            images.put(key, cached)
    except grpc.aio.AioRpcError as err:
        return _refused(edge, request, err.code())
    return Response(cached[0], media_type=cached[1], headers={"cache-control": "private, max-age=3600"})


def fit_for_phone(data: bytes) -> tuple[bytes, str]:
    """The image at most MAX_IMAGE_WIDTH wide, re-encoded as the phone needs it (JPEG, or PNG if it has alpha)."""
    with Image.open(io.BytesIO(data)) as im:
        if im.width <= MAX_IMAGE_WIDTH and im.format in ("JPEG", "PNG"):
            return data, f"image/{im.format.lower()}"
        im.thumbnail((MAX_IMAGE_WIDTH, MAX_IMAGE_WIDTH * 4))
        out = io.BytesIO()
        if im.mode in ("RGBA", "LA", "P"):
            im.save(out, "PNG", optimize=True)
            return out.getvalue(), "image/png"
        im.convert("RGB").save(out, "JPEG", quality=82, optimize=True, progressive=True)
        return out.getvalue(), "image/jpeg"


class BeaconError(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


def parse_beacon(body: bytes) -> tuple[str, int, int, int, bool]:
    """(view, seq, engaged ms, scroll %, end) from a beacon body; BeaconError naming the field otherwise."""
    if len(body) > MAX_BEACON_BYTES:
        raise BeaconError("body", f"at most {MAX_BEACON_BYTES} bytes")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise BeaconError("body", "expected a JSON object") from None
    if not isinstance(data, dict):
        raise BeaconError("body", "expected a JSON object")

    def integer(name: str, low: int, high: int) -> int:
        value = data.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise BeaconError(name, f"expected an integer in [{low}, {high}]")
        return value

    view = data.get("view")
    if not isinstance(view, str) or not view.startswith("views/") or not 7 <= len(view) <= 64:
        raise BeaconError("view", "expected 'views/<id>'")
    end = data.get("end", False)
    if not isinstance(end, bool):
        raise BeaconError("end", "expected true or false")
    return view, integer("seq", 1, 1_000_000), integer("engaged_ms", 0, MAX_DELTA_MS), integer("scroll", 0, 100), end


BEACON_PATH = "/t/beat"
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


class Beacon:
    """POST /t/beat, the page script's beacon, as a plain ASGI app: the edge's hot path (every open page sends one
    per 10 s), so no Request/Response objects and no session. 204 once the beacon is recorded (in the tracking log:
    durable); 400 naming the field; 404 for a view tracking did not issue; 429 over a limit (per visitor and per
    network here, per view behind); 503 when tracking (or its Redis) is down. The endpoint of the route
    ``Route(BEACON_PATH, Beacon(edge), methods=["POST"])``, which ``BeaconFirst`` serves ahead of the session
    middleware and the router."""

    def __init__(self, edge) -> None:  # type: ignore[no-untyped-def]
        self.edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BEACON_BYTES or not message.get("more_body", False):
                break
        status, text, headers = await self.answer(HTTPConnection(scope), body)
        content = text.encode()
        extra = [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_TEXT, (b"content-length", str(len(content)).encode()), *extra] if status != 204 else extra})
        await send({"type": "http.response.body", "body": content if status != 204 else b""})

    async def answer(self, conn: HTTPConnection, body: bytes) -> tuple[int, str, dict[str, str]]:
        try:
            view, seq, engaged, scroll, end = parse_beacon(body)
        except BeaconError as err:
            return 400, str(err), {}
        visitor = conn.cookies.get(VISITOR_COOKIE, "")
        ip = conn.client.host if conn.client else ""
        if not self.edge.limiter.allow(visitor or f"ip:{ip}", network_of(ip)):
            return 429, "rate limited", {"retry-after": "10"}
        try:
            await self.edge.ingest.record(view, seq, engaged, scroll, end, request_id(conn))
        except BeaconRefused as err:
            return err.status, err.text, err.headers
        return 204, "", {}


class BeaconFirst:
    """Middleware: a POST to the beacon's route goes straight to it, past what only pages need (the session, the
    router, the exception pages). Goes right after RequestIds, which still gives it a request id, the headers and its
    metrics (``scope["route"]`` is set as the router would)."""

    def __init__(self, app: ASGIApp, route: Route) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self.route.path:
            scope["route"] = self.route
            await self.route.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)
