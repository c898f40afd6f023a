"""Expected reading time of a post, and how much of it a view covered (completeness).

    expected = CJK characters / CJK_CHARS_PER_MIN + other words / WORDS_PER_MIN + image time,
               at least MIN_EXPECTED_MS

Why these constants:

- ``CJK_CHARS_PER_MIN = 350``: silent reading of Chinese prose by adults is measured at
  roughly 300-400 characters a minute for comprehension (faster for skimming); sales posts
  are read on a phone, often with a child nearby, so the middle of that range.
- ``WORDS_PER_MIN = 220``: Brysbaert's 2019 meta-analysis puts silent reading of English
  non-fiction at about 238 words a minute; a little less on a small screen. Digits and
  Latin words inside Chinese text ("5岁", "AI") count as words.
- Images: ``IMAGE_FIRST_MS`` for the first, one second less for each next one, never under
  ``IMAGE_MIN_MS`` (the way Medium counts them): posters carry text and get a real look,
  the fifth product photo gets a glance.
- ``MIN_EXPECTED_MS = 10 s``: even a one-line post takes a moment to take in, and a floor
  keeps completeness meaningful (a 2-second glance is not a "complete read").
"""

from __future__ import annotations

import re

CJK_CHARS_PER_MIN = 350
WORDS_PER_MIN = 220
IMAGE_FIRST_MS = 10_000
IMAGE_STEP_MS = 1_000
IMAGE_MIN_MS = 3_000
MIN_EXPECTED_MS = 10_000

# Han (incl. extensions and compatibility ideographs), kana and Hangul: read per character.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f]")
_WORD = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*")


def count_text(text: str) -> tuple[int, int]:
    """(CJK characters, other words) of ``text``; punctuation, emoji and spaces count as neither."""
    cjk = len(_CJK.findall(text))
    words = len(_WORD.findall(_CJK.sub(" ", text)))
    return cjk, words


def image_time_ms(image_count: int) -> int:
    return sum(max(IMAGE_MIN_MS, IMAGE_FIRST_MS - i * IMAGE_STEP_MS) for i in range(max(0, image_count)))


def expected_reading_ms(text: str, image_count: int = 0) -> int:
    """Milliseconds an attentive reader needs for the text and images; at least ``MIN_EXPECTED_MS``."""
    cjk, words = count_text(text)
    reading = cjk * 60_000 / CJK_CHARS_PER_MIN + words * 60_000 / WORDS_PER_MIN
    return max(MIN_EXPECTED_MS, round(reading) + image_time_ms(image_count))


def completeness(engaged_ms: int, expected_ms: int) -> float:
    """Share of the expected reading time the reader spent, in [0, 1] (more time than expected is 1)."""
    if engaged_ms <= 0:
        return 0.0
    if expected_ms <= 0:
        return 1.0
    return min(1.0, engaged_ms / expected_ms)
