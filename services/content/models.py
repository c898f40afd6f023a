"""Tables owned by the content service (prefix ``content_``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.shared.db import declarative_base

Base = declarative_base("content")

TS = DateTime(timezone=True)


class TopicRow(Base):
    __tablename__ = "content_topics"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(40), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(TS)
    update_time: Mapped[datetime] = mapped_column(TS)
    version: Mapped[int] = mapped_column(Integer, default=1)


class AssetRow(Base):
    __tablename__ = "content_assets"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    mime_type: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255), default="")
    blob_key: Mapped[str] = mapped_column(String(128))
    uploader_id: Mapped[str] = mapped_column(String(26))
    create_time: Mapped[datetime] = mapped_column(TS)


class PostRow(Base):
    __tablename__ = "content_posts"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    author_id: Mapped[str] = mapped_column(String(26), index=True)
    # Derived from the pointers below on every write; stored so ListPosts can filter by it.
    state: Mapped[int] = mapped_column(Integer, index=True)
    head_revision: Mapped[int] = mapped_column(Integer)
    published_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    publish_time: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    scheduled_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    scheduled_time: Mapped[datetime | None] = mapped_column(TS, nullable=True, index=True)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[datetime] = mapped_column(TS)
    update_time: Mapped[datetime] = mapped_column(TS)


class RevisionRow(Base):
    """Immutable once written: the store only ever inserts revisions, and sets
    ``publish_time`` once when the revision first goes live."""

    __tablename__ = "content_revisions"

    post_id: Mapped[str] = mapped_column(ForeignKey("content_posts.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(120))
    body: Mapped[str] = mapped_column(Text)
    images: Mapped[list[str]] = mapped_column(JSON)
    topics: Mapped[list[str]] = mapped_column(JSON)
    variation: Mapped[dict[str, Any]] = mapped_column(JSON)
    target_teams: Mapped[list[str]] = mapped_column(JSON, default=list)
    author_id: Mapped[str] = mapped_column(String(26))
    create_time: Mapped[datetime] = mapped_column(TS)
    publish_time: Mapped[datetime | None] = mapped_column(TS, nullable=True)


class PostTopicRow(Base):
    """The head revision's topics, for ListPosts(topic=...)."""

    __tablename__ = "content_post_topics"

    post_id: Mapped[str] = mapped_column(ForeignKey("content_posts.id", ondelete="CASCADE"), primary_key=True)
    topic_id: Mapped[str] = mapped_column(ForeignKey("content_topics.id"), primary_key=True)

    __table_args__ = (Index("ix_content_post_topics_topic", "topic_id", "post_id"),)


class IdempotencyRow(Base):
    """request_id -> the resource a create made, so a retried create returns it (AIP-155)."""

    __tablename__ = "content_idempotency"

    principal_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    method: Mapped[str] = mapped_column(String(32))
    resource: Mapped[str] = mapped_column(String(128))
    create_time: Mapped[datetime] = mapped_column(TS)


class OutboxRow(Base):
    """Events written in the same transaction as the change they announce
    (transactional outbox): an event exists if and only if its change committed."""

    __tablename__ = "content_outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(26), unique=True)
    topic: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(TS)
    dispatch_time: Mapped[datetime | None] = mapped_column(TS, nullable=True, index=True)
