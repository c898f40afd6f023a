"""Interest: a decayed score per (contact, topic) from reading, and the tags HQ's rules derive from it.

    weight(visit) = (1 - exp(-e / TIME_SCALE)) * (COMPLETENESS_SHARE + (1 - COMPLETENESS_SHARE) * completeness)
        e = engaged time capped at ENGAGED_CAP_FACTOR x the expected reading time
    score(contact, topic, t) = sum over the contact's human visits of posts with that topic of
                               weight(visit) * 0.5 ** ((t - visit start) / half_life)

The weight is in [0, 1]: about 1 for a long post read through, and it rewards both time (the
first factor, saturating: 2 min -> 0.63, 5 min -> 0.92) and completeness (the second, from
0.5 for a glance to 1 for a full read). Capping engaged time at 3x the expected reading time
keeps a tab left open (or a short post re-read ten times) from dominating. The weight never
decreases as a visit's engaged time grows, so an update only ever adds.

Incremental: a score is stored as a ``DecayedScore`` (value at a reference time). Decay is
linear, so adding a visit's weight at its start time, or the *difference* of its weights
when its engaged time grows (``DecayedScore.replace``), gives exactly the direct sum.

Tags: ``TagRule``s are tried in order for each topic the contact read about; the first whose
thresholds are met within its window gives that topic its tag (list stronger rules first).
Each tag carries evidence: the window's visits with the largest decayed contribution.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from services.shared.errors import InvalidArgument

from .reading import MIN_EXPECTED_MS, completeness

HALF_LIFE = timedelta(days=14)
ENGAGED_CAP_FACTOR = 3.0
TIME_SCALE_S = 120.0
COMPLETENESS_SHARE = 0.5
MAX_EVIDENCE = 3
ANY_TOPIC = "*"
TOPIC_PLACEHOLDER = "{topic}"
MAX_LABEL = 40
MAX_TOPIC = 128  # a topic id or its resource name ("topics/{id}")
MAX_MIN_VISITS = 1_000
MAX_WINDOW_DAYS = 365
MAX_MIN_ENGAGED_SECONDS = 7 * 86_400
NO_TIME = timedelta(0)


@dataclass(frozen=True)
class Visit:
    """One visit (merged views of one copy) as interest and leads see it."""

    visit_id: str
    post_id: str
    post_title: str
    topics: tuple[str, ...]
    started_at: datetime
    engaged_ms: int
    expected_ms: int
    is_bot: bool = False


@dataclass(frozen=True)
class Evidence:
    visit_id: str
    post_id: str
    post_title: str
    read_at: datetime
    engaged_seconds: int
    completeness: float  # engaged time over the expected reading time, 0..1


# ---- weights and decay ------------------------------------------------------------------


def effective_engaged_ms(engaged_ms: int, expected_ms: int) -> int:
    """Engaged time that counts: never negative, at most ``ENGAGED_CAP_FACTOR`` x expected."""
    expected = max(expected_ms, MIN_EXPECTED_MS)
    return max(0, min(engaged_ms, int(ENGAGED_CAP_FACTOR * expected)))


def weight(engaged_ms: int, expected_ms: int) -> float:
    """A visit's interest weight in [0, 1]; non-decreasing in ``engaged_ms``."""
    expected = max(expected_ms, MIN_EXPECTED_MS)
    engaged = effective_engaged_ms(engaged_ms, expected)
    time_part = -math.expm1(-engaged / 1000 / TIME_SCALE_S)
    return time_part * (COMPLETENESS_SHARE + (1 - COMPLETENESS_SHARE) * completeness(engaged, expected))


def visit_weight(visit: Visit) -> float:
    return 0.0 if visit.is_bot else weight(visit.engaged_ms, visit.expected_ms)


def decay(age: timedelta, half_life: timedelta = HALF_LIFE) -> float:
    """0.5 ** (age / half_life); above 1 for a negative age (a visit after the reference time)."""
    if half_life <= NO_TIME:
        raise ValueError("half_life: must be positive")
    return 0.5 ** (age / half_life)


def strength_key(weight: float, when: datetime, half_life: timedelta = HALF_LIFE) -> float:
    """Orders visits by decayed contribution at *any* time: every contribution shrinks by the same factor,
    so weight * 0.5 ** ((t - when) / h) ranks visits as log2(weight) + when / h does, whatever t is.
    Store it in a column to find the strongest visits with ORDER BY. -inf for a zero weight."""
    if weight <= 0:
        return -math.inf
    return math.log2(weight) + when.timestamp() / half_life.total_seconds()


