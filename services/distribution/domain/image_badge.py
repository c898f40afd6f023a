"""The rep badge: a light rounded plate in one corner with the rep's name and/or contact QR.

Like a personalised poster: a white plate at 90 % opacity with a soft radius,
the name in dark grey at about 3.4 % of the image's short side, the QR (when
the rep has one) fully opaque on the plate's outer edge so it scans. Small
images (short side under :data:`MIN_SIDE`) get no badge: it would cover too
much of the picture or be too small to read.

Fonts: the name may be Chinese. Pillow's built-in font (Aileron) has Latin
glyphs only, so CJK-capable system fonts are tried first (Noto Sans CJK,
WenQuanYi Micro/Zen Hei, Droid Sans Fallback; Debian packages
``fonts-noto-cjk``, ``fonts-wqy-microhei``, ...), then DejaVu Sans, then
Pillow's built-in font. The first font that has a glyph for every character
draws the name; if none has them all, the best one draws the characters it
has and the rest are left out (never tofu boxes). What was drawn is returned,
so callers can tell.
"""

from __future__ import annotations

import functools
import io
import os
import re
import threading
import unicodedata
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from .image_decode import BadgeRenderError

MIN_SIDE = 160  # px, short side of the image
MAX_TEXT_CHARS = 40

# (path, preferred face name fragment) — the first existing file with the best coverage wins.
SYSTEM_FONTS: tuple[tuple[str, str], ...] = (
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", " SC"),  # Debian/Ubuntu fonts-noto-cjk
    ("/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc", " SC"),  # Fedora, Arch
    ("/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc", " SC"),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "Micro Hei"),  # Debian fonts-wqy-microhei
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", "Zen Hei"),  # Debian fonts-wqy-zenhei
    ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", ""),  # Debian fonts-droid-fallback
    ("/System/Library/Fonts/PingFang.ttc", "SC"),  # macOS, for developers
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", ""),  # Latin, Greek, Cyrillic
)
BUILTIN = "<pillow-default>"

PLATE = (255, 255, 255)
PLATE_OPACITY = 230  # of 255
INK = (43, 43, 43)

_FONT_LOCK = threading.RLock()
_CONTROL = re.compile(r"[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


@dataclass(frozen=True)
class BadgeTile:
    image: Image.Image  # RGB, the plate's pixels
    mask: Image.Image  # L, how much of each plate pixel covers the photo
    box: tuple[int, int, int, int]  # left, top, right, bottom in output pixels
    text: str | None  # what was actually drawn (None: no name on the plate)


def clean_text(text: str) -> str:
    """NFC, control and invisible characters removed, whitespace collapsed, at most MAX_TEXT_CHARS."""
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text or ""))
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS - 1].rstrip() + "…"


def render_badge(canvas: tuple[int, int], text: str, qr_png: bytes | None, position: int,
                 font_path: str | None = None) -> BadgeTile | None:
    # The cached FreeType faces are shared; on-demand renders may run on several server threads at once.
    with _FONT_LOCK:
        return _render_badge(canvas, text, qr_png, position, font_path)


def _render_badge(canvas: tuple[int, int], text: str, qr_png: bytes | None, position: int,
                  font_path: str | None) -> BadgeTile | None:
    width, height = canvas
    short = min(width, height)
    text = clean_text(text)
    if short < MIN_SIDE or (not text and not qr_png):
        return None
    margin = max(4, round(0.03 * short))
    size = max(12, round(0.034 * short))
    pad = max(4, round(0.5 * size))
    qr = _load_qr(qr_png, max(24, round(0.17 * short))) if qr_png else None
    max_plate_width = round(0.62 * width)
    text_room = max_plate_width - 2 * pad - ((qr.width + pad) if qr else 0)
    font, drawn = _fit_text(text, size, text_room, font_path) if text else (None, "")
    if not drawn and qr is None:
        return None  # no font could draw the name, and there is no QR: an empty plate helps nobody
    ascent, descent = font.getmetrics() if font else (0, 0)
    text_width = round(font.getlength(drawn)) if font and drawn else 0
    text_height = ascent + descent if drawn else 0
    inner_width = (qr.width if qr else 0) + (pad if qr and drawn else 0) + text_width
    inner_height = max(qr.height if qr else 0, text_height)
    plate = (inner_width + 2 * pad, inner_height + 2 * pad)
    if plate[0] > width - 2 * margin or plate[1] > height - 2 * margin:
        return None
    right = position in (1, 3) or position not in (2, 4)
    bottom = position in (1, 2) or position not in (3, 4)
    left = width - margin - plate[0] if right else margin
    top = height - margin - plate[1] if bottom else margin

    radius = min(plate[1] // 2, round(0.7 * size))
    mask = _rounded_mask(plate, radius, PLATE_OPACITY).copy()
    tile = Image.new("RGB", plate, PLATE)
    draw = ImageDraw.Draw(tile)
    if qr and right and drawn:  # the QR sits on the plate's outer edge, toward the corner
        x_text, x_qr = pad, pad + text_width + pad
    else:
        x_qr, x_text = pad, pad + ((qr.width + pad) if qr else 0)
    if qr:
        y_qr = (plate[1] - qr.height) // 2
        tile.paste(qr, (x_qr, y_qr))
        mask.paste(255, (x_qr, y_qr, x_qr + qr.width, y_qr + qr.height))
    if drawn and font:
        y = plate[1] // 2
        draw.text((x_text, y), drawn, font=font, fill=INK, anchor="lm")
    return BadgeTile(tile, mask, (left, top, left + plate[0], top + plate[1]), drawn or None)


def apply_badge(image: Image.Image, tile: BadgeTile) -> None:
    """Blend the plate onto ``image`` (RGB or L) in place."""
    source = tile.image if image.mode == "RGB" else tile.image.convert(image.mode)
    image.paste(source, tile.box[:2], tile.mask)


@functools.lru_cache(maxsize=32)
def _rounded_mask(size: tuple[int, int], radius: int, opacity: int) -> Image.Image:
    """A rounded rectangle with anti-aliased corners (drawn at 4x, then reduced). Cached: copy before drawing."""
    k = 4
    big = Image.new("L", (size[0] * k, size[1] * k), 0)
    ImageDraw.Draw(big).rounded_rectangle((0, 0, big.width - 1, big.height - 1), radius=radius * k, fill=opacity)
    return big.reduce(k)


@functools.lru_cache(maxsize=32)
def _load_qr(data: bytes, side: int) -> Image.Image:
    """The QR decoded, flattened onto white and scaled to ``side``; cached, as a rep's copies share it."""
    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG", "WEBP")) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                qr = Image.new("RGB", im.size, (255, 255, 255))
                qr.paste(rgba, mask=rgba.getchannel("A"))
            else:
                qr = im.convert("RGB")
    except Exception as err:  # any decoding failure of the rep's QR is reported as one error
        raise BadgeRenderError(f"the rep's contact QR image is unreadable: {err}") from None
    if qr.width <= 0 or qr.height <= 0:
        raise BadgeRenderError("the rep's contact QR image has no pixels")
    scale = side / max(qr.size)
    target = (max(1, round(qr.width * scale)), max(1, round(qr.height * scale)))
    if scale >= 1:  # sharp module edges: nearest neighbour when enlarging
        return qr.resize(target, Image.Resampling.NEAREST)
    return qr.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)


