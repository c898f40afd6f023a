"""Image variation: every rep's copy of a photo is lightly, naturally and deterministically their own.

Per (asset, rep) a small edit is planned from a hash of the pair
(:func:`plan_edit`): a crop of at most 3 % per side, brightness and contrast
within ±4 %, a colour balance (warmth and tint) within ±2 % per channel, and a
JPEG quality from 84 to 92. :func:`render_variant` applies it:

1. decode the original (JPEG, PNG or WebP), EXIF orientation applied, alpha
   flattened onto white, any ICC profile converted to sRGB (see
   :mod:`.image_decode`);
2. crop — no resize back: the copy is up to 6 % narrower and shorter than the
   original, and left/top are snapped to the 8-pixel JPEG block grid so the
   re-encode costs little fidelity. Only an image whose crop exceeds
   ``max_side`` is resampled, once, and then ``edit.scale`` shrinks it by up
   to 3 % more, for free;
3. tone and colour through one point lookup table (per channel, so it is one
   pass over the pixels): a contrast S-curve that keeps black and white,
   then brightness and colour-balance gains;
4. the optional badge (:mod:`.image_badge`);
5. encode as baseline JPEG with nothing but pixels: no EXIF, GPS, XMP, ICC or
   comments;
6. fingerprints: sha256 of the bytes, and imagehash pHash and dHash computed
   on a 1/8-size thumbnail of the final pixels made with ``reduce()`` (cheap;
   perceptual hashes only look at a 32x32 or 9x8 version anyway).

Why warmth and tint rather than saturation: saturation mixes the three
channels, so it cannot be a per-channel lookup table. Done with a colour
matrix, or by decoding to and encoding from YCbCr, it cost 0.8-1 ms more per
1080x1080 photo here, which pushes the whole edit past its budget of 1.5x a
plain decode + encode. A slight white-balance difference is also the most
natural way two phones' copies of one photo differ.

Distinctness: the plan is drawn from blake2b(asset sha256, rep id, attempt),
so two reps' plans differ unless the hash collides; different crop sizes or
JPEG qualities give different bytes outright (the size and the quantisation
tables are in the header), and the tone tables differ for almost every pair
besides. For a hard guarantee, a caller that finds a render byte-equal to
another rep's copy of the same asset re-plans that rep with ``attempt + 1``.

Nothing here tries to move perceptual hashes: pHash/dHash distances between
reps' copies are small by design. Distinctness beyond bytes comes from
personalisation (the badge).
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import imagehash
import numpy as np
from PIL import Image

from .image_badge import apply_badge, render_badge
from .image_decode import DEFAULT_MAX_PIXELS, BadgeRenderError, ImageRenderError, decode
from .image_ssim import mean_ssim

__all__ = [
    "MAX_CROP", "SCALE_RANGE", "MAX_TONE", "MAX_BALANCE", "QUALITY_RANGE", "MIME_TYPE",
    "ImageEdit", "plan_edit", "Badge", "Variant", "render_variant", "ssim_against_original",
    "hash_distance", "ImageRenderError", "BadgeRenderError",
]

MAX_CROP = 0.03  # fraction of the width/height cut from each side, at most
SCALE_RANGE = (0.97, 1.0)  # extra shrink, applied only when the image is resampled anyway (over max_side)
MAX_TONE = 0.04  # brightness and contrast multipliers within 1 ± this
MAX_BALANCE = 0.02  # warmth (red up, blue down, or back) and tint (green) within 1 ± this per channel
QUALITY_RANGE = (84, 92)  # JPEG quality, inclusive
MIME_TYPE = "image/jpeg"
BLOCK = 8  # JPEG block size: left/top crops snap to it when nothing is resampled
HASH_THUMB = 128  # reduce() so that the short side stays at least this before hashing

_PERSON = b"contentops-img1"  # blake2b personalisation: a new scheme gets a new value (and new plans)


@dataclass(frozen=True)
class ImageEdit:
    """One rep's edit of one image. Deterministic per (asset sha256, rep id); JSON-serialisable via to_dict()."""

    crop: tuple[float, float, float, float]  # fraction cut from left, top, right, bottom; each in [0, MAX_CROP]
    scale: float  # in SCALE_RANGE; used only when the image is resampled to fit max_side
    brightness: float  # multiplier, 1 ± MAX_TONE
    contrast: float  # slope at mid-grey of an S-curve that keeps black and white, 1 ± MAX_TONE
    warmth: float  # red x (1 + warmth), blue x (1 - warmth); |warmth| <= MAX_BALANCE
    tint: float  # green x (1 + tint); |tint| <= MAX_BALANCE
    jpeg_quality: int  # in QUALITY_RANGE

    def __post_init__(self) -> None:
        problems = []
        if len(self.crop) != 4 or not all(0.0 <= c <= MAX_CROP for c in self.crop):
            problems.append(f"crop {self.crop} must be 4 fractions in [0, {MAX_CROP}]")
        if not SCALE_RANGE[0] <= self.scale <= SCALE_RANGE[1]:
            problems.append(f"scale {self.scale} outside {SCALE_RANGE}")
        for name in ("brightness", "contrast"):
            if not abs(getattr(self, name) - 1.0) <= MAX_TONE + 1e-9:
                problems.append(f"{name} {getattr(self, name)} outside 1 ± {MAX_TONE}")
        for name in ("warmth", "tint"):
            if not abs(getattr(self, name)) <= MAX_BALANCE + 1e-9:
                problems.append(f"{name} {getattr(self, name)} outside ± {MAX_BALANCE}")
        if not (isinstance(self.jpeg_quality, int) and QUALITY_RANGE[0] <= self.jpeg_quality <= QUALITY_RANGE[1]):
            problems.append(f"jpeg_quality {self.jpeg_quality} outside {QUALITY_RANGE}")
        if problems:
            raise ValueError("invalid image edit: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["crop"] = list(self.crop)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageEdit:
        return cls(crop=tuple(float(c) for c in data["crop"]), scale=float(data["scale"]),  # type: ignore[arg-type]
                   brightness=float(data["brightness"]), contrast=float(data["contrast"]),
                   warmth=float(data["warmth"]), tint=float(data["tint"]), jpeg_quality=int(data["jpeg_quality"]))


def plan_edit(asset_sha256: str, rep_id: str, attempt: int = 0) -> ImageEdit:
    """The edit for this rep's copy of this asset: the same inputs always give the same edit.

    ``attempt`` > 0 gives a fresh, equally light plan: for the (astronomically rare) case where two reps' renders
    come out byte-identical, the service re-plans one of them.
    """
    if not asset_sha256 or not rep_id:
        raise ValueError("plan_edit needs an asset sha256 and a rep id")
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    key = f"{len(asset_sha256)}:{asset_sha256}|{len(rep_id)}:{rep_id}|{attempt}"  # length-prefixed: unambiguous
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=32, person=_PERSON).digest()
    u = [int.from_bytes(digest[i:i + 2], "big") / 0xFFFF for i in range(0, 20, 2)]  # ten uniform draws in [0, 1]

    def around_one(x: float, spread: float) -> float:
        return round(1.0 + spread * (2.0 * x - 1.0), 4)

    lo, hi = QUALITY_RANGE
    return ImageEdit(
        crop=(round(MAX_CROP * u[0], 4), round(MAX_CROP * u[1], 4), round(MAX_CROP * u[2], 4), round(MAX_CROP * u[3], 4)),
        scale=round(SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * u[4], 4),
        brightness=around_one(u[5], MAX_TONE),
        contrast=around_one(u[6], MAX_TONE),
        warmth=round(MAX_BALANCE * (2.0 * u[7] - 1.0), 4),
        tint=round(MAX_BALANCE * (2.0 * u[8] - 1.0), 4),
        jpeg_quality=lo + int.from_bytes(digest[20:24], "big") % (hi - lo + 1),
    )


