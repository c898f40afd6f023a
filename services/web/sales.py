"""The sales console: the team's leads for today, a contact's profile (tags with their evidence, the timeline of
reads), and live activity across the team's reps. A rep sees the same profile page for their own contacts.

Calls carry the signed-in user's token: the tracking service lets a manager see
only their team's contacts and a rep only their own.
"""

from __future__ import annotations

import asyncio

import grpc
from starlette.requests import Request
from starlette.responses import Response

from services.protos.contentops.content.v1 import content_pb2 as cpb
from services.protos.contentops.distribution.v1 import distribution_pb2 as dpb
from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb

from . import live
from .backends import request_id
from .rep import lead_view
from .sessions import User, signed_in

MAX_TEAM_REPS = 100
LEADS_PER_REP = 20
LEADS_SHOWN = 60
_ID_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz")


def _md(edge, request: Request, user: User) -> tuple[tuple[str, str], ...]:  # type: ignore[no-untyped-def]
    return edge.backends.metadata(request_id(request), user.token)


async def _team_reps(edge, request: Request, user: User) -> list[dpb.Rep]:  # type: ignore[no-untyped-def]
    b = edge.backends
    listed = await b.call(b.distribution.ListReps, dpb.ListRepsRequest(team=user.team, page_size=MAX_TEAM_REPS),
                          _md(edge, request, user))
    return list(listed.reps)


@signed_in("sales")
async def home(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    if not user.team:
        return edge.error(request, 403, "未分配团队", "Your account does not manage a team yet; ask headquarters.")
    md = _md(edge, request, user)
    reps = await _team_reps(edge, request, user)
    answers = await asyncio.gather(*(_leads(edge, r.name, md) for r in reps))
    pairs = [(lead, r.display_name) for r, a in zip(reps, answers, strict=True) for lead in a]
    leads = sorted(pairs, key=lambda pair: -pair[0].score)[:LEADS_SHOWN]
    return edge.page(request, "sales_home.html", {
        "leads": [lead_view(lead, rep_name) for lead, rep_name in leads],
        "reps": len(reps), "watching": min(len(reps), live.MAX_WATCHED)})


async def _leads(edge, rep: str, md: tuple[tuple[str, str], ...]) -> list[tpb.Lead]:  # type: ignore[no-untyped-def]
    """A team rep's leads; none for a rep the tracking service has not seen a view or a link of yet (it cannot
    tell their team, so it refuses: there is nothing to show either way)."""
    b = edge.backends
    try:
        return list((await b.call(b.tracking.ListLeads, tpb.ListLeadsRequest(parent=rep, page_size=LEADS_PER_REP), md)).leads)
    except grpc.aio.AioRpcError as err:
        if err.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND):
            return []
        raise


@signed_in("sales")
async def activity(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    if not user.team:
        return edge.error(request, 403, "未分配团队", "Your account does not manage a team yet.")
    reps = await _team_reps(edge, request, user)
    return live.stream(edge, request, user, [r.name for r in reps])


@signed_in("rep", "sales", "admin")
async def profile(edge, request: Request, user: User) -> Response:  # type: ignore[no-untyped-def]
    rep_id, contact_id = request.path_params["rep_id"], request.path_params["contact_id"]
    if not (set(rep_id) <= _ID_CHARS and set(contact_id) <= _ID_CHARS and 0 < len(rep_id) <= 26 and 0 < len(contact_id) <= 26):
        return edge.error(request, 404, "不存在", "No such contact.")
    b = edge.backends
    md = _md(edge, request, user)
    p = await b.call(b.tracking.GetContactProfile, tpb.GetContactProfileRequest(
        name=f"reps/{rep_id}/contacts/{contact_id}"), md)
    names = await _topic_names(edge, md)
    top = max((s.score for s in p.topic_scores), default=0.0) or 1.0
    return edge.page(request, "contact.html", {
        "contact": p.contact,
        "tags": [{"label": t.label or names.get(t.topic, t.topic), "topic": names.get(t.topic, t.topic),
                  "evidence": [e.description for e in t.evidence]} for t in p.tags],
        "timeline": [{"description": e.description, "title": e.post_title, "seconds": e.engaged_seconds,
                      "completeness": round(e.completeness * 100)} for e in p.timeline],
        "scores": [{"topic": names.get(s.topic, s.topic), "score": s.score, "width": _width(s.score / top)}
                   for s in p.topic_scores[:8]],
        "back": "/rep" if user.role == "rep" else "/sales",
    })


def _width(fraction: float) -> int:
    """A bar width class (w0 … w100 in steps of 5): the CSP allows no inline styles."""
    return max(0, min(100, round(fraction * 20) * 5))


async def _topic_names(edge, md: tuple[tuple[str, str], ...]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    b = edge.backends
    try:
        listed = await b.call(b.content.ListTopics, cpb.ListTopicsRequest(page_size=200), md)
    except grpc.aio.AioRpcError:
        return {}  # names are a nicety: the page shows topic ids rather than fail
    return {t.name: t.display_name for t in listed.topics}


ROUTES = [
    ("/sales", home, ["GET"], "sales"),
    ("/sales/activity", activity, ["GET"], "sales_activity"),
    ("/contacts/{rep_id}/{contact_id}", profile, ["GET"], "contact"),
]
