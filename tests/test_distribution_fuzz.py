"""Bad input, authorisation and broken backends for the distribution gRPC service.

Fuzzing (every RPC of DistributionService, listed from the proto descriptor, so a
new RPC is fuzzed without touching this file), on the embedded and production
backends, against a server seeded with teams, reps linked to rep users, a draft
and two published posts whose copies are rendered, and the real names of those
copies' images:

- raw bytes: random bytes, hand-encoded fields with wrong wire types, lying
  lengths and invalid UTF-8, and slightly damaged valid requests;
- well-typed hostile messages: control characters, bidi controls, huge strings,
  real and mangled resource and copy-image names, forged page tokens, random
  field masks, out-of-range numbers;
- each sent as admin, editor, rep, sales or with no / a revoked / a garbage token.

Whatever is sent, the answer is never INTERNAL or UNKNOWN, INVALID_ARGUMENT names
its field, callers whose role may not call the RPC are refused at the door
whatever the body (PERMISSION_DENIED, or UNAUTHENTICATED without a valid token),
and afterwards the seeded rep's copy reads back unchanged and ListReps works.

Then an explicit roles x RPCs matrix (with "own copy only" for reps, and a rep
whose user link moved to another user), and the failure paths: the database
down, the blob store down or failing mid on-demand render (the copy stays
pending, a retry renders it), a copy failing on its second image (nothing of
its first is left in the store), rep templates that break only at render time
(failed with a reason, never served half-rendered), and a redelivered
PostPublishedEvent (one campaign, no duplicate copies).

FUZZ_EXAMPLES=1000 runs a deeper hunt locally (100 per property by default).
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select

from services.distribution.__main__ import build_server
from services.distribution.api import distribution_spec
from services.distribution.app import DistributionApp
from services.distribution.models import CampaignRow, CopyRow
from services.distribution.service import Fanout
from services.protos.contentops.content.v1 import content_pb2 as cpb
from services.protos.contentops.content.v1 import events_pb2
from services.protos.contentops.distribution.v1 import distribution_pb2 as pb
from services.protos.contentops.distribution.v1 import distribution_pb2_grpc as pb_grpc
from services.shared.errors import Unavailable
from services.shared.grpcserver import GrpcServer
from services.shared.identity.domain import Principal, Role
from services.shared.ids import new_id
from services.shared.settings import Settings, load_settings

from . import infra
from .helpers import jpeg, upload_messages
from .test_api_fuzz import (
    REVISION_NUMBERS,
    Metadata,
    Seed,
    all_strings,
    assert_clean,
    hostile_text,
    ids,
    invoke,
    message_class,
    mutated,
    numbers,
    page_tokens,
    path_of,
    proto_messages,
    raw_message,
    resource_names,
    use_non_utc_database_timezone,
    weighted,
    well_known,
)
from .test_distribution_api import Dist, NoFanout

SERVICE = pb.DESCRIPTOR.services_by_name["DistributionService"]
METHODS: list[MethodDescriptor] = list(SERVICE.methods)
OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

FUZZ = hsettings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Who may call what: written out here, not read from api.ROLES, so a change there must be deliberate.
MANAGERS = {"admin", "editor"}
EVERYONE = {"admin", "editor", "rep", "sales"}
ALLOWED: dict[str, set[str]] = {
    "CreateRep": MANAGERS,
    "GetRep": EVERYONE,
    "ListReps": {"admin", "editor", "sales"},
    "UpdateRep": MANAGERS,
    "CreateTeam": MANAGERS,
    "ListTeams": EVERYONE,
    "GetRepCopy": {"admin", "rep"},  # a rep only their own (checked below); editors use PreviewCopies
    "ListRepPosts": {"admin", "rep"},  # a rep only their own (checked below)
    "DownloadCopyImage": {"admin", "rep"},
    "PreviewCopies": MANAGERS,
    "GetCampaignStatus": MANAGERS,
    "GetDistinctnessReport": MANAGERS,
}
# Tokens the fuzzer sends, and the role each one authenticates as ("" = not authenticated).
ROLE_OF = {"admin": "admin", "editor": "editor", "rep": "rep", "rep_b": "rep", "rep_unlinked": "rep",
           "sales": "sales", "none": "", "revoked": "", "garbage": "", "forged": ""}

BODY = ("[[亲爱的家长们|各位爸爸妈妈]]，本周六早教中心开放日！体验课 ¥99/节，名额有限。\n"
        "咨询电话 400-820-1234，报名 https://example.com/open #早教 @小小探索家")
PROTECTED = ["早教中心开放日"]
TEMPLATE = "{{ body }}\n—— {{ rep.display_name }}｜{{ rep.store }}"


# ---- the seeded world --------------------------------------------------------------------


@dataclass
class World:
    d: Dist
    seed: Seed  # md, names, etags, page tokens and valid requests, as test_api_fuzz's helpers expect
    post: str  # published to every rep; every copy rendered
    east_post: str  # published to teams/east only
    draft: str
    rep_a: pb.Rep  # teams/east, linked to md["rep"]
    rep_b: pb.Rep  # teams/west, linked to md["rep_b"]
    rep_c: pb.Rep  # no team, no user
    copy_a: pb.RepCopy
    copy_b: pb.RepCopy
    users: dict[str, Principal]


def publish(d: Dist, images: int, teams: list[str] | None = None) -> str:
    h: Any = d.harness
    assets = [h.content.UploadAsset(upload_messages(jpeg(i + 3, (120, 90)), f"p{i}.jpg"), metadata=d.editor).name
              for i in range(images)]
    content = cpb.PostContent(title="开放日", body=BODY, images=assets, target_teams=teams or [],
                              variation=cpb.VariationSettings(protected_phrases=PROTECTED, rep_template=TEMPLATE,
                                                              badge_enabled=True))
    post = h.content.CreatePost(cpb.CreatePostRequest(content=content), metadata=d.editor)
    h.content.PublishPost(cpb.PublishPostRequest(name=post.name), metadata=d.editor)
    d.settle()
    return post.name


def world(d: Dist) -> World:
    cached = getattr(d, "_fuzz_world", None)
    if cached is not None:
        return cached
    h: Any = d.harness
    users: dict[str, Principal] = {}
    md: dict[str, Metadata] = {"admin": d.admin, "editor": d.editor, "sales": h.md(Role.SALES), "none": ()}
    for key in ("rep", "rep_b", "rep_unlinked", "rep_spare"):
        users[key], md[key] = h.user(Role.REP, key)
    revoked, token, secret = h.app.identity.create_user("revoked", Role.EDITOR)
    h.app.identity.revoke_token(revoked.id, token.id)
    md["revoked"] = (("authorization", f"Bearer {secret}"),)
    md["garbage"] = (("authorization", "Bearer not-a-token"),)
    md["forged"] = (("authorization", "Bearer co_" + "a" * 26 + "_" + "b" * 43),)
    s = d.stub
    for team_id, title in (("east", "华东"), ("west", "西部")):
        s.CreateTeam(pb.CreateTeamRequest(team=pb.Team(name=f"teams/{team_id}", display_name=title)), metadata=d.admin)

    def rep(name: str, team: str, user: str) -> pb.Rep:
        return s.CreateRep(pb.CreateRepRequest(rep=pb.Rep(display_name=name, signature="祝您生活愉快", store="徐汇店",
                                                          region="上海", team=team, user=user)), metadata=d.admin)

    rep_a = rep("小王", "teams/east", users["rep"].name)
    rep_b = rep("小李", "teams/west", users["rep_b"].name)
    rep_c = rep("小张", "", "")
    post = publish(d, images=2)
    east_post = publish(d, images=1, teams=["teams/east"])
    draft = h.content.CreatePost(cpb.CreatePostRequest(content=cpb.PostContent(title="草稿", body="还没发布")),
                                 metadata=d.editor).name
    copy_a = s.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=rep_a.name), metadata=md["rep"])
    copy_b = s.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=rep_b.name), metadata=md["rep_b"])
    assert len(copy_a.images) == 2 and copy_a.text and copy_a.text != copy_b.text

    seeded = Seed(md=md)
    seeded.page_tokens = [t for t in (
        s.ListReps(pb.ListRepsRequest(page_size=1), metadata=d.editor).next_page_token,
        s.ListTeams(pb.ListTeamsRequest(page_size=1), metadata=d.editor).next_page_token,
    ) if t]
    assert len(seeded.page_tokens) == 2
    asset = h.content.GetPost(cpb.GetPostRequest(name=post), metadata=d.editor).content.images[0]
    seeded.names = [
        post, east_post, draft, f"{post}/revisions/1", f"{post}/revisions/2",
        rep_a.name, rep_b.name, rep_c.name, "reps/" + "a" * 26, "reps/" + "a" * 63,
        "teams/east", "teams/west", "teams/nope",
        users["rep"].name, users["rep_b"].name, users["rep_unlinked"].name, "users/" + "b" * 26,
        asset, "assets/" + "c" * 26, "assets/" + "c" * 63,
        copy_a.name, copy_b.name, *(i.name for i in copy_a.images), *(i.name for i in copy_b.images),
        f"{copy_a.name}/images/2", f"{copy_a.name}/images/999999999", f"{east_post}/revisions/1/copies/"
        f"{rep_a.name.split('/')[1]}/images/0", f"{copy_a.name.replace('/revisions/1/', '/revisions/2/')}/images/0",
    ]
    seeded.etags = [rep_a.etag, rep_b.etag, rep_c.etag]

    def m(name: str) -> MethodDescriptor:
        return SERVICE.methods_by_name[name]

    seeded.valid_requests = [
        (m("CreateRep"), pb.CreateRepRequest(rep=pb.Rep(display_name="新人", store="静安店", team="teams/east"),
                                             request_id=str(uuid.uuid4())).SerializeToString()),
        (m("GetRep"), pb.GetRepRequest(name=rep_a.name).SerializeToString()),
        (m("ListReps"), pb.ListRepsRequest(page_size=1, page_token=seeded.page_tokens[0]).SerializeToString()),
        (m("UpdateRep"), pb.UpdateRepRequest(rep=pb.Rep(name=rep_c.name, store="新店", etag=rep_c.etag),
                                             update_mask={"paths": ["store"]}).SerializeToString()),
        (m("CreateTeam"), pb.CreateTeamRequest(team=pb.Team(display_name="华南")).SerializeToString()),
        (m("ListTeams"), pb.ListTeamsRequest(page_size=1, page_token=seeded.page_tokens[1]).SerializeToString()),
        (m("GetRepCopy"), pb.GetRepCopyRequest(post=post, rep=rep_a.name).SerializeToString()),
        (m("ListRepPosts"), pb.ListRepPostsRequest(parent=rep_a.name, page_size=1).SerializeToString()),
        (m("DownloadCopyImage"), pb.DownloadCopyImageRequest(name=copy_a.images[1].name).SerializeToString()),
        (m("PreviewCopies"), pb.PreviewCopiesRequest(post=post, sample_reps=[rep_a.name, rep_c.name])
         .SerializeToString()),
        (m("GetCampaignStatus"), pb.GetCampaignStatusRequest(post=east_post).SerializeToString()),
        (m("GetDistinctnessReport"), pb.GetDistinctnessReportRequest(post=post).SerializeToString()),
    ]
    assert {mm.name for mm, _ in seeded.valid_requests} == {mm.name for mm in METHODS}
    w = World(d, seeded, post, east_post, draft, rep_a, rep_b, rep_c, copy_a, copy_b, users)
    d._fuzz_world = w  # type: ignore[attr-defined]
    return w


def serve_dist(harness: Any, fanout: Fanout | None) -> Iterator[Dist]:
    """test_distribution_api's harness (content + distribution in this process), keeping the
    channel so raw bytes can be sent to any method."""
    app = DistributionApp.build(harness.app.settings, blobs=harness.app.blobs, fanout=fanout, migrate=True)
    harness.events.subscribe_all(app.service.event_handlers())
    server = build_server(app, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    d = Dist(harness, app, pb_grpc.DistributionServiceStub(channel), harness.md(Role.ADMIN), harness.md(Role.EDITOR))
    d.channel = channel  # type: ignore[attr-defined]
    try:
        yield d
    finally:
        channel.close()
        server.stop(grace=1)
        app.close()


@pytest.fixture
def fz(harness: Any) -> Iterator[Dist]:
    """Copies rendered by the in-process pool when a post is published."""
    yield from serve_dist(harness, None)


@pytest.fixture
def lazy_fz(harness: Any) -> Iterator[Dist]:
    """No workers: every copy renders on demand."""
    yield from serve_dist(harness, NoFanout())


# ---- strategies ---------------------------------------------------------------------------

NAME_FIELDS = {"name": "", "post": "posts", "rep": "reps", "sample_reps": "reps", "team": "teams",
               "user": "users", "contact_qr_asset": "assets"}
REP_TEXT_FIELDS = {"display_name", "signature", "store", "region"}
REP_MASK_PATHS = ["display_name", "signature", "store", "region", "team", "contact_qr_asset", "user", "*", "name",
                  "etag", "create_time", "", "rep.display_name", "display_name.x", "*.*"]


NAME_KINDS = {"GetRepRequest": "reps", "Rep": "reps", "Team": "teams", "DownloadCopyImageRequest": "images"}


def names_for(f: FieldDescriptor, w: World) -> st.SearchStrategy[str]:
    """Real names of the kind the field takes (a rep's name for GetRepRequest.name, and so on)."""
    kind = NAME_KINDS.get(f.containing_type.name, "") if f.name == "name" else NAME_FIELDS[f.name]
    if kind == "images":
        pool = [n for n in w.seed.names if "/images/" in n]
    else:
        pool = [n for n in w.seed.names if n.startswith(f"{kind}/") and n.count("/") == 1]
    return st.sampled_from(pool or w.seed.names)


def hostile_names(w: World) -> st.SearchStrategy[str]:
    real_posts = [n.split("/")[1] for n in (w.post, w.east_post, w.draft)]
    real_reps = [r.name.split("/")[1] for r in (w.rep_a, w.rep_b, w.rep_c)]
    post_ids = st.one_of(st.sampled_from(real_posts), ids)
    rep_ids = st.one_of(st.sampled_from(real_reps), ids)
    return st.one_of(
        resource_names(w.seed),
        st.builds(lambda i: f"teams/{i}", ids),
        st.builds(lambda p, n, r, i: f"posts/{p}/revisions/{n}/copies/{r}/images/{i}",
                  post_ids, REVISION_NUMBERS, rep_ids, REVISION_NUMBERS),
        st.builds(lambda p, n, r: f"posts/{p}/revisions/{n}/copies/{r}", post_ids, REVISION_NUMBERS, rep_ids),
        st.builds(lambda n, cut: n[: cut % (len(n) + 1)], st.sampled_from(w.seed.names), st.integers(0, 200)),
        st.builds(lambda n, a, b: n.replace(a, b), st.sampled_from(w.seed.names),
                  st.sampled_from(["/", "posts", "reps", "images", "copies", "revisions"]),
                  st.sampled_from(["//", "", "x", "/../", "POSTS", "reps/", "%2F"])),
    )


def plausible(f: FieldDescriptor, w: World) -> st.SearchStrategy[str]:
    field_name = f.name
    if field_name in NAME_FIELDS:
        return weighted(names_for(f, w), st.sampled_from(w.seed.names))
    if field_name == "page_token":
        return st.sampled_from(["", *w.seed.page_tokens])
    if field_name == "etag":
        return st.sampled_from(["", *w.seed.etags])
    if field_name == "request_id":
        return st.one_of(st.just(""), st.uuids().map(str))
    return st.text(alphabet="abc xyz-中文店😀", min_size=1, max_size=45)


def hostile(f: FieldDescriptor, w: World) -> st.SearchStrategy[str]:
    field_name = f.name
    if field_name in NAME_FIELDS:
        return hostile_names(w)
    if field_name == "page_token":
        return page_tokens(w.seed)
    if field_name == "etag":
        return st.one_of(st.from_regex(r"[0-9a-f]{16}", fullmatch=True), hostile_text)
    if field_name == "request_id":
        return st.one_of(st.uuids().map(lambda u: u.hex), st.uuids().map(lambda u: "{" + str(u) + "}"), hostile_text)
    if field_name in REP_TEXT_FIELDS:  # around the length limits (40/60/120), and anything
        return st.one_of(hostile_text, st.builds(lambda c, n: c * n, st.sampled_from(["a", "中", "😀", " "]),
                                                  st.sampled_from([39, 40, 41, 59, 60, 61, 119, 120, 121])))
    return hostile_text


def scalar(f: FieldDescriptor, w: World) -> st.SearchStrategy[Any]:
    if (number := numbers(f, (0, -1, 1, 500, 501, 1000, 1001))) is not None:
        return number
    if f.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    return weighted(plausible(f, w), hostile(f, w))


def messages(desc: Descriptor, w: World, sparse: bool = False) -> st.SearchStrategy[Any]:
    """Random, well-typed instances of ``desc`` with hostile values in every field."""
    return proto_messages(desc, lambda f: scalar(f, w), special=well_known(REP_MASK_PATHS), sparse=sparse,
                          dense=(True, True, False), repeated_sizes=(3, 3, 3, 25))  # 25: past PreviewCopies' 20


def tokens(w: World) -> st.SearchStrategy[str]:
    """Which token to send: mostly a manager's (to get past the door), every role and none too."""
    kinds = ["admin"] * 6 + ["editor"] * 3 + ["rep"] * 3 + ["sales", "rep_b", "rep_unlinked", "none", "bad"]
    return st.sampled_from(kinds).flatmap(
        lambda k: st.sampled_from(["revoked", "garbage", "forged"]) if k == "bad" else st.just(k))


# ---- checks -------------------------------------------------------------------------------


def check_door(method: MethodDescriptor, who: str, code: grpc.StatusCode, details: str) -> None:
    """Callers without a valid token, or whose role may not call the RPC, never get past the door."""
    role = ROLE_OF[who]
    if not role:
        assert code == UNAUTHENTICATED, (method.name, who, code, details)
    elif role not in ALLOWED[method.name]:
        assert code == DENIED, (method.name, who, code, details)


def still_works(w: World) -> None:
    """Nothing sent may poison later reads: the seeded copy is unchanged and streams, listing works."""
    s, admin = w.d.stub, w.seed.md["admin"]
    again = s.GetRepCopy(pb.GetRepCopyRequest(post=w.post, rep=w.rep_a.name), metadata=admin)
    assert (again.name, again.text, again.share_token, [i.sha256 for i in again.images]) == (
        w.copy_a.name, w.copy_a.text, w.copy_a.share_token, [i.sha256 for i in w.copy_a.images])
    data = b"".join(m.chunk for m in s.DownloadCopyImage(
        pb.DownloadCopyImageRequest(name=w.copy_a.images[0].name), metadata=admin))
    assert hashlib.sha256(data).hexdigest() == w.copy_a.images[0].sha256
    listed = s.ListReps(pb.ListRepsRequest(page_size=1000), metadata=w.seed.md["sales"])
    assert {w.rep_a.name, w.rep_b.name, w.rep_c.name} <= {r.name for r in listed.reps}
    s.ListTeams(pb.ListTeamsRequest(page_size=1000), metadata=w.seed.md["rep"])


def prepare(fz: Dist) -> World:
    w = world(fz)
    if not getattr(fz, "_fuzz_tz", False):  # PostgreSQL's default time zone ahead of UTC (test_api_fuzz)
        use_non_utc_database_timezone(fz.harness)
        fz.app.db.engine.dispose()
        fz._fuzz_tz = True  # type: ignore[attr-defined]
    return w


# ---- 1. fuzzing -------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_raw_bytes_never_give_internal(fz: Dist, data: st.DataObject) -> None:
    w = prepare(fz)
    method = data.draw(st.sampled_from(METHODS), label="method")
    who = data.draw(tokens(w), label="token")
    payload = data.draw(st.one_of(st.binary(max_size=300), raw_message(method.input_type)), label="body")
    if data.draw(st.integers(0, 3), label="mutate") == 0:  # a valid request, slightly damaged
        method, payload = data.draw(mutated(w.seed), label="mutated")
    code, details = invoke(fz.channel, method, payload, w.seed.md[who])
    event(code.name)
    event(f"{method.name}: {code.name}")
    assert_clean(method, code, details, payload)
    check_door(method, who, code, details)
    still_works(w)


@FUZZ
@given(data=st.data())
def test_hostile_messages_never_give_internal(fz: Dist, data: st.DataObject) -> None:
    w = prepare(fz)
    method = data.draw(st.sampled_from(METHODS), label="method")
    who = data.draw(tokens(w), label="token")
    request = data.draw(messages(method.input_type, w), label="request")
    if data.draw(st.booleans(), label="start from a valid request"):
        valid = next(v for m, v in w.seed.valid_requests if m.name == method.name)
        request = message_class(method.input_type).FromString(valid)
        request.MergeFrom(data.draw(messages(method.input_type, w, sparse=True), label="changes"))
    code, details = invoke(fz.channel, method, request.SerializeToString(), w.seed.md[who])
    event(code.name)
    event(f"{method.name}: {code.name}")
    assert_clean(method, code, details, request)
    check_door(method, who, code, details)
    still_works(w)


def test_every_rpc_survives_canned_hostile_requests(fz: Dist) -> None:
    """A fixed sweep so no RPC is left to chance: every string field at every depth set to one
    hostile value, as an admin; each RPC must get past the door for an admin."""
    w = world(fz)

    values = ["\x00", "é" * 3000, "posts/\u202e", "a" * 64, "reps/x\n", "teams/east\n", "assets/" + "c" * 63,
              "users/" + "d" * 63, w.copy_a.images[0].name + "\n", w.copy_a.images[0].name.replace("images/0", "images/00"),
              w.copy_a.images[0].name.replace("revisions/1", "revisions/١"), "posts/a/revisions/1/copies/b/images/-1"]
    for method in METHODS:
        reached = False
        for body in [b"", b"\xff", b"\x0a\x02\xff\xfe", b"\x0a\x80", b"\x12\x7f",
                     *(all_strings(method.input_type, v).SerializeToString() for v in values)]:
            code, details = invoke(fz.channel, method, body, w.seed.md["admin"])
            assert_clean(method, code, details, body)
            reached |= code not in {DENIED, UNAUTHENTICATED}
        assert reached, f"{path_of(method)} refuses even an admin"
    still_works(w)


@pytest.mark.parametrize(("field", "expected"), [("contact_qr_asset", grpc.StatusCode.INVALID_ARGUMENT),
                                               ("user", grpc.StatusCode.NOT_FOUND),
                                               ("team", grpc.StatusCode.NOT_FOUND)])
def test_rep_links_longer_than_their_columns_are_refused_not_internal(fz: Dist, field: str,
                                                                      expected: grpc.StatusCode) -> None:
    """A well-formed id (up to 63 characters) longer than the stored column (26 for asset and
    user ids) is refused on create and update, on PostgreSQL as on SQLite (which would store it)."""
    w = world(fz)
    value = f"{NAME_FIELDS[field]}/" + "a" * 63
    attempts = [
        lambda: fz.stub.CreateRep(pb.CreateRepRequest(rep=pb.Rep(display_name="长链接", **{field: value})),
                                  metadata=w.seed.md["admin"]),
        lambda: fz.stub.UpdateRep(pb.UpdateRepRequest(rep=pb.Rep(name=w.rep_c.name, **{field: value}),
                                                      update_mask={"paths": [field]}), metadata=w.seed.md["admin"]),
    ]
    for attempt in attempts:
        code, details = rpc_code(attempt)
        assert code == expected, details
        if expected == grpc.StatusCode.INVALID_ARGUMENT:
            assert details.startswith(f"rep.{field}:"), details
    assert fz.stub.GetRep(pb.GetRepRequest(name=w.rep_c.name), metadata=w.seed.md["admin"]) == w.rep_c
    still_works(w)


def test_linking_a_user_another_rep_took_meanwhile_is_already_exists(fz: Dist) -> None:
    """Two UpdateReps linking one user to two reps at once: both pass the identity check, and the
    second must get ALREADY_EXISTS from the unique column, not INTERNAL. (The race is staged by
    clearing the user's identity link, as if the first update had not reached identity yet.)"""
    w = world(fz)
    taken = w.users["rep_b"]  # linked to rep B
    fz.app.identity.link_rep(taken.id, "")
    code, details = rpc_code(lambda: fz.stub.UpdateRep(pb.UpdateRepRequest(
        rep=pb.Rep(name=w.rep_c.name, user=taken.name), update_mask={"paths": ["user"]}), metadata=w.seed.md["admin"]))
    assert code == grpc.StatusCode.ALREADY_EXISTS, details
    assert fz.stub.GetRep(pb.GetRepRequest(name=w.rep_c.name), metadata=w.seed.md["admin"]).user == ""


# ---- 2. the authorisation matrix --------------------------------------------------------------------


def call(d: Dist, name: str, request: Any, md: Metadata) -> tuple[grpc.StatusCode, str]:
    try:
        result = getattr(d.stub, name)(request, metadata=md)
        if name == "DownloadCopyImage":
            list(result)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""  # type: ignore[attr-defined]
    return OK, ""


def valid_request(w: World, name: str) -> Any:
    """A fresh request each RPC answers OK for an allowed caller (the rep asks for their own copy)."""
    tag = uuid.uuid4().hex[:8]
    return {
        "CreateRep": lambda: pb.CreateRepRequest(rep=pb.Rep(display_name=f"新人{tag}", team="teams/east")),
        "GetRep": lambda: pb.GetRepRequest(name=w.rep_a.name),
        "ListReps": lambda: pb.ListRepsRequest(team="teams/east"),
        "UpdateRep": lambda: pb.UpdateRepRequest(rep=pb.Rep(name=w.rep_c.name, region=f"区{tag}"),
                                                 update_mask={"paths": ["region"]}),
        "CreateTeam": lambda: pb.CreateTeamRequest(team=pb.Team(display_name=f"队{tag}")),
        "ListTeams": lambda: pb.ListTeamsRequest(),
        "GetRepCopy": lambda: pb.GetRepCopyRequest(post=w.post, rep=w.rep_a.name),
        "ListRepPosts": lambda: pb.ListRepPostsRequest(parent=w.rep_a.name),
        "DownloadCopyImage": lambda: pb.DownloadCopyImageRequest(name=w.copy_a.images[0].name),
        "PreviewCopies": lambda: pb.PreviewCopiesRequest(post=w.post, sample_reps=[w.rep_a.name, w.rep_b.name]),
        "GetCampaignStatus": lambda: pb.GetCampaignStatusRequest(post=w.post),
        "GetDistinctnessReport": lambda: pb.GetDistinctnessReportRequest(post=w.post),
    }[name]()


def test_authorisation_matrix(fz: Dist) -> None:
    w = world(fz)
    md = w.seed.md
    assert set(ALLOWED) == {m.name for m in METHODS}
    for method in METHODS:
        for role in ("admin", "editor", "rep", "sales"):
            code, details = call(fz, method.name, valid_request(w, method.name), md[role])
            expected = OK if role in ALLOWED[method.name] else DENIED
            assert code == expected, (method.name, role, code, details)
        for who in ("none", "revoked", "garbage", "forged"):
            code, details = call(fz, method.name, valid_request(w, method.name), md[who])
            assert code == UNAUTHENTICATED, (method.name, who, code, details)

    # A rep: their own copies only, and only of posts that target them.
    own_east = call(fz, "GetRepCopy", pb.GetRepCopyRequest(post=w.east_post, rep=w.rep_a.name), md["rep"])
    assert own_east[0] == OK, own_east
    for who, rep, post in (("rep", w.rep_b, w.post), ("rep_b", w.rep_a, w.post), ("rep_b", w.rep_a, w.east_post),
                           ("rep_unlinked", w.rep_a, w.post), ("rep", w.rep_c, w.post),
                           ("rep_b", w.rep_b, w.east_post)):  # the last: rep B's own, but east_post skips west
        code, details = call(fz, "GetRepCopy", pb.GetRepCopyRequest(post=post, rep=rep.name), md[who])
        assert code == DENIED, (who, rep.name, post, code, details)
    for who, image in (("rep", w.copy_b.images[0].name), ("rep_b", w.copy_a.images[1].name),
                       ("rep_unlinked", w.copy_a.images[0].name)):
        code, details = call(fz, "DownloadCopyImage", pb.DownloadCopyImageRequest(name=image), md[who])
        assert code == DENIED, (who, image, code, details)
    for who, rep in (("rep", w.rep_b), ("rep_b", w.rep_a), ("rep_unlinked", w.rep_a)):
        code, details = call(fz, "ListRepPosts", pb.ListRepPostsRequest(parent=rep.name), md[who])
        assert code == DENIED, (who, rep.name, code, details)
    # Someone else's copy is refused before anything about it is looked up (no probing).
    for rep in ("reps/nobody", "reps/" + "z" * 26):
        code, _ = call(fz, "GetRepCopy", pb.GetRepCopyRequest(post=w.post, rep=rep), md["rep"])
        assert code == DENIED
        assert call(fz, "ListRepPosts", pb.ListRepPostsRequest(parent=rep), md["rep"])[0] == DENIED
    assert call(fz, "GetRepCopy", pb.GetRepCopyRequest(post=w.draft, rep=w.rep_a.name), md["rep"])[0] == (
        grpc.StatusCode.FAILED_PRECONDITION)

    # Moving rep A's login to another user moves access with it: the old user is refused.
    moved = fz.stub.UpdateRep(pb.UpdateRepRequest(rep=pb.Rep(name=w.rep_a.name, user=w.users["rep_spare"].name),
                                                  update_mask={"paths": ["user"]}), metadata=md["admin"])
    assert moved.user == w.users["rep_spare"].name
    request = pb.GetRepCopyRequest(post=w.post, rep=w.rep_a.name)
    assert call(fz, "GetRepCopy", request, md["rep_spare"])[0] == OK
    assert call(fz, "GetRepCopy", request, md["rep"])[0] == DENIED
    assert call(fz, "DownloadCopyImage", pb.DownloadCopyImageRequest(name=w.copy_a.images[0].name),
                md["rep"])[0] == DENIED
    # And unlinking it leaves nobody acting as rep A.
    fz.stub.UpdateRep(pb.UpdateRepRequest(rep=pb.Rep(name=w.rep_a.name), update_mask={"paths": ["user"]}),
                      metadata=md["admin"])
    assert call(fz, "GetRepCopy", request, md["rep_spare"])[0] == DENIED


# ---- 3. failure paths ---------------------------------------------------------------------------------


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that is bound but never listens: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def local_settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings({"CONTENTOPS_DATA_DIR": str(tmp_path / "data"), "CONTENTOPS_SECRET_KEY": "test-secret",
                          "AUTH_CACHE_SECONDS": "0", **env})


@contextmanager
def serve(app: DistributionApp, authenticate: Callable[[str, str], Principal] | None = None,
          ) -> Iterator[pb_grpc.DistributionServiceStub]:
    """The distribution server around ``app``; ``authenticate`` replaces the token check."""
    if authenticate is None:
        server = build_server(app, "127.0.0.1:0")
    else:
        server = GrpcServer([distribution_spec(app.service, app.tokens)], authenticate, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield pb_grpc.DistributionServiceStub(channel)
    finally:
        channel.close()
        server.stop(grace=1)


def rpc_code(call_: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        result = call_()
        if hasattr(result, "__next__"):
            list(result)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""  # type: ignore[attr-defined]
    return OK, ""


def every_rpc(stub: pb_grpc.DistributionServiceStub, md: Metadata) -> dict[str, Callable[[], Any]]:
    post, rep = "posts/" + "p" * 26, "reps/" + "r" * 26
    return {
        "GetRep": lambda: stub.GetRep(pb.GetRepRequest(name=rep), metadata=md),
        "ListReps": lambda: stub.ListReps(pb.ListRepsRequest(), metadata=md),
        "GetRepCopy": lambda: stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=rep), metadata=md),
        "ListRepPosts": lambda: stub.ListRepPosts(pb.ListRepPostsRequest(parent=rep), metadata=md),
        "GetCampaignStatus": lambda: stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=post), metadata=md),
        "CreateRep": lambda: stub.CreateRep(pb.CreateRepRequest(rep=pb.Rep(display_name="x")), metadata=md),
        "UpdateRep": lambda: stub.UpdateRep(pb.UpdateRepRequest(rep=pb.Rep(name=rep, store="y"),
                                                                update_mask={"paths": ["store"]}), metadata=md),
        "CreateTeam": lambda: stub.CreateTeam(pb.CreateTeamRequest(team=pb.Team(display_name="t")), metadata=md),
        "ListTeams": lambda: stub.ListTeams(pb.ListTeamsRequest(), metadata=md),
        "PreviewCopies": lambda: stub.PreviewCopies(pb.PreviewCopiesRequest(post=post, sample_reps=[rep]), metadata=md),
        "GetDistinctnessReport": lambda: stub.GetDistinctnessReport(pb.GetDistinctnessReportRequest(post=post),
                                                                    metadata=md),
        "DownloadCopyImage": lambda: stub.DownloadCopyImage(pb.DownloadCopyImageRequest(
            name=f"{post}/revisions/1/copies/{rep.split('/')[1]}/images/0"), metadata=md),
    }


