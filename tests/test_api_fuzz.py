"""Property-based fuzzing of every ContentService and IdentityService RPC.

The RPC list comes from the proto descriptors, so a new RPC is fuzzed without
touching this file. Three kinds of hostile requests, each sent with an admin,
editor, rep or sales token or with none / a garbage / a revoked one:

- raw bytes: random bytes, hand-encoded fields with wrong wire types, lying
  lengths and invalid UTF-8 in string fields, and mutated valid requests;
- well-typed but malformed messages built from the message descriptors:
  control characters, NUL, bidi controls, emoji, very long strings, random and
  real resource names, forged and tampered page tokens, random field masks,
  enum values, out-of-range timestamps, etags and request ids;
- UploadAsset streams that break the metadata/chunk protocol or carry
  non-images, decompression bombs and oversize files.

Whatever a caller sends, the answer is never INTERNAL or UNKNOWN, and an
INVALID_ARGUMENT names the field at fault ("field: problem"). Random requests
hit real resources too: each server is seeded with users, topics, an asset
and posts, and their names, etags and page tokens are in the strategies' pools.
On PostgreSQL the database's default time zone is set ahead of UTC first, and
after every example the list RPCs must still work (nothing stored poisons reads).

The fixed tests at the end pin what the fuzzing found: names matched whole
(no final newline, ASCII revision numbers), far-future schedules readable in
any server time zone, a rep link longer than its column refused.
FUZZ_EXAMPLES=1500 runs a deeper hunt locally.
"""

from __future__ import annotations

import io
import os
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from PIL import Image
from sqlalchemy import func, select

from services.content.__main__ import build_server
from services.content.app import ContentApp
from services.content.domain.posts import CONTENT_PATHS
from services.content.events import InProcessEvents
from services.content.models import AssetRow
from services.protos.contentops.content.v1 import content_pb2 as cpb
from services.protos.contentops.content.v1 import content_pb2_grpc
from services.protos.contentops.identity.v1 import identity_pb2 as ipb
from services.shared.identity.domain import Role
from services.shared.settings import Settings

from . import infra

SERVICES = [
    cpb.DESCRIPTOR.services_by_name["ContentService"],
    ipb.DESCRIPTOR.services_by_name["IdentityService"],
]
METHODS: list[MethodDescriptor] = [m for service in SERVICES for m in service.methods]
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FUZZ = hsettings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),  # raise it for a deeper local hunt
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def message_class(desc: Descriptor) -> Any:
    return message_factory.GetMessageClass(desc)


# ---- calling any RPC with raw bytes ------------------------------------------------------


Metadata = tuple[tuple[str, str], ...]


def invoke(channel: grpc.Channel, method: MethodDescriptor, payload: bytes | list[bytes],
           md: Metadata) -> tuple[grpc.StatusCode, str]:
    """Call ``method`` with already-serialised bytes (no client-side serializer)."""
    path = path_of(method)
    try:
        if method.client_streaming and method.server_streaming:
            for _ in channel.stream_stream(path)(iter(payload), metadata=md, timeout=60):  # type: ignore[arg-type]
                pass
        elif method.client_streaming:
            channel.stream_unary(path)(iter(payload), metadata=md, timeout=60)  # type: ignore[arg-type]
        elif method.server_streaming:
            for _ in channel.unary_stream(path)(payload, metadata=md, timeout=60):
                pass
        else:
            channel.unary_unary(path)(payload, metadata=md, timeout=60)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def assert_clean(method: MethodDescriptor, code: grpc.StatusCode, details: str, request: object = None) -> None:
    assert code not in BAD, f"{path_of(method)} -> {code.name}: {details}\nrequest: {request!r}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field_name, sep, _ = details.partition(":")
        assert sep and field_name.strip(), f"{path_of(method)}: INVALID_ARGUMENT names no field: {details!r}"


# ---- seeded resources -------------------------------------------------------------------