@dataclass(frozen=True)
class Badge:
    text: str  # the rep's display name (may be Chinese); "" for a QR-only badge
    qr_png: bytes | None = None  # the rep's contact QR (PNG, JPEG or WebP bytes)
    position: int = 1  # BadgePosition: 1 bottom-right, 2 bottom-left, 3 top-right, 4 top-left (0 = 1)


@dataclass(frozen=True)
class Variant:
    data: bytes
    sha256: str
    phash: str  # imagehash pHash, 16 hex digits
    dhash: str  # imagehash dHash, 16 hex digits
    width: int
    height: int
    mime_type: str
    edit: ImageEdit
    badge_box: tuple[int, int, int, int] | None  # left, top, right, bottom in output pixels
    source_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # the crop, in upright original pixels
    badge_text: str | None = None  # the name as drawn (None: no name on the badge, e.g. no font has its glyphs)


def render_variant(original: bytes, edit: ImageEdit, badge: Badge | None = None, max_side: int = 1600, *,
                   max_pixels: int = DEFAULT_MAX_PIXELS, font_path: str | None = None) -> Variant:
    """Apply ``edit`` (and the badge) to ``original``; raise ImageRenderError if it cannot be decoded whole."""
    if max_side < 1:
        raise ValueError("max_side must be positive")
    decoded = decode(original, max_pixels=max_pixels, fit_long_side=max_side, what="original image")
    image, (full_w, full_h) = decoded.image, decoded.full_size
    left = math.floor(edit.crop[0] * full_w)
    top = math.floor(edit.crop[1] * full_h)
    right = full_w - math.floor(edit.crop[2] * full_w)
    bottom = full_h - math.floor(edit.crop[3] * full_h)
    if right - left < 1 or bottom - top < 1:  # 1-2 px wide images: keep what there is
        left, top, right, bottom = 0, 0, full_w, full_h
    crop_w, crop_h = right - left, bottom - top
    if max(crop_w, crop_h) > max_side or image.size != (full_w, full_h):
        factor = min(1.0, max_side / max(crop_w, crop_h)) * edit.scale  # never enlarges
        size = (max(1, round(crop_w * factor)), max(1, round(crop_h * factor)))
        kx, ky = image.width / full_w, image.height / full_h
        image = image.resize(size, Image.Resampling.LANCZOS, box=(left * kx, top * ky, right * kx, bottom * ky),
                             reducing_gap=3.0)
    else:  # no resampling: a plain crop, left/top on the block grid so the recompression stays faithful
        left -= left % BLOCK
        top -= top % BLOCK
        image = image.crop((left, top, right, bottom))
    image = image.point(_tone_table(image.mode, edit.brightness, edit.contrast, edit.warmth, edit.tint))

    badge_box, badge_text = None, None
    if badge is not None:
        tile = render_badge(image.size, badge.text, badge.qr_png, badge.position, font_path)
        if tile is not None:
            apply_badge(image, tile)
            badge_box, badge_text = tile.box, tile.text

    image.info = {}
    out = io.BytesIO()
    image.save(out, "JPEG", quality=edit.jpeg_quality)
    data = out.getvalue()
    thumb = _thumbnail(image)
    return Variant(
        data=data, sha256=hashlib.sha256(data).hexdigest(),
        phash=str(imagehash.phash(thumb)), dhash=str(imagehash.dhash(thumb)),
        width=image.width, height=image.height, mime_type=MIME_TYPE, edit=edit, badge_box=badge_box,
        source_box=(float(left), float(top), float(right), float(bottom)), badge_text=badge_text,
    )


