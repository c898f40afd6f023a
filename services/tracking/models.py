"""Tables owned by the tracking service (prefix ``tracking_``).

Personal data is kept to the minimum: a visitor is a random first-party id, an
IP only as a salted hash of its /24 (/48), a user agent only as a family
("WeChat", "Chrome"), a referrer only as its host. Raw heartbeats
(``tracking_events``) are purged after the retention period; views, visits,
interest and tags are aggregates and stay until the contact is erased.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from services.shared.db import declarative_base

Base = declarative_base("tracking")

TS = DateTime(timezone=True)
VIEW_ID = String(48)  # "<ulid>-<16 hex of HMAC>"
# Tables whose rows every heartbeat updates: room on each page for the new versions, so PostgreSQL can update them in
# place (HOT, no new index entries) as long as no indexed column changes (migration 0003).
HOT = {"postgresql_with": {"fillfactor": 80}}


class PostInfoRow(Base):
    """A published revision as tracking needs it (from the content service's publish events)."""

    __tablename__ = "tracking_posts"

    post_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    topics: Mapped[list[str]] = mapped_column(JSON)  # topic ids
    topic_names: Mapped[list[str]] = mapped_column(JSON)
    expected_ms: Mapped[int] = mapped_column(Integer)


class RepInfoRow(Base):
    """A rep as seen in share tokens: which team their contacts belong to."""

    __tablename__ = "tracking_reps"

    rep_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    team_id: Mapped[str] = mapped_column(String(63), default="", index=True)


class ContactRow(Base):
    """A rep's contact: named (from a per-contact link) or an anonymous visitor ("访客 3f9a")."""

    __tablename__ = "tracking_contacts"
    __table_args__ = (Index("ix_tracking_contacts_rep_lead", "rep_id", "lead_key"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    rep_id: Mapped[str] = mapped_column(String(26))
    team_id: Mapped[str] = mapped_column(String(63), default="", index=True)
    display_name: Mapped[str] = mapped_column(String(60))
    named: Mapped[bool] = mapped_column(Boolean)
    create_time: Mapped[datetime] = mapped_column(TS)
    last_activity: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    # The lead score as a decaying sum (value at lead_at) and the time-invariant key ranking it.
    lead_value: Mapped[float] = mapped_column(Float, default=0.0)
    lead_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    lead_key: Mapped[float | None] = mapped_column(Float, nullable=True)
    headline_visit: Mapped[str | None] = mapped_column(String(48), nullable=True)  # the strongest read
    headline_key: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_visit: Mapped[str | None] = mapped_column(String(48), nullable=True)
    tags: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # evaluated tags with evidence


class VisitorContactRow(Base):
    """Which of a rep's contacts a visitor is: set by the first view, moved by a per-contact link."""

    __tablename__ = "tracking_visitor_contacts"

    visitor_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rep_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(26), index=True)


class ShareRow(Base):
    """A share link that was opened: a rep's own, a forward (child) or a per-contact link."""

    __tablename__ = "tracking_shares"

    share_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    parent_share_id: Mapped[str] = mapped_column(String(24), default="")
    post_id: Mapped[str] = mapped_column(String(26), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    rep_id: Mapped[str] = mapped_column(String(26))
    copy_id: Mapped[str] = mapped_column(String(26))
    create_time: Mapped[datetime] = mapped_column(TS)


class VisitRow(Base):
    """Repeated opens of one post by one visitor within 10 minutes: the unit of interest and evidence."""

    __tablename__ = "tracking_visits"
    __table_args__ = (Index("ix_tracking_visits_contact_time", "contact_id", "started_at"),
                      Index("ix_tracking_visits_visitor_post", "visitor_id", "post_id"),  # not last_activity: HOT
                      HOT)

    id: Mapped[str] = mapped_column(VIEW_ID, primary_key=True)  # the first view's id
    contact_id: Mapped[str] = mapped_column(String(26))
    visitor_id: Mapped[str] = mapped_column(String(40))
    rep_id: Mapped[str] = mapped_column(String(26))
    post_id: Mapped[str] = mapped_column(String(26))
    revision: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(TS)
    last_activity: Mapped[datetime] = mapped_column(TS)
    engaged_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    bot: Mapped[bool] = mapped_column(Boolean, default=False)


class ViewRow(Base):
    __tablename__ = "tracking_views"
    __table_args__ = (Index("ix_tracking_views_post", "post_id", "revision"), HOT)

    id: Mapped[str] = mapped_column(VIEW_ID, primary_key=True)
    visit_id: Mapped[str] = mapped_column(VIEW_ID, index=True)
    contact_id: Mapped[str] = mapped_column(String(26), index=True)
    visitor_id: Mapped[str] = mapped_column(String(40))
    share_id: Mapped[str] = mapped_column(String(24), index=True)
    rep_id: Mapped[str] = mapped_column(String(26))
    post_id: Mapped[str] = mapped_column(String(26))
    revision: Mapped[int] = mapped_column(Integer)
    copy_id: Mapped[str] = mapped_column(String(26))
    started_at: Mapped[datetime] = mapped_column(TS)
    engaged_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    max_scroll_percent: Mapped[int] = mapped_column(Integer, default=0)
    closed: Mapped[bool] = mapped_column(Boolean, default=False)
    bot: Mapped[bool] = mapped_column(Boolean, default=False)
    bot_reason: Mapped[str] = mapped_column(String(60), default="")
    ip_hash: Mapped[str] = mapped_column(String(32), default="")
    referrer_host: Mapped[str] = mapped_column(String(255), default="")
    user_agent_family: Mapped[str] = mapped_column(String(24), default="")
    state: Mapped[dict[str, Any]] = mapped_column(JSON)  # engagement.ViewState: dedup on (view, seq)


class EventRow(Base):
    """A raw heartbeat as applied (purged after the retention period)."""

    __tablename__ = "tracking_events"

    view_id: Mapped[str] = mapped_column(VIEW_ID, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    engaged_ms: Mapped[int] = mapped_column(Integer)
    max_scroll_percent: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(TS, index=True)


class InterestRow(Base):
    """A contact's decayed interest in a topic: value at ``at`` (halves every half-life)."""

    __tablename__ = "tracking_interest"
    __table_args__ = (HOT,)

    contact_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    topic: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(TS)


class TagRuleRow(Base):
    __tablename__ = "tracking_tag_rules"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)  # the first matching rule per topic wins
    topic: Mapped[str] = mapped_column(String(128))
    min_engaged_seconds: Mapped[int] = mapped_column(Integer)
    min_visits: Mapped[int] = mapped_column(Integer)
    window_days: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(40))
    min_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    create_time: Mapped[datetime] = mapped_column(TS)


class ErasedViewRow(Base):
    """A tombstone: a view of an erased contact (its id's sha256 only), so a consumer that still holds one of its
    entries cannot bring it back after the erasure. Dropped with the retention purge after a day."""

    __tablename__ = "tracking_erased_views"

    view_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(TS, index=True)