def jpeg(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares ``width`` x ``height``: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


JPEG = jpeg()


@dataclass
class Seed:
    md: dict[str, Metadata]
    names: list[str] = field(default_factory=list)
    etags: list[str] = field(default_factory=list)
    page_tokens: list[str] = field(default_factory=list)
    valid_requests: list[tuple[MethodDescriptor, bytes]] = field(default_factory=list)


def _method(service: str, name: str) -> MethodDescriptor:
    return next(m for m in METHODS if m.containing_service.name == service and m.name == name)


def seed(harness: Any) -> Seed:
    """Users, topics, an asset and posts on ``harness`` (once per server)."""
    cached = getattr(harness, "_fuzz_seed", None)
    if cached is not None:
        return cached
    app: ContentApp = harness.app
    md = {role.value: harness.md(role) for role in Role}
    md["none"] = ()
    victim, victim_token, _ = app.identity.create_user("victim", Role.REP)
    revoked, revoked_token, revoked_secret = app.identity.create_user("revoked", Role.EDITOR)
    app.identity.revoke_token(revoked.id, revoked_token.id)
    md["revoked"] = (("authorization", f"Bearer {revoked_secret}"),)
    editor = md["editor"]
    c = harness.content

    topics = [c.CreateTopic(cpb.CreateTopicRequest(topic=cpb.Topic(display_name=f"Fuzz topic {i}"),
                                                   topic_id=f"fuzz-topic-{i}"), metadata=editor) for i in range(2)]
    asset = c.UploadAsset(iter([cpb.UploadAssetRequest(metadata=cpb.AssetMetadata(filename="seed.jpg")),
                                cpb.UploadAssetRequest(chunk=JPEG)]), metadata=editor)
    content = cpb.PostContent(title="Seed post", body="Spring sale [[today|this week]] only", images=[asset.name],
                              topics=[t.name for t in topics],
                              variation=cpb.VariationSettings(protected_phrases=["Spring sale"],
                                                              rep_template="{{ body }}\n{{ rep.signature }}"))
    draft = c.CreatePost(cpb.CreatePostRequest(content=content), metadata=editor)
    live = c.CreatePost(cpb.CreatePostRequest(content=content), metadata=editor)
    live = c.PublishPost(cpb.PublishPostRequest(name=live.name), metadata=editor)
    live = c.UpdatePost(cpb.UpdatePostRequest(post=cpb.Post(name=live.name, content=cpb.PostContent(title="Edited")),
                                              update_mask={"paths": ["content.title"]}), metadata=editor)
    tokens = [
        c.ListTopics(cpb.ListTopicsRequest(page_size=1), metadata=editor).next_page_token,
        c.ListPosts(cpb.ListPostsRequest(page_size=1), metadata=editor).next_page_token,
        c.ListPostRevisions(cpb.ListPostRevisionsRequest(parent=live.name, page_size=1),
                            metadata=editor).next_page_token,
    ]
    s = Seed(md=md)
    s.page_tokens = [t for t in tokens if t]
    s.names = [
        *(t.name for t in topics), asset.name, draft.name, live.name, live.head_revision, live.published_revision,
        draft.head_revision, victim.name, f"users/{victim.id}/tokens/{victim_token.id}",
        f"users/{revoked.id}/tokens/{revoked_token.id}", f"{live.name}/revisions/99",
    ]
    s.etags = [draft.etag, live.etag, *(t.etag for t in topics)]
    s.valid_requests = [
        (_method("ContentService", "GetPost"), cpb.GetPostRequest(name=live.name).SerializeToString()),
        (_method("ContentService", "CreatePost"), cpb.CreatePostRequest(content=content).SerializeToString()),
        (_method("ContentService", "UpdatePost"), cpb.UpdatePostRequest(
            post=cpb.Post(name=draft.name, content=content, etag=draft.etag),
            update_mask={"paths": ["*"]}).SerializeToString()),
        (_method("ContentService", "PublishPost"), cpb.PublishPostRequest(
            name=draft.name, publish_time=timestamp_pb2.Timestamp(seconds=4_000_000_000)).SerializeToString()),
        (_method("ContentService", "ListPosts"), cpb.ListPostsRequest(
            page_size=1, page_token=s.page_tokens[1], state=cpb.POST_STATE_PUBLISHED).SerializeToString()),
        (_method("ContentService", "UpdateTopic"), cpb.UpdateTopicRequest(
            topic=cpb.Topic(name=topics[0].name, display_name="Renamed"),
            update_mask={"paths": ["display_name"]}).SerializeToString()),
        (_method("IdentityService", "CreateUser"), ipb.CreateUserRequest(
            user=ipb.User(display_name="New rep", role=ipb.ROLE_REP, rep="reps/abc")).SerializeToString()),
        (_method("IdentityService", "RevokeToken"), ipb.RevokeTokenRequest(
            name=f"users/{victim.id}/tokens/{victim_token.id}").SerializeToString()),
        (_method("IdentityService", "CreateToken"), ipb.CreateTokenRequest(parent=victim.name).SerializeToString()),
        (_method("IdentityService", "GetUser"), ipb.GetUserRequest(name=victim.name).SerializeToString()),
        (_method("IdentityService", "ListUsers"), ipb.ListUsersRequest(page_size=2).SerializeToString()),
        (_method("ContentService", "CreateTopic"), cpb.CreateTopicRequest(
            topic=cpb.Topic(display_name="Another", description="About it"),
            request_id=str(uuid.uuid4())).SerializeToString()),
        (_method("ContentService", "GetTopic"), cpb.GetTopicRequest(name=topics[1].name).SerializeToString()),
        (_method("ContentService", "ListTopics"), cpb.ListTopicsRequest(
            page_size=1, page_token=s.page_tokens[0]).SerializeToString()),
        (_method("ContentService", "GetAsset"), cpb.GetAssetRequest(name=asset.name).SerializeToString()),
        (_method("ContentService", "DownloadAsset"), cpb.DownloadAssetRequest(name=asset.name).SerializeToString()),
        (_method("ContentService", "ListPostRevisions"), cpb.ListPostRevisionsRequest(
            parent=live.name, page_size=1, page_token=s.page_tokens[2]).SerializeToString()),
        (_method("ContentService", "GetPostRevision"), cpb.GetPostRevisionRequest(
            name=live.published_revision).SerializeToString()),
        (_method("ContentService", "ArchivePost"), cpb.ArchivePostRequest(
            name=live.name, etag=live.etag).SerializeToString()),
        (_method("ContentService", "DeletePost"), cpb.DeletePostRequest(
            name=draft.name, etag=draft.etag).SerializeToString()),
    ]
    harness._fuzz_seed = s
    return s


# ---- strategies -------------------------------------------------------------------------

EDGE_TEXT = [
    "", " ", "   ", "\x00", "a\x00b", "\n", "\r\n", "\t", "\x7f", "\x1b[31m", "😀", "👨\u200d👩\u200d👧", "a\u200db",
    "\u202eevil", "\u200b", "\ufeff", "\u2028", "\x85", "中文标题", "e\u0301", "\U0010ffff", "\ufffd", "*", "%s%n",
    "'; DROP TABLE content_posts;--", "../../etc/passwd", "{{ body }}", "[[a|b]]", "[[", "]]", "a" * 121,
    "😀" * 121, "中" * 2001, "x" * 5000, "ß" * 41,
]
CONTROL = st.characters(max_codepoint=0x1F) | st.sampled_from(list("\x7f\x85\u200b\u200c\u200d\u200e\u200f\u202a\u202e\u2060\ufeff\u2028\u2029"))
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=CONTROL | st.characters(max_codepoint=0x7F), max_size=12),
    st.sampled_from(EDGE_TEXT),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "中", "😀", "\x00", "[[", " "]), st.integers(0, 3000)),
)
ids = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True),
    st.sampled_from(["a" * 26, "a" * 63, "a" * 64, "A", "-a", "a_b", "a b", "abc\n", "ABC", "0", "x/y", ""]),
    st.text(max_size=30),
)
COLLECTIONS = ["posts", "topics", "assets", "users", "reps", "tokens", "revisions", "", "Posts", "posts/"]
REVISION_NUMBERS = st.one_of(
    st.integers(-3, 2**40).map(str),
    st.sampled_from(["0", "01", "²", "١", "1.0", "+1", " 1", "1\n", "", "9" * 4400, "2147483648", "2147483647"]),
)