def test_database_down_gives_unavailable(tmp_path: Path) -> None:
    admin = Principal(id="0" * 26, display_name="stub admin", role=Role.ADMIN)
    rep = Principal(id="1" * 26, display_name="stub rep", role=Role.REP, rep="reps/" + "r" * 26)
    md: Metadata = (("authorization", "Bearer co_" + "a" * 26 + "_" + "b" * 43),)
    with refused_port() as port:
        settings = local_settings(tmp_path, DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{port}/contentops")
        app = DistributionApp.build(settings, fanout=NoFanout(), migrate=False)
        try:
            # The token check meets the dead database first; then, stubbed out, each use case does
            # (as an admin for every RPC, and as a rep for their own copy).
            everything = {m.name for m in METHODS}
            for who, names in ((None, everything), (admin, everything),
                               (rep, {"GetRep", "GetRepCopy", "ListRepPosts", "DownloadCopyImage", "ListTeams"})):
                with serve(app, None if who is None else (lambda _id, _secret, p=who: p)) as stub:
                    calls = every_rpc(stub, md)
                    assert set(calls) == everything
                    for name in sorted(names):
                        code, details = rpc_code(calls[name])
                        assert (name, code) == (name, UNAVAILABLE), details
                        assert "database" in details, (name, details)
        finally:
            app.close()


def snapshot(images: list[events_pb2.ImageRef], template: str = TEMPLATE, body: str = BODY,
             teams: list[str] | None = None) -> events_pb2.PostContentSnapshot:
    return events_pb2.PostContentSnapshot(title="开放日", body=body, images=images, protected_phrases=PROTECTED,
                                          rep_template=template, badge_enabled=True, badge_position=1,
                                          target_teams=teams or [])


def published(post_id: str, content: events_pb2.PostContentSnapshot, revision: int = 1) -> bytes:
    return events_pb2.PostPublishedEvent(
        event_id=new_id(), post=f"posts/{post_id}", revision=f"posts/{post_id}/revisions/{revision}",
        content=content, published_by="users/" + "e" * 26).SerializeToString()


def store_original(blobs: Any, data: bytes) -> events_pb2.ImageRef:
    asset = new_id()
    blobs.put(f"originals/{asset}", io.BytesIO(data), len(data), "image/jpeg")
    return events_pb2.ImageRef(asset=f"assets/{asset}", sha256=hashlib.sha256(data).hexdigest(),
                               mime_type="image/jpeg", width=120, height=90, blob_key=f"originals/{asset}")


def copy_row(app: DistributionApp, post_id: str, rep_name: str) -> CopyRow:
    with app.db.read() as s:
        row = s.scalars(select(CopyRow).join(CampaignRow, CampaignRow.id == CopyRow.campaign_id)
                        .where(CampaignRow.post_id == post_id, CopyRow.rep_id == rep_name.split("/")[1])).one()
        return row


def test_s3_down_during_on_demand_render_keeps_the_copy_pending(pg_url: str, s3_server: infra.S3Server,
                                                                 tmp_path: Path) -> None:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    up = DistributionApp.build(local_settings(tmp_path / "up", DATABASE_URL=pg_url, **s3_server.env(bucket)),
                               fanout=NoFanout(), migrate=False)
    try:
        user, _, secret = up.identity.create_user("rep", Role.REP)
        md: Metadata = (("authorization", f"Bearer {secret}"),)
        rep = up.service.create_rep("小周", "", "徐汇店", "", None, "", user.id)
        refs = [store_original(up.blobs, jpeg(i, (120, 90))) for i in range(2)]
        post_id = new_id()
        up.service.handle_post_published(published(post_id, snapshot(refs)))
        request = pb.GetRepCopyRequest(post=f"posts/{post_id}", rep=rep.name)
        with refused_port() as port:
            env = {**s3_server.env(bucket), "MINIO_ENDPOINT": f"127.0.0.1:{port}"}
            down = DistributionApp.build(local_settings(tmp_path / "down", DATABASE_URL=pg_url, **env),
                                         fanout=NoFanout(), migrate=False)
            try:
                with serve(down) as stub:
                    for _ in range(2):
                        code, details = rpc_code(lambda: stub.GetRepCopy(request, metadata=md))
                        assert code == UNAVAILABLE, details
                    status = stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=f"posts/{post_id}"),
                                                    metadata=up_md(up))
                    assert (status.total, status.rendered, list(status.failures)) == (1, 0, [])
            finally:
                down.close()
        row = copy_row(up, post_id, rep.name)
        assert (row.state, row.failure, row.text, row.images, row.attempts) == ("pending", "", None, None, 0)
        assert up.blobs.keys("variants/") == []
        with serve(up) as stub:  # the store is back: a retry renders it
            copy = stub.GetRepCopy(request, metadata=md)
            assert copy.text.endswith("—— 小周｜徐汇店") and len(copy.images) == 2
            for image in copy.images:
                data = b"".join(m.chunk for m in stub.DownloadCopyImage(
                    pb.DownloadCopyImageRequest(name=image.name), metadata=md))
                assert hashlib.sha256(data).hexdigest() == image.sha256
            status = stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=f"posts/{post_id}"), metadata=up_md(up))
            assert (status.rendered, list(status.failures)) == (1, [])
        assert copy_row(up, post_id, rep.name).attempts == 1
    finally:
        up.close()


