"""Text checks shared by domain rules and request validation. Pure Python."""

from __future__ import annotations

import re
import unicodedata

from .errors import InvalidArgument

# Control characters other than tab/newline break storage (PostgreSQL refuses NUL)
# and are never meant in marketing copy; zero-width and bidi controls can hide text.
# U+200D (zero-width joiner) is allowed only inside emoji sequences such as 👨‍👩‍👧.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200c\u200e\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_ZWJ = re.compile(r"(?<![\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F])\u200d|\u200d(?![\U0001F000-\U0001FAFF\u2600-\u27BF])")


def check_text(value: str, field: str, *, max_len: int, min_len: int = 0, multiline: bool = False) -> str:
    if _FORBIDDEN.search(value) or _ZWJ.search(value) or (not multiline and ("\n" in value or "\r" in value)):
        raise InvalidArgument(field, "contains control or invisible characters")
    if any(unicodedata.category(c) == "Cs" for c in value):
        raise InvalidArgument(field, "contains unpaired surrogates")
    length = len(value)
    if length < min_len:
        raise InvalidArgument(field, "required" if min_len == 1 else f"needs at least {min_len} characters")
    if length > max_len:
        raise InvalidArgument(field, f"at most {max_len} characters, got {length}")
    return value
