"""Text variation: every rep's copy of a post reads as their own and stays faithful.

Pure and deterministic: no gRPC, SQL, Celery or I/O. A copy is

    body  = the editor's body with, outside protected spans,
            - one option of each editor alternative ``[[a|b|c]]``,
            - curated pool phrases swapped for a member of their group (``phrases_zh``/``phrases_en``),
            - a light change of sentence-end punctuation (！/！！/~, 。/！/~, !/.),
            - an optional emoji at up to three line ends, from a small set,
            - blank lines between paragraphs kept or dropped (or added between plain lines);
    text  = the rep template (sandboxed jinja2) rendered with the rep's fields and that body,
            then checked byte for byte: every protected span of the body occurs in the text at
            least as often as in the editor's body, and no invisible character was introduced.

A *variation space* is the parsed body: fixed text plus *slots*, each with a few options
(option 0 is the editor's text). A ``VariantChoice`` is one point in it: an option index per
slot and a line-break style. ``plan_assignments`` picks one point per rep so the copies are
pairwise as different as the space allows: greedy farthest-point (max-min) selection over a
stratified sample of candidates, measured by character 5-gram Jaccard of the normalised body.

Nothing here inserts zero-width characters, homoglyphs or hidden text: every character of a
copy comes from the editor's body, the template, the rep's fields, the phrase pools,
``PUNCTUATION``, ``EMOJI`` or plain spaces and line breaks.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from services.content.domain import templates
from services.content.domain.alternatives import Alternatives, Literal, parse_body
from services.shared.errors import FailedPrecondition, InvalidArgument

from . import phrases_en, phrases_zh

SPACE_VERSION = 1  # bump when parsing or the pools change: stored choices then no longer match a space

# Sentence-end marks that may change, and what each may become (option 0 is the original).
PUNCTUATION_OPTIONS: dict[str, tuple[str, ...]] = {
    "！": ("！", "！！", "~"),
    "。": ("。", "！", "~"),
    "~": ("~", "！", "。"),
    "～": ("～", "！", "。"),
    "!": ("!", "."),
    ".": (".", "!"),
}
PUNCTUATION = frozenset("".join(o for opts in PUNCTUATION_OPTIONS.values() for o in opts))
# A small, tasteful set; single code points with emoji presentation (no variation selectors, no joiners).
EMOJI: tuple[str, ...] = ("✨", "🎉", "😊", "🌟", "👍", "🌈", "🌸", "🙌")
MAX_EMOJI_SLOTS = 3
POOL_GROUPS: tuple[tuple[str, ...], ...] = phrases_zh.GROUPS + phrases_en.GROUPS

# Every character a variation itself may add (the rest comes from the body, template and rep fields).
VARIATION_CHARS = frozenset(
    "".join(itertools.chain.from_iterable(POOL_GROUPS)) + "’" + "".join(PUNCTUATION) + "".join(EMOJI) + " \n"
    + "".join(m.upper() for g in phrases_en.GROUPS for m in g)
)


# ---- errors ---------------------------------------------------------------------------


class TextRenderError(FailedPrecondition):
    """A copy could not be rendered faithfully; nothing half-rendered is returned.

    ``reason``: "template" (the rep template failed for this rep), "protected_span" (a protected
    span is missing or changed in the output), "invisible_character", "choice" (the choice does not
    belong to this post's variation space) or "body" (the body does not parse).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---- inputs and outputs ---------------------------------------------------------------


@dataclass(frozen=True)
class RepFields:
    id: str
    display_name: str
    signature: str = ""
    store: str = ""
    region: str = ""
    team: str = ""

    def context(self) -> dict[str, str]:
        return {"display_name": self.display_name, "signature": self.signature, "store": self.store,
                "region": self.region, "team": self.team}


@dataclass(frozen=True)
class TextSource:
    title: str
    body: str
    protected_phrases: tuple[str, ...] = ()
    rep_template: str = ""


@dataclass(frozen=True)
class Policy:
    max_jaccard: float = 0.8
    ngram: int = 5


@dataclass(frozen=True)
class VariantChoice:
    """One point of a variation space: small and JSON-serialisable (``to_json``/``from_json``).

    ``picks[i]`` is the option of slot ``i`` (empty ``picks`` = the canonical copy, all zeros);
    ``breaks`` the line-break style; ``space`` the digest of the space the indices refer to
    ("" = not checked).
    """

    picks: tuple[int, ...] = ()
    breaks: int = 0
    space: str = ""

    def to_json(self) -> dict[str, object]:
        return {"picks": list(self.picks), "breaks": self.breaks, "space": self.space}

    @classmethod
    def from_json(cls, data: dict[str, object] | str) -> VariantChoice:
        if isinstance(data, str):
            data = json.loads(data)
        if not isinstance(data, dict):
            raise TextRenderError("choice", "variant choice: expected a JSON object")
        picks = data.get("picks", [])
        if not isinstance(picks, list) or not all(isinstance(p, int) for p in picks):
            raise TextRenderError("choice", "variant choice: picks must be a list of integers")
        breaks, space = data.get("breaks", 0), data.get("space", "")
        if not isinstance(breaks, int) or not isinstance(space, str):
            raise TextRenderError("choice", "variant choice: breaks must be an integer and space a string")
        return cls(tuple(picks), breaks, space)


@dataclass(frozen=True)
class Plan:
    choices: dict[str, VariantChoice]
    capacity_estimate: int  # reps the space can serve within the policy (see capacity_exact)
    policy_met: bool  # every pair of assigned bodies distinct and within policy.max_jaccard
    order: tuple[str, ...] = ()  # reps in assignment order (farthest-first)
    max_jaccard: float = 0.0  # highest pairwise body Jaccard among the assigned choices
    duplicates: int = 0  # reps whose body repeats another rep's (only when the space ran out)
    capacity_exact: bool = True  # False: the search stopped early, capacity_estimate is a lower bound
    space_size: int = 1
    seed: str = ""
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True)
class TextStats:
    count: int
    duplicates: int  # texts equal to an earlier one after normalisation
    jaccard_min: float
    jaccard_median: float
    jaccard_max: float
    pairs: int