def _thumbnail(image: Image.Image) -> Image.Image:
    """A copy about 1/8 the size for pHash and dHash, which only look at a 32x32 or 9x8 version anyway.

    Every other pixel of every other row, then ``reduce()`` (a box average) of what is left: averaging 16 samples
    per thumbnail pixel instead of 64 costs under half of a full ``reduce(8)`` and moved at most one hash bit
    (against hashing the full image) on the demo photos; perceptual hashes shrug off far more than that.
    """
    factor = max(1, min(image.size) // HASH_THUMB)
    if factor >= 4:
        image = image.resize((image.width // 2, image.height // 2), Image.Resampling.NEAREST)
        factor //= 2
    return image.reduce(factor) if factor > 1 else image


@functools.lru_cache(maxsize=256)
def _tone_table(mode: str, brightness: float, contrast: float, warmth: float, tint: float) -> list[int]:
    """One 256-entry table per band: a contrast curve, then brightness and the channel's balance as gains.

    Contrast is a gentle S-curve (or its inverse) that pivots on mid-grey and leaves black and white where they
    are: a straight line around 128 would lift or crush the blacks, which looks washed out and, in large dark
    areas, costs far more fidelity (SSIM) than the 4 % suggests. Brightness and balance are gains, so black stays
    black too.
    """
    gains = np.array((1.0 + warmth, 1.0 + tint, 1.0 - warmth) if mode == "RGB" else (1.0,))
    x = np.arange(256, dtype=np.float64)
    curve = x + (contrast - 1.0) * (x - 128.0) * (4.0 * x * (255.0 - x) / 65025.0)
    table = np.floor(np.outer(gains * brightness, curve) + 0.5).clip(0, 255).astype(np.int64)
    return table.ravel().tolist()  # a new plan per rep: this runs once per render, so it is vectorised


def ssim_against_original(original: bytes, variant: Variant, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> float:
    """Greyscale SSIM of the variant against the original, aligned for the known crop and scale, outside the badge."""
    decoded = decode(original, max_pixels=max_pixels, what="original image")
    box = variant.source_box
    size = (variant.width, variant.height)
    int_box = tuple(int(v) for v in box)
    if all(v == int(v) for v in box) and (int_box[2] - int_box[0], int_box[3] - int_box[1]) == size:
        reference = decoded.image.crop(int_box)
    else:
        reference = decoded.image.resize(size, Image.Resampling.LANCZOS, box=box)
    try:
        with Image.open(io.BytesIO(variant.data)) as im:
            copy = np.asarray(im.convert("L"))
    except Exception as err:
        raise ImageRenderError(f"variant image is unreadable: {err}") from None
    if copy.shape != (size[1], size[0]):
        raise ImageRenderError(f"variant is {copy.shape[1]}x{copy.shape[0]}, its record says {size[0]}x{size[1]}")
    return mean_ssim(np.asarray(reference.convert("L")), copy, variant.badge_box)


def hash_distance(a: str, b: str) -> int:
    """Hamming distance between two imagehash hex strings of equal length (e.g. two copies' pHash)."""
    if len(a) != len(b):
        raise ValueError("hashes differ in length")
    return (int(a, 16) ^ int(b, 16)).bit_count()