def resource_names(seeded: Seed) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(seeded.names),
        st.builds(lambda c, i: f"{c}/{i}", st.sampled_from(COLLECTIONS), ids),
        st.builds(lambda p, n: f"posts/{p}/revisions/{n}", ids, REVISION_NUMBERS),
        st.builds(lambda n, r: f"{n}/revisions/{r}", st.sampled_from(seeded.names), REVISION_NUMBERS),
        st.builds(lambda u, t: f"users/{u}/tokens/{t}", ids, ids),
        st.builds(lambda n, s: n + s, st.sampled_from(seeded.names), st.sampled_from(["\n", "/", "x", "\x00", " "])),
        hostile_text,
    )


def page_tokens(seeded: Seed) -> st.SearchStrategy[str]:
    def tamper(token: str, i: int, c: str) -> str:
        i %= len(token)
        return token[:i] + c + token[i + 1 :]

    valid = st.sampled_from(seeded.page_tokens)
    return st.one_of(
        valid,
        st.builds(tamper, valid, st.integers(0, 10_000), st.sampled_from(["A", "_", ".", "é", "\x00", "="])),
        st.builds(lambda t, s: t.partition(".")[0] + "." + s, valid, st.text(max_size=30)),
        st.builds(lambda a, b: a.partition(".")[0] + "." + b.partition(".")[2], valid, valid),
        st.sampled_from(["abc.é", ".", "e30.", "e30.AAAA", "bnVsbA.x", "W10.x", "!!!", "a" * 3000]),
        hostile_text,
    )


TEMPLATES = [
    "", "{{ body }}", "{{ body }}{{ body }}", "{{ body }}\x00", "{{ rep.display_name }}: {{ body }}", "{{ body",
    "{% for x in body %}{{ x }}{% endfor %}", "{{ ''.__class__.__mro__ }}{{ body }}", "{{ body|attr('upper') }}",
    "{{ rep.display_name * 1000 }}{{ body }}", "{{ body }}{{ rep.password }}", "{{ rep }}{{ body }}",
    "{% if rep.store %}{{ rep.store }}{% endif %}{{ body|truncate(10) }}", "{{ body|default(rep.team) }}",
    "{{ body }}{{ post.title|replace('a', 'b') }}", "{{ body }}{{ 9**9**9 }}", "{# #}{{ body }}", "{{ body }}" * 200,
    "{{ body }}{% raw %}{{{% endraw %}", "{{ body }}{{ cycler }}", "{{ (body) }}", "{{ body ~ body }}",
]
BODY_PIECES = ["[[", "]]", "|", "\n", "Spring sale", "中文", " ", "", "a" * 101, "[[a|b]]", "\x00", "\t", "{{", "😀"]
MASK_PATHS = [*CONTENT_PATHS, "*", "display_name", "description", "content", "name", "etag", "content.title.x",
              "content.*", "", "state", "content.variation.*", "topic.display_name"]


