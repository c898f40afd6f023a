"""Editor-written alternatives inside a post body.

Syntax: ``[[first|second|third]]``. The first option is canonical (what a copy
without variation shows). Double square brackets never clash with jinja2's
``{{ }}``, ``{% %}`` and ``{# #}``, and editors rarely type them by accident.
Options may be empty (an optional word: ``[[|真的]]``) but not all of them.
Groups do not nest and hold no line breaks.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.shared.errors import InvalidArgument

MAX_OPTIONS = 8
MAX_OPTION_CHARS = 100


@dataclass(frozen=True)
class Literal:
    text: str


@dataclass(frozen=True)
class Alternatives:
    options: tuple[str, ...]


Segment = Literal | Alternatives


def parse_body(body: str, field: str = "content.body") -> list[Segment]:
    segments: list[Segment] = []
    pos = 0
    while True:
        start = body.find("[[", pos)
        stray = body.find("]]", pos)
        if stray != -1 and (start == -1 or stray < start):
            raise InvalidArgument(field, f"']]' at character {stray} closes no '[['")
        if start == -1:
            break
        end = body.find("]]", start + 2)
        if end == -1:
            raise InvalidArgument(field, f"'[[' at character {start} is never closed with ']]'")
        inner = body[start + 2 : end]
        if "[[" in inner:
            raise InvalidArgument(field, f"alternatives at character {start} nest another '[['")
        if "\n" in inner:
            raise InvalidArgument(field, f"alternatives at character {start} span a line break")
        options = tuple(inner.split("|"))
        if len(options) < 2:
            raise InvalidArgument(field, f"alternatives at character {start} need at least two options split by '|'")
        if len(options) > MAX_OPTIONS:
            raise InvalidArgument(field, f"alternatives at character {start} have more than {MAX_OPTIONS} options")
        if not any(o.strip() for o in options):
            raise InvalidArgument(field, f"alternatives at character {start} are all empty")
        if any(len(o) > MAX_OPTION_CHARS for o in options):
            raise InvalidArgument(field, f"an option at character {start} is over {MAX_OPTION_CHARS} characters")
        if body[pos:start]:
            segments.append(Literal(body[pos:start]))
        segments.append(Alternatives(options))
        pos = end + 2
    if body[pos:]:
        segments.append(Literal(body[pos:]))
    return segments


def canonical_text(segments: list[Segment]) -> str:
    return "".join(s.text if isinstance(s, Literal) else s.options[0] for s in segments)


def literal_texts(segments: list[Segment]) -> list[str]:
    return [s.text for s in segments if isinstance(s, Literal)]


def variation_count(segments: list[Segment]) -> int:
    """How many distinct bodies the editor's alternatives alone can produce."""
    count = 1
    for s in segments:
        if isinstance(s, Alternatives):
            count *= len(set(s.options))
    return count