# ---- normalisation and similarity -------------------------------------------------------

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e\u00ad"))
_SPACES = re.compile(r"\s+")
# Control and invisible characters a copy must never contain (as services.shared.text refuses on input);
# U+200D only inside emoji sequences.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200c\u200e\u200f\u202a-\u202e\u2060-\u2064\ufeff\u180e]")
_LONE_ZWJ = re.compile(r"(?<![\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F])\u200d|\u200d(?![\U0001F000-\U0001FAFF\u2600-\u27BF])")


def normalise(text: str) -> str:
    """For duplicate checks: zero-width characters removed, NFKC, whitespace collapsed to one space."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text.translate(_ZERO_WIDTH))).strip()


def _grams(text: str, n: int) -> set[str]:
    if len(text) < n:
        return {text} if text else set()
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def jaccard(a: str, b: str, n: int = 5) -> float:
    """Character n-gram Jaccard similarity of the normalised texts (1.0 for two empty texts)."""
    ga, gb = _grams(normalise(a), n), _grams(normalise(b), n)
    union = len(ga | gb)
    return len(ga & gb) / union if union else 1.0


def text_report(texts: Sequence[str], n: int = 5) -> TextStats:
    """Duplicates after normalisation and the min/median/max of every pairwise Jaccard (exact, all pairs)."""
    norms = [normalise(t) for t in texts]
    count = len(norms)
    duplicates = count - len(set(norms))
    if count < 2:
        return TextStats(count, duplicates, 0.0, 0.0, 0.0, 0)
    sims = _pairwise_jaccard([_grams(t, n) for t in norms])
    upper = sims[np.triu_indices(count, 1)]
    return TextStats(count, duplicates, float(upper.min()), float(np.median(upper)), float(upper.max()), int(upper.size))


def _pairwise_jaccard(sets: list[set[str]]) -> np.ndarray:
    """All-pairs Jaccard matrix. Grams in every set add to every intersection; grams in one set to none;
    only the rest go into the incidence matrix, so the product stays small for similar texts."""
    count = len(sets)
    df: Counter[str] = Counter()
    for s in sets:
        df.update(s)
    universal = sum(1 for c in df.values() if c == count)
    columns = {g: i for i, g in enumerate(g for g, c in df.items() if 1 < c < count)}
    inter = np.full((count, count), float(universal))
    chunk = 4096
    per_set = [[columns[g] for g in s if g in columns] for s in sets]
    for lo in range(0, len(columns), chunk):
        m = np.zeros((count, min(chunk, len(columns) - lo)), dtype=np.float32)
        for row, cols in enumerate(per_set):
            picked = [c - lo for c in cols if lo <= c < lo + chunk]
            m[row, picked] = 1.0
        inter += m @ m.T
    sizes = np.array([len(s) for s in sets], dtype=float)
    union = sizes[:, None] + sizes[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 1.0)


# ---- protected spans --------------------------------------------------------------------

_STOP = r"\s<>\"'，。！？、；：（）【】「」『』《》“”‘’"
_TRAIL = r".,;:!?)\]}'\""
_CN_NUM = "零一二三四五六七八九十百千万两"
_MEASURE = "个|位|名|本|套|节|次|天|步|元|块|折|岁|分钟|小时|周|月|年|件|张|份|人|期|堂|盒|瓶|袋|款|种|课时|倍|号|日"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
_PROTECTED_RE = re.compile(
    "|".join(
        [
            rf"(?:https?://|www\.)[^{_STOP}]*[^{_STOP}{_TRAIL}]",  # URLs
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+",  # e-mail
            rf"(?<![A-Za-z0-9@._/-])(?:[A-Za-z0-9-]+\.)+(?:com|cn|net|org|io|co|me|app|top|xyz|info|shop|store|ai|dev|hk|tw)"
            rf"(?![A-Za-z0-9-])(?:/[^{_STOP}]*[^{_STOP}{_TRAIL}])?",  # bare domains
            rf"@[^{_STOP}@#,.!?;:]+",  # @mentions
            rf"#[^{_STOP}#@,.!?;:]+#?",  # #hashtags (and #话题#)
            r"(?<!\d)(?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)",  # mobile 138 0013 8000
            r"(?<!\d)[48]00[ -]?\d{3}[ -]?\d{4}(?!\d)",  # 400-820-1234
            r"(?:\(0\d{2,3}\)|(?<!\d)0\d{2,3}-)[ -]?\d{7,8}(?!\d)",  # landline
            r"\+\d{1,3}(?:[ -]\d{2,4}){2,4}(?!\d)",  # international
            r"(?<!\d)\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)",  # (555) 123-4567
            r"(?<!\d)\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?!\d)",  # 2026-12-01
            r"(?:\d{2,4}年)?\d{1,2}月(?:\d{1,2}[日号])?|\d{2,4}年",  # 2026年12月1日
            rf"[{_CN_NUM}]{{1,3}}月[{_CN_NUM}]{{1,3}}[日号]",  # 十二月一日
            r"(?<![\d/])\d{1,2}/\d{1,2}(?:/\d{2,4})?(?![\d/])",  # 12/01
            rf"{_MONTH} \d{{1,2}}(?:st|nd|rd|th)?(?:, \d{{4}})?|\d{{1,2}}(?:st|nd|rd|th)? {_MONTH}(?: \d{{4}})?",
            r"(?:星期|礼拜|周)[一二三四五六日天]",  # weekdays
            r"(?:上午|下午|晚上|早上|中午|凌晨)?\d{1,2}[:：]\d{2}(?:[:：]\d{2})?(?: ?[AaPp]\.?[Mm]\.?)?",  # 10:00
            r"\d{1,2} ?[AaPp]\.?[Mm]\.?(?![A-Za-z])",  # 10am
            r"(?:上午|下午|晚上|早上|中午|凌晨)?\d{1,2}[点时](?:半|\d{1,2}分)?",  # 10点半
            rf"[¥￥$€£] ?\d[\d,]*(?:\.\d+)?(?: ?[/／][^{_STOP}/,.!?;:]{{1,4}})?",  # ¥99/节, $19.99
            rf"\d[\d,]*(?:\.\d+)? ?(?:元|块钱|块|美元|港币|RMB|CNY|USD|HKD)(?: ?[/／][^{_STOP}/,.!?;:]{{1,4}})?",  # 99元/节
            r"(?:USD|RMB|CNY|HKD) ?\d[\d,]*(?:\.\d+)?",
            r"\d+(?:\.\d+)? ?(?:折|[%％])",  # 8.8折, 50%
            r"\d+(?:[.,:]\d+)*",  # any other number
            rf"[{_CN_NUM}半]+(?:{_MEASURE})",  # 三步, 一套, 五折
        ]
    )
)


def protected_spans(text: str, phrases: Sequence[str] = ()) -> list[str]:
    """The protected spans of ``text``: the editor's phrases and every URL, e-mail, price, number, date,
    time, phone number, #hashtag and @mention; distinct, in order of first occurrence."""
    found: list[tuple[int, str]] = []
    for phrase in phrases:
        if phrase:
            at = text.find(phrase)
            if at != -1:
                found.append((at, phrase))
    found.extend((m.start(), m.group()) for m in _PROTECTED_RE.finditer(text))
    found.sort(key=lambda item: (item[0], -len(item[1])))
    return list(dict.fromkeys(span for _, span in found))