def up_md(app: DistributionApp) -> Metadata:
    _, _, secret = app.identity.create_user("editor", Role.EDITOR)
    return (("authorization", f"Bearer {secret}"),)


class FlakyStore:
    """A blob store whose ``put`` fails (as if the store went away mid-render) while ``down``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = True
        self.puts = 0

    def put(self, *args: Any, **kwargs: Any) -> None:
        if self.down:
            raise Unavailable("blob store unavailable, retry later")
        self.puts += 1
        self.inner.put(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_blob_store_failing_mid_render_keeps_the_copy_pending_and_a_retry_renders_it(lazy_fz: Dist) -> None:
    rep, md = lazy_fz.rep("小吴")
    post = publish(lazy_fz, images=2)
    service = lazy_fz.app.service
    flaky = FlakyStore(service.blobs)
    service.blobs = flaky  # type: ignore[assignment]
    request = pb.GetRepCopyRequest(post=post, rep=rep.name)
    code, details = rpc_code(lambda: lazy_fz.stub.GetRepCopy(request, metadata=md))
    assert code == UNAVAILABLE, details
    row = copy_row(lazy_fz.app, post.split("/")[1], rep.name)
    assert (row.state, row.failure, row.text) == ("pending", "", None)
    status = lazy_fz.stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=post), metadata=lazy_fz.editor)
    assert (status.rendered, list(status.failures)) == (0, [])
    flaky.down = False
    copy = lazy_fz.stub.GetRepCopy(request, metadata=md)
    assert copy.text and len(copy.images) == 2 and flaky.puts == 2
    again = lazy_fz.stub.GetRepCopy(request, metadata=md)  # stable, and not rendered again
    assert (again.name, again.text, again.share_token, again.render_time, [i.sha256 for i in again.images]) == (
        copy.name, copy.text, copy.share_token, copy.render_time, [i.sha256 for i in copy.images])
    assert flaky.puts == 2


def test_a_copy_failing_on_its_second_image_leaves_no_variant_of_its_first(fz: Dist) -> None:
    """A corrupt second image fails the copy for good; the first image's variant, rendered
    before the failure was known, must not be left in the store unreferenced."""
    rep, md = fz.rep("小郑")
    blobs: Any = fz.app.blobs
    before = set(blobs.keys("variants/"))
    good = store_original(blobs, jpeg(5, (120, 90)))
    broken = store_original(blobs, jpeg(6, (120, 90))[:150])
    post_id = new_id()
    fz.app.service.handle_post_published(published(post_id, snapshot([good, broken])))
    fz.settle()
    status = fz.stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=f"posts/{post_id}"), metadata=fz.editor)
    assert [f.rep for f in status.failures] == [rep.name] and "image 2" in status.failures[0].reason
    code, details = rpc_code(lambda: fz.stub.GetRepCopy(pb.GetRepCopyRequest(post=f"posts/{post_id}", rep=rep.name),
                                                        metadata=md))
    assert code == FAILED_PRECONDITION and "image 2" in details
    assert set(blobs.keys("variants/")) == before


BROKEN_TEMPLATES = {
    # Passes the content service's validation (truncate is an allowed filter), but cuts protected text.
    "drops protected text": ("{{ body|truncate(5) }}", "protected"),
    # Would be refused by the content validator; fails in jinja2 at render time.
    "unknown variable": ("{{ rep.password }}{{ body }}", "template"),
    "syntax error": ("{{ body", "template"),
    "sandbox escape": ("{{ ''.__class__.__mro__ }}{{ body }}", "template"),
    "body left out": ("—— {{ rep.display_name }}", "protected"),
}


@pytest.mark.parametrize("case", list(BROKEN_TEMPLATES))
def test_a_template_failing_at_render_time_fails_the_copy_and_serves_nothing(fz: Dist, case: str) -> None:
    template, reason = BROKEN_TEMPLATES[case]
    reps = [fz.rep(f"销售{i}") for i in range(2)]
    post_id = new_id()
    post = f"posts/{post_id}"
    fz.app.service.handle_post_published(published(post_id, snapshot([], template=template)))
    fz.settle()
    status = fz.stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=post), metadata=fz.editor)
    assert (status.total, status.rendered) == (2, 0)
    assert sorted(f.rep for f in status.failures) == sorted(r.name for r, _ in reps)
    assert all(reason in f.reason for f in status.failures), list(status.failures)
    for rep, md in reps:
        for _ in range(2):  # asking again does not retry into a half-rendered copy
            code, details = rpc_code(lambda r=rep, m=md: fz.stub.GetRepCopy(
                pb.GetRepCopyRequest(post=post, rep=r.name), metadata=m))
            assert code == FAILED_PRECONDITION and reason in details, (code, details)
        row = copy_row(fz.app, post_id, rep.name)
        assert (row.state, row.text, row.images, row.share_token) == ("failed", None, None, None)
    code, details = rpc_code(lambda: fz.stub.PreviewCopies(pb.PreviewCopiesRequest(
        post=post, sample_reps=[reps[0][0].name]), metadata=fz.editor))
    assert code == FAILED_PRECONDITION and reason in details, (code, details)
    report = fz.stub.GetDistinctnessReport(pb.GetDistinctnessReportRequest(post=post), metadata=fz.editor)
    assert (report.copies, report.protected_span_violations) == (0, 0)


def test_a_template_failing_for_some_reps_spares_the_others(lazy_fz: Dist) -> None:
    """Only reps with a store take the broken branch; the rest get their copies, on demand."""
    with_store, md_store = lazy_fz.rep("有店")
    principal, md_plain = lazy_fz.harness.user(Role.REP, "无店")  # type: ignore[attr-defined]
    plain = lazy_fz.stub.CreateRep(pb.CreateRepRequest(rep=pb.Rep(display_name="无店", user=principal.name)),
                                   metadata=lazy_fz.admin)
    post_id = new_id()
    post = f"posts/{post_id}"
    template = "{{ body }}{% if rep.store %}{{ rep.nope }}{% endif %}\n—— {{ rep.display_name }}"
    lazy_fz.app.service.handle_post_published(published(post_id, snapshot([], template=template)))
    copy = lazy_fz.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=plain.name), metadata=md_plain)
    assert copy.text.endswith("—— 无店") and "400-820-1234" in copy.text
    code, details = rpc_code(lambda: lazy_fz.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=with_store.name),
                                                             metadata=md_store))
    assert code == FAILED_PRECONDITION and "template" in details
    status = lazy_fz.stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=post), metadata=lazy_fz.editor)
    assert status.rendered == 1 and [f.rep for f in status.failures] == [with_store.name]
    assert "nope" in status.failures[0].reason


class RecordingFanout(Fanout):
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[list[str]]]] = []
        self.lock = threading.Lock()

    def dispatch(self, campaign_id: str, chunks: list[list[str]]) -> None:
        with self.lock:
            self.calls.append((campaign_id, chunks))


@pytest.fixture
def recorded(harness: Any) -> Iterator[Dist]:
    yield from serve_dist(harness, RecordingFanout())


def test_a_redelivered_event_makes_one_campaign_and_no_duplicate_copies(recorded: Dist) -> None:
    reps = [recorded.rep(f"代表{i}", user=False)[0] for i in range(3)]
    fanout: RecordingFanout = recorded.app.fanout  # type: ignore[assignment]
    service = recorded.app.service
    post_id = new_id()
    payload = published(post_id, snapshot([]))
    first = service.handle_post_published(payload)
    second = service.handle_post_published(payload)  # the same bytes again (at-least-once delivery)
    assert first[1] is True and second == (first[0], False)

    # The next revision delivered four times at once.
    again = published(post_id, snapshot([], body=BODY + "\n活动日期 2025-06-01"), revision=2)
    barrier = threading.Barrier(4)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        barrier.wait()
        try:
            results.append(service.handle_post_published(again))
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 4
    assert len({cid for cid, _ in results}) == 1 and sum(created for _, created in results) == 1

    with recorded.app.db.read() as s:
        campaigns = s.execute(select(CampaignRow.id, CampaignRow.revision).where(CampaignRow.post_id == post_id)
                              .order_by(CampaignRow.revision)).all()
        assert [r for _, r in campaigns] == [1, 2]
        for campaign_id, _ in campaigns:
            n = s.scalar(select(func.count()).select_from(CopyRow).where(CopyRow.campaign_id == campaign_id))
            distinct = s.scalar(select(func.count(func.distinct(CopyRow.rep_id))).where(
                CopyRow.campaign_id == campaign_id))
            assert n == distinct == 3
    assert sorted(c for c, _ in fanout.calls) == sorted(c for c, _ in campaigns)  # each dispatched once
    assert all(sorted(r for chunk in chunks for r in chunk) == sorted(r.name.split("/")[1] for r in reps)
               for _, chunks in fanout.calls)
    status = recorded.stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=f"posts/{post_id}"),
                                             metadata=recorded.editor)
    assert (status.revision, status.total, status.rendered) == (f"posts/{post_id}/revisions/2", 3, 0)
    copy = recorded.stub.GetRepCopy(pb.GetRepCopyRequest(post=f"posts/{post_id}", rep=reps[0].name),
                                    metadata=recorded.admin)
    assert copy.revision == f"posts/{post_id}/revisions/2" and "2025-06-01" in copy.text
