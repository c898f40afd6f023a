"""Persistence for the content service: maps rows to domain objects and back.

Every function takes the caller's ``Session`` so the application layer decides
what shares a transaction. Posts are updated optimistically: the UPDATE
matches the version that was read, and a lost race raises ``Aborted``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from services.shared.db import as_utc
from services.shared.errors import Aborted

from .domain.posts import BadgePosition, Post, PostContent, Revision, Variation
from .domain.topics import Topic
from .models import AssetRow, IdempotencyRow, OutboxRow, PostRow, PostTopicRow, RevisionRow, TopicRow

# ---- topics -----------------------------------------------------------------


def _topic(row: TopicRow) -> Topic:
    return Topic(row.id, row.display_name, row.description, as_utc(row.create_time), as_utc(row.update_time), row.version)  # type: ignore[arg-type]


def insert_topic(s: Session, topic: Topic) -> None:
    s.add(
        TopicRow(
            id=topic.id,
            display_name=topic.display_name,
            description=topic.description,
            create_time=topic.create_time,
            update_time=topic.update_time,
            version=topic.version,
        )
    )
    s.flush()


def get_topic(s: Session, topic_id: str) -> Topic | None:
    row = s.get(TopicRow, topic_id)
    return _topic(row) if row else None


def save_topic(s: Session, topic: Topic, read_version: int) -> None:
    result = s.execute(
        update(TopicRow)
        .where(TopicRow.id == topic.id, TopicRow.version == read_version)
        .values(display_name=topic.display_name, description=topic.description,
                update_time=topic.update_time, version=topic.version)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Aborted(f"{topic.name} changed concurrently; read it again")
    s.flush()


def list_topics(s: Session, after_id: str | None, limit: int) -> list[Topic]:
    q = select(TopicRow).order_by(TopicRow.id).limit(limit)
    if after_id:
        q = q.where(TopicRow.id > after_id)
    return [_topic(r) for r in s.scalars(q)]


def missing_topics(s: Session, ids: Sequence[str]) -> list[str]:
    if not ids:
        return []
    found = set(s.scalars(select(TopicRow.id).where(TopicRow.id.in_(ids))))
    return [i for i in ids if i not in found]


# ---- assets -----------------------------------------------------------------


def get_asset(s: Session, asset_id: str) -> AssetRow | None:
    return s.get(AssetRow, asset_id)


def get_asset_by_sha(s: Session, sha256: str) -> AssetRow | None:
    return s.scalars(select(AssetRow).where(AssetRow.sha256 == sha256)).first()


def missing_assets(s: Session, ids: Sequence[str]) -> list[str]:
    if not ids:
        return []
    found = set(s.scalars(select(AssetRow.id).where(AssetRow.id.in_(ids))))
    return [i for i in ids if i not in found]


def assets_by_id(s: Session, ids: Sequence[str]) -> dict[str, AssetRow]:
    if not ids:
        return {}
    return {r.id: r for r in s.scalars(select(AssetRow).where(AssetRow.id.in_(ids)))}


# ---- posts and revisions ------------------------------------------------------


def _variation_json(v: Variation) -> dict[str, object]:
    data = asdict(v)
    data["protected_phrases"] = list(v.protected_phrases)
    data["badge_position"] = v.badge_position.value
    return data


def _variation(data: dict[str, object]) -> Variation:
    return Variation(
        protected_phrases=tuple(data.get("protected_phrases", ()) or ()),  # type: ignore[arg-type]
        rep_template=str(data.get("rep_template", "")),
        badge_enabled=bool(data.get("badge_enabled", False)),
        badge_position=BadgePosition(int(data.get("badge_position", 1))),  # type: ignore[arg-type]
    )


def _post(row: PostRow) -> Post:
    return Post(
        id=row.id,
        author_id=row.author_id,
        head_revision=row.head_revision,
        create_time=as_utc(row.create_time),  # type: ignore[arg-type]
        update_time=as_utc(row.update_time),  # type: ignore[arg-type]
        version=row.version,
        published_revision=row.published_revision,
        publish_time=as_utc(row.publish_time),
        scheduled_revision=row.scheduled_revision,
        scheduled_time=as_utc(row.scheduled_time),
        archived=row.archived,
    )


def _post_values(post: Post) -> dict[str, object]:
    return dict(
        author_id=post.author_id,
        state=post.state.value,
        head_revision=post.head_revision,
        published_revision=post.published_revision,
        publish_time=post.publish_time,
        scheduled_revision=post.scheduled_revision,
        scheduled_time=post.scheduled_time,
        archived=post.archived,
        version=post.version,
        create_time=post.create_time,
        update_time=post.update_time,
    )


def _revision(row: RevisionRow) -> Revision:
    content = PostContent(
        title=row.title,
        body=row.body,
        images=tuple(row.images),
        topics=tuple(row.topics),
        variation=_variation(row.variation),
        target_teams=tuple(row.target_teams or ()),
    )
    return Revision(row.post_id, row.number, content, row.author_id, as_utc(row.create_time), as_utc(row.publish_time))  # type: ignore[arg-type]


def insert_post(s: Session, post: Post) -> None:
    s.add(PostRow(id=post.id, **_post_values(post)))
    s.flush()


def save_post(s: Session, post: Post, read_version: int) -> None:
    result = s.execute(
        update(PostRow).where(PostRow.id == post.id, PostRow.version == read_version).values(**_post_values(post))
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Aborted(f"{post.name} changed concurrently; read it again")


def get_post(s: Session, post_id: str) -> Post | None:
    row = s.get(PostRow, post_id)
    return _post(row) if row else None


def delete_post(s: Session, post: Post) -> None:
    result = s.execute(delete(PostRow).where(PostRow.id == post.id, PostRow.version == post.version))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Aborted(f"{post.name} changed concurrently; read it again")


def insert_revision(s: Session, rev: Revision) -> None:
    c = rev.content
    s.add(
        RevisionRow(
            post_id=rev.post_id,
            number=rev.number,
            title=c.title,
            body=c.body,
            images=list(c.images),
            topics=list(c.topics),
            variation=_variation_json(c.variation),
            target_teams=list(c.target_teams),
            author_id=rev.author_id,
            create_time=rev.create_time,
            publish_time=rev.publish_time,
        )
    )
    s.flush()


def set_head_topics(s: Session, post_id: str, topics: Sequence[str]) -> None:
    s.execute(delete(PostTopicRow).where(PostTopicRow.post_id == post_id))
    s.add_all(PostTopicRow(post_id=post_id, topic_id=t) for t in topics)
    s.flush()


def mark_revision_published(s: Session, post_id: str, number: int, when: datetime) -> None:
    # The only change a revision ever sees: stamped once, the first time it goes live.
    s.execute(
        update(RevisionRow)
        .where(RevisionRow.post_id == post_id, RevisionRow.number == number, RevisionRow.publish_time.is_(None))
        .values(publish_time=when)
    )


def get_revision(s: Session, post_id: str, number: int) -> Revision | None:
    row = s.get(RevisionRow, (post_id, number))
    return _revision(row) if row else None


def list_revisions(s: Session, post_id: str, before: int | None, limit: int) -> list[Revision]:
    q = select(RevisionRow).where(RevisionRow.post_id == post_id).order_by(RevisionRow.number.desc()).limit(limit)
    if before is not None:
        q = q.where(RevisionRow.number < before)
    return [_revision(r) for r in s.scalars(q)]


def list_posts(
    s: Session, *, state: int | None, topic: str | None, author: str | None, before_id: str | None, limit: int,
    live: bool = False,
) -> list[tuple[Post, Revision]]:
    """Newest first, with each post's head revision (or its live one when ``live``)."""
    number = PostRow.published_revision if live else PostRow.head_revision
    q = (
        select(PostRow, RevisionRow)
        .join(RevisionRow, (RevisionRow.post_id == PostRow.id) & (RevisionRow.number == number))
        .order_by(PostRow.id.desc())
        .limit(limit)
    )
    if state is not None:
        q = q.where(PostRow.state == state)
    if author:
        q = q.where(PostRow.author_id == author)
    if topic:
        q = q.where(PostRow.id.in_(select(PostTopicRow.post_id).where(PostTopicRow.topic_id == topic)))
    if before_id:
        q = q.where(PostRow.id < before_id)
    return [(_post(p), _revision(r)) for p, r in s.execute(q)]