def timestamps() -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    seconds = st.one_of(
        st.sampled_from([0, -1, -62135596800, -62135596801, 253402300799, 253402300800, 2**63 - 1, -(2**63),
                         1_700_000_000, 4_000_000_000]),
        st.integers(-(2**63), 2**63 - 1),
        st.integers(-62135596800, 253402300799),
    )
    nanos = st.one_of(st.sampled_from([0, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31)]),
                      st.integers(-(2**31), 2**31 - 1))
    return st.builds(lambda s, n: timestamp_pb2.Timestamp(seconds=s, nanos=n), seconds, nanos)


INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1), FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def image_bytes() -> st.SearchStrategy[bytes]:
    magic = st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP", b""])
    return st.one_of(
        st.binary(max_size=64),
        st.just(JPEG),
        st.builds(jpeg, st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
                  st.tuples(st.integers(1, 24), st.integers(1, 24))),
        st.builds(lambda m, rest: m + rest, magic, st.binary(max_size=200)),
        st.builds(lambda n, i, b: JPEG[: n % len(JPEG)] + bytes([b]) + JPEG[n % len(JPEG) + 1 :],
                  st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 255)),
        st.builds(png_header_only, st.sampled_from([0, 1, 7000, 100_000, 2**31 - 1, 2**32 - 1]),
                  st.sampled_from([0, 1, 7000, 100_000, 2**31 - 1])),
        st.just(jpeg_declaring(65000, 65000)),
    )


def numbers(f: FieldDescriptor, edges: tuple[int, ...] = (0, -1, 1, 500, 501)) -> st.SearchStrategy[Any] | None:
    """Values for a bool, integer, enum or floating-point field (None for strings and bytes): small
    numbers, the type's limits and ``edges`` (the service's own limits, each side of them), and anything."""
    if f.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.type in INT_RANGES:
        lo, hi = INT_RANGES[f.type]
        small = st.integers(max(lo, -5), min(hi, 600))
        if f.type == FieldDescriptor.TYPE_ENUM:
            small = st.one_of(st.sampled_from([v.number for v in f.enum_type.values]), small)
        return st.one_of(small, st.sampled_from([v for v in (lo, hi, *edges) if lo <= v <= hi]), st.integers(lo, hi))
    if f.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(width=32 if f.type == FieldDescriptor.TYPE_FLOAT else 64)
    return None


def scalar_strategy(f: FieldDescriptor, seeded: Seed) -> st.SearchStrategy[Any]:
    """Values for one scalar field, picked by its type and, for strings, by its name."""
    if (number := numbers(f)) is not None:
        return number
    if f.type == FieldDescriptor.TYPE_BYTES:
        return image_bytes()
    return weighted(plausible_text(f.name, seeded), hostile_strings(f.name, seeded))


