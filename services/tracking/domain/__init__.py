"""Pure tracking rules: no gRPC, SQL, Redis or Celery; the same inputs always give the same outputs.

::

    StartView(ua, ip) ──> bots.classify_user_agent ─> is_bot flag on the view
           │              privacy.hash_ip ─────────> network hash (never the clear IP)
           │              ratelimit.allow ─────────> per-visitor / per-IP decision (state kept by the adapter)
           │              engagement.same_visit ───> join the previous visit or start one
           v
    heartbeats ──> engagement.apply_heartbeats(ViewState, batch) ─> ViewState (JSON row) + BatchResult
                        idempotent on (view, seq), deltas clamped, engaged <= wall time, idle expiry
           │
           v  visit = merged views: engaged_ms, expected_ms (reading.expected_reading_ms)
    interest.Visit ──> interest.weight ─> DecayedScore per (contact, topic), updated as events arrive
           │           interest.evaluate_tags(visits, rules) ─> Tag(label, score, evidence)
           ├─────────> leads.lead_candidate / rank_leads ─> Lead(reason, talking point)  (humanize.describe_read)
           v
    analytics.ViewRecord / Share ──> post_analytics (distribution, variants), build_forward_tree / top_spreaders

Times: engagement works in server-receive unix milliseconds (ints, stored in the state row);
interest, leads and humanize in aware datetimes; ratelimit in float seconds.
"""

from __future__ import annotations

from .analytics import (
    BUCKETS,
    Distribution,
    ForwardTree,
    PostAnalytics,
    Share,
    Spreader,
    VariantStats,
    ViewRecord,
    build_forward_tree,
    distribution,
    percentile,
    post_analytics,
    top_spreaders,
)
from .bots import BotVerdict, classify_user_agent, is_bot, user_agent_family
from .engagement import (
    HEARTBEAT_INTERVAL_MS,
    MAX_DELTA_MS,
    VIEW_IDLE_TIMEOUT_MS,
    VISIT_MERGE_WINDOW_MS,
    BatchResult,
    Heartbeat,
    ViewState,
    apply_heartbeats,
    close,
    group_by_view,
    is_expired,
    new_view,
    same_visit,
)
from .humanize import DEFAULT_TZ, describe_activity, describe_read, describe_talking_point, format_duration, format_when
from .interest import (
    DEFAULT_RULES,
    HALF_LIFE,
    DecayedScore,
    Evidence,
    RuleError,
    Tag,
    TagRule,
    Visit,
    decay,
    evaluate_tags,
    rule_from_dict,
    strength_key,
    timeline,
    topic_scores,
    validate_rule,
    validate_rules,
    visit_weight,
    weight,
)
from .leads import Lead, LeadCandidate, Read, lead_candidate, leads_for_day, rank_leads, ranking_time
from .privacy import hash_ip, referrer_host, truncate_ip
from .ratelimit import Limit, allow, retry_after
from .reading import completeness, expected_reading_ms

__all__ = [
    "BUCKETS", "DEFAULT_RULES", "DEFAULT_TZ", "HALF_LIFE", "HEARTBEAT_INTERVAL_MS", "MAX_DELTA_MS", "VIEW_IDLE_TIMEOUT_MS",
    "VISIT_MERGE_WINDOW_MS", "BatchResult", "BotVerdict", "DecayedScore", "Distribution", "Evidence", "ForwardTree", "Heartbeat",
    "Lead", "LeadCandidate", "Limit", "PostAnalytics", "Read", "RuleError", "Share", "Spreader", "Tag", "TagRule", "VariantStats",
    "ViewRecord", "ViewState", "Visit", "allow", "apply_heartbeats", "build_forward_tree", "classify_user_agent", "close",
    "completeness", "decay", "describe_activity", "describe_read", "describe_talking_point", "distribution", "evaluate_tags",
    "expected_reading_ms", "format_duration", "format_when", "group_by_view", "hash_ip", "is_bot", "is_expired", "lead_candidate",
    "leads_for_day", "new_view", "percentile", "post_analytics", "rank_leads", "ranking_time", "referrer_host", "retry_after",
    "rule_from_dict", "same_visit", "strength_key", "timeline", "top_spreaders", "topic_scores", "truncate_ip", "user_agent_family",
    "validate_rule", "validate_rules", "visit_weight", "weight",
]