@dataclass(frozen=True)
class DecayedScore:
    """A decaying sum stored as its value at a reference time: value_at(t) = value * 0.5 ** ((t - at) / h).

    Store ``value`` and ``at`` (None when nothing was added yet) in the score's row.
    """

    value: float = 0.0
    at: datetime | None = None

    def value_at(self, t: datetime, half_life: timedelta = HALF_LIFE) -> float:
        return 0.0 if self.at is None else self.value * decay(t - self.at, half_life)

    def add(self, weight: float, when: datetime, half_life: timedelta = HALF_LIFE) -> DecayedScore:
        """Add ``weight`` as of ``when``; the reference time moves to the later of the two."""
        at = when if self.at is None else max(self.at, when)
        return DecayedScore(self.value_at(at, half_life) + weight * decay(at - when, half_life), at)

    def replace(self, old_weight: float, new_weight: float, when: datetime, half_life: timedelta = HALF_LIFE) -> DecayedScore:
        """A visit at ``when`` now weighs ``new_weight`` instead of ``old_weight``."""
        return self.add(new_weight - old_weight, when, half_life)

    def move(self, old_weight: float, old_when: datetime, new_weight: float, new_when: datetime,
             half_life: timedelta = HALF_LIFE) -> DecayedScore:
        """A visit that weighed ``old_weight`` at ``old_when`` now weighs ``new_weight`` at ``new_when`` (a view
        applied late moved its start earlier)."""
        if old_when == new_when:
            return self.replace(old_weight, new_weight, new_when, half_life)
        return self.add(-old_weight, old_when, half_life).add(new_weight, new_when, half_life)


def human_visits(visits: Iterable[Visit]) -> list[Visit]:
    """Bots dropped; a visit listed twice kept once (its largest engaged time)."""
    best: dict[str, Visit] = {}
    for v in visits:
        if not v.is_bot and (v.visit_id not in best or v.engaged_ms > best[v.visit_id].engaged_ms):
            best[v.visit_id] = v
    return list(best.values())


def topic_scores(visits: Iterable[Visit], now: datetime, half_life: timedelta = HALF_LIFE) -> dict[str, float]:
    """The direct sum: decayed score per topic at ``now`` (bots excluded)."""
    scores: dict[str, float] = {}
    for v in human_visits(visits):
        contribution = visit_weight(v) * decay(now - v.started_at, half_life)
        for topic in set(v.topics):
            scores[topic] = scores.get(topic, 0.0) + contribution
    return scores


# ---- tag rules --------------------------------------------------------------------------


class RuleError(InvalidArgument, ValueError):
    """A tag rule is invalid; ``str(e)`` is "<field>: <problem>" (also an INVALID_ARGUMENT for the API)."""


@dataclass(frozen=True)
class TagRule:
    """Tag a contact with ``label`` for a topic read at least ``min_visits`` times for ``min_engaged_seconds``
    in total (capped per visit like the weight) within the last ``window_days``, and, when ``min_score``
    is set, a decayed topic score of at least that. ``topic`` "*" applies the rule to every topic;
    ``{topic}`` in the label is replaced by the topic's display name."""

    topic: str
    min_engaged_seconds: int
    min_visits: int
    window_days: int
    label: str
    min_score: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


DEFAULT_RULES: tuple[TagRule, ...] = (
    # Came back and stayed: at least two visits and three minutes within a month, still fresh.
    TagRule(ANY_TOPIC, min_engaged_seconds=180, min_visits=2, window_days=30, label="{topic}·高", min_score=1.0),
    # Read something on the topic for half a minute this month.
    TagRule(ANY_TOPIC, min_engaged_seconds=30, min_visits=1, window_days=30, label="{topic}·关注"),
)