def weighted(plausible: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Two parts plausible to one part hostile, so requests also get past validation."""
    return st.sampled_from([True, True, False]).flatmap(lambda p: plausible if p else hostile)


def plausible_text(name: str, seeded: Seed) -> st.SearchStrategy[str]:
    if name in {"name", "parent", "topic", "author", "rep", "images", "topics"}:
        return st.sampled_from(seeded.names)
    if name == "page_token":
        return st.sampled_from(["", *seeded.page_tokens])
    if name == "etag":
        return st.sampled_from(["", *seeded.etags])
    if name == "request_id":
        return st.one_of(st.just(""), st.uuids().map(str))
    if name == "topic_id":
        return st.one_of(st.just(""), st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True))
    if name == "rep_template":
        return st.sampled_from(TEMPLATES)
    if name in {"body", "protected_phrases", "title"}:
        return st.one_of(st.just("Spring sale"), st.lists(st.sampled_from(BODY_PIECES), max_size=12).map("".join))
    return st.text(alphabet="abcxyz ABC-中文😀", min_size=1, max_size=30)


def hostile_strings(name: str, seeded: Seed) -> st.SearchStrategy[str]:
    if name in {"name", "parent", "topic", "author", "rep", "images", "topics"}:
        return resource_names(seeded)
    if name == "page_token":
        return page_tokens(seeded)
    if name == "etag":
        return st.one_of(st.from_regex(r"[0-9a-f]{16}", fullmatch=True), hostile_text)
    if name == "request_id":
        return st.one_of(st.uuids().map(lambda u: str(u).upper()), st.uuids().map(lambda u: "{" + str(u) + "}"),
                         st.uuids().map(lambda u: u.urn), st.uuids().map(lambda u: u.hex), hostile_text)
    if name == "topic_id":
        return st.one_of(ids, hostile_text)
    return hostile_text


def well_known(mask_paths: list[str]) -> Callable[[Descriptor], st.SearchStrategy[Any] | None]:
    """Strategies for the well-known types requests embed: any Timestamp, masks of ``mask_paths`` or hostile paths."""

    def special(desc: Descriptor) -> st.SearchStrategy[Any] | None:
        if desc.full_name == "google.protobuf.Timestamp":
            return timestamps()
        if desc.full_name == "google.protobuf.FieldMask":
            paths = st.lists(weighted(st.sampled_from(mask_paths), hostile_text), max_size=6)
            return st.builds(lambda p: message_class(desc)(paths=p), paths)
        return None

    return special


def proto_messages(desc: Descriptor, scalar: Callable[[FieldDescriptor], st.SearchStrategy[Any]], *,
                   special: Callable[[Descriptor], st.SearchStrategy[Any] | None] = lambda _: None,
                   sparse: bool = False, dense: tuple[bool, ...] = (True, False), max_depth: int = 3,
                   repeated_sizes: tuple[int, ...] = (3,), depth: int = 0) -> st.SearchStrategy[Any]:
    """Random, well-typed instances of ``desc``: each field set with odds ``dense`` (``sparse``: rarely, for
    changes merged onto a valid request), scalars from ``scalar``, messages nested to ``max_depth``."""
    if (known := special(desc)) is not None:
        return known
    cls = message_class(desc)

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        msg = cls()
        for f in desc.fields:
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                continue
            if not draw(st.sampled_from((True, False, False, False) if sparse else dense)):
                continue  # leave the field unset
            if f.message_type is not None:
                if depth >= max_depth:
                    continue
                sub = proto_messages(f.message_type, scalar, special=special, sparse=sparse, dense=dense,
                                     max_depth=max_depth, repeated_sizes=repeated_sizes, depth=depth + 1)
                if f.is_repeated:
                    for value in draw(st.lists(sub, max_size=3)):
                        getattr(msg, f.name).add().CopyFrom(value)
                else:
                    getattr(msg, f.name).CopyFrom(draw(sub))
            elif f.is_repeated:
                getattr(msg, f.name).extend(draw(st.lists(scalar(f), max_size=draw(st.sampled_from(repeated_sizes)))))
            else:
                setattr(msg, f.name, draw(scalar(f)))
        return msg

    return build()


def message_strategy(desc: Descriptor, seeded: Seed, sparse: bool = False) -> st.SearchStrategy[Any]:
    """Random, well-typed instances of ``desc`` with hostile values in every field."""
    return proto_messages(desc, lambda f: scalar_strategy(f, seeded), special=well_known(MASK_PATHS), sparse=sparse,
                          max_depth=4, repeated_sizes=(12,))


def upload_streams(seeded: Seed) -> st.SearchStrategy[list[bytes]]:
    """Well-typed UploadAsset streams: the protocol followed, bent and broken."""
    desc = cpb.UploadAssetRequest.DESCRIPTOR
    meta = st.builds(
        lambda filename, rid: cpb.UploadAssetRequest(metadata=cpb.AssetMetadata(filename=filename, request_id=rid)),
        st.one_of(st.just("photo.jpg"), hostile_text),
        st.one_of(st.just(""), st.uuids().map(str), hostile_text),
    )
    chunk = st.builds(lambda b: cpb.UploadAssetRequest(chunk=b), image_bytes())
    proper = st.builds(lambda m, cs: [m, *cs], meta, st.lists(chunk, max_size=3))
    anything = st.lists(st.one_of(meta, chunk, message_strategy(desc, seeded)), max_size=5)
    return st.one_of(proper, anything).map(lambda msgs: [m.SerializeToString() for m in msgs])


def auth(seeded: Seed) -> st.SearchStrategy[Metadata]:
    """Mostly an admin's or editor's token (to get past the door), sometimes anything else."""
    garbage = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
    others = st.one_of(
        st.sampled_from([seeded.md[k] for k in ("rep", "sales", "none", "revoked")]),
        st.builds(lambda g: (("authorization", g),), garbage),
        st.builds(lambda g: (("authorization", "Bearer " + g),), garbage),
        st.sampled_from([(("authorization", "Bearer co_" + "a" * 26 + "_" + "b" * 43),),
                         (("authorization", "Basic YWRtaW46YWRtaW4="),), (("authorization", "Bearer"),),
                         (("authorization", ""),)]),
    )
    return st.sampled_from(["admin", "editor"] * 3 + ["other"] * 2).flatmap(
        lambda kind: others if kind == "other" else st.just(seeded.md[kind]))


# ---- raw protobuf encoding --------------------------------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"abc\x80", b"\xe4\xb8",
                b"\xf0\x9f\x98", b"posts/\xff", b"\x00\xff"]
WIRE = {  # the wire type each field type is encoded with
    FieldDescriptor.TYPE_DOUBLE: 1, FieldDescriptor.TYPE_FIXED64: 1, FieldDescriptor.TYPE_SFIXED64: 1,
    FieldDescriptor.TYPE_FLOAT: 5, FieldDescriptor.TYPE_FIXED32: 5, FieldDescriptor.TYPE_SFIXED32: 5,
    FieldDescriptor.TYPE_STRING: 2, FieldDescriptor.TYPE_BYTES: 2, FieldDescriptor.TYPE_MESSAGE: 2,
}


def raw_message(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[bytes]:
    """Bytes that look like ``desc`` on the wire but may be anything but valid."""

    @st.composite
    def one_field(draw: st.DrawFn) -> bytes:
        f = draw(st.one_of(st.sampled_from(list(desc.fields)), st.none())) if desc.fields else None
        number = f.number if f is not None else draw(st.integers(1, 2**29 - 1))
        right = WIRE.get(f.type, 0) if f is not None else draw(st.integers(0, 5))
        wire = draw(st.one_of(st.just(right), st.just(right), st.integers(0, 7)))
        tag = varint((number << 3) | wire)
        if wire == 0:
            body = draw(st.one_of(st.integers(0, 2**64 - 1).map(varint), st.just(b"\xff" * 11), st.just(b"\x80")))
        elif wire == 1:
            body = draw(st.binary(min_size=0, max_size=8))
        elif wire == 5:
            body = draw(st.binary(min_size=0, max_size=4))
        elif wire == 2:
            if f is not None and f.type == FieldDescriptor.TYPE_MESSAGE and depth < 3:
                content = draw(raw_message(f.message_type, depth + 1))
            else:
                content = draw(st.one_of(st.sampled_from(INVALID_UTF8), st.binary(max_size=40),
                                         st.text(max_size=20).map(str.encode)))
            length = draw(st.one_of(st.just(len(content)), st.just(len(content)), st.integers(0, 2**32)))
            body = varint(length) + content
        else:  # groups and the invalid wire types 6 and 7
            body = draw(st.binary(max_size=8))
        return tag + body

    return st.lists(one_field(), max_size=6).map(b"".join)


def mutated(seeded: Seed) -> st.SearchStrategy[tuple[MethodDescriptor, bytes]]:
    def mutate(pair: tuple[MethodDescriptor, bytes], cut: int, pos: int, byte: int, mode: int) -> tuple[MethodDescriptor, bytes]:
        method, data = pair
        if not data:
            return method, bytes([byte])
        pos %= len(data)
        if mode == 0:
            return method, data[: cut % (len(data) + 1)]
        if mode == 1:
            return method, data[:pos] + bytes([byte]) + data[pos + 1 :]
        return method, data[:pos] + bytes([byte]) + data[pos:]

    return st.builds(mutate, st.sampled_from(seeded.valid_requests), st.integers(0, 10_000),
                     st.integers(0, 10_000), st.integers(0, 255), st.integers(0, 2))


# ---- the properties ---------------------------------------------------------------------


def reads_still_work(harness: Any, seeded: Seed) -> None:
    """Nothing the fuzzer stored may poison later reads (e.g. a value a driver cannot load back)."""
    for md in (seeded.md["editor"], seeded.md["rep"]):
        harness.content.ListPosts(cpb.ListPostsRequest(page_size=500), metadata=md)
    harness.content.ListTopics(cpb.ListTopicsRequest(page_size=500), metadata=seeded.md["editor"])
    harness.identity.ListUsers(ipb.ListUsersRequest(page_size=500), metadata=seeded.md["admin"])


def use_non_utc_database_timezone(harness: Any) -> None:
    """On PostgreSQL, make the database's default time zone Shanghai, as a server in China
    may well have: every stored timestamp must still read back."""
    url = harness.app.settings.database_url
    if url.startswith("sqlite"):
        return
    with infra._pg_admin() as conn:
        conn.execute(f"ALTER DATABASE \"{url.rsplit('/', 1)[1]}\" SET timezone TO 'Asia/Shanghai'")
    harness.app.db.engine.dispose()  # new connections pick the default up


@FUZZ
@given(data=st.data())
def test_raw_bytes_never_give_internal(harness: Any, data: st.DataObject) -> None:
    seeded = seed(harness)
    method = data.draw(st.sampled_from(METHODS), label="method")
    md = data.draw(auth(seeded), label="metadata")
    single = st.one_of(st.binary(max_size=300), raw_message(method.input_type))
    if data.draw(st.integers(0, 4)) == 0:  # a valid request, slightly damaged
        method, body = data.draw(mutated(seeded), label="mutated")
        single = st.just(body)
    if method.client_streaming:
        payload: bytes | list[bytes] = data.draw(st.lists(single, max_size=4), label="stream")
    else:
        payload = data.draw(single, label="body")
    code, details = invoke(harness.channel, method, payload, md)
    event(code.name)  # --hypothesis-show-statistics shows how far requests got
    assert_clean(method, code, details, payload)
    reads_still_work(harness, seeded)


@FUZZ
@given(data=st.data())
def test_hostile_messages_never_give_internal(harness: Any, data: st.DataObject) -> None:
    seeded = seed(harness)
    if not getattr(harness, "_fuzz_tz", False):
        use_non_utc_database_timezone(harness)
        harness._fuzz_tz = True
    method = data.draw(st.sampled_from(METHODS), label="method")
    md = data.draw(auth(seeded), label="metadata")
    if method.client_streaming:
        payload: bytes | list[bytes] = data.draw(upload_streams(seeded), label="stream")
        shown: object = payload
    else:
        request = data.draw(message_strategy(method.input_type, seeded), label="request")
        if data.draw(st.booleans(), label="start from a valid request"):
            method, valid = data.draw(st.sampled_from(seeded.valid_requests), label="valid request")
            base = message_class(method.input_type).FromString(valid)
            # Random fields over a valid request: set scalars replace, nested messages merge.
            base.MergeFrom(data.draw(message_strategy(method.input_type, seeded, sparse=True), label="changes"))
            request = base
        payload, shown = request.SerializeToString(), request
    code, details = invoke(harness.channel, method, payload, md)
    event(code.name)
    assert_clean(method, code, details, shown)
    reads_still_work(harness, seeded)


def all_strings(desc: Descriptor, value: str, depth: int = 0) -> Any:
    """An instance of ``desc`` with every string field, at every depth, set to ``value``."""
    msg = message_class(desc)()
    for f in desc.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            if f.is_repeated:
                getattr(msg, f.name).extend([value, value])
            else:
                setattr(msg, f.name, value)
        elif f.message_type is not None and depth < 3 and not f.message_type.GetOptions().map_entry:
            sub = all_strings(f.message_type, value, depth + 1)
            if f.is_repeated:
                getattr(msg, f.name).add().CopyFrom(sub)
            elif f.containing_oneof is None or not msg.WhichOneof(f.containing_oneof.name):
                getattr(msg, f.name).CopyFrom(sub)
    return msg


def test_every_rpc_survives_canned_hostile_requests(harness: Any) -> None:
    """A fixed sweep over every RPC in the descriptors, so none is left to chance; as an
    admin every RPC must get past the door (a method missing from a ROLES table would
    be refused to everyone)."""
    seeded = seed(harness)
    for method in METHODS:
        requests: list[bytes] = [b"", b"\xff", b"\x0a\x02\xff\xfe", b"\x0a\x80", b"\x12\x7f"]
        requests += [all_strings(method.input_type, v).SerializeToString()
                     for v in ("\x00", "é" * 3000, "posts/\u202e", "a" * 64, "users/x/tokens/y\n")]
        reached = False
        for body in requests:
            payload: bytes | list[bytes] = [body, body] if method.client_streaming else body
            code, details = invoke(harness.channel, method, payload, seeded.md["admin"])
            assert_clean(method, code, details, body)
            reached |= code not in {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}
        assert reached, f"{path_of(method)} refuses even an admin: is it missing from its ROLES table?"


@pytest.mark.parametrize("name", ["posts/{post}\n", "posts/{post}/revisions/1\n", "posts/{post}/revisions/²",
                                  "posts/{post}/revisions/" + "1" * 5000])
def test_names_are_matched_whole(harness: Any, name: str) -> None:
    """A name with a trailing newline or non-ASCII digits is INVALID_ARGUMENT, not a lookup
    (Python's '$' matches before a final newline; str.isdigit() accepts '²')."""
    seeded = seed(harness)
    post = next(n for n in seeded.names if n.startswith("posts/") and "/revisions/" not in n)
    full = name.format(post=post.removeprefix("posts/"))
    method = "GetPostRevision" if "/revisions/" in full else "GetPost"
    rpc = getattr(harness.content, method)
    request = (cpb.GetPostRevisionRequest if method == "GetPostRevision" else cpb.GetPostRequest)(name=full)
    with pytest.raises(grpc.RpcError) as err:
        rpc(request, metadata=seeded.md["editor"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert err.value.details().startswith("name:")


def test_far_future_schedule_reads_back_on_a_non_utc_database(harness: Any) -> None:
    """The last second a Timestamp can hold, scheduled on a database whose time zone is
    ahead of UTC, still reads back (the driver cannot load a year-10000 local time)."""
    seeded = seed(harness)
    use_non_utc_database_timezone(harness)
    editor = seeded.md["editor"]
    post = harness.content.CreatePost(cpb.CreatePostRequest(content=cpb.PostContent(title="Far", body="Future")),
                                      metadata=editor)
    last = timestamp_pb2.Timestamp(seconds=253402300799, nanos=999_999_000)
    scheduled = harness.content.PublishPost(cpb.PublishPostRequest(name=post.name, publish_time=last),
                                            metadata=editor)
    assert scheduled.state == cpb.POST_STATE_SCHEDULED
    again = harness.content.GetPost(cpb.GetPostRequest(name=post.name), metadata=editor)
    assert again.scheduled_publish_time == last
    listed = harness.content.ListPosts(cpb.ListPostsRequest(page_size=500), metadata=editor).posts
    assert last in [p.scheduled_publish_time for p in listed]


def test_rep_link_too_long_for_storage_is_invalid_argument(harness: Any) -> None:
    """user.rep accepts any valid id; one longer than the column must be refused, not crash."""
    seeded = seed(harness)
    with pytest.raises(grpc.RpcError) as err:
        harness.identity.CreateUser(ipb.CreateUserRequest(user=ipb.User(display_name="Rep", role=ipb.ROLE_REP,
                                                                        rep="reps/" + "a" * 63)),
                                    metadata=seeded.md["admin"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert err.value.details().startswith("user.rep:")


# ---- UploadAsset protocol and content -------------------------------------------------------


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[ContentApp, content_pb2_grpc.ContentServiceStub, Metadata]]:
    app = ContentApp.build(settings, events=InProcessEvents(), migrate=True)
    server = build_server(app, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        _, _, secret = app.identity.create_user("uploader", Role.EDITOR)
        yield app, content_pb2_grpc.ContentServiceStub(channel), (("authorization", f"Bearer {secret}"),)
    finally:
        channel.close()
        server.stop(grace=1)
        app.close()


def _meta(filename: str = "a.jpg", request_id: str = "") -> cpb.UploadAssetRequest:
    return cpb.UploadAssetRequest(metadata=cpb.AssetMetadata(filename=filename, request_id=request_id))


def _chunks(data: bytes, size: int = 700) -> list[cpb.UploadAssetRequest]:
    return [cpb.UploadAssetRequest(chunk=data[i : i + size]) for i in range(0, len(data), size)]


LIMIT = 4096
BAD_UPLOADS = {
    "no messages": ([], "metadata"),
    "metadata missing": (_chunks(JPEG), "metadata"),
    "metadata duplicated": ([_meta(), _meta(), *_chunks(JPEG)], "metadata"),
    "metadata after bytes": ([_meta(), *_chunks(JPEG), _meta()], "metadata"),
    "metadata only": ([_meta()], "chunk"),
    "empty chunks only": ([_meta(), cpb.UploadAssetRequest(chunk=b""), cpb.UploadAssetRequest(chunk=b"")], "chunk"),
    "not an image": ([_meta("a.jpg"), *_chunks(b"%PDF-1.7\n" + b"x" * 300)], "chunk"),
    "text claiming to be jpeg": ([_meta("a.jpg"), *_chunks("你好".encode() * 50)], "chunk"),
    "truncated jpeg header": ([_meta(), *_chunks(JPEG[:20])], "chunk"),
    "png bomb": ([_meta("bomb.png"), *_chunks(png_header_only(100_000, 100_000))], "chunk"),
    "png over the pixel limit": ([_meta("big.png"), *_chunks(png_header_only(7000, 7000))], "chunk"),
    "png without pixels": ([_meta("empty.png"), *_chunks(png_header_only(0, 0))], "chunk"),
    "jpeg bomb": ([_meta("bomb.jpg"), *_chunks(jpeg_declaring(65000, 65000))], "chunk"),
    "png magic then junk": ([_meta(), *_chunks(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)], "chunk"),
    "oversize": ([_meta(), *_chunks(b"\xff\xd8\xff" + b"\x00" * LIMIT)], "chunk"),
    "oversize in one chunk": ([_meta(), cpb.UploadAssetRequest(chunk=JPEG + b"\x00" * LIMIT)], "chunk"),
    "filename with control characters": ([_meta("a\x00.jpg"), *_chunks(JPEG)], "metadata.filename"),
    "filename with a newline": ([_meta("a\n.jpg"), *_chunks(JPEG)], "metadata.filename"),
    "filename too long": ([_meta("a" * 256 + ".jpg"), *_chunks(JPEG)], "metadata.filename"),
    "request id not a uuid": ([_meta(request_id="retry-1"), *_chunks(JPEG)], "metadata.request_id"),
}


def test_bad_uploads_are_invalid_argument_and_leave_nothing(settings: Settings) -> None:
    with serving(settings.replace(max_asset_bytes=LIMIT)) as (app, content, md):
        assert len(JPEG) < LIMIT
        for case, (messages, field_name) in BAD_UPLOADS.items():
            with pytest.raises(grpc.RpcError) as err:
                content.UploadAsset(iter(messages), metadata=md)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (case, err.value.details())
            assert err.value.details().startswith(f"{field_name}:"), (case, err.value.details())
        with app.db.read() as s:
            assert s.scalar(select(func.count()).select_from(AssetRow)) == 0
        assert app.blobs.keys() == []
        # The same server still takes a good upload afterwards.
        asset = content.UploadAsset(iter([_meta(request_id=str(uuid.uuid4())), *_chunks(JPEG)]), metadata=md)
        assert (asset.mime_type, asset.width, asset.height, asset.size_bytes) == ("image/jpeg", 16, 12, len(JPEG))
        assert len(app.blobs.keys()) == 1
