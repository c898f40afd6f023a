"""Leads: which of a rep's contacts to talk to today, and what to say.

A contact's *lead score* at a ranking time is their recent engagement: the interest weights
of their human visits within ``LEAD_LOOKBACK`` decayed with a short ``LEAD_HALF_LIFE`` (two
days: last night's 13-minute read beats a long read two weeks ago). Ranking is by that score,
then the latest activity, then contact id, so equal inputs always give the same order.

Each lead carries a *reason* (the read with the largest decayed contribution, in words:
"昨天 21:14 阅读《标题》13 分钟") and a *talking point* (top interest topic and last content read).

For today the ranking time is now; for a past day, the end of that day in the rep's time zone
(visits after it are ignored). Reasons are always phrased relative to the real now.

Two ways in: ``leads_for_day`` from raw visits (simple; fine for a past day or a few hundred
contacts), or ``rank_leads`` over ``LeadCandidate``s an adapter keeps per contact as events
arrive: the lead score as a ``DecayedScore`` with ``LEAD_HALF_LIFE``, the last read, and the
headline read as the one with the largest ``strength_key`` (decayed contributions never change
order, so that key can be stored and indexed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from .humanize import DEFAULT_LOCALE, DEFAULT_TZ, aware, describe_read, describe_talking_point, zone
from .interest import HALF_LIFE, Visit, decay, human_visits, strength_key, visit_weight
from .reading import MIN_EXPECTED_MS, completeness

LEAD_HALF_LIFE = timedelta(days=2)
LEAD_LOOKBACK = timedelta(days=7)
SCORE_DIGITS = 9  # scores are compared rounded, so a maintained accumulator and a direct sum rank alike


@dataclass(frozen=True)
class Read:
    post_id: str
    post_title: str
    at: datetime
    engaged_ms: int
    completeness: float = 0.0


@dataclass(frozen=True)
class LeadCandidate:
    """What ranking needs of one contact (an adapter may build it from stored aggregates instead of visits)."""

    contact_id: str
    display_name: str
    score: float  # lead score at the ranking time
    last_activity: datetime
    headline: Read  # the read the reason quotes
    last_read: Read
    top_topic: str = ""  # display name of the contact's top interest topic
    top_topic_id: str = ""


@dataclass(frozen=True)
class Lead:
    contact_id: str
    display_name: str
    score: float
    reason: str
    talking_point: str
    last_activity: datetime
    top_topic: str  # display name
    top_topic_id: str
    last_read: Read


def _read(v: Visit) -> Read:
    return Read(v.post_id, v.post_title, v.started_at, v.engaged_ms, completeness(v.engaged_ms, max(v.expected_ms, MIN_EXPECTED_MS)))


def lead_candidate(contact_id: str, display_name: str, visits: Iterable[Visit], at: datetime, *,
                   topic_names: Mapping[str, str] | None = None, half_life: timedelta = LEAD_HALF_LIFE,
                   lookback: timedelta = LEAD_LOOKBACK, interest_half_life: timedelta = HALF_LIFE) -> LeadCandidate | None:
    """The contact as a lead at ``at``, or None without a human visit in (at - lookback, at].

    ``visits`` may reach further back than the lookback: older ones still count for the top topic.
    """
    human = [v for v in human_visits(visits) if v.started_at <= at]
    recent = [v for v in human if v.started_at > at - lookback]
    if not recent:
        return None
    weights = {v.visit_id: visit_weight(v) for v in human}
    score = sum(weights[v.visit_id] * decay(at - v.started_at, half_life) for v in recent)
    headline = min(recent, key=lambda v: (-strength_key(weights[v.visit_id], v.started_at, half_life), -v.started_at.timestamp(),
                                          v.visit_id))
    last = min(recent, key=lambda v: (-v.started_at.timestamp(), v.visit_id))
    scores: dict[str, float] = {}
    for v in human:
        contribution = weights[v.visit_id] * decay(at - v.started_at, interest_half_life)
        for topic in set(v.topics):
            scores[topic] = scores.get(topic, 0.0) + contribution
    positive = [t for t, score in scores.items() if score > 0]
    top = min(positive, key=lambda t: (-round(scores[t], SCORE_DIGITS), t)) if positive else ""
    names = topic_names or {}
    return LeadCandidate(contact_id, display_name, score, last.started_at, _read(headline), _read(last),
                         names.get(top, top), top)


def ranking_time(day: date | None, now: datetime, tz: str | tzinfo | None = DEFAULT_TZ) -> datetime:
    """``now`` for today (or no day, or a future day); else the last instant of ``day`` in ``tz``."""
    z = zone(tz)
    if day is None or day >= aware(now).astimezone(z).date():
        return now
    return datetime.combine(day + timedelta(days=1), time(), z) - timedelta(microseconds=1)


def rank_leads(candidates: Iterable[LeadCandidate], *, now: datetime, tz: str | tzinfo | None = DEFAULT_TZ,
               locale: str | None = DEFAULT_LOCALE, limit: int | None = None, min_score: float = 0.0) -> list[Lead]:
    """Candidates scoring above ``min_score``, best first (score, latest activity, contact id), at most ``limit``."""
    kept = [c for c in candidates if c.score > min_score]
    kept.sort(key=lambda c: (-round(c.score, SCORE_DIGITS), -c.last_activity.timestamp(), c.contact_id))
    if limit is not None:
        kept = kept[: max(0, limit)]
    return [Lead(c.contact_id, c.display_name, c.score,
                 describe_read(c.headline.post_title, c.headline.engaged_ms, c.headline.at, now, tz, locale),
                 describe_talking_point(c.top_topic, c.last_read.post_title, locale), c.last_activity, c.top_topic,
                 c.top_topic_id, c.last_read)
            for c in kept]


def leads_for_day(contacts: Iterable[tuple[str, str, Sequence[Visit]]], day: date | None, now: datetime, *,
                  tz: str | tzinfo | None = DEFAULT_TZ, locale: str | None = DEFAULT_LOCALE,
                  topic_names: Mapping[str, str] | None = None, limit: int | None = None) -> list[Lead]:
    """ListLeads from raw visits: ``contacts`` are (contact id, display name, visits)."""
    at = ranking_time(day, now, tz)
    candidates = (lead_candidate(cid, name, visits, at, topic_names=topic_names) for cid, name, visits in contacts)
    return rank_leads((c for c in candidates if c is not None), now=now, tz=tz, locale=locale, limit=limit)