def _integer(value: object, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RuleError(name, "must be an integer")
    if value < low:
        raise RuleError(name, f"must be >= {low}")
    if value > high:
        raise RuleError(name, f"must be <= {high}")
    return value


def validate_rule(rule: TagRule, field_prefix: str = "") -> TagRule:
    """The rule, or RuleError naming the first bad field (prefixed with ``field_prefix``)."""
    def name(field: str) -> str:
        return field_prefix + field

    if not isinstance(rule.topic, str) or not rule.topic.strip():
        raise RuleError(name("topic"), "required (a topic id or \"*\")")
    if len(rule.topic) > MAX_TOPIC or not rule.topic.isprintable() or rule.topic != rule.topic.strip():
        raise RuleError(name("topic"), f"a topic id of at most {MAX_TOPIC} printable characters without surrounding spaces")
    _integer(rule.min_engaged_seconds, name("min_engaged_seconds"), 0, MAX_MIN_ENGAGED_SECONDS)
    _integer(rule.min_visits, name("min_visits"), 1, MAX_MIN_VISITS)
    _integer(rule.window_days, name("window_days"), 1, MAX_WINDOW_DAYS)
    if not isinstance(rule.label, str) or not rule.label.strip():
        raise RuleError(name("label"), "required")
    if len(rule.label) > MAX_LABEL:
        raise RuleError(name("label"), f"at most {MAX_LABEL} characters, got {len(rule.label)}")
    if not rule.label.isprintable():
        raise RuleError(name("label"), "contains control or invisible characters")
    if rule.min_score is not None:
        if isinstance(rule.min_score, bool) or not isinstance(rule.min_score, int | float) or not math.isfinite(rule.min_score):
            raise RuleError(name("min_score"), "must be a finite number or absent")
        if rule.min_score < 0:
            raise RuleError(name("min_score"), "must be >= 0")
    return rule


def validate_rules(rules: Sequence[TagRule]) -> tuple[TagRule, ...]:
    """Every rule checked; errors name the rule's position, e.g. "rules[1].min_visits: must be >= 1"."""
    return tuple(validate_rule(rule, f"rules[{i}].") for i, rule in enumerate(rules))


def rule_from_dict(data: Mapping[str, object]) -> TagRule:
    """A rule from HQ's JSON configuration, validated; unknown or missing fields are errors."""
    fields = ("topic", "min_engaged_seconds", "min_visits", "window_days", "label", "min_score")
    for key in data:
        if key not in fields:
            raise RuleError(str(key), "unknown field")
    for key in fields[:-1]:
        if key not in data:
            raise RuleError(key, "required")
    rule = TagRule(data["topic"], data["min_engaged_seconds"], data["min_visits"], data["window_days"],  # type: ignore[arg-type]
                   data["label"], data.get("min_score"))  # type: ignore[arg-type]
    return validate_rule(rule)


# ---- evaluation -------------------------------------------------------------------------


@dataclass(frozen=True)
class Tag:
    topic: str
    label: str
    score: float  # decayed topic score at evaluation time
    evidence: tuple[Evidence, ...]  # strongest first
    visits: int  # visits in the rule's window
    engaged_seconds: int  # counted (capped) engaged time in the window
    rule: TagRule


def evidence_of(visit: Visit) -> Evidence:
    return Evidence(visit.visit_id, visit.post_id, visit.post_title, visit.started_at, max(0, visit.engaged_ms) // 1000,
                    completeness(visit.engaged_ms, max(visit.expected_ms, MIN_EXPECTED_MS)))


def format_label(label: str, topic_name: str) -> str:
    return label.replace(TOPIC_PLACEHOLDER, topic_name)


def evaluate_tags(visits: Iterable[Visit], now: datetime, rules: Sequence[TagRule] = DEFAULT_RULES, *,
                  topic_names: Mapping[str, str] | None = None, scores: Mapping[str, float] | None = None,
                  half_life: timedelta = HALF_LIFE, max_evidence: int = MAX_EVIDENCE) -> list[Tag]:
    """A contact's tags at ``now``, highest score first (then topic id).

    ``visits``: the contact's visits, at least those within the longest rule window (bots are
    ignored). ``scores``: the maintained decayed topic scores at ``now``, when the caller keeps
    them (``DecayedScore``); otherwise they are summed from ``visits``. Visits after ``now``
    (another server's clock a little ahead) count as inside every window.
    """
    human = human_visits(visits)
    by_topic: dict[str, list[Visit]] = {}
    for v in human:
        for topic in set(v.topics):
            by_topic.setdefault(topic, []).append(v)
    topic_score = dict(scores) if scores is not None else topic_scores(human, now, half_life)
    names = topic_names or {}
    since = {rule.window_days: now - timedelta(days=rule.window_days) for rule in rules}
    counted: dict[str, int] = {}  # visit -> its effective engaged ms, worked out once whatever the topics and rules
    tags: list[Tag] = []
    for topic in sorted(by_topic):
        score = topic_score.get(topic, 0.0)
        for rule in rules:
            if rule.topic not in (ANY_TOPIC, topic):
                continue
            start = since[rule.window_days]
            window = [v for v in by_topic[topic] if v.started_at >= start]
            if len(window) < rule.min_visits or (rule.min_score is not None and score < rule.min_score):
                continue
            engaged_ms = 0
            for v in window:
                if (e := counted.get(v.visit_id)) is None:
                    e = counted[v.visit_id] = effective_engaged_ms(v.engaged_ms, v.expected_ms)
                engaged_ms += e
            if engaged_ms < rule.min_engaged_seconds * 1000:
                continue
            strongest = sorted(window, key=lambda v: (-strength_key(visit_weight(v), v.started_at, half_life),
                                                      -v.started_at.timestamp(), v.visit_id))
            evidence = tuple(evidence_of(v) for v in strongest[:max_evidence])
            tags.append(Tag(topic, format_label(rule.label, names.get(topic, topic)), score, evidence,
                            len(window), engaged_ms // 1000, rule))
            break
    tags.sort(key=lambda t: (-t.score, t.topic))
    return tags


def timeline(visits: Iterable[Visit], limit: int = 50) -> list[Evidence]:
    """A contact's human visits as evidence, newest first (then visit id)."""
    ordered = sorted(human_visits(visits), key=lambda v: (-v.started_at.timestamp(), v.visit_id))
    return [evidence_of(v) for v in ordered[:limit]]