def due_post_ids(s: Session, now: datetime, limit: int) -> list[str]:
    q = (
        select(PostRow.id)
        .where(PostRow.scheduled_time.is_not(None), PostRow.scheduled_time <= now, PostRow.archived.is_(False))
        .order_by(PostRow.scheduled_time)
        .limit(limit)
    )
    return list(s.scalars(q))


# ---- idempotency ----------------------------------------------------------------


def recall_request(s: Session, principal_id: str, request_id: str, method: str) -> str | None:
    row = s.get(IdempotencyRow, (principal_id, request_id))
    if row is None or row.method != method:
        return None
    return row.resource


def remember_request(s: Session, principal_id: str, request_id: str, method: str, resource: str) -> None:
    s.add(IdempotencyRow(principal_id=principal_id, request_id=request_id, method=method, resource=resource,
                         create_time=datetime.now(UTC)))
    s.flush()


# ---- outbox ------------------------------------------------------------------------


def add_event(s: Session, event_id: str, topic: str, payload: bytes, now: datetime) -> None:
    s.add(OutboxRow(event_id=event_id, topic=topic, payload=payload, create_time=now))
    s.flush()


def pending_events(s: Session, limit: int) -> list[OutboxRow]:
    q = select(OutboxRow).where(OutboxRow.dispatch_time.is_(None)).order_by(OutboxRow.id).limit(limit)
    return list(s.scalars(q))


def mark_dispatched(s: Session, ids: Sequence[int], when: datetime) -> None:
    s.execute(update(OutboxRow).where(OutboxRow.id.in_(ids)).values(dispatch_time=when))
