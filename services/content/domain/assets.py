"""What an uploaded image must be: JPEG, PNG or WebP by its bytes, within limits.

The type is sniffed from magic bytes, never from the filename or a client's
claim, then the header is parsed with Pillow for the dimensions. Pixel counts
over the limit are refused before any decoding, which is what stops
decompression bombs. Full decoding is left to the renderer: a truncated file
fails that copy with a reason instead of holding up every upload.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from services.shared.errors import InvalidArgument

SNIFF_BYTES = 16

# Phones save multi-picture JPEGs (depth maps, previews); Pillow calls them MPO. They are JPEGs.
# The JPEG opener returns an MPO image for those.
_FORMATS = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_OPENERS = ["JPEG", "PNG", "WEBP"]


def sniff_mime(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True)
class ImageInfo:
    mime_type: str
    width: int
    height: int


def inspect_image(head: bytes, stream: BinaryIO, max_pixels: int, field: str = "chunk") -> ImageInfo:
    mime = sniff_mime(head)
    if mime is None:
        raise InvalidArgument(field, "not a JPEG, PNG or WebP image")
    stream.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream, formats=_OPENERS) as img:
                width, height, fmt = img.width, img.height, img.format
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidArgument(field, "image header is unreadable or implausibly large") from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise InvalidArgument(field, "image header is corrupt") from None
    if _FORMATS.get(fmt or "") != mime:
        raise InvalidArgument(field, f"bytes look like {mime} but do not parse as one")
    if width <= 0 or height <= 0:
        raise InvalidArgument(field, "image has no pixels")
    if width * height > max_pixels:
        raise InvalidArgument(field, f"{width}x{height} is over the {max_pixels:,} pixel limit")
    return ImageInfo(mime, width, height)
