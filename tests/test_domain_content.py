"""Content rules tested directly, without gRPC or a database."""

from __future__ import annotations

import ast
import io
import struct
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from services.content.domain import alternatives, templates
from services.content.domain.assets import inspect_image, sniff_mime
from services.content.domain.posts import (
    Post,
    PostContent,
    PostState,
    Variation,
    merge_content,
    validate_content,
)
from services.shared.errors import Aborted, FailedPrecondition, InvalidArgument

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def draft() -> Post:
    return Post(id="p1", author_id="u1", head_revision=1, create_time=T0, update_time=T0)


# ---- life cycle ---------------------------------------------------------------------


def test_new_post_is_a_draft() -> None:
    assert draft().state is PostState.DRAFT


def test_publish_now_makes_head_live_and_changes_etag() -> None:
    post, live = draft().published(T0, None)
    assert live and post.state is PostState.PUBLISHED
    assert post.published_revision == 1 and post.publish_time == T0
    assert post.etag != draft().etag


def test_publishing_a_live_head_again_is_a_harmless_retry() -> None:
    post, _ = draft().published(T0, None)
    again, live = post.published(T0 + timedelta(minutes=1), None)
    assert not live and again is post


def test_editing_a_published_post_keeps_the_live_revision() -> None:
    post, _ = draft().published(T0, None)
    edited = post.edited(T0 + timedelta(minutes=1))
    assert edited.head_revision == 2 and edited.published_revision == 1
    assert edited.state is PostState.PUBLISHED and edited.has_unpublished_changes
    republished, live = edited.published(T0 + timedelta(minutes=2), None)
    assert live and republished.published_revision == 2 and not republished.has_unpublished_changes


def test_schedule_pins_the_head_and_goes_live_when_due() -> None:
    at = T0 + timedelta(hours=1)
    post, live = draft().published(T0, at)
    assert not live and post.state is PostState.SCHEDULED and post.scheduled_revision == 1
    later_edit = post.edited(T0 + timedelta(minutes=5))  # edits after scheduling do not change what goes live
    assert later_edit.due(T0 + timedelta(minutes=59)) is None
    result = later_edit.due(at)
    assert result is not None
    went_live, number = result
    assert number == 1 and went_live.published_revision == 1 and went_live.scheduled_revision is None
    assert went_live.state is PostState.PUBLISHED


def test_publish_time_in_the_past_means_now() -> None:
    post, live = draft().published(T0, T0 - timedelta(days=1))
    assert live and post.state is PostState.PUBLISHED


def test_archived_posts_cannot_be_edited_published_or_deleted() -> None:
    scheduled, _ = draft().published(T0, T0 + timedelta(hours=1))
    archived = scheduled.archived_at(T0)
    assert archived.state is PostState.ARCHIVED and archived.scheduled_revision is None
    assert archived.due(T0 + timedelta(days=1)) is None
    with pytest.raises(FailedPrecondition):
        archived.edited(T0)
    with pytest.raises(FailedPrecondition, match="archived"):
        archived.published(T0, None)
    with pytest.raises(FailedPrecondition):
        archived.check_deletable()
    assert archived.archived_at(T0) is archived


def test_only_drafts_can_be_deleted() -> None:
    draft().check_deletable()
    with pytest.raises(FailedPrecondition, match="only drafts"):
        draft().published(T0, None)[0].check_deletable()
    with pytest.raises(FailedPrecondition):
        draft().published(T0, T0 + timedelta(hours=1))[0].check_deletable()


def test_stale_etag_is_aborted_and_empty_etag_is_accepted() -> None:
    post = draft()
    post.check_etag("")
    post.check_etag(post.etag)
    with pytest.raises(Aborted):
        post.check_etag("stale")


# ---- content validation -----------------------------------------------------------------


def content(**kw: object) -> PostContent:
    base: dict[str, object] = dict(title="开放日", body="本周六 早教中心开放日，电话 400-820-1234。")
    base.update(kw)
    return PostContent(**base)  # type: ignore[arg-type]


