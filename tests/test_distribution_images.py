"""Image variation (services/distribution/domain/images.py): light, deterministic, distinct, faithful, clean.

Real photos: the scikit-image samples bundled as services/demo_data/*.jpg
(coffee, chelsea, astronaut). Everything else is built in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import imagehash
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageFile, ImageOps

from services.distribution.domain import image_badge
from services.distribution.domain.images import (
    MAX_BALANCE,
    MAX_CROP,
    MAX_TONE,
    QUALITY_RANGE,
    SCALE_RANGE,
    Badge,
    BadgeRenderError,
    ImageEdit,
    ImageRenderError,
    Variant,
    hash_distance,
    plan_edit,
    render_variant,
    ssim_against_original,
)
from services.shared.errors import FailedPrecondition

from . import infra

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((ROOT / "services" / "demo_data").glob("*.jpg"))
HEX16 = re.compile(r"^[0-9a-f]{16}$")


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    assert len(PHOTOS) >= 3, "the demo photos are missing"
    return {p.stem: p.read_bytes() for p in PHOTOS}


@pytest.fixture(scope="module")
def coffee(photos: dict[str, bytes]) -> bytes:
    return photos["01-coffee"]


def pixels(data: bytes, mode: str = "RGB") -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert(mode)).astype(np.int16)


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def qr_like(modules: int = 25, px: int = 4, seed: int = 3) -> tuple[bytes, np.ndarray]:
    """A QR-shaped card (finder squares, random modules, 4-module quiet zone) and its module grid."""
    rng = np.random.default_rng(seed)
    dark = rng.random((modules, modules)) > 0.5
    for y, x in ((0, 0), (0, modules - 7), (modules - 7, 0)):
        dark[y:y + 7, x:x + 7] = True
        dark[y + 1:y + 6, x + 1:x + 6] = False
        dark[y + 2:y + 5, x + 2:x + 5] = True
    grid = np.pad(dark, 4, constant_values=False)
    image = Image.fromarray(np.where(grid, 0, 255).astype(np.uint8))
    return encode(image.resize((grid.shape[1] * px, grid.shape[0] * px), Image.Resampling.NEAREST), "PNG"), grid


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of every segment before the scan."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    segments, i = [], 2
    while i < len(data):
        assert data[i] == 0xFF, f"marker expected at {i}"
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2:i + 4], "big")
        segments.append((marker, data[i + 4:i + 2 + length]))
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        i += 2 + length
    return segments


# ---- the plan ----------------------------------------------------------------------------------


def assert_within_bounds(edit: ImageEdit) -> None:
    assert len(edit.crop) == 4 and all(0.0 <= c <= MAX_CROP for c in edit.crop)
    assert SCALE_RANGE[0] <= edit.scale <= SCALE_RANGE[1] and 0.97 <= edit.scale <= 1.03
    eps = 1e-9  # 0.96 - 1 is -0.04000000000000004 in floating point
    assert MAX_TONE <= 0.04 and MAX_BALANCE * 2 <= 0.04
    assert abs(edit.brightness - 1) <= MAX_TONE + eps and abs(edit.contrast - 1) <= MAX_TONE + eps
    assert abs(edit.warmth) <= MAX_BALANCE + eps and abs(edit.tint) <= MAX_BALANCE + eps
    assert QUALITY_RANGE[0] <= edit.jpeg_quality <= QUALITY_RANGE[1] and isinstance(edit.jpeg_quality, int)


def test_plans_stay_within_bounds_and_use_the_whole_range() -> None:
    edits = [plan_edit(hashlib.sha256(f"asset-{a}".encode()).hexdigest(), f"rep-{r}") for a in range(30) for r in range(100)]
    for edit in edits:
        assert_within_bounds(edit)
    # the ranges are used, not just a corner of them
    assert max(e.crop[0] for e in edits) > 0.028 and min(e.crop[3] for e in edits) < 0.002
    assert max(e.brightness for e in edits) > 1.038 and min(e.contrast for e in edits) < 0.962
    assert max(e.warmth for e in edits) > 0.019 and min(e.tint for e in edits) < -0.019
    assert {e.jpeg_quality for e in edits} == set(range(QUALITY_RANGE[0], QUALITY_RANGE[1] + 1))


@settings(max_examples=100, deadline=None)
@given(sha=st.text(min_size=1, max_size=80), rep=st.text(min_size=1, max_size=60), attempt=st.integers(0, 50))
def test_any_asset_and_rep_gives_a_bounded_deterministic_plan(sha: str, rep: str, attempt: int) -> None:
    edit = plan_edit(sha, rep, attempt)
    assert_within_bounds(edit)
    assert plan_edit(sha, rep, attempt) == edit
    assert ImageEdit.from_dict(json.loads(json.dumps(edit.to_dict()))) == edit


def test_plans_are_per_asset_and_rep_and_attempt() -> None:
    sha = hashlib.sha256(b"photo").hexdigest()
    plans = {plan_edit(sha, f"rep-{i}") for i in range(5000)}
    assert len(plans) == 5000
    assert plan_edit(sha, "rep-1") != plan_edit(hashlib.sha256(b"other").hexdigest(), "rep-1")
    assert plan_edit(sha, "rep-1", attempt=1) != plan_edit(sha, "rep-1")
    assert plan_edit(sha, "ab", 0) != plan_edit(sha, "a", 0)  # no ambiguity in how the inputs are joined


def test_edits_out_of_bounds_are_refused() -> None:
    good = plan_edit("sha", "rep").to_dict()
    for field, value in (("crop", [0.05, 0, 0, 0]), ("crop", [0, 0, 0]), ("scale", 1.2), ("brightness", 1.2),
                         ("contrast", 0.5), ("warmth", 0.1), ("tint", -0.05), ("jpeg_quality", 99)):
        with pytest.raises(ValueError, match=field.split("_")[0]):
            ImageEdit.from_dict({**good, field: value})
    with pytest.raises(ValueError):
        plan_edit("", "rep")
    with pytest.raises(ValueError):
        plan_edit("sha", "rep", attempt=-1)


# ---- rendering: determinism, bounds, distinctness -----------------------------------------------


def test_render_is_deterministic_and_records_its_fingerprints(coffee: bytes) -> None:
    edit = plan_edit("coffee", "rep-7")
    first, again = render_variant(coffee, edit), render_variant(coffee, edit)
    assert first == again
    assert first.mime_type == "image/jpeg" and first.data[:3] == b"\xff\xd8\xff"
    assert first.sha256 == hashlib.sha256(first.data).hexdigest()
    assert HEX16.match(first.phash) and HEX16.match(first.dhash)
    assert first.edit == edit and first.badge_box is None
    with Image.open(io.BytesIO(first.data)) as im:
        assert im.format == "JPEG" and im.size == (first.width, first.height)
        # the recorded hashes are imagehash's, of the copy's own pixels (up to a bit or two of thumbnailing)
        assert hash_distance(first.phash, str(imagehash.phash(im))) <= 4
        assert hash_distance(first.dhash, str(imagehash.dhash(im))) <= 4


def test_crop_and_tone_stay_light(photos: dict[str, bytes]) -> None:
    for name, data in photos.items():
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
        for i in range(8):
            variant = render_variant(data, plan_edit(name, f"rep-{i}"))
            left, top, right, bottom = variant.source_box
            assert 0 <= left <= MAX_CROP * width and width - right <= MAX_CROP * width + 1
            assert 0 <= top <= MAX_CROP * height and height - bottom <= MAX_CROP * height + 1
            assert (variant.width, variant.height) == (right - left, bottom - top)  # no resize back
            assert left % 8 == 0 and top % 8 == 0  # on the JPEG block grid
            original = pixels(data)[int(top):int(bottom), int(left):int(right)].reshape(-1, 3).mean(axis=0)
            copy = pixels(variant.data).reshape(-1, 3).mean(axis=0)
            assert np.all(np.abs(copy / original - 1) < 0.08), (name, i, copy / original)


def test_200_reps_get_200_byte_distinct_copies(coffee: bytes) -> None:
    sha = hashlib.sha256(coffee).hexdigest()
    variants = [render_variant(coffee, plan_edit(sha, f"reps/{i:04d}")) for i in range(200)]
    assert len({v.sha256 for v in variants}) == 200
    assert len({v.data for v in variants}) == 200
    # and nothing adversarial: the copies still look alike to perceptual hashes
    assert max(hash_distance(v.phash, variants[0].phash) for v in variants) <= 16


def test_large_photos_are_shrunk_once_with_the_planned_scale(coffee: bytes) -> None:
    base = Image.open(io.BytesIO(coffee)).convert("RGB")
    big = encode(base.resize((3400, 2267), Image.Resampling.LANCZOS), quality=90)  # decoded at 1/2 from the DCT
    for i in range(3):
        edit = plan_edit("big", f"rep-{i}")
        variant = render_variant(big, edit, max_side=1600)
        assert max(variant.width, variant.height) == round(1600 * edit.scale)
        left, top, right, bottom = variant.source_box
        assert abs(variant.width / variant.height - (right - left) / (bottom - top)) < 0.01
        assert ssim_against_original(big, variant) >= 0.95


# ---- fidelity ----------------------------------------------------------------------------------


def test_ssim_against_the_aligned_original_is_at_least_095(photos: dict[str, bytes]) -> None:
    qr, _ = qr_like()
    lowest = {}
    for name, data in photos.items():
        scores = []
        for i in range(10):
            edit = plan_edit(hashlib.sha256(data).hexdigest(), f"rep-{i}")
            plain = render_variant(data, edit)
            badged = render_variant(data, edit, Badge(f"Rep {i} 王小明", qr if i % 2 else None, 1 + i % 4))
            assert badged.badge_box is not None
            scores += [ssim_against_original(data, plain), ssim_against_original(data, badged)]
        lowest[name] = min(scores)
    assert min(lowest.values()) >= 0.95, lowest


def test_ssim_tells_a_misaligned_or_damaged_copy_apart(coffee: bytes) -> None:
    variant = render_variant(coffee, plan_edit("coffee", "rep-1"))
    assert ssim_against_original(coffee, variant) >= 0.95
    left, top, right, bottom = variant.source_box
    shifted = Variant(**{**variant.__dict__, "source_box": (left + 6, top + 6, right + 6, bottom + 6)})
    assert ssim_against_original(coffee, shifted) < 0.8
    with Image.open(io.BytesIO(variant.data)) as im:
        noisy = np.asarray(im.convert("RGB")).astype(np.int16)
    noisy = noisy + np.random.default_rng(1).normal(0, 25, noisy.shape)
    damaged = Variant(**{**variant.__dict__, "data": encode(Image.fromarray(noisy.clip(0, 255).astype(np.uint8)))})
    assert ssim_against_original(coffee, damaged) < 0.8


# ---- metadata and orientation ------------------------------------------------------------------


def exif_photo(orientation: int) -> bytes:
    """A 300x200 photo as the camera stored it (red block at the stored top-left), with EXIF, GPS, ICC, XMP, comment."""
    rng = np.random.default_rng(5)
    stored = np.clip(rng.normal(128, 30, (200, 300, 3)), 0, 255).astype(np.uint8)
    stored[:60, :90] = (220, 30, 30)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PhoneMaker"
    exif[0x0110] = "Phone 15"
    exif[0x0132] = "2026:11:24 10:00:00"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (31.0, 14.0, 8.5), "E", (121.0, 28.0, 12.25)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(Image.fromarray(stored), quality=92, exif=exif, icc_profile=icc, comment=b"shot by rep 12",
                  xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>')
    with Image.open(io.BytesIO(data)) as im:  # the input really carries it all
        assert im.getexif()[0x0112] == orientation and im.getexif().get_ifd(0x8825)[1] == "N"
        assert im.info.get("icc_profile") and im.info.get("comment") and (im.info.get("xmp") or b"xmpmeta" in data)
    return data


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_metadata_is_stripped_and_orientation_applied(orientation: int) -> None:
    data = exif_photo(orientation)
    edit = plan_edit("exif", f"rep-{orientation}")
    variant = render_variant(data, edit)
    for copy in (variant, render_variant(data, edit, Badge("Anna"))):
        segments = jpeg_segments(copy.data)
        markers = [m for m, _ in segments]
        assert set(markers) <= {0xE0, 0xDB, 0xC0, 0xC4, 0xDD, 0xDA}, [hex(m) for m in markers]  # JFIF, tables, frame, scan
        assert all(payload.startswith(b"JFIF\x00") for m, payload in segments if m == 0xE0)
        for needle in (b"Exif", b"PhoneMaker", b"Phone 15", b"2026:11:24", b"ICC_PROFILE", b"xmpmeta", b"shot by rep"):
            assert needle not in copy.data
        with Image.open(io.BytesIO(copy.data)) as im:
            assert not im.getexif() and "icc_profile" not in im.info and "comment" not in im.info
    with Image.open(io.BytesIO(variant.data)) as im:
        upright = np.asarray(im.convert("RGB")).astype(np.int16)
    # where the stored top-left corner ends up once the photo is shown the right way up
    expected_corner = {1: "top-left", 3: "bottom-right", 6: "top-right", 8: "bottom-left"}[orientation]
    portrait = orientation in (6, 8)
    assert (variant.height > variant.width) == portrait
    h, w = upright.shape[:2]
    corners = {"top-left": upright[:20, :20], "top-right": upright[:20, w - 20:],
               "bottom-left": upright[h - 20:, :20], "bottom-right": upright[h - 20:, w - 20:]}
    for corner, patch in corners.items():
        red = patch[..., 0].mean() > 170 and patch[..., 1].mean() < 80
        assert red == (corner == expected_corner), (corner, patch.reshape(-1, 3).mean(axis=0))
    # and the orientation the viewer would apply agrees with ours
    with Image.open(io.BytesIO(data)) as im:
        assert ImageOps.exif_transpose(im).size[0] >= variant.width


# ---- other inputs --------------------------------------------------------------------------------


def test_png_with_alpha_is_flattened_onto_white() -> None:
    rgba = np.zeros((240, 320, 4), dtype=np.uint8)
    rgba[:, 160:] = (20, 60, 200, 255)  # opaque blue right half; the left half is fully transparent black
    rgba[:, :160, :3] = 0
    variant = render_variant(encode(Image.fromarray(rgba, "RGBA"), "PNG"), plan_edit("png", "rep"))
    out = pixels(variant.data)
    assert out[:, :100].mean() > 240  # white, not black
    assert out[:, -100:, 2].mean() > 180 and out[:, -100:, 0].mean() < 60


@pytest.mark.parametrize("kind", ["webp", "webp-alpha", "png-grey", "png-16bit", "png-palette", "jpeg-cmyk", "jpeg-grey"])
def test_other_inputs_render(kind: str, coffee: bytes) -> None:
    photo = Image.open(io.BytesIO(coffee)).convert("RGB")
    if kind == "webp":
        data = encode(photo, "WEBP", quality=85)
    elif kind == "webp-alpha":
        rgba = photo.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
        data = encode(rgba, "WEBP", lossless=True)
    elif kind == "png-grey":
        data = encode(photo.convert("L"), "PNG")
    elif kind == "png-16bit":
        data = encode(Image.fromarray((np.asarray(photo.convert("L")).astype(np.uint16) * 257)), "PNG")
    elif kind == "png-palette":
        data = encode(photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG")
    elif kind == "jpeg-cmyk":
        data = encode(photo.convert("CMYK"), quality=92)
    else:
        data = encode(photo.convert("L"), quality=92)
    variant = render_variant(data, plan_edit(kind, "rep-1"), Badge("Anna"))
    with Image.open(io.BytesIO(variant.data)) as im:
        assert im.format == "JPEG" and im.mode in ("RGB", "L")
    assert variant.badge_box is not None
    # the photo survives the trip (the 16-bit one is not clipped to white; alpha is flattened onto white)
    expected = photo.convert("L")
    if kind == "webp-alpha":
        expected = Image.composite(photo, Image.new("RGB", photo.size, "white"), rgba.getchannel("A")).convert("L")
    assert abs(pixels(variant.data, "L").mean() - np.asarray(expected).mean()) < 12
    assert ssim_against_original(data, variant) >= 0.95


# ---- bad input -----------------------------------------------------------------------------------


def corrupt_inputs(coffee: bytes) -> dict[str, bytes]:
    png = encode(Image.open(io.BytesIO(coffee)), "PNG")
    sof = coffee.index(b"\xff\xc0")
    bad_sof = coffee[:sof + 5] + b"\x00\x00\x00\x00" + coffee[sof + 9:]  # zero height and width
    idat = png.index(b"IDAT")
    bad_crc = png[:idat + 10] + bytes([png[idat + 10] ^ 0xFF]) + png[idat + 11:]
    return {
        "empty": b"",
        "random bytes": os.urandom(4096),
        "text": b"<html>not an image</html>",
        "truncated JPEG": coffee[: len(coffee) * 6 // 10],
        "JPEG cut after the header": coffee[:sof + 200],
        "JPEG with zero size": bad_sof,
        "truncated PNG": png[: len(png) // 2],
        "PNG with a bad chunk CRC": bad_crc,
        "GIF (not accepted)": encode(Image.new("P", (40, 40)), "GIF"),
        "truncated WebP": encode(Image.open(io.BytesIO(coffee)), "WEBP")[:600],
    }


def test_corrupt_or_truncated_originals_raise_a_domain_error(coffee: bytes) -> None:
    for label, data in corrupt_inputs(coffee).items():
        with pytest.raises(ImageRenderError) as caught:
            render_variant(data, plan_edit("bad", "rep"))
        assert isinstance(caught.value, FailedPrecondition), label
        assert caught.value.reason and "original image" in caught.value.reason, (label, caught.value.reason)
        with pytest.raises(ImageRenderError):
            ssim_against_original(data, render_variant(coffee, plan_edit("bad", "rep")))


def test_pixel_limit_and_truncation_switch(coffee: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImageRenderError, match="pixel limit"):
        render_variant(coffee, plan_edit("big", "rep"), max_pixels=100_000)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # even if some library flips it process-wide
    with pytest.raises(ImageRenderError, match="LOAD_TRUNCATED_IMAGES"):
        render_variant(coffee[: len(coffee) // 2], plan_edit("bad", "rep"))


# ---- the badge -----------------------------------------------------------------------------------


def outside(box: tuple[int, int, int, int], shape: tuple[int, ...], grow: int) -> np.ndarray:
    """True outside ``box`` grown to the 16-px JPEG MCU grid plus ``grow`` px."""
    left, top, right, bottom = box
    keep = np.ones(shape[:2], dtype=bool)
    keep[max(0, top // 16 * 16 - grow):-(-bottom // 16) * 16 + grow, max(0, left // 16 * 16 - grow):-(-right // 16) * 16 + grow] = False
    return keep


@pytest.mark.parametrize("position", [1, 2, 3, 4])
def test_badge_sits_in_its_corner_and_changes_nothing_else(coffee: bytes, position: int) -> None:
    edit = plan_edit("coffee", f"rep-{position}")
    plain, badged = render_variant(coffee, edit), render_variant(coffee, edit, Badge("Anna Müller", None, position))
    assert (plain.width, plain.height) == (badged.width, badged.height) and plain.sha256 != badged.sha256
    left, top, right, bottom = badged.badge_box
    assert 0 <= left < right <= badged.width and 0 <= top < bottom <= badged.height
    assert (left > badged.width / 2) == (position in (1, 3)) and (top > badged.height / 2) == (position in (1, 2))
    a, b = pixels(plain.data), pixels(badged.data)
    inside = np.abs(a[top:bottom, left:right] - b[top:bottom, left:right]).mean()
    assert inside > 20  # the plate is there
    assert np.array_equal(a[outside(badged.badge_box, a.shape, 16)], b[outside(badged.badge_box, b.shape, 16)])
    assert badged.badge_text == "Anna Müller"
    plate = b[top + 3:bottom - 3, left + 3:right - 3].reshape(-1, 3)
    assert np.median(plate) > 200 and plate.min() < 90  # a light plate with dark lettering


def test_badge_qr_is_reproduced_module_for_module(coffee: bytes) -> None:
    qr_png, grid = qr_like()
    photo = Image.open(io.BytesIO(coffee)).convert("RGB").resize((1080, 720), Image.Resampling.LANCZOS)
    data = encode(photo, quality=92)
    variant = render_variant(data, plan_edit("qr", "rep"), Badge("", qr_png, 1))
    left, top, right, bottom = variant.badge_box
    side = max(24, round(0.17 * min(variant.width, variant.height)))
    pad_x, pad_y = (right - left - side) // 2, (bottom - top - side) // 2
    region = pixels(variant.data, "L")[top + pad_y:top + pad_y + side, left + pad_x:left + pad_x + side]
    assert region.shape == (side, side)
    # sample each module at its centre
    n = grid.shape[0]
    centres = ((np.arange(n) + 0.5) * side / n).astype(int)
    seen_dark = region[np.ix_(centres, centres)] < 128
    assert (seen_dark == grid).mean() == 1.0


def test_chinese_name_is_drawn_with_a_cjk_font(coffee: bytes) -> None:
    keys = image_badge._font_keys(None)
    infra.require("a CJK font (Debian fonts-wqy-microhei or fonts-noto-cjk)",
                  any(image_badge._covers(k, "王") for k in keys))
    variant = render_variant(coffee, plan_edit("coffee", "rep"), Badge("王小明 · 上海徐汇店", None, 1))
    assert variant.badge_text == "王小明 · 上海徐汇店"


def test_without_a_cjk_font_the_drawable_part_is_kept(coffee: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_badge, "SYSTEM_FONTS", ())
    image_badge._font_keys.cache_clear()
    try:
        mixed = render_variant(coffee, plan_edit("coffee", "rep"), Badge("王小明 Anna", None, 1))
        assert mixed.badge_text == "Anna"  # no tofu boxes: the glyphs Pillow's own font lacks are left out
        only_cjk = render_variant(coffee, plan_edit("coffee", "rep"), Badge("王小明", None, 1))
        assert only_cjk.badge_text is None and only_cjk.badge_box is None
        qr_png, _ = qr_like()
        qr_only = render_variant(coffee, plan_edit("coffee", "rep"), Badge("王小明", qr_png, 1))
        assert qr_only.badge_text is None and qr_only.badge_box is not None
    finally:
        image_badge._font_keys.cache_clear()


def test_badge_text_is_cleaned_and_fitted(coffee: bytes) -> None:
    long_name = "Alexandra Konstantinopoulou-Fitzgerald of the Northern Region Flagship Store"
    variant = render_variant(coffee, plan_edit("coffee", "rep"), Badge(long_name + "\u200b\n", None, 2))
    left, _, right, _ = variant.badge_box
    assert right - left <= 0.62 * variant.width + 1
    assert variant.badge_text and variant.badge_text.endswith(("…", "...")) and "\u200b" not in variant.badge_text
    assert render_variant(coffee, plan_edit("coffee", "rep"), Badge(" \u200b\t ")).badge_box is None


def test_badge_is_skipped_on_tiny_images_and_a_broken_qr_is_reported(coffee: bytes) -> None:
    tiny = encode(Image.open(io.BytesIO(coffee)).convert("RGB").resize((150, 100)), quality=90)
    variant = render_variant(tiny, plan_edit("tiny", "rep"), Badge("Anna"))
    assert variant.badge_box is None and variant.badge_text is None
    with pytest.raises(BadgeRenderError, match="QR"):
        render_variant(coffee, plan_edit("coffee", "rep"), Badge("Anna", b"\x89PNG\r\n\x1a\n broken", 1))


# ---- purity --------------------------------------------------------------------------------------


def test_copies_and_hashes_are_the_same_in_another_process(coffee: bytes) -> None:
    here = render_variant(coffee, plan_edit("coffee", "rep-7"), Badge("王小明 Anna", None, 3))
    code = ("import sys; from pathlib import Path; from services.distribution.domain.images import *; "
            "v = render_variant(Path(sys.argv[1]).read_bytes(), plan_edit('coffee', 'rep-7'), Badge('王小明 Anna', None, 3)); "
            "print(v.sha256, v.phash, v.dhash)")
    result = subprocess.run([sys.executable, "-c", code, str(PHOTOS[0])], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert result.returncode == 0, result.stderr
    assert PHOTOS[0].stem == "01-coffee"
    assert result.stdout.split() == [here.sha256, here.phash, here.dhash]


def test_the_image_domain_imports_no_infrastructure() -> None:
    code = ("import sys, services.distribution.domain.images as m; "
            "bad = sorted({n.split('.')[0] for n in sys.modules} & "
            "{'grpc', 'sqlalchemy', 'celery', 'redis', 'minio', 'boto3', 'psycopg', 'kombu'}); print(','.join(bad))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