# ---- fonts -------------------------------------------------------------------------------------


def _fit_text(text: str, size: int, room: int, font_path: str | None) -> tuple[ImageFont.FreeTypeFont | None, str]:
    key, drawable = _choose_font(text, font_path)
    if not drawable:
        return None, ""
    min_size = max(12, round(size * 0.75))
    font = _font(key, size)
    while font.getlength(drawable) > room and size > min_size:
        size -= 1
        font = _font(key, size)
    if font.getlength(drawable) <= room:
        return font, drawable
    ellipsis = "…" if _covers(key, "…") else "..."
    while drawable and font.getlength(drawable + ellipsis) > room:
        drawable = drawable[:-1].rstrip()
    return (font, drawable + ellipsis) if drawable else (None, "")


def _choose_font(text: str, font_path: str | None) -> tuple[tuple[str, int], str]:
    """The first font that draws every character, else the one that draws most; and the drawable text."""
    best: tuple[tuple[str, int], str] | None = None
    for key in _font_keys(font_path):
        drawable = "".join(ch for ch in text if _covers(key, ch))
        drawable = " ".join(drawable.split())
        if drawable == text:
            return key, text
        if best is None or len(drawable) > len(best[1]):
            best = (key, drawable)
    assert best is not None  # the built-in font is always a candidate
    return best


@functools.lru_cache(maxsize=8)
def _font_keys(font_path: str | None) -> tuple[tuple[str, int], ...]:
    keys: list[tuple[str, int]] = []
    candidates = ([(font_path, "")] if font_path else []) + list(SYSTEM_FONTS)
    for path, prefer in candidates:
        if os.path.isfile(path):
            index = _face_index(path, prefer)
            if index is not None:
                keys.append((path, index))
    keys.append((BUILTIN, 0))
    return tuple(keys)


def _face_index(path: str, prefer: str) -> int | None:
    """For a collection (.ttc), the face whose family name contains ``prefer``; else the first face."""
    first: int | None = None
    for index in range(24 if path.lower().endswith((".ttc", ".otc")) else 1):
        try:
            family = ImageFont.truetype(path, 12, index=index).getname()[0] or ""
        except OSError:
            break
        if first is None:
            first = index
        if not prefer or prefer.strip().lower() in family.lower():
            return index
    return first


@functools.lru_cache(maxsize=64)
def _font(key: tuple[str, int], size: int) -> ImageFont.FreeTypeFont:
    path, index = key
    if path == BUILTIN:
        return ImageFont.load_default(size=size)  # type: ignore[return-value]
    return ImageFont.truetype(path, size, index=index)


_NOTDEF = "\U0010fffd"  # a private-use code point no font maps: renders as the font's .notdef glyph


@functools.lru_cache(maxsize=8192)
def _covers(key: tuple[str, int], ch: str) -> bool:
    if ch.isspace():
        return True
    if unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return False  # lone combining or format marks are never worth drawing by themselves
    font = _font(key, 24)
    return _glyph(font, ch) != _glyph(font, _NOTDEF)


def _glyph(font: ImageFont.FreeTypeFont, ch: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(ch)
    return mask.size, bytes(mask)
