"""Signing in by a token link, signed sessions, and CSRF protection for every form.

A rep (or a manager, or an editor) is sent a sign-in link carrying their bearer
token (``contentops token create``). The edge asks the content service who the
token belongs to (GetUser ``users/me``), keeps the token in a signed session
cookie (Starlette's SessionMiddleware: itsdangerous, HttpOnly, SameSite=Lax,
Secure when configured) and redirects to the role's home, so the token leaves
the address bar at once. Every later call to a service carries the user's own
token: the services, not the edge, decide what the user may see.

Every form carries a per-session CSRF token (a hidden ``csrf`` field, compared
in constant time); a POST without the right one is refused with 403 before it
does anything.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from services.protos.contentops.identity.v1 import identity_pb2 as ipb

from .backends import request_id

SESSION_COOKIE = "co_session"
SESSION_MAX_AGE = 14 * 86_400
MAX_TOKEN_CHARS = 200
MAX_FORM_BYTES = 64 * 1024  # text fields; uploads are limited per file (editor.py)

ROLE_NAMES = {ipb.ROLE_ADMIN: "admin", ipb.ROLE_EDITOR: "editor", ipb.ROLE_REP: "rep", ipb.ROLE_SALES: "sales"}
HOMES = {"rep": "/rep", "sales": "/sales", "editor": "/editor", "admin": "/editor"}


@dataclass(frozen=True)
class User:
    """Who is signed in (as GetUser users/me said at sign-in) and their token for calls made on their behalf."""

    name: str  # users/{id}
    display_name: str
    role: str  # rep | sales | editor | admin
    rep: str  # reps/{id} for a rep
    team: str  # teams/{id} for a sales manager
    token: str

    @property
    def rep_id(self) -> str:
        return self.rep.removeprefix("reps/")


def current_user(request: Request) -> User | None:
    data = request.session.get("user")
    if not isinstance(data, dict):
        return None
    try:
        return User(**data)
    except TypeError:  # a session from an older layout: sign in again
        return None


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 20:
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


class CsrfError(Exception):
    pass


async def checked_form(request: Request, **limits: Any) -> FormData:
    """The POSTed form, once its CSRF token matches this session's; CsrfError otherwise."""
    form = await request.form(**limits)
    sent = form.get("csrf")
    expected = request.session.get("csrf")
    if not isinstance(sent, str) or not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        await form.close()
        raise CsrfError
    return form


def signed_in(*roles: str) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
    """Handler decorator: the signed-in user with one of ``roles`` is passed on; anyone else is sent to sign in
    (no session) or refused (another role). Forms posted without the session's CSRF token get 403."""
    def wrap(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        async def endpoint(edge, request: Request) -> Response:  # type: ignore[no-untyped-def]
            user = current_user(request)
            if user is None:
                return RedirectResponse("/signin", status_code=303)
            if user.role not in roles:
                return edge.error(request, 403, "无权访问", "This page is not for your role.")
            try:
                return await handler(edge, request, user)
            except CsrfError:
                return edge.error(request, 403, "页面已过期", "This form has expired; go back, reload and try again.")
            except grpc.aio.AioRpcError as err:
                return refused(edge, request, err)
        return endpoint
    return wrap


def refused(edge, request: Request, err: grpc.aio.AioRpcError) -> Response:  # type: ignore[no-untyped-def]
    """What a signed-in page shows when a service says no."""
    code = err.code()
    if code is grpc.StatusCode.UNAUTHENTICATED:  # the token was revoked: sign in again
        request.session.clear()
        return RedirectResponse("/signin", status_code=303)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return edge.error(request, 403, "无权访问", err.details() or "Not allowed.")
    if code is grpc.StatusCode.NOT_FOUND:
        return edge.error(request, 404, "不存在", err.details() or "Not found.")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED,
                grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.OUT_OF_RANGE):
        return edge.error(request, 400 if code is not grpc.StatusCode.ABORTED else 409, "无法完成",
                          err.details() or code.name)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return edge.error(request, 429, "请稍后再试", err.details() or "Too many requests.")
    edge.log_unavailable(request, code)
    return edge.error(request, 503, "请稍后再试", "A service is not answering; try again in a moment.")


async def signin_page(edge, request: Request) -> Response:  # type: ignore[no-untyped-def]
    """GET /signin?token=… signs in and redirects; /signin alone shows a form to paste the token into."""
    token = request.query_params.get("token", "")
    if token:
        return await _sign_in(edge, request, token)
    user = current_user(request)
    if user is not None:
        return RedirectResponse(HOMES[user.role], status_code=303)
    return edge.page(request, "signin.html", {"csrf": csrf_token(request), "problem": ""})


async def signin_post(edge, request: Request) -> Response:  # type: ignore[no-untyped-def]
    try:
        form = await checked_form(request, max_part_size=MAX_FORM_BYTES)
    except CsrfError:
        return edge.error(request, 403, "页面已过期", "This form has expired; reload and try again.")
    token = form.get("token")
    return await _sign_in(edge, request, token.strip() if isinstance(token, str) else "")


async def _sign_in(edge, request: Request, token: str) -> Response:  # type: ignore[no-untyped-def]
    def again(problem: str, status: int) -> Response:
        return edge.page(request, "signin.html", {"csrf": csrf_token(request), "problem": problem}, status=status)

    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        return again("登录链接无效。This sign-in link is not valid.", 400)
    b = edge.backends
    try:
        me = await b.call(b.identity.GetUser, ipb.GetUserRequest(name="users/me"), b.metadata(request_id(request), token))
    except grpc.aio.AioRpcError as err:
        if err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT):
            return again("登录链接无效或已被撤销。This sign-in link is not valid or was revoked.", 401)
        edge.log_unavailable(request, err.code())
        return again("暂时无法登录，请稍后再试。Sign-in is unavailable; try again in a moment.", 503)
    role = ROLE_NAMES.get(me.role)
    if role is None:  # a machine principal (the edge's own token) has no pages
        return again("这个令牌不能用于登录。This token cannot sign in to pages.", 403)
    request.session.clear()  # a fresh session (and CSRF token) for whoever signs in
    request.session["user"] = User(me.name, me.display_name, role, me.rep, me.team, token).__dict__
    csrf_token(request)
    return RedirectResponse(HOMES[role], status_code=303)


async def signout(edge, request: Request) -> Response:  # type: ignore[no-untyped-def]
    try:
        await checked_form(request, max_part_size=MAX_FORM_BYTES)
    except CsrfError:
        return edge.error(request, 403, "页面已过期", "This form has expired; reload and try again.")
    request.session.clear()
    return RedirectResponse("/signin", status_code=303)