def test_valid_content_passes_and_empty_template_stays_empty() -> None:
    assert validate_content(content()).variation.rep_template == ""


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"title": ""}, "content.title"),
        ({"title": "  "}, "content.title"),
        ({"title": "x" * 121}, "content.title"),
        ({"title": "a\nb"}, "content.title"),
        ({"body": ""}, "content.body"),
        ({"body": "x" * 2001}, "content.body"),
        ({"body": "hidden\u200btext"}, "content.body"),
        ({"body": "nul\x00"}, "content.body"),
        ({"images": tuple(f"a{i}" for i in range(10))}, "content.images"),
        ({"images": ("a1", "a1")}, "content.images[1]"),
        ({"topics": ("t", "t")}, "content.topics[1]"),
        ({"variation": Variation(protected_phrases=("不在正文里",))}, "content.variation.protected_phrases[0]"),
        ({"variation": Variation(protected_phrases=("",))}, "content.variation.protected_phrases[0]"),
        ({"variation": Variation(rep_template="{{ rep.phone }} {{ body }}")}, "content.variation.rep_template"),
    ],
)
def test_invalid_content_names_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_content(content(**kw))
    assert err.value.field == field


def test_body_of_exactly_2000_chinese_characters_is_accepted() -> None:
    validate_content(content(body="字" * 2000))


def test_emoji_zero_width_joiner_sequences_are_allowed() -> None:
    validate_content(content(body="全家出游 👨\u200d👩\u200d👧 周末见"))


def test_protected_phrase_inside_alternatives_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="outside"):
        validate_content(content(body="[[早教中心|早教机构]]开放日", variation=Variation(protected_phrases=("早教中心",))))


def test_merge_content_takes_only_masked_fields() -> None:
    old = content(variation=Variation(protected_phrases=("早教中心开放日",), badge_enabled=True))
    new = content(title="新标题", body="ignored", variation=Variation(rep_template="{{ body }}!"))
    merged = merge_content(old, new, {"content.title", "content.variation.rep_template"})
    assert merged.title == "新标题" and merged.body == old.body
    assert merged.variation.rep_template == "{{ body }}!"
    assert merged.variation.badge_enabled and merged.variation.protected_phrases == ("早教中心开放日",)


# ---- alternatives ------------------------------------------------------------------------