def _occurrences(text: str, span: str) -> list[int]:
    starts, at = [], text.find(span)
    while at != -1:
        starts.append(at)
        at = text.find(span, at + 1)
    return starts


def _protected_mask(text: str, spans: Sequence[str]) -> bytearray:
    """1 for every character inside any occurrence of any span (overlapping ones included)."""
    mask = bytearray(len(text))
    for span in spans:
        for at in _occurrences(text, span):
            mask[at : at + len(span)] = b"\x01" * len(span)
    return mask


# ---- the variation space ----------------------------------------------------------------


def _member_pattern(member: str) -> str:
    return "".join("['’]" if ch == "'" else re.escape(ch) for ch in member)


_ZH_MEMBERS = {m: i for i, g in enumerate(phrases_zh.GROUPS) for m in g}
_EN_MEMBERS = {m: len(phrases_zh.GROUPS) + i for i, g in enumerate(phrases_en.GROUPS) for m in g}
_POOL_RE = re.compile(
    "(?P<zh>" + "|".join(re.escape(m) for m in sorted(_ZH_MEMBERS, key=len, reverse=True)) + ")"
    + r"|(?<![A-Za-z0-9'’-])(?P<en>(?i:" + "|".join(_member_pattern(m) for m in sorted(_EN_MEMBERS, key=len, reverse=True))
    + r"))(?![A-Za-z0-9'’-])"
)
_PUNCT_RE = re.compile("[" + re.escape("".join(PUNCTUATION_OPTIONS)) + "]")
_PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t]*\n)+")
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.、)）]|[-*•·]|[①-⑳]|[一二三四五六七八九十]+[、.])")
_ABBREVIATIONS = frozenset({"etc", "inc", "ltd", "co", "vs", "mr", "mrs", "ms", "dr", "jr", "sr", "st", "no", "approx", "corp"})


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or "\uf900" <= ch <= "\ufaff" or "\u3040" <= ch <= "\u30ff"


