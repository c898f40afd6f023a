"""Decoding an original into plain sRGB (or grey) pixels, upright, with nothing else attached.

Shared by the renderer and the fidelity check, so both see the same pixels:
EXIF orientation applied, alpha flattened onto white, palettes and CMYK turned
into RGB, an embedded ICC profile converted to sRGB (so dropping it keeps the
look), 16-bit and float greys brought to 8 bits. Anything that is not a whole,
decodable JPEG, PNG or WebP raises :class:`ImageRenderError` with the reason:
a truncated file never becomes a half-grey picture.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageFile, UnidentifiedImageError

from services.shared.errors import FailedPrecondition

FORMATS = ("JPEG", "PNG", "WEBP")  # what the content service accepts (MPO is the JPEG opener's multi-picture case)
DEFAULT_MAX_PIXELS = 40_000_000  # settings.MAX_IMAGE_PIXELS default

_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageRenderError(FailedPrecondition):
    """The original (or a badge's QR image) cannot be turned into a variant; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadgeRenderError(ImageRenderError):
    """The rep's QR image is unreadable: the photo is fine, the badge is not."""


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # mode "RGB" or "L", upright, info emptied
    full_size: tuple[int, int]  # upright size at full resolution; ``image`` may be smaller (JPEG draft)

    @property
    def factor(self) -> float:
        """``image`` pixels per full-resolution pixel (1.0 unless a JPEG was decoded at 1/2, 1/4 or 1/8)."""
        return self.image.width / self.full_size[0]


def decode(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, fit_long_side: int | None = None,
           what: str = "image") -> Decoded:
    """Decode ``data`` fully, upright, as RGB or L.

    ``fit_long_side``: the caller will shrink the result so its long side is at most this; a JPEG may then be
    decoded at 1/2, 1/4 or 1/8 scale straight from its DCT (much faster), never below that long side.
    """
    if not data:
        raise ImageRenderError(f"{what} is empty")
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # a process-wide switch some libraries flip; we never accept partial pixels
        raise ImageRenderError("refusing to decode: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set in this process")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            im = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = im.size
            if width <= 0 or height <= 0:
                raise ImageRenderError(f"{what} has no pixels")
            if width * height > max_pixels:
                raise ImageRenderError(f"{what} is {width}x{height}, over the {max_pixels:,} pixel limit")
            full = (width, height)
            if fit_long_side and im.format in ("JPEG", "MPO") and max(full) > fit_long_side:
                factor = fit_long_side / max(full)
                im.draft(im.mode, (math.ceil(width * factor), math.ceil(height * factor)))
            im.load()
            orientation = _orientation(im)
    except ImageRenderError:
        raise
    except UnidentifiedImageError:
        raise ImageRenderError(f"{what} is not a JPEG, PNG or WebP image") from None
    except Image.DecompressionBombError:
        raise ImageRenderError(f"{what} is implausibly large (decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, MemoryError) as err:
        # Pillow reports truncation as OSError("image file is truncated ..."), broken PNG chunks as SyntaxError.
        raise ImageRenderError(f"{what} is corrupt or truncated: {err}") from None
    try:
        im = _normalise_mode(im)
    except (OSError, ValueError) as err:
        raise ImageRenderError(f"{what} has pixels that cannot be converted to RGB: {err}") from None
    if orientation in _TRANSPOSE:
        im = im.transpose(_TRANSPOSE[orientation])
        if orientation >= 5:
            full = (full[1], full[0])
    im.info = {}  # EXIF, XMP, ICC, comments, dpi: nothing rides along into the variant
    return Decoded(im, full)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block is no reason to lose the photo; treat it as upright
        return 1
    return value if isinstance(value, int) else 1


def _normalise_mode(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    mode = im.mode
    if mode.startswith("I"):
        # 16-bit grey PNGs: keep the top 8 bits rather than clipping everything above 255 to white
        wide = im if mode == "I" else im.convert("I")
        if wide.getextrema()[1] > 255:
            wide = wide.point(lambda v: v / 256)
        return wide.convert("L")
    if mode in ("F", "1"):
        return im.convert("L")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "RGBa", "LA", "La"):
        im = _flatten(im)
    if im.mode == "L":
        return im
    if icc and im.mode in ("RGB", "CMYK"):
        converted = _to_srgb(im, icc)
        if converted is not None:
            return converted
    return im if im.mode == "RGB" else im.convert("RGB")


def _flatten(im: Image.Image) -> Image.Image:
    """Alpha over white: a transparent PNG becomes what a chat app shows on a light background."""
    if im.mode in ("RGBa", "La"):
        im = im.convert("RGBA" if im.mode == "RGBa" else "LA")
    base_mode = "RGB" if im.mode == "RGBA" else "L"
    background = Image.new(base_mode, im.size, (255, 255, 255) if base_mode == "RGB" else 255)
    background.paste(im.convert(base_mode), mask=im.getchannel("A"))
    return background


@functools.lru_cache(maxsize=16)
def _transform(icc: bytes, mode: str):  # -> ImageCms.ImageCmsTransform | None
    try:
        from PIL import ImageCms
    except ImportError:  # Pillow built without littlecms: keep the pixels as they are
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = (ImageCms.getProfileDescription(source) or "").lower()
        if mode == "RGB" and "srgb" in description:
            return None  # already sRGB: converting would only cost time
        return ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None  # a broken profile is ignored: the pixels are still a photo


def _to_srgb(im: Image.Image, icc: bytes) -> Image.Image | None:
    transform = _transform(bytes(icc), im.mode)
    if transform is None:
        return None
    from PIL import ImageCms

    try:
        return ImageCms.applyTransform(im, transform)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None