def test_alternatives_parse_and_count() -> None:
    segs = alternatives.parse_body("[[亲爱的家长们|各位爸爸妈妈]]，[[本周六|这个周六]]见[[|！]]")
    assert alternatives.canonical_text(segs) == "亲爱的家长们，本周六见"
    assert alternatives.variation_count(segs) == 8
    assert alternatives.literal_texts(segs) == ["，", "见"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("[[a|b", "never closed"),
        ("a]]", "closes no"),
        ("[[only]]", "two options"),
        ("[[|]]", "all empty"),
        ("[[a|[[b|c]]]]", "nest"),
        ("[[a\n|b]]", "line break"),
        ("[[" + "|".join("abcdefghi") + "]]", "more than"),
    ],
)
def test_malformed_alternatives_are_refused(body: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as err:
        alternatives.parse_body(body)
    assert err.value.field == "content.body"


def test_alternatives_syntax_does_not_clash_with_jinja() -> None:
    # A body holding jinja-like text is just text: only the rep template is a template.
    segs = alternatives.parse_body("{{ 不是模板 }} [[甲|乙]]")
    assert alternatives.canonical_text(segs) == "{{ 不是模板 }} 甲"


# ---- rep template sandbox -------------------------------------------------------------------


def test_template_renders_rep_fields() -> None:
    src = "{{ rep.display_name }}推荐：\n{{ body }}\n—— {{ rep.signature|default('') }}"
    assert templates.validate_rep_template(src) == src
    out = templates.render_template(src, {"rep": {"display_name": "小王", "signature": "祝好", "store": "", "region": "",
                                                  "team": ""}, "post": {"title": "t"}, "body": "正文"})
    assert out == "小王推荐：\n正文\n—— 祝好"


@pytest.mark.parametrize(
    "src",
    [
        "{{ ''.__class__.__mro__ }} {{ body }}",
        "{{ body.__class__ }}",
        "{{ rep.__dict__ }} {{ body }}",
        "{{ rep['display_name'] }} {{ body }}",
        "{{ cycler.__init__.__globals__ }} {{ body }}",
        "{{ lipsum() }} {{ body }}",
        "{% for x in range(10) %}{% endfor %}{{ body }}",
        "{% set x = 1 %}{{ body }}",
        "{% include 'x' %}{{ body }}",
        "{% macro m() %}{% endmacro %}{{ body }}",
        "{{ 'x' * 100000000 }}{{ body }}",
        "{{ body|attr('upper') }}",
        "{{ body|format('x') }}",
        "{{ body.upper() }}",
        "{{ rep }} {{ body }}",
        "{{ secret }} {{ body }}",
        "{{ rep.display_name }}",  # no body
        "{{ body }}{{ body }}",
        "{{ body ",
    ],
)
def test_templates_that_could_leave_the_sandbox_are_refused(src: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        templates.validate_rep_template(src)
    assert err.value.field == "content.variation.rep_template"


# ---- image sniffing ---------------------------------------------------------------------------


def image_bytes(fmt: str, size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "mime"), [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")])
def test_real_images_are_sniffed_with_dimensions(fmt: str, mime: str) -> None:
    data = image_bytes(fmt)
    info = inspect_image(data[:16], io.BytesIO(data), 10_000)
    assert (info.mime_type, info.width, info.height) == (mime, 32, 24)


def test_type_comes_from_bytes_not_names() -> None:
    assert sniff_mime(b"GIF89a...") is None
    with pytest.raises(InvalidArgument, match="not a JPEG"):
        inspect_image(b"%PDF-1.7", io.BytesIO(b"%PDF-1.7 ..."), 10_000)


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG that declares a huge canvas (decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_before_decoding() -> None:
    data = png_bomb(50_000, 50_000)
    with pytest.raises(InvalidArgument) as err:
        inspect_image(data[:16], io.BytesIO(data), 40_000_000)
    assert err.value.field == "chunk"


def test_pixel_limit_is_configurable() -> None:
    data = image_bytes("PNG", (200, 200))
    with pytest.raises(InvalidArgument, match="pixel limit"):
        inspect_image(data[:16], io.BytesIO(data), 39_999)


def test_jpeg_magic_with_garbage_is_refused() -> None:
    data = b"\xff\xd8\xff" + b"garbage" * 10
    with pytest.raises(InvalidArgument):
        inspect_image(data[:16], io.BytesIO(data), 10_000)


# ---- purity -----------------------------------------------------------------------------------


def test_domain_imports_no_grpc_sql_or_celery() -> None:
    domain = Path(__file__).resolve().parent.parent / "services" / "content" / "domain"
    banned = ("grpc", "sqlalchemy", "celery", "redis", "minio", "services.protos", "services.shared.apiutil", "google.protobuf")
    for path in domain.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(banned), f"{path.name} imports {name}"


def test_domain_does_not_load_grpc_sql_or_celery_even_indirectly() -> None:
    import subprocess
    import sys

    code = (
        "import sys, services.content.domain.posts, services.content.domain.assets, services.content.domain.topics;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'grpc', 'sqlalchemy', 'celery', 'redis', 'minio'});"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_template_with_control_characters_is_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        templates.validate_rep_template("{{ body }}\x00")
    assert err.value.field == "content.variation.rep_template"


def test_multi_picture_jpegs_from_phones_are_accepted() -> None:
    # Pillow reads a JPEG carrying an MPO index (phone depth maps, previews) as "MPO".
    first, second = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (40, 30), "blue")
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second])
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).format == "MPO"
    info = inspect_image(data[:16], io.BytesIO(data), 10_000)
    assert (info.mime_type, info.width, info.height) == ("image/jpeg", 40, 30)
