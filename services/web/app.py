"""The edge's ASGI application (Starlette): server-rendered pages, the beacon endpoint, and the security around them.

Every response carries a request id (``X-Request-Id``, also sent to the services
in gRPC metadata), a Content-Security-Policy without inline script, and no
referrer (share links carry tokens). A 5xx is logged with its request id and the
page shows that id, never a stack trace.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.shared.logs import REQUEST_ID
from services.shared.metrics import HTTP_SECONDS
from services.shared.settings import Settings
from services.shared.sharetoken import ShareTokens

from . import customer, editor, rep, sales, sessions
from .backends import Backends, request_id
from .edge_ingest import EdgeIngest, edge_ingest_for
from .limits import EdgeLimiter

log = logging.getLogger("services.web")
HERE = Path(__file__).resolve().parent
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
templates = Jinja2Templates(env=jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True))


class Edge:
    """What the handlers share: settings, the service clients, the limiter, the templates."""

    def __init__(self, settings: Settings, backends: Backends, limiter: EdgeLimiter, ingest: EdgeIngest) -> None:
        self.settings = settings
        self.ingest = ingest  # page views and beacons, into tracking's log
        self.backends = backends
        self.limiter = limiter
        self.templates = templates
        self.cookie_secure = settings.web_cookie_secure
        self.share_tokens = ShareTokens(list(settings.share_token_keys))
        self.copies = customer.CopyCache()

    def page(self, request: Request, name: str, context: dict[str, Any], status: int = 200,
             headers: dict[str, str] | None = None) -> Response:
        """A page from a template; a signed-in user's pages also get ``user`` and ``csrf`` (for every form).
        Pages with a user are never cached (they show personal data)."""
        user = sessions.current_user(request) if "session" in request.scope else None
        extra: dict[str, Any] = {"request_id": request_id(request), "user": user}
        if user is not None:
            extra["csrf"] = sessions.csrf_token(request)
            headers = {"cache-control": "no-store", **(headers or {})}
        return self.templates.TemplateResponse(request, name, {**extra, **context}, status_code=status, headers=headers)

    def log_unavailable(self, request: Request, code: Any) -> None:
        log.warning("%s %s: a service answered %s [request id %s]", request.method, request.url.path,
                    getattr(code, "name", code), request_id(request))

    def error(self, request: Request, status: int, title: str, detail: str) -> Response:
        return self.page(request, "error.html", {"title": title, "detail": detail, "status": status}, status=status)


class RequestIds:
    """Give every request an id (or keep a sane one from the proxy), echo it, and turn an uncaught error into a
    logged 500 page that shows it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        rid = given if given.isascii() and given.replace("-", "").isalnum() and 8 <= len(given) <= 64 \
            else secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = rid
        token = REQUEST_ID.set(rid)  # every log line while serving this request names it
        started = False
        status = 500
        begun = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode()), *SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("request %s %s failed", scope.get("method"), scope.get("path"))
            if started:
                raise
            body = (f"出错了，请稍后再试。Something went wrong. Request id: {rid}").encode()
            await send_with_headers({"type": "http.response.start", "status": 500,
                                     "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": body})
        finally:
            route = scope.get("route")
            HTTP_SECONDS.labels(getattr(route, "path", "unmatched"), scope.get("method", ""), str(status)).observe(
                time.perf_counter() - begun)
            REQUEST_ID.reset(token)


def build_app(settings: Settings, backends: Backends, limiter: EdgeLimiter | None = None,
              ingest: EdgeIngest | None = None) -> Starlette:
    edge = Edge(settings, backends, limiter or EdgeLimiter(), ingest or edge_ingest_for(settings, backends))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        backends.open()
        edge.ingest.open()
        try:
            yield
        finally:
            await edge.ingest.close()
            await backends.close()

    def bind(handler: Callable[[Edge, Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await handler(edge, request)
        return endpoint

    async def health(_request: Request) -> Response:
        return PlainTextResponse("ok")

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def home(request: Request) -> Response:
        user = sessions.current_user(request)
        return RedirectResponse(sessions.HOMES[user.role] if user else "/signin", status_code=303)

    beacon = Route(customer.BEACON_PATH, customer.Beacon(edge), methods=["POST"])  # BeaconFirst serves its POSTs
    routes = [
        Route("/healthz", health),
        Route("/metrics", metrics),
        Route("/s/{token}", bind(customer.share_page), name="share"),
        Route("/s/{token}/images/{index:int}", bind(customer.share_image)),
        Route("/s/{token}/view", bind(customer.share_view), methods=["POST"], name="share_view"),
        beacon,
        Route("/", home),
        Route("/signin", bind(sessions.signin_page), methods=["GET"]),
        Route("/signin", bind(sessions.signin_post), methods=["POST"]),
        Route("/signout", bind(sessions.signout), methods=["POST"]),
        *(Route(path, bind(handler), methods=methods, name=name)
          for path, handler, methods, name in (*rep.ROUTES, *sales.ROUTES, *editor.ROUTES)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def not_found(request: Request, _exc: Exception) -> Response:
        return edge.error(request, 404, "页面不存在", "The page you asked for is not here.")

    session_key = hashlib.sha256(b"web-session:" + settings.secret_key).hexdigest()
    middleware = [Middleware(RequestIds), Middleware(customer.BeaconFirst, route=beacon),
                  Middleware(SessionMiddleware, secret_key=session_key, session_cookie=sessions.SESSION_COOKIE,
                             max_age=sessions.SESSION_MAX_AGE, same_site="lax", https_only=settings.web_cookie_secure)]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers={404: not_found})
