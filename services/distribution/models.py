"""Tables owned by the distribution service (prefix ``distribution_``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.shared.db import declarative_base

Base = declarative_base("distribution")

TS = DateTime(timezone=True)


class TeamRow(Base):
    __tablename__ = "distribution_teams"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(60), unique=True)
    create_time: Mapped[datetime] = mapped_column(TS)


class RepRow(Base):
    __tablename__ = "distribution_reps"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(40))
    signature: Mapped[str] = mapped_column(String(120), default="")
    store: Mapped[str] = mapped_column(String(60), default="")
    region: Mapped[str] = mapped_column(String(60), default="")
    team_id: Mapped[str | None] = mapped_column(ForeignKey("distribution_teams.id"), nullable=True, index=True)
    contact_qr_asset: Mapped[str] = mapped_column(String(26), default="")
    user_id: Mapped[str | None] = mapped_column(String(26), nullable=True, unique=True)
    create_time: Mapped[datetime] = mapped_column(TS)
    update_time: Mapped[datetime] = mapped_column(TS)
    version: Mapped[int] = mapped_column(Integer, default=1)


class CampaignRow(Base):
    """One published revision's distribution: its snapshot, text plan and counts."""

    __tablename__ = "distribution_campaigns"
    __table_args__ = (UniqueConstraint("post_id", "revision"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    post_id: Mapped[str] = mapped_column(String(26), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[str] = mapped_column(String(26), unique=True)
    snapshot: Mapped[bytes] = mapped_column(LargeBinary)  # PostContentSnapshot
    total: Mapped[int] = mapped_column(Integer)
    capacity_estimate: Mapped[int] = mapped_column(Integer)
    policy_met: Mapped[bool] = mapped_column(Boolean)
    create_time: Mapped[datetime] = mapped_column(TS)


class CopyRow(Base):
    """A rep's copy of a campaign: planned at publish, rendered by a worker or on demand."""

    __tablename__ = "distribution_copies"

    campaign_id: Mapped[str] = mapped_column(ForeignKey("distribution_campaigns.id", ondelete="CASCADE"),
                                             primary_key=True)
    rep_id: Mapped[str] = mapped_column(String(26), primary_key=True, index=True)
    copy_id: Mapped[str] = mapped_column(String(26), unique=True)
    choice: Mapped[dict[str, Any]] = mapped_column(JSON)  # the text variant assigned to this rep
    state: Mapped[str] = mapped_column(String(12), default="pending", index=True)  # pending | ready | failed
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    images: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    share_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    failure: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    render_time: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    # While pending: until when a worker (or a sweep that queued it again) holds it; see render_chunk.
    lease_until: Mapped[datetime | None] = mapped_column(TS, nullable=True)


class VariantRow(Base):
    """Which rep owns each rendered image's bytes: two reps never share a variant (one rep's
    copies of the same image in several revisions may)."""

    __tablename__ = "distribution_variants"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    rep_id: Mapped[str] = mapped_column(String(26), index=True)


class IdempotencyRow(Base):
    __tablename__ = "distribution_idempotency"

    principal_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    method: Mapped[str] = mapped_column(String(32))
    resource: Mapped[str] = mapped_column(String(128))


class PostRow(Base):
    """What this service knows of a post, from the content service's post-changed events.

    Enough to tell an unknown post (NOT_FOUND) from one that is not published
    (FAILED_PRECONDITION), and to preview the head revision (a draft) for editors.
    """

    __tablename__ = "distribution_posts"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    state: Mapped[str] = mapped_column(String(12))  # DRAFT | SCHEDULED | PUBLISHED | ARCHIVED | DELETED
    version: Mapped[int] = mapped_column(Integer)  # the highest version seen; older events are ignored
    head_revision: Mapped[int] = mapped_column(Integer)
    live_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    head_snapshot: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # PostContentSnapshot
    update_time: Mapped[datetime] = mapped_column(TS)
