"""The content service's use cases: transactions around the domain rules.

No gRPC here: ``api.py`` translates requests into these calls and results back.
Each method runs in one database transaction, so a failure leaves no partial
rows; uploads write the blob first and remove it again if the row never lands.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError

from services.shared.blobstore import BlobNotFound, BlobStore, original_key
from services.shared.db import Database
from services.shared.errors import Aborted, AlreadyExists, InvalidArgument, NotFound, Unavailable
from services.shared.identity.domain import Principal, Role
from services.shared.ids import new_id

from . import store
from .domain.assets import SNIFF_BYTES, inspect_image
from .domain.posts import Post, PostContent, PostState, Revision, merge_content, validate_content
from .domain.topics import Topic, validate_topic_fields
from .events import POST_CHANGED, POST_PUBLISHED, EventSink, build_changed_event, build_published_event
from .models import AssetRow

log = logging.getLogger(__name__)

EDITORS = frozenset({Role.ADMIN, Role.EDITOR})
URL_LIFETIME = timedelta(minutes=15)


@dataclass(frozen=True)
class PostView:
    """A post and the revision its reader sees (head for editors, live for others)."""

    post: Post
    revision: Revision


def _now() -> datetime:
    return datetime.now(UTC)


class ContentService:
    def __init__(self, db: Database, blobs: BlobStore, events: EventSink, *, max_asset_bytes: int,
                 max_image_pixels: int) -> None:
        self.db = db
        self.blobs = blobs
        self.events = events
        self.max_asset_bytes = max_asset_bytes
        self.max_image_pixels = max_image_pixels

    # ---- topics ------------------------------------------------------------------

    def create_topic(self, who: Principal, topic_id: str, display_name: str, description: str,
                     request_id: str = "") -> Topic:
        display_name, description = validate_topic_fields(display_name, description)
        now = _now()
        try:
            with self.db.write() as s:
                if request_id and (earlier := store.recall_request(s, who.id, request_id, "CreateTopic")):
                    return self._topic(s, earlier)
                topic = Topic(topic_id or f"t-{new_id()}", display_name, description, now, now)
                if store.get_topic(s, topic.id):
                    raise AlreadyExists(f"{topic.name} already exists")
                store.insert_topic(s, topic)
                if request_id:
                    store.remember_request(s, who.id, request_id, "CreateTopic", topic.id)
                return topic
        except IntegrityError:
            raise AlreadyExists(f"a topic named {display_name!r} already exists") from None

    @staticmethod
    def _topic(s: object, topic_id: str) -> Topic:
        topic = store.get_topic(s, topic_id)  # type: ignore[arg-type]
        if topic is None:
            raise NotFound(f"topics/{topic_id} not found")
        return topic

    def get_topic(self, topic_id: str) -> Topic:
        with self.db.read() as s:
            return self._topic(s, topic_id)

    def list_topics(self, after_id: str | None, limit: int) -> list[Topic]:
        with self.db.read() as s:
            return store.list_topics(s, after_id, limit)

    def update_topic(self, topic_id: str, display_name: str | None, description: str | None, etag: str) -> Topic:
        try:
            with self.db.write() as s:
                topic = self._topic(s, topic_id)
                if etag and etag != topic.etag:
                    raise Aborted(f"{topic.name} changed since it was read (etag mismatch)")
                name, desc = validate_topic_fields(
                    topic.display_name if display_name is None else display_name,
                    topic.description if description is None else description,
                )
                updated = replace(topic, display_name=name, description=desc, update_time=_now(),
                                  version=topic.version + 1)
                store.save_topic(s, updated, topic.version)
                return updated
        except IntegrityError:
            raise AlreadyExists(f"a topic named {display_name!r} already exists") from None

    # ---- posts -------------------------------------------------------------------

    def _check_references(self, s: object, content: PostContent) -> None:
        if missing := store.missing_assets(s, content.images):  # type: ignore[arg-type]
            i = content.images.index(missing[0])
            raise InvalidArgument(f"content.images[{i}]", f"assets/{missing[0]} not found")
        if missing := store.missing_topics(s, content.topics):  # type: ignore[arg-type]
            i = content.topics.index(missing[0])
            raise InvalidArgument(f"content.topics[{i}]", f"topics/{missing[0]} not found")

    def create_post(self, who: Principal, content: PostContent, request_id: str = "") -> PostView:
        content = validate_content(content)
        now = _now()
        with self.db.write() as s:
            if request_id and (earlier := store.recall_request(s, who.id, request_id, "CreatePost")):
                return self._view(s, earlier, who)
            self._check_references(s, content)
            post = Post(id=new_id(), author_id=who.id, head_revision=1, create_time=now, update_time=now)
            revision = Revision(post.id, 1, content, who.id, now)
            store.insert_post(s, post)
            store.insert_revision(s, revision)
            store.set_head_topics(s, post.id, content.topics)
            if request_id:
                store.remember_request(s, who.id, request_id, "CreatePost", post.id)
            self._changed(s, post, now)
            view = PostView(post, revision)
        self.relay_outbox()
        return view

    def _load(self, s: object, post_id: str) -> Post:
        post = store.get_post(s, post_id)  # type: ignore[arg-type]
        if post is None:
            raise NotFound(f"posts/{post_id} not found")
        return post

    def _view(self, s: object, post_id: str, who: Principal) -> PostView:
        post = self._load(s, post_id)
        if who.role in EDITORS:
            number = post.head_revision
        elif post.published_revision is not None and not post.archived:
            number = post.published_revision  # reps and sales see only what is live
        else:
            raise NotFound(f"posts/{post_id} not found")
        revision = store.get_revision(s, post_id, number)  # type: ignore[arg-type]
        assert revision is not None, "head/published revision rows are never deleted"
        return PostView(post, revision)

    def get_post(self, who: Principal, post_id: str) -> PostView:
        with self.db.read() as s:
            return self._view(s, post_id, who)

    def list_posts(self, who: Principal, *, state: PostState | None, topic: str | None, author: str | None,
                   before_id: str | None, limit: int) -> list[PostView]:
        if who.role not in EDITORS:
            if state not in (None, PostState.PUBLISHED):
                return []
            state = PostState.PUBLISHED
        with self.db.read() as s:
            rows = store.list_posts(s, state=state.value if state else None, topic=topic, author=author,
                                    before_id=before_id, limit=limit, live=who.role not in EDITORS)
        return [PostView(p, r) for p, r in rows]

    def update_post(self, who: Principal, post_id: str, new: PostContent, paths: set[str], etag: str) -> PostView:
        with self.db.write() as s:
            post = self._load(s, post_id)
            post.check_etag(etag)
            head = store.get_revision(s, post_id, post.head_revision)
            assert head is not None
            content = validate_content(merge_content(head.content, new, paths))
            self._check_references(s, content)
            edited = post.edited(_now())
            revision = Revision(post_id, edited.head_revision, content, who.id, edited.update_time)
            store.save_post(s, edited, post.version)
            store.insert_revision(s, revision)
            store.set_head_topics(s, post_id, content.topics)
            self._changed(s, edited, edited.update_time)
            view = PostView(edited, revision)
        self.relay_outbox()
        return view

    def delete_post(self, post_id: str, etag: str) -> None:
        with self.db.write() as s:
            post = self._load(s, post_id)
            post.check_etag(etag)
            post.check_deletable()
            store.delete_post(s, post)
            self._changed(s, post, _now(), deleted=True)
        self.relay_outbox()

    def archive_post(self, who: Principal, post_id: str, etag: str) -> PostView:
        with self.db.write() as s:
            post = self._load(s, post_id)
            post.check_etag(etag)
            archived = post.archived_at(_now())
            if archived is not post:
                store.save_post(s, archived, post.version)
                self._changed(s, archived, archived.update_time)
            view = self._view(s, post_id, who)
        self.relay_outbox()
        return view

    def publish_post(self, who: Principal, post_id: str, at: datetime | None, etag: str) -> PostView:
        now = _now()
        with self.db.write() as s:
            post = self._load(s, post_id)
            post.check_etag(etag)
            updated, live = post.published(now, at)
            if updated is not post:
                store.save_post(s, updated, post.version)
                self._changed(s, updated, now)
            if live:
                self._went_live(s, updated, updated.head_revision, who.name, now)
            view = self._view(s, post_id, who)
        self.relay_outbox()
        return view

    def _went_live(self, s: object, post: Post, number: int, by: str, now: datetime) -> None:
        store.mark_revision_published(s, post.id, number, now)  # type: ignore[arg-type]
        revision = store.get_revision(s, post.id, number)  # type: ignore[arg-type]
        assert revision is not None
        assets = store.assets_by_id(s, revision.content.images)  # type: ignore[arg-type]
        names = {t: topic.display_name for t in revision.content.topics
                 if (topic := store.get_topic(s, t)) is not None}  # type: ignore[arg-type]
        event = build_published_event(new_id(), revision, [assets[a] for a in revision.content.images], by, now, names)
        store.add_event(s, event.event_id, POST_PUBLISHED, event.SerializeToString(), now)  # type: ignore[arg-type]

    def _changed(self, s: object, post: Post, now: datetime, deleted: bool = False) -> None:
        """Record in the outbox that ``post`` changed (it is what the transaction leaves)."""
        head = None if deleted else store.get_revision(s, post.id, post.head_revision)  # type: ignore[arg-type]
        assets = store.assets_by_id(s, head.content.images) if head else {}  # type: ignore[arg-type]
        event = build_changed_event(new_id(), post, head, [assets[a] for a in head.content.images] if head else [],
                                    now, deleted)
        store.add_event(s, event.event_id, POST_CHANGED, event.SerializeToString(), now)  # type: ignore[arg-type]

    def publish_due_posts(self, limit: int = 100) -> int:
        """Publish scheduled revisions whose time has come (run periodically)."""
        now = _now()
        with self.db.read() as s:
            due = store.due_post_ids(s, now, limit)
        published = 0
        for post_id in due:
            try:
                with self.db.write() as s:
                    post = store.get_post(s, post_id)
                    result = post.due(now) if post else None
                    if post is None or result is None:
                        continue
                    updated, number = result
                    store.save_post(s, updated, post.version)
                    self._changed(s, updated, now)
                    self._went_live(s, updated, number, "system/scheduler", now)
                    published += 1
            except Exception:  # one bad post must not stop the others; the next run retries it
                log.exception("scheduled publish of posts/%s failed", post_id)
        if published:
            self.relay_outbox()
        return published

    def relay_outbox(self, batch: int = 100) -> int:
        """Hand committed events to the sink; what fails stays for the next sweep.

        Events are sent outside any transaction, so an in-process subscriber may
        write to the database itself; the price is that two concurrent relays can
        both send an event: delivery is at least once and consumers dedupe.
        """
        with self.db.read() as s:
            pending = [(r.id, r.topic, r.payload) for r in store.pending_events(s, batch)]
        sent: list[int] = []
        try:
            for row_id, topic, payload in pending:
                self.events.publish(topic, payload)
                sent.append(row_id)
        except Exception:
            log.warning("outbox relay stopped after %d of %d events; will retry", len(sent), len(pending),
                        exc_info=True)
        finally:
            if sent:
                with self.db.write() as s:
                    store.mark_dispatched(s, sent, _now())
        return len(sent)

    def get_revision(self, post_id: str, number: int) -> Revision:
        with self.db.read() as s:
            self._load(s, post_id)
            revision = store.get_revision(s, post_id, number)
            if revision is None:
                raise NotFound(f"posts/{post_id}/revisions/{number} not found")
            return revision

    def list_revisions(self, post_id: str, before: int | None, limit: int) -> list[Revision]:
        with self.db.read() as s:
            self._load(s, post_id)
            return store.list_revisions(s, post_id, before, limit)

    # ---- assets ------------------------------------------------------------------

    def upload_asset(self, who: Principal, filename: str, chunks: Iterable[bytes], request_id: str = "") -> AssetRow:
        if request_id:
            with self.db.read() as s:
                if earlier := store.recall_request(s, who.id, request_id, "UploadAsset"):
                    for _ in chunks:  # drain the stream; the first upload already stored it
                        pass
                    row = store.get_asset(s, earlier)
                    assert row is not None
                    return row
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            digest = hashlib.sha256()
            size = 0
            head = b""
            for chunk in chunks:
                size += len(chunk)
                if size > self.max_asset_bytes:
                    raise InvalidArgument("chunk", f"asset is over the {self.max_asset_bytes:,} byte limit")
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                digest.update(chunk)
                spool.write(chunk)
            if size == 0:
                raise InvalidArgument("chunk", "no image bytes were sent")
            info = inspect_image(head, spool, self.max_image_pixels)  # type: ignore[arg-type]
            sha = digest.hexdigest()
            with self.db.read() as s:
                existing = store.get_asset_by_sha(s, sha)
            if existing is not None:
                if request_id:
                    self._remember_upload(who, request_id, existing.id)
                return existing
            # Each upload writes its own key, so a failed upload only ever removes its own
            # bytes: with content-addressed keys, a failure could delete the blob that a
            # concurrent upload of the same file is about to commit a row for.
            asset_id = new_id()
            key = original_key(asset_id)
            spool.seek(0)
            try:
                self.blobs.put(key, spool, size, info.mime_type)  # type: ignore[arg-type]
            except BaseException:
                # A put can fail after the store kept the bytes (S3 stored the object, the
                # response was lost): remove them, or they are orphaned.
                self._discard_blob(key)
                raise
        row = AssetRow(id=asset_id, sha256=sha, mime_type=info.mime_type, size_bytes=size, width=info.width,
                       height=info.height, filename=filename, blob_key=key, uploader_id=who.id, create_time=_now())
        try:
            with self.db.write() as s:
                s.add(row)
                s.flush()
                if request_id:
                    store.remember_request(s, who.id, request_id, "UploadAsset", row.id)
            return row
        except IntegrityError:
            # The same bytes were uploaded at the same moment and that row won: it is ours too.
            self._discard_blob(key)
            with self.db.read() as s:
                winner = store.get_asset_by_sha(s, sha)
            if winner is None:
                raise Unavailable("upload raced with another and lost; retry") from None
            return winner
        except BaseException:
            self._discard_blob(key)
            raise

    def _remember_upload(self, who: Principal, request_id: str, asset_id: str) -> None:
        try:
            with self.db.write() as s:
                store.remember_request(s, who.id, request_id, "UploadAsset", asset_id)
        except IntegrityError:
            pass

    def _discard_blob(self, key: str) -> None:
        """Remove the blob of an upload whose row never landed (its key is this upload's own)."""
        try:
            self.blobs.delete(key)
        except Exception:  # the store is down: the orphan is logged for an operator
            log.error("could not remove orphan blob %s after a failed upload", key, exc_info=True)

    def get_asset(self, asset_id: str) -> tuple[AssetRow, str]:
        with self.db.read() as s:
            row = store.get_asset(s, asset_id)
        if row is None:
            raise NotFound(f"assets/{asset_id} not found")
        return row, self.blobs.url(row.blob_key, URL_LIFETIME)

    def download_asset(self, asset_id: str) -> Iterator[bytes]:
        with self.db.read() as s:
            row = store.get_asset(s, asset_id)
        if row is None:
            raise NotFound(f"assets/{asset_id} not found")
        try:
            return self.blobs.open(row.blob_key)
        except BlobNotFound:
            raise Unavailable(f"assets/{asset_id}: stored bytes are missing") from None