def _is_letter(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


@dataclass(frozen=True)
class Slot:
    kind: str  # "alt" (editor alternatives), "pool", "punct", "emoji"
    options: tuple[str, ...]  # option 0 is the editor's text


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    kind: str  # pool | punct | emoji (preferred spot) | emoji_line | break
    options: tuple[str, ...]


@dataclass(frozen=True)
class VariationSpace:
    """A post body parsed once: fixed text, slots and line breaks. ``size`` = number of distinct choices."""

    canonical: str  # the editor's body with option 0 everywhere
    parts: tuple[str, ...]  # the canonical body cut at every slot and break
    slot_parts: tuple[int, ...]  # parts index of each slot
    slots: tuple[Slot, ...]
    break_parts: tuple[tuple[int, str], ...]  # (parts index, text in the alternative style)
    break_mode: str  # "" (none), "compact" (blank lines dropped) or "airy" (blank lines added)
    spans: tuple[str, ...]  # protected spans found outside alternatives
    required: tuple[tuple[str, int], ...]  # (span, occurrences in the editor's body)
    digest: str

    @property
    def break_styles(self) -> int:
        return 2 if self.break_parts else 1

    @property
    def size(self) -> int:
        size = self.break_styles
        for slot in self.slots:
            size *= len(slot.options)
        return size

    def canonical_choice(self) -> VariantChoice:
        return VariantChoice((0,) * len(self.slots), 0, self.digest)

    def choice(self, picks: Sequence[int], breaks: int = 0) -> VariantChoice:
        return self.check(VariantChoice(tuple(picks), breaks, self.digest))

    def check(self, choice: VariantChoice) -> VariantChoice:
        if choice.space and choice.space != self.digest:
            raise TextRenderError("choice", f"variant choice belongs to another variation space ({choice.space}, "
                                            f"this post's is {self.digest})")
        if choice.picks and len(choice.picks) != len(self.slots):
            raise TextRenderError("choice", f"variant choice has {len(choice.picks)} picks, the space has {len(self.slots)} slots")
        for i, pick in enumerate(choice.picks):
            if not 0 <= pick < len(self.slots[i].options):
                raise TextRenderError("choice", f"variant choice: pick {pick} out of range for slot {i}")
        if not 0 <= choice.breaks < self.break_styles:
            raise TextRenderError("choice", f"variant choice: line-break style {choice.breaks} out of range")
        return choice

    def render_body(self, choice: VariantChoice) -> str:
        """The varied body (no template). ``choice`` must have passed ``check``."""
        parts = list(self.parts)
        for pick, at, slot in zip(choice.picks, self.slot_parts, self.slots, strict=False):
            if pick:
                parts[at] = slot.options[pick]
        if choice.breaks:
            for at, text in self.break_parts:
                parts[at] = text
        return "".join(parts)


def variation_space(source: TextSource) -> VariationSpace:
    return _space(source.body, tuple(source.protected_phrases))


@functools.lru_cache(maxsize=128)
def _space(body: str, phrases: tuple[str, ...]) -> VariationSpace:
    try:
        segments = parse_body(body)
    except InvalidArgument as err:
        raise TextRenderError("body", f"the post body does not parse: {err.message}") from None
    literals = [s.text for s in segments if isinstance(s, Literal)]
    spans = list(dict.fromkeys(span for text in literals for span in protected_spans(text, phrases)))
    required = tuple((span, sum(text.count(span) for text in literals)) for span in spans)

    # Pass 1: the edits each literal allows, and where emoji could go.
    per_segment: list[list[_Edit]] = []
    preferred: list[tuple[int, int]] = []  # (segment index, edit index) of possible emoji spots
    others: list[tuple[int, int]] = []
    seen_newline = False
    has_paragraphs = any(_PARAGRAPH_BREAK.search(text) for text in literals) and "\r" not in body
    for index, segment in enumerate(segments):
        if isinstance(segment, Alternatives):
            per_segment.append([])
            continue
        last = index == len(segments) - 1
        edits = _literal_edits(segment.text, spans, last, has_paragraphs, "\r" in body, not seen_newline)
        seen_newline = seen_newline or "\n" in segment.text
        per_segment.append(edits)
        preferred.extend((index, i) for i, e in enumerate(edits) if e.kind == "emoji")
        others.extend((index, i) for i, e in enumerate(edits) if e.kind == "emoji_line")
    keep = set(_spread(preferred, MAX_EMOJI_SLOTS))
    keep.update(_spread(others, MAX_EMOJI_SLOTS - len(keep)) if len(keep) < MAX_EMOJI_SLOTS else [])

    # Pass 2: cut the canonical body into parts.
    parts: list[str] = []
    slot_parts: list[int] = []
    slots: list[Slot] = []
    break_parts: list[tuple[int, str]] = []
    for index, segment in enumerate(segments):
        if isinstance(segment, Alternatives):
            options = tuple(dict.fromkeys(segment.options))
            if len(options) > 1:
                slot_parts.append(len(parts))
                slots.append(Slot("alt", options))
            parts.append(options[0])
            continue
        text, pos = segment.text, 0
        for i, edit in enumerate(per_segment[index]):
            if edit.kind.startswith("emoji") and (index, i) not in keep:
                continue
            if edit.start > pos:
                parts.append(text[pos : edit.start])
            if edit.kind == "break":
                break_parts.append((len(parts), edit.options[1]))
            else:
                slot_parts.append(len(parts))
                slots.append(Slot("emoji" if edit.kind == "emoji_line" else edit.kind, edit.options))
            parts.append(edit.options[0])
            pos = edit.end
        if pos < len(text):
            parts.append(text[pos:])
    mode = "" if not break_parts else "compact" if has_paragraphs else "airy"
    digest = hashlib.sha256(
        json.dumps([SPACE_VERSION, parts, slot_parts, [[s.kind, s.options] for s in slots], break_parts, spans],
                   ensure_ascii=False).encode()
    ).hexdigest()[:16]
    return VariationSpace("".join(parts), tuple(parts), tuple(slot_parts), tuple(slots), tuple(break_parts), mode,
                          tuple(spans), required, digest)


def _spread(items: list, count: int) -> list:
    """Up to ``count`` items: the first, the last and evenly between."""
    if len(items) <= count:
        return items
    if count == 1:
        return items[-1:]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def _literal_edits(text: str, spans: Sequence[str], last: bool, has_paragraphs: bool, crlf: bool,
                   first_literal: bool) -> list[_Edit]:
    mask = _protected_mask(text, spans)

    def free(a: int, b: int) -> bool:
        return not any(mask[a:b])

    edits: list[_Edit] = []
    for m in _POOL_RE.finditer(text):
        if free(m.start(), m.end()):
            edits.append(_Edit(m.start(), m.end(), "pool", _pool_options(m.group(), m.lastgroup == "en")))
    for m in _PUNCT_RE.finditer(text):
        i, mark = m.start(), m.group()
        if _varies_punctuation(text, i, mark, mask, last):
            options = PUNCTUATION_OPTIONS[mark]
            if mask[i - 1]:  # after protected content (一套。): no tilde, which could read as a range
                options = options[:1] + tuple(o for o in options[1:] if "~" not in o and "～" not in o)
            if len(options) > 1:
                edits.append(_Edit(i, i + 1, "punct", options))
    # Emoji: at a line end after a word or a sentence mark, never right after a protected span or on a
    # line that ends in a #hashtag or @mention. "emoji" marks the preferred spots (the first line of the
    # body and paragraph ends), "emoji_line" any other line end.
    line_ends = [m.start() for m in re.finditer(r"\r?\n", text)] + ([len(text)] if last else [])
    for end in line_ends:
        q = end
        while q > 0 and text[q - 1] in " \t":
            q -= 1
        if q == 0 or mask[q - 1]:
            continue
        prev = text[q - 1]
        if not (_is_cjk(prev) or _is_letter(prev) or prev in PUNCTUATION_OPTIONS):
            continue
        words = text[text.rfind("\n", 0, q) + 1 : q].split()
        if words and ("#" in words[-1] or "@" in words[-1]):
            continue
        rest = text[end:].lstrip("\r\n\t ")
        paragraph_end = end == len(text) or (last and not rest) or bool(re.match(r"\r?\n[ \t]*\r?\n", text[end:]))
        first_line = first_literal and "\n" not in text[:end]
        sep = " " if prev.isascii() else ""
        edits.append(_Edit(q, q, "emoji" if paragraph_end or first_line else "emoji_line", ("",) + tuple(sep + e for e in EMOJI)))
    # Line breaks: drop blank lines between paragraphs, or (when there are none) add them between plain lines.
    if not crlf:
        if has_paragraphs:
            for m in _PARAGRAPH_BREAK.finditer(text):
                if free(m.start(), m.end()):
                    edits.append(_Edit(m.start(), m.end(), "break", (m.group(), "\n")))
        else:
            for m in re.finditer(r"\n", text):
                i = m.start()
                next_end = text.find("\n", i + 1)
                if mask[i] or (next_end == -1 and not last):
                    continue  # the next line goes on in another segment
                before = text[text.rfind("\n", 0, i) + 1 : i]
                after = text[i + 1 : next_end if next_end != -1 else len(text)]
                if before.strip() and after.strip() and not _LIST_ITEM.match(before) and not _LIST_ITEM.match(after):
                    edits.append(_Edit(i, i + 1, "break", ("\n", "\n\n")))
    edits.sort(key=lambda e: (e.start, e.end))
    kept: list[_Edit] = []
    for e in edits:
        if kept and (e.start < kept[-1].end or (e.start == kept[-1].start and e.end == kept[-1].end)):
            continue  # overlaps the previous edit
        kept.append(e)
    return kept


def _pool_options(matched: str, english: bool) -> tuple[str, ...]:
    if not english:
        group = POOL_GROUPS[_ZH_MEMBERS[matched]]
        return tuple(dict.fromkeys((matched, *group)))
    group = POOL_GROUPS[_EN_MEMBERS[matched.lower().replace("’", "'")]]
    out = [matched]
    letters = [c for c in matched if c.isalpha()]
    for member in group:
        if "’" in matched:
            member = member.replace("'", "’")
        if letters and all(c.isupper() for c in letters) and len(letters) > 1:
            member = member.upper()
        elif matched[:1].isupper():
            member = member[:1].upper() + member[1:]
        out.append(member)
    return tuple(dict.fromkeys(out))


def _varies_punctuation(text: str, i: int, mark: str, mask: bytearray, last: bool) -> bool:
    if mask[i] or i == 0:
        return False
    prev = text[i - 1]
    if mask[i - 1] and not _is_cjk(prev):
        return False
    nxt = text[i + 1] if i + 1 < len(text) else ""
    at_line_end = nxt in ("\n", "\r") or (nxt == "" and last)
    if mark in "！。~～":
        # After a Chinese character, before a line end or another Chinese sentence. Never after a digit
        # (a tilde there reads as a range).
        return _is_cjk(prev) and (at_line_end or _is_cjk(nxt))
    # English "!" / ".": after a real word, at a line end or before the next sentence.
    if not _is_letter(prev):
        return False
    word = re.search(r"[A-Za-z]+$", text[:i])
    if word is None or (mark == "." and (len(word.group()) < 3 or word.group().lower() in _ABBREVIATIONS)):
        return False
    if word.start() > 0 and text[word.start() - 1] in ".@/#-_'’":
        return False  # part of an abbreviation, address or handle
    return at_line_end or (nxt == " " and i + 2 < len(text) and text[i + 2].isupper())


# ---- rendering ----------------------------------------------------------------------------


def render_body(source: TextSource, choice: VariantChoice) -> str:
    """The varied body without the rep template (what the planner compares)."""
    space = variation_space(source)
    return space.render_body(space.check(choice))


def render_text(source: TextSource, rep: RepFields, choice: VariantChoice, post_title: str = "") -> str:
    """The rep's copy: the varied body inside the rep template, checked; raises TextRenderError instead of
    returning anything half-rendered or unfaithful."""
    space = variation_space(source)
    body = space.render_body(space.check(choice))
    context = {"rep": rep.context(), "post": {"title": post_title or source.title}, "body": body}
    try:
        text = templates.render_template(source.rep_template, context)
    except Exception as err:  # noqa: BLE001 — any template failure is this rep's render error
        raise TextRenderError("template", f"the rep template failed for rep {rep.id}: {type(err).__name__}: {err}") from None
    _check_required(space, text)
    if _INVISIBLE.search(text) or _LONE_ZWJ.search(text):
        raise TextRenderError("invisible_character", f"the copy for rep {rep.id} contains control or invisible characters")
    return text


def check_protected(source: TextSource, rendered: str) -> None:
    """Byte for byte: each protected span of the editor's body occurs in ``rendered`` at least as often."""
    _check_required(variation_space(source), rendered)


def _check_required(space: VariationSpace, rendered: str) -> None:
    missing = [span for span, times in space.required if rendered.count(span) < times]
    if missing:
        shown = ", ".join(repr(s) for s in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise TextRenderError("protected_span", f"protected content changed or missing in the copy: {shown}")


# ---- assignment across reps -------------------------------------------------------------

POOL_MIN = 1500  # candidates sampled at least (or the whole space when smaller)
POOL_PER_REP = 2  # candidates per rep, up to POOL_MAX
POOL_MAX = 4000
CAPACITY_HORIZON = 2  # keep selecting up to this many times the reps (within the pool) to estimate capacity


def plan_assignments(source: TextSource, rep_ids: Sequence[str], policy: Policy = Policy(), seed: str = "") -> Plan:
    """Assign each rep a variant so the bodies are pairwise as different as the space allows."""
    return _plan(variation_space(source), {}, (), list(dict.fromkeys(rep_ids)), policy, seed)


def extend_plan(source: TextSource, plan: Plan, new_rep_ids: Sequence[str], policy: Policy | None = None) -> Plan:
    """Reps added later get the variants farthest from those already assigned; existing choices stay."""
    space = variation_space(source)
    for choice in plan.choices.values():
        space.check(choice)
    new = [r for r in dict.fromkeys(new_rep_ids) if r not in plan.choices]
    order = tuple(r for r in plan.order if r in plan.choices) + tuple(r for r in plan.choices if r not in plan.order)
    return _plan(space, plan.choices, order, new, policy or plan.policy, plan.seed)


def _rep_order(rep_ids: Sequence[str], seed: str) -> list[str]:
    """Which rep gets which pick rotates with the seed (the revision), independent of the input order."""
    return sorted(rep_ids, key=lambda r: (hashlib.sha256(f"{seed}\0{r}".encode()).digest(), r))


def _plan(space: VariationSpace, existing: dict[str, VariantChoice], existing_order: Sequence[str], new_reps: list[str],
          policy: Policy, seed: str) -> Plan:
    total = len(existing) + len(new_reps)
    pool_size = min(POOL_MAX, max(POOL_MIN, POOL_PER_REP * total))
    rng = random.Random(f"{seed}\0{space.digest}\0{pool_size}")
    forced = [existing[r] for r in existing_order]
    candidates = forced + _candidates(space, pool_size, rng)
    selector = _Selector(space, candidates, policy.ngram)
    result = selector.run(len(forced), len(new_reps), policy.max_jaccard,
                          horizon=max(CAPACITY_HORIZON * total, 64), exhaustive=space.size <= pool_size)
    choices = dict(existing)
    for rep, index in zip(_rep_order(new_reps, seed), result.picked, strict=True):
        choices[rep] = candidates[index]
    order = tuple(existing_order) + tuple(_rep_order(new_reps, seed))
    return Plan(choices=choices, capacity_estimate=result.capacity, policy_met=total <= result.capacity,
                order=order, max_jaccard=result.max_jaccard, duplicates=result.duplicates,
                capacity_exact=result.capacity_exact, space_size=space.size, seed=seed, policy=policy)


def _candidates(space: VariationSpace, count: int, rng: random.Random) -> list[VariantChoice]:
    """The canonical choice first, then the whole space when it is small, else a stratified sample:
    every slot's options are used about equally often (emoji slots stay empty about a third of the time)."""
    dims = [len(s.options) for s in space.slots] + [space.break_styles]
    if space.size <= count:
        return [VariantChoice(tuple(p[:-1]), p[-1], space.digest) for p in itertools.product(*(range(d) for d in dims))]
    columns = []
    for d, slot in zip(dims, [*space.slots, None], strict=True):
        cycle = d + (d - 1) // 2 if slot is not None and slot.kind == "emoji" else d
        column = [(i % cycle) if i % cycle < d else 0 for i in range(count)]
        for i in range(count - 1, 0, -1):  # Fisher-Yates from random(): stable across Python versions
            j = int(rng.random() * (i + 1))
            column[i], column[j] = column[j], column[i]
        columns.append(column)
    seen: set[tuple[int, ...]] = set()
    out = [space.canonical_choice()]
    seen.add((0,) * len(dims))
    for row in zip(*columns, strict=True):
        if row not in seen:
            seen.add(row)
            out.append(VariantChoice(tuple(row[:-1]), row[-1], space.digest))
    return out


@dataclass
class _Selection:
    picked: list[int]
    capacity: int
    capacity_exact: bool
    max_jaccard: float
    duplicates: int


def _safe_start(piece: str) -> bool:
    """True when NFKC cannot join this piece's first character to the previous piece's last one."""
    if not piece:
        return True
    ch = piece[0]
    o = ord(ch)
    if ch in "\u3099\u309a\uff9e\uff9f":  # (halfwidth) kana voiced sound marks compose with the kana before
        return False
    return (ch.isascii() or _is_cjk(ch) or 0x3000 <= o <= 0x303F or 0xFF00 <= o <= 0xFFEF or 0x1F000 <= o <= 0x1FAFF
            or 0x2010 <= o <= 0x2027 or 0x2030 <= o <= 0x205E or 0x2190 <= o <= 0x27BF)


@functools.lru_cache(maxsize=32)
def _normalised_space(space: VariationSpace) -> VariationSpace | None:
    """The space with every piece normalised on its own (zero-width removed, NFKC), so a candidate's
    normalised body is a join plus whitespace collapse. Exact when no piece starts with a character NFKC
    could compose with its predecessor (combining marks, Hangul jamo, ...); None (normalise whole bodies)
    otherwise."""
    pieces = [*space.parts, *(o for s in space.slots for o in s.options), *(t for _, t in space.break_parts)]
    if not all(_safe_start(p) for p in pieces):
        return None

    def nf(text: str) -> str:
        return unicodedata.normalize("NFKC", text.translate(_ZERO_WIDTH))

    return VariationSpace(
        nf(space.canonical), tuple(nf(p) for p in space.parts), space.slot_parts,
        tuple(Slot(s.kind, tuple(nf(o) for o in s.options)) for s in space.slots),
        tuple((at, nf(t)) for at, t in space.break_parts), space.break_mode, space.spans, space.required, space.digest)


class _Selector:
    """Greedy farthest-point selection over candidate bodies by n-gram Jaccard of the normalised text.

    Exact, and cheap per step: grams every candidate has add the same to every intersection, so only
    the others are indexed; grams with the same posting list (all produced by one slot option, say)
    are merged into one weighted group. One weighted bincount over the posting lists of the chosen
    candidate's groups then gives its intersection with every candidate at once.
    """

    def __init__(self, space: VariationSpace, candidates: list[VariantChoice], n: int) -> None:
        count = len(candidates)
        norms: dict[str, int] = {}
        self.alias: list[int] = []  # candidate -> first candidate with the same normalised body
        gram_sets: list[set[str]] = []
        normalised = _normalised_space(space)
        for i, choice in enumerate(candidates):
            norm = _SPACES.sub(" ", normalised.render_body(choice)).strip() if normalised else normalise(space.render_body(choice))
            first = norms.setdefault(norm, i)
            self.alias.append(first)
            gram_sets.append(_grams(norm, n) if first == i else set())
        self.unique = np.array([self.alias[i] == i for i in range(count)])
        universal = set.intersection(*(gram_sets[i] for i in range(count) if self.alias[i] == i))
        self.universal = len(universal)
        self.sizes = np.array([len(g) for g in gram_sets], dtype=np.float64)
        ids: dict[str, int] = {}
        rows = [np.array([ids.setdefault(g, len(ids)) for g in grams - universal], dtype=np.int64) for grams in gram_sets]
        flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        owner = np.repeat(np.arange(count), [len(r) for r in rows])
        order = np.argsort(flat, kind="stable")
        posting = owner[order]
        counts = np.bincount(flat, minlength=len(ids))
        ends = np.cumsum(counts)
        # Merge grams with identical posting lists.
        group_of = np.empty(len(ids), dtype=np.int64)
        groups: dict[bytes, int] = {}
        reps: list[int] = []
        for g in range(len(ids)):
            key = posting[ends[g] - counts[g] : ends[g]].tobytes()
            gid = groups.setdefault(key, len(groups))
            if gid == len(reps):
                reps.append(g)
            group_of[g] = gid
        self.weights = np.bincount(group_of, minlength=len(groups)).astype(np.float64)
        self.group_counts = counts[reps] if reps else np.zeros(0, dtype=np.int64)
        self.group_posting = (np.concatenate([posting[ends[g] - counts[g] : ends[g]] for g in reps])
                              if reps else np.zeros(0, dtype=np.int64))
        self.group_starts = np.cumsum(self.group_counts) - self.group_counts
        self.rows = [np.unique(group_of[r]) for r in rows]
        self.n_candidates = count

    def similarity_to(self, s: int) -> np.ndarray:
        """Jaccard of candidate ``s`` with every candidate."""
        ids = self.rows[s]
        lens = self.group_counts[ids]
        total = int(lens.sum())
        inter = np.full(self.n_candidates, float(self.universal))
        if total:
            offsets = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
            at = self.group_posting[np.repeat(self.group_starts[ids], lens) + offsets]
            inter += np.bincount(at, weights=np.repeat(self.weights[ids], lens), minlength=self.n_candidates)
        union = self.sizes[s] + self.sizes - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 1.0)

    def run(self, forced: int, want: int, threshold: float, horizon: int, exhaustive: bool) -> _Selection:
        """Take the ``forced`` candidates (reps that already have a choice) in order, then ``want`` more,
        each the farthest from all taken so far; then keep going (unassigned) up to ``horizon`` distinct
        bodies or the first pair over ``threshold``, to estimate the capacity."""
        taken = 2.0  # similarities are at most 1
        maxsim = np.where(self.unique, 0.0, taken)
        order: list[int] = []  # distinct candidates taken, in order
        picked: list[int] = []
        capacity: int | None = None
        max_j, duplicates, exhausted = 0.0, 0, False

        def take(s: int) -> float:
            nonlocal maxsim, capacity
            sim = float(maxsim[s]) if order else 0.0
            if sim > threshold and capacity is None:
                capacity = len(order)
            order.append(s)
            maxsim = np.maximum(maxsim, self.similarity_to(s))
            maxsim[s] = taken
            return sim

        for step in range(forced):
            s = self.alias[step]
            if maxsim[s] >= taken:  # an earlier rep already has this body
                duplicates += 1
                capacity = len(order) if capacity is None else capacity
                continue
            max_j = max(max_j, take(s))
        first_new = len(order)
        while len(picked) < want or (capacity is None and len(order) < horizon):
            s = int(np.argmin(maxsim))
            if maxsim[s] >= taken:
                exhausted = True
                break
            sim = take(s)
            if len(picked) < want:
                picked.append(s)
                max_j = max(max_j, sim)
        exact = capacity is not None or (exhausted and exhaustive)
        if capacity is None:
            capacity = len(order)
        # More reps than distinct bodies: hand the selection out again, in order (the plan says so).
        reuse = order[first_new:] or order
        for i in range(want - len(picked)):
            picked.append(reuse[i % len(reuse)])
            duplicates += 1
            max_j = 1.0
        return _Selection(picked, capacity, exact, max_j, duplicates)
