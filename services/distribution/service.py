"""The distribution service's use cases: reps, campaigns, rendering, reports.

No gRPC here. A campaign is one published revision: when its event arrives the
text plan is made for every targeted rep at once (so copies are spread across
the variation space, not drawn independently) and stored as pending copies;
workers then render them in chunks. A rep who asks first gets theirs rendered
on demand under a lock, from the same plan, so the copy is the same either way.
"""

from __future__ import annotations

import io
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from services.content.events import POST_CHANGED, POST_PUBLISHED
from services.protos.contentops.content.v1 import events_pb2
from services.shared.blobstore import BlobNotFound, BlobStore, original_key
from services.shared.db import Database, as_utc
from services.shared.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.shared.identity.domain import Principal, Role
from services.shared.identity.store import IdentityStore
from services.shared.ids import new_id
from services.shared.logs import Throttle
from services.shared.metrics import STALE_READS
from services.shared.sharetoken import ShareTokens

from . import variation
from .domain.images import Variant
from .domain.reps import Rep, Team, validate_rep_fields, validate_team_name
from .locks import RenderLocks
from .models import CampaignRow, CopyRow, PostRow, RepRow, TeamRow, VariantRow
from .ready import DEFAULT_BUDGET, ReadyCopies, ReadyCopy

log = logging.getLogger(__name__)
T = TypeVar("T")

URL_LIFETIME = timedelta(hours=1)
VIEW_CACHE_SECONDS = 30 * 60  # cached copy views are rebuilt (fresh URLs) well before URL_LIFETIME runs out
VIEW_STALE_MARGIN = timedelta(minutes=5)  # during an outage a cached view is served until its URLs have this little left
VIEW_CACHE_SIZE = 50_000
ORIGINALS_CACHE_BYTES = 256 * 1024 * 1024
POST_CACHE_SECONDS = 1.0  # how stale "which revision is live" may be on the GetRepCopy hot path
POST_CACHE_SIZE = 100_000
READY_LOAD_CHUNK = 1_000  # copies per query when loading a campaign's ready copies
LOCK_WAIT_SECONDS = 30.0
REPORT_SAMPLE = 200  # copies compared pairwise in a distinctness report
SSIM_SAMPLE = 12  # copies whose images are re-checked for fidelity in a report


def _now() -> datetime:
    return datetime.now(UTC)


def _rep(row: RepRow) -> Rep:
    return Rep(row.id, row.display_name, row.signature, row.store, row.region, row.team_id, row.contact_qr_asset,
               row.user_id, as_utc(row.create_time), as_utc(row.update_time), row.version)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CopyImageView:
    index: int
    blob_key: str
    sha256: str
    width: int
    height: int
    mime_type: str
    uri: str


@dataclass(frozen=True)
class CopyView:
    post_id: str
    revision: int
    rep_id: str
    text: str
    images: list[CopyImageView]
    share_token: str
    render_time: datetime

    @property
    def name(self) -> str:
        return f"posts/{self.post_id}/revisions/{self.revision}/copies/{self.rep_id}"


EXCERPT_CHARS = 80


@dataclass(frozen=True)
class RepPost:
    """A live post as the rep's list shows it (``copy_state``: pending | ready | failed)."""

    campaign_id: str
    post_id: str
    revision: int
    title: str
    publish_time: datetime
    copy_state: str
    excerpt: str


@dataclass(frozen=True)
class CampaignStatus:
    post_id: str
    revision: int
    total: int
    rendered: int
    failures: list[tuple[str, str]]
    capacity_estimate: int
    policy_met: bool


@dataclass(frozen=True)
class PostStatus:
    """What GetRepCopy needs to know of a post: its state (from post-changed events) and its latest campaign."""

    post_id: str
    state: str | None  # None: no post-changed event seen (unknown, or only its publish event arrived so far)
    campaign_id: str | None
    revision: int | None

    def check_servable(self) -> str:
        """The latest campaign's id, or the error that tells the caller why there is none to serve."""
        name = f"posts/{self.post_id}"
        if self.state == "DELETED" or (self.state is None and self.campaign_id is None):
            raise NotFound(f"{name} not found")
        if self.state == "ARCHIVED":
            raise FailedPrecondition(f"{name} is archived; its copies are no longer served")
        if self.campaign_id is not None:
            return self.campaign_id
        if self.state == "PUBLISHED":  # its publish event is on its way: the campaign is planned in a moment
            raise Unavailable(f"the copies of {name} are being planned; retry shortly")
        raise FailedPrecondition(f"{name} is not published ({self.state.lower() if self.state else 'unknown'})")


class Fanout(Protocol):
    """Where a new campaign's render work goes (Celery tasks, or an in-process pool)."""

    def dispatch(self, campaign_id: str, chunks: list[list[str]]) -> None: ...


def _batches(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def parse_revision(name: str) -> tuple[str, int]:
    post, _, number = name.rpartition("/revisions/")
    return post.removeprefix("posts/"), int(number)


class DistributionService:
    def __init__(self, db: Database, blobs: BlobStore, identity: IdentityStore, tokens: ShareTokens,
                 locks: RenderLocks, fanout: Fanout, chunk_size: int = 25, stale_seconds: float = 0.0,
                 ready_copies: int = DEFAULT_BUDGET, lease: timedelta = timedelta(seconds=60)) -> None:
        self.db = db
        self.blobs = blobs
        self.identity = identity
        self.tokens = tokens
        self.locks = locks
        self.fanout = fanout
        self.chunk_size = chunk_size
        self.lease = lease  # how long a worker's hold on its chunk's copies lasts unless renewed (render_chunk)
        self.stale_seconds = stale_seconds  # see _stale
        # Both caches keep time.monotonic() of the database's answer.
        self._views: dict[tuple[str, str], tuple[float, CopyView]] = {}
        self._posts: dict[str, tuple[float, PostStatus]] = {}
        self._stale_warning = Throttle(10.0)
        self.ready = ReadyCopies(ready_copies)  # live campaigns' ready copies: a page's first open needs no query (ready.py)
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ready-copies")  # one load at a time, in order
        self._views_lock = threading.Lock()
        self._originals: OrderedDict[str, bytes] = OrderedDict()
        self._originals_bytes = 0
        self._originals_lock = threading.Lock()

    # ---- teams and reps -------------------------------------------------------------------

    def create_team(self, team_id: str, display_name: str) -> Team:
        display_name = validate_team_name(display_name)
        team = Team(team_id or f"team-{new_id()}", display_name, _now())
        try:
            with self.db.write() as s:
                if s.get(TeamRow, team.id):
                    raise AlreadyExists(f"{team.name} already exists")
                s.add(TeamRow(id=team.id, display_name=team.display_name, create_time=team.create_time))
        except IntegrityError:
            raise AlreadyExists(f"a team named {display_name!r} already exists") from None
        return team

    def list_teams(self, after: str | None, limit: int) -> list[Team]:
        with self.db.read() as s:
            q = select(TeamRow).order_by(TeamRow.id).limit(limit)
            if after:
                q = q.where(TeamRow.id > after)
            return [Team(r.id, r.display_name, as_utc(r.create_time)) for r in s.scalars(q)]  # type: ignore[arg-type]

    def create_rep(self, display_name: str, signature: str, store: str, region: str, team_id: str | None,
                   qr_asset: str, user_id: str | None) -> Rep:
        validate_rep_fields(display_name, signature, store, region)
        self._check_qr(qr_asset)
        now = _now()
        row = RepRow(id=new_id(), display_name=display_name.strip(), signature=signature, store=store, region=region,
                     team_id=team_id, contact_qr_asset=qr_asset, user_id=user_id, create_time=now, update_time=now,
                     version=1)
        try:
            with self.db.write() as s:
                self._check_links(s, team_id, user_id, row.id)
                s.add(row)
                s.flush()
                rep = _rep(row)
        except IntegrityError:
            raise AlreadyExists(f"users/{user_id} is already linked to another rep") from None
        if user_id:
            self.identity.link_rep(user_id, rep.name)
        return rep

    def _check_qr(self, asset_id: str) -> None:
        if asset_id and not self.blobs.exists(original_key(asset_id)):
            raise InvalidArgument("rep.contact_qr_asset", f"assets/{asset_id} not found (upload it first)")

    def _check_links(self, s: object, team_id: str | None, user_id: str | None, rep_id: str) -> None:
        if team_id and s.get(TeamRow, team_id) is None:  # type: ignore[attr-defined]
            raise NotFound(f"teams/{team_id} not found")
        if user_id:
            user = self.identity.get_user(user_id)  # NotFound if missing
            if user.role is not Role.REP:
                raise FailedPrecondition(f"users/{user_id} has role {user.role.value}; only rep users link to reps")
            if user.rep and user.rep != f"reps/{rep_id}":
                raise AlreadyExists(f"users/{user_id} is already linked to {user.rep}")

    def get_rep(self, rep_id: str) -> Rep:
        with self.db.read() as s:
            row = s.get(RepRow, rep_id)
            if row is None:
                raise NotFound(f"reps/{rep_id} not found")
            return _rep(row)

    def list_reps(self, team_id: str | None, after: str | None, limit: int) -> list[Rep]:
        with self.db.read() as s:
            q = select(RepRow).order_by(RepRow.id).limit(limit)
            if team_id:
                q = q.where(RepRow.team_id == team_id)
            if after:
                q = q.where(RepRow.id > after)
            return [_rep(r) for r in s.scalars(q)]

    def update_rep(self, rep_id: str, changes: dict[str, object], etag: str) -> Rep:
        with self.db.write() as s:
            row = s.get(RepRow, rep_id)
            if row is None:
                raise NotFound(f"reps/{rep_id} not found")
            current = _rep(row)
            if etag and etag != current.etag:
                raise Aborted(f"{current.name} changed since it was read (etag mismatch)")
            merged = replace(current, **changes)  # type: ignore[arg-type]
            validate_rep_fields(merged.display_name, merged.signature, merged.store, merged.region)
            if "contact_qr_asset" in changes:
                self._check_qr(merged.contact_qr_asset)
            self._check_links(s, merged.team_id, merged.user_id if "user_id" in changes else None, rep_id)
            try:
                result = s.execute(
                    update(RepRow).where(RepRow.id == rep_id, RepRow.version == row.version).values(
                        display_name=merged.display_name.strip(), signature=merged.signature, store=merged.store,
                        region=merged.region, team_id=merged.team_id, contact_qr_asset=merged.contact_qr_asset,
                        user_id=merged.user_id, update_time=_now(), version=row.version + 1)
                    .execution_options(synchronize_session=False)
                )
            except IntegrityError:  # another rep took this user between the check and the update
                raise AlreadyExists(f"users/{merged.user_id} is already linked to another rep") from None
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise Aborted(f"{current.name} changed concurrently; read it again")
        if "user_id" in changes and current.user_id and current.user_id != merged.user_id:
            self._unlink_user(current.user_id, rep_id)  # the previous login no longer acts as this rep
        if "user_id" in changes and merged.user_id:
            self.identity.link_rep(merged.user_id, f"reps/{rep_id}")
        return self.get_rep(rep_id)

    def _unlink_user(self, user_id: str, rep_id: str) -> None:
        try:
            user = self.identity.get_user(user_id)
        except NotFound:
            return
        if user.rep == f"reps/{rep_id}":
            self.identity.link_rep(user_id, "")

    # ---- campaigns --------------------------------------------------------------------------

    def handle_post_changed(self, payload: bytes) -> bool:
        """Remember a post's state and head content. Events may arrive twice or out of order:
        only a higher version than the one stored changes anything. True if it did."""
        event = events_pb2.PostChangedEvent.FromString(payload)
        post_id = event.post.removeprefix("posts/")
        values = {
            "state": events_pb2.PostLifecycle.Name(event.state).removeprefix("POST_LIFECYCLE_"),
            "version": event.version,
            "head_revision": parse_revision(event.head_revision)[1],
            "live_revision": parse_revision(event.live_revision)[1] if event.live_revision else None,
            "head_snapshot": event.head_content.SerializeToString() if event.HasField("head_content") else None,
            "update_time": _now(),
        }
        for _ in range(2):  # the second pass sees a row a concurrent delivery inserted
            try:
                with self.db.write() as s:
                    row = s.get(PostRow, post_id)
                    if row is None:
                        s.add(PostRow(id=post_id, **values))
                    elif row.version < event.version:
                        s.execute(update(PostRow).where(PostRow.id == post_id, PostRow.version < event.version)
                                  .values(**values).execution_options(synchronize_session=False))
                    else:
                        return False
                with self._views_lock:
                    self._posts.pop(post_id, None)
                return True
            except IntegrityError:
                continue
        return False

    def event_handlers(self) -> dict[str, Callable[[bytes], object]]:
        """The content events this service consumes, by topic (for an in-process event bus)."""
        return {POST_CHANGED: self.handle_post_changed, POST_PUBLISHED: self.handle_post_published}

    def handle_post_published(self, payload: bytes) -> tuple[str, bool]:
        """Plan a campaign for a published revision and queue its rendering. Idempotent on event id."""
        event = events_pb2.PostPublishedEvent.FromString(payload)
        post_id, revision = parse_revision(event.revision)
        snapshot = event.content
        with self.db.read() as s:
            existing = s.scalars(select(CampaignRow).where(CampaignRow.post_id == post_id,
                                                           CampaignRow.revision == revision)).first()
            if existing is not None:
                return existing.id, False
            reps = self._targeted_reps(s, snapshot)
        source = variation.text_source(snapshot)
        plan = variation.plan(source, [r.id for r in reps], seed=event.revision)
        campaign = CampaignRow(id=new_id(), post_id=post_id, revision=revision, event_id=event.event_id,
                               snapshot=snapshot.SerializeToString(), total=len(reps),
                               capacity_estimate=plan.capacity_estimate, policy_met=plan.policy_met,
                               create_time=_now())
        try:
            with self.db.write() as s:
                s.add(campaign)
                s.flush()
                s.add_all(CopyRow(campaign_id=campaign.id, rep_id=r.id, copy_id=new_id(), state="pending",
                                  choice=variation.choice_json(plan.choices[r.id])) for r in reps)
        except IntegrityError:  # the same event delivered twice at once: the other delivery planned it
            with self.db.read() as s:
                other = s.scalars(select(CampaignRow).where(CampaignRow.post_id == post_id,
                                                            CampaignRow.revision == revision)).first()
            if other is None:
                raise
            return other.id, False
        with self._views_lock:
            self._posts.pop(post_id, None)
        if not plan.policy_met:
            log.warning("posts/%s rev %d: %d reps exceed the variation capacity (%d)", post_id, revision,
                        len(reps), plan.capacity_estimate)
        ids = [r.id for r in reps]
        if ids:
            self.fanout.dispatch(campaign.id, _batches(ids, self.chunk_size))
        return campaign.id, True

    @staticmethod
    def _targeted_reps(s: object, snapshot: events_pb2.PostContentSnapshot) -> list[RepRow]:
        q = select(RepRow).order_by(RepRow.id)
        teams = [t.removeprefix("teams/") for t in snapshot.target_teams]
        if teams:
            q = q.where(RepRow.team_id.in_(teams))
        return list(s.scalars(q))  # type: ignore[attr-defined]

    def render_chunk(self, campaign_id: str, rep_ids: Sequence[str]) -> int:
        """Render each rep's copy unless it is already done. Safe to run twice.

        The chunk's pending copies are leased while it runs, the lease renewed once a quarter of it has passed
        (checked after each copy): a worker that dies mid-chunk (its message held unacknowledged by the broker for
        the visibility timeout, an hour) stops renewing, and the next sweep (``redispatch_stale``) queues what it left
        as soon as the lease runs out. Not renewed after every copy: a renewal is a write of about 1.1 ms on
        PostgreSQL, so a chunk that renders in a few seconds writes one lease, not one per copy.
        """
        done = 0
        leased_at = self._lease(campaign_id, rep_ids)
        for i, rep_id in enumerate(rep_ids):
            try:
                if self.render_copy(campaign_id, rep_id):
                    done += 1
            except Unavailable:
                raise  # transient: let the task retry the chunk; finished copies are skipped next time
            if i + 1 < len(rep_ids) and _now() - leased_at >= self.lease / 4:
                leased_at = self._lease(campaign_id, rep_ids[i + 1:])
        return done

    def _lease(self, campaign_id: str, rep_ids: Sequence[str]) -> datetime:
        """Hold the pending copies among ``rep_ids`` for ``self.lease`` from now; returns now."""
        now = _now()
        with self.db.write() as s:
            self._hold(s, campaign_id, rep_ids, now + self.lease)
        return now

    @staticmethod
    def _hold(s: object, campaign_id: str, rep_ids: Sequence[str], until: datetime) -> None:
        """Lease the pending copies among ``rep_ids`` until ``until`` (a later lease replaces an earlier one)."""
        for batch in _batches(rep_ids, 500):  # bounded IN lists
            s.execute(  # type: ignore[attr-defined]
                update(CopyRow)
                .where(CopyRow.campaign_id == campaign_id, CopyRow.rep_id.in_(batch), CopyRow.state == "pending")
                .values(lease_until=until)
                .execution_options(synchronize_session=False)
            )

    def render_copy(self, campaign_id: str, rep_id: str) -> bool:
        """Render one copy. True if it is ready afterwards; False if it failed for good (reason stored)."""
        with self.db.read() as s:
            copy = s.get(CopyRow, (campaign_id, rep_id))
            campaign = s.get(CampaignRow, campaign_id)
            rep = s.get(RepRow, rep_id)
            if copy is None or campaign is None:
                raise NotFound(f"no copy planned for reps/{rep_id} in campaign {campaign_id}")
            if copy.state == "ready":
                return True
            rep_view = _rep(rep) if rep is not None else None
            snapshot = events_pb2.PostContentSnapshot.FromString(campaign.snapshot)
            choice, copy_id, post_id, revision = copy.choice, copy.copy_id, campaign.post_id, campaign.revision
        if rep_view is None:
            return self._fail(campaign_id, rep_id, "the rep was deleted")
        try:
            text = variation.render_copy_text(snapshot, rep_view, choice)
            variants = self._render_distinct(list(snapshot.images), rep_view, snapshot)
        except variation.PermanentRenderError as err:
            return self._fail(campaign_id, rep_id, str(err))
        # Stored only once every image has rendered, so a copy that fails for good (say on its
        # second image) leaves no variant of its first behind in the store.
        images = [self._store_variant(ref, v) for ref, v in zip(snapshot.images, variants, strict=True)]
        token, _ = self.tokens.issue(post_id, revision, rep_id, copy_id, team_id=rep_view.team_id or "")
        try:
            with self.db.write() as s:
                self._claim_variants(s, campaign_id, rep_id, variants)
                self._mark_ready(s, campaign_id, rep_id, text, images, token)
        except IntegrityError:
            with self.db.read() as s:
                done = s.get(CopyRow, (campaign_id, rep_id))
                if done is not None and done.state == "ready":
                    return True  # a worker and an on-demand request rendered it at once; the other won
            # Another rep's copy claimed identical bytes at the same moment: render again, re-planned.
            raise Unavailable("an image variant collided with another rep's; retry") from None
        return True

    def _mark_ready(self, s: object, campaign_id: str, rep_id: str, text: str, images: list[dict[str, object]],
                    token: str) -> None:
        s.execute(  # type: ignore[attr-defined]
            update(CopyRow)
            .where(CopyRow.campaign_id == campaign_id, CopyRow.rep_id == rep_id, CopyRow.state != "ready")
            .values(state="ready", text=text, images=images, share_token=token, failure="",
                    attempts=CopyRow.attempts + 1, render_time=_now())
            .execution_options(synchronize_session=False)
        )

    MAX_VARIANT_ATTEMPTS = 5

    def _render_distinct(self, refs: list[events_pb2.ImageRef], rep: Rep,
                         snapshot: events_pb2.PostContentSnapshot) -> list[Variant]:
        """Render this rep's variants; any whose bytes another rep owns is re-planned (attempt + 1)."""
        qr = self._contact_qr(rep) if snapshot.badge_enabled else None
        variants = [self._render_image(ref, i, rep, snapshot, 0, qr) for i, ref in enumerate(refs)]
        for attempt in range(1, self.MAX_VARIANT_ATTEMPTS + 1):
            taken = self._foreign_owned([v.sha256 for v in variants], rep.id)
            if not taken:
                return variants
            if attempt == self.MAX_VARIANT_ATTEMPTS:
                break
            for i, v in enumerate(variants):
                if v.sha256 in taken:
                    log.warning("variant of %s for reps/%s equals another rep's; re-planning", refs[i].asset, rep.id)
                    variants[i] = self._render_image(refs[i], i, rep, snapshot, attempt, qr)
        raise variation.ImageRenderError(f"no byte-distinct variant after {self.MAX_VARIANT_ATTEMPTS} plans "
                                         "(image too small to vary?)")

    def _foreign_owned(self, shas: list[str], rep_id: str) -> set[str]:
        if not shas:
            return set()
        with self.db.read() as s:
            return set(s.scalars(select(VariantRow.sha256).where(VariantRow.sha256.in_(shas),
                                                                 VariantRow.rep_id != rep_id)))

    @staticmethod
    def _claim_variants(s: object, campaign_id: str, rep_id: str, variants: list[Variant]) -> None:
        shas = list(dict.fromkeys(v.sha256 for v in variants))
        owners = dict(s.execute(select(VariantRow.sha256, VariantRow.rep_id)  # type: ignore[attr-defined]
                                .where(VariantRow.sha256.in_(shas))).all()) if shas else {}
        if any(owner != rep_id for owner in owners.values()):
            raise IntegrityError("variant owned by another rep", None, Exception(shas))
        s.add_all(VariantRow(sha256=sha, rep_id=rep_id) for sha in shas if sha not in owners)  # type: ignore[attr-defined]
        s.flush()  # type: ignore[attr-defined]

    def _render_image(self, ref: events_pb2.ImageRef, index: int, rep: Rep,
                      snapshot: events_pb2.PostContentSnapshot, attempt: int = 0, qr: bytes | None = None) -> Variant:
        try:
            original = self._original(ref.blob_key)
        except BlobNotFound:
            raise variation.ImageRenderError(f"image {index + 1} ({ref.asset}) is missing from the blob store") from None
        return variation.render_image(original, ref.sha256, rep, snapshot, index, attempt, qr)

    def _contact_qr(self, rep: Rep) -> bytes | None:
        """The rep's contact QR image (an uploaded asset), for the badge."""
        if not rep.contact_qr_asset:
            return None
        try:
            return self._original(original_key(rep.contact_qr_asset))
        except BlobNotFound:
            raise variation.ImageRenderError(
                f"the rep's contact QR (assets/{rep.contact_qr_asset}) is missing from the blob store") from None

    def _original(self, key: str) -> bytes:
        """An original's bytes, read once per process: a campaign renders each original for every rep,
        and originals never change (each upload has its own key)."""
        with self._originals_lock:
            data = self._originals.get(key)
            if data is not None:
                self._originals.move_to_end(key)
                return data
        data = b"".join(self.blobs.open(key))
        with self._originals_lock:
            self._originals[key] = data
            self._originals_bytes += len(data)
            while self._originals_bytes > ORIGINALS_CACHE_BYTES and len(self._originals) > 1:
                _, evicted = self._originals.popitem(last=False)
                self._originals_bytes -= len(evicted)
        return data

    def _store_variant(self, ref: events_pb2.ImageRef, variant: Variant) -> dict[str, object]:
        key = f"variants/{variant.sha256[:2]}/{variant.sha256}"
        if not self.blobs.exists(key):  # content-addressed: a re-render writes nothing new
            self.blobs.put(key, io.BytesIO(variant.data), len(variant.data), variant.mime_type)
        return variation.image_record(key, ref.blob_key, variant)

    def redispatch_stale(self, older_than: timedelta) -> int:
        """Queue again the pending copies nobody is rendering, and return how many. Run by beat (every 30 s).

        - A copy whose lease ran out: the worker rendering its chunk died (or hung) without finishing it. A worker
          killed outright, not just its pool child, leaves its chunk unacknowledged in Redis until the visibility
          timeout, an hour; its lease runs out within ``lease`` (CAMPAIGN_LEASE_SECONDS) of its last renewal.
        - A copy never leased, of a campaign published more than ``older_than`` ago: its chunk was never queued (the
          publish handler died between planning and dispatch) or never reached a worker.

        Each copy queued again is leased for ``older_than``, so one still waiting in a long queue is not queued
        again at every sweep, only once per ``older_than``; the leases commit only once the chunks are queued, so a
        sweep that could not queue them (Redis down) leaves them to the next. Rendering is idempotent: a chunk that
        was merely slow costs only duplicate work.
        """
        now = _now()
        with self.db.write() as s:
            rows = s.execute(
                select(CopyRow.campaign_id, CopyRow.rep_id)
                .join(CampaignRow, CampaignRow.id == CopyRow.campaign_id)
                .where(CopyRow.state == "pending",
                       or_(CopyRow.lease_until < now,
                           and_(CopyRow.lease_until.is_(None), CampaignRow.create_time <= now - older_than)))
                .order_by(CopyRow.campaign_id, CopyRow.rep_id)
            ).all()
            by_campaign: dict[str, list[str]] = {}
            for campaign_id, rep_id in rows:
                by_campaign.setdefault(campaign_id, []).append(rep_id)
            for campaign_id, reps in by_campaign.items():
                self._hold(s, campaign_id, reps, now + older_than)
                self.fanout.dispatch(campaign_id, _batches(reps, self.chunk_size))
        return len(rows)

    def _fail(self, campaign_id: str, rep_id: str, reason: str) -> bool:
        log.warning("copy for reps/%s in campaign %s failed: %s", rep_id, campaign_id, reason)
        with self.db.write() as s:
            s.execute(
                update(CopyRow)
                .where(CopyRow.campaign_id == campaign_id, CopyRow.rep_id == rep_id, CopyRow.state != "ready")
                .values(state="failed", failure=reason[:1000], attempts=CopyRow.attempts + 1)
                .execution_options(synchronize_session=False)
            )
        return False

    # ---- reading copies -------------------------------------------------------------------------

    def _latest_campaign(self, s: object, post_id: str) -> CampaignRow:
        row = s.scalars(  # type: ignore[attr-defined]
            select(CampaignRow).where(CampaignRow.post_id == post_id).order_by(CampaignRow.revision.desc()).limit(1)
        ).first()
        if row is None:
            self._status(s, post_id, None).check_servable()  # raises: NOT_FOUND, not published, being planned
        assert row is not None
        return row

    @staticmethod
    def _status(s: object, post_id: str, campaign: tuple[str, int] | None) -> PostStatus:
        post = s.get(PostRow, post_id)  # type: ignore[attr-defined]
        return PostStatus(post_id, post.state if post else None, campaign[0] if campaign else None,
                          campaign[1] if campaign else None)

    def post_status(self, post_id: str) -> PostStatus:
        """The post's state and latest campaign, cached for POST_CACHE_SECONDS (a new revision or an
        archive reaches other processes' readers at most that late; this process's at once)."""
        now = time.monotonic()
        with self._views_lock:
            cached = self._posts.get(post_id)
        if cached is not None and now - cached[0] < POST_CACHE_SECONDS:
            return cached[1]
        try:
            with self.db.read() as s:
                latest = s.execute(select(CampaignRow.id, CampaignRow.revision).where(CampaignRow.post_id == post_id)
                                   .order_by(CampaignRow.revision.desc()).limit(1)).first()
                status = self._status(s, post_id, (latest[0], latest[1]) if latest else None)
        except Unavailable:
            stale = self._stale("post_status", cached, now, self.stale_seconds)
            if stale is None:
                raise
            return stale
        with self._views_lock:
            if len(self._posts) > POST_CACHE_SIZE:
                self._posts.clear()
            self._posts[post_id] = (now, status)
        if status.campaign_id is not None and status.revision is not None and \
                self.ready.due(status.campaign_id, post_id, status.revision):
            self._loader.submit(self._load_ready, status.campaign_id)
        return status

    def _load_ready(self, campaign_id: str) -> None:
        """Load the campaign's ready copies not held yet (in the background: see ReadyCopies)."""
        try:
            with self.db.read() as s:
                # Pending first: a copy that turns ready in between is then still counted as pending.
                pending = s.scalar(select(func.count()).select_from(CopyRow).where(CopyRow.campaign_id == campaign_id,
                                                                                CopyRow.state == "pending"))
                ready = set(s.scalars(select(CopyRow.rep_id).where(CopyRow.campaign_id == campaign_id,
                                                                   CopyRow.state == "ready")))
                missing = sorted(ready - self.ready.known(campaign_id))
                for i in range(0, len(missing), READY_LOAD_CHUNK):
                    rows = s.execute(select(CopyRow.rep_id, CopyRow.text, CopyRow.images, CopyRow.share_token,
                                            CopyRow.render_time)
                                     .where(CopyRow.campaign_id == campaign_id, CopyRow.rep_id.in_(missing[i:i + READY_LOAD_CHUNK])))
                    self.ready.add(campaign_id, [ReadyCopy(*row) for row in rows], complete=False)  # read, then lock
            self.ready.add(campaign_id, (), complete=pending == 0)
        except Exception:  # noqa: BLE001 - a background load: the next one (RELOAD_SECONDS on) tries again
            log.warning("could not load the ready copies of campaign %s", campaign_id, exc_info=True)

    def wait_ready_loaded(self, timeout: float = 30.0) -> None:
        """Until the background loads of ready copies queued so far are done (tests): the loader runs one job at a
        time in order, so a no-op queued now ends after them."""
        self._loader.submit(lambda: None).result(timeout)

    def close(self) -> None:
        self._loader.shutdown(wait=True, cancel_futures=True)

    def _stale(self, what: str, cached: tuple[float, T] | None, now: float, window: float) -> T | None:
        """While the database is unavailable: a cached answer read within ``window``, if ``stale_seconds`` allows
        staleness at all. Shared links keep opening through an outage: no archive can be written during one either,
        so a post's state read shortly before is as good as any, and a ready copy never changes."""
        if cached is None or self.stale_seconds <= 0 or now - cached[0] >= window:
            return None
        STALE_READS.labels(what).inc()
        if self._stale_warning.due():
            log.warning("database unavailable: serving cached %s read %.0f s ago (at most %.0f s)", what,
                        now - cached[0], window)
        return cached[1]

    def get_rep_copy(self, who: Principal, post_id: str, rep_id: str) -> CopyView:
        if who.role is Role.REP and who.rep != f"reps/{rep_id}":
            raise PermissionDenied("reps may fetch only their own copies")
        campaign_id = self.post_status(post_id).check_servable()
        ready = self._ready_copy(campaign_id, rep_id)
        if ready is not None:
            return ready
        with self.db.read() as s:
            rep = s.get(RepRow, rep_id)
            if rep is None:
                raise NotFound(f"reps/{rep_id} not found")
            campaign = s.get(CampaignRow, campaign_id)
            assert campaign is not None, "campaigns are never deleted"
            copy = s.get(CopyRow, (campaign_id, rep_id))
            snapshot = events_pb2.PostContentSnapshot.FromString(campaign.snapshot)
            targeted = not snapshot.target_teams or f"teams/{rep.team_id}" in snapshot.target_teams
        if copy is None:
            if not targeted:
                raise PermissionDenied(f"reps/{rep_id} is not targeted by posts/{post_id}")
            self._plan_late_rep(campaign_id, rep_id)
        elif copy.state == "ready":
            return self._view(campaign_id, rep_id)
        elif copy.state == "failed":
            raise FailedPrecondition(f"this copy could not be rendered: {copy.failure}")
        with self.locks.hold(f"{campaign_id}:{rep_id}", LOCK_WAIT_SECONDS):
            if not self.render_copy(campaign_id, rep_id):  # no-op when a worker finished it meanwhile
                with self.db.read() as s:
                    failed = s.get(CopyRow, (campaign_id, rep_id))
                    raise FailedPrecondition(f"this copy could not be rendered: {failed.failure if failed else ''}")
        return self._view(campaign_id, rep_id)

    def list_rep_posts(self, who: Principal, rep_id: str, before: str | None, limit: int) -> list[RepPost]:
        """The live revision of every servable post that targets the rep, newest first, campaigns before
        ``before`` (a campaign id: ULIDs sort by time). A rep who joined a targeted team after publishing sees
        the post too (GetRepCopy renders their copy on demand)."""
        if who.role is Role.REP and who.rep != f"reps/{rep_id}":
            raise PermissionDenied("reps may list only their own posts")
        latest = (select(CampaignRow.post_id, func.max(CampaignRow.revision).label("revision"))
                  .group_by(CampaignRow.post_id).subquery())
        q = (select(CampaignRow, CopyRow.state, CopyRow.text)
             .join(latest, (latest.c.post_id == CampaignRow.post_id) & (latest.c.revision == CampaignRow.revision))
             .outerjoin(PostRow, PostRow.id == CampaignRow.post_id)
             .outerjoin(CopyRow, (CopyRow.campaign_id == CampaignRow.id) & (CopyRow.rep_id == rep_id))
             .where(PostRow.state.is_(None) | PostRow.state.not_in(("ARCHIVED", "DELETED")))
             .order_by(CampaignRow.id.desc()))
        if before:
            q = q.where(CampaignRow.id < before)
        found: list[RepPost] = []
        with self.db.read() as s:
            rep = s.get(RepRow, rep_id)
            if rep is None:
                raise NotFound(f"reps/{rep_id} not found")
            for campaign, state, text in s.execute(q.execution_options(yield_per=200)):
                snapshot = events_pb2.PostContentSnapshot.FromString(campaign.snapshot)
                if state is None and snapshot.target_teams and f"teams/{rep.team_id}" not in snapshot.target_teams:
                    continue  # not targeted (a copy row means it was, when planned)
                found.append(RepPost(campaign.id, campaign.post_id, campaign.revision, snapshot.title,
                                     as_utc(campaign.create_time), state or "pending", (text or "")[:EXCERPT_CHARS]))
                if len(found) >= limit:
                    break
        return found

    def _plan_late_rep(self, campaign_id: str, rep_id: str) -> None:
        """A rep who joined a targeted team after publishing gets the farthest unused variant."""
        with self.db.read() as s:
            campaign = s.get(CampaignRow, campaign_id)
            assert campaign is not None
            existing = {c.rep_id: c.choice for c in s.scalars(select(CopyRow).where(CopyRow.campaign_id == campaign_id))}
            snapshot = events_pb2.PostContentSnapshot.FromString(campaign.snapshot)
        choice = variation.extend(variation.text_source(snapshot), existing, rep_id,
                                  seed=f"posts/{campaign.post_id}/revisions/{campaign.revision}")
        try:
            with self.db.write() as s:
                s.add(CopyRow(campaign_id=campaign_id, rep_id=rep_id, copy_id=new_id(), state="pending",
                              choice=variation.choice_json(choice)))
                s.execute(update(CampaignRow).where(CampaignRow.id == campaign_id)
                          .values(total=CampaignRow.total + 1).execution_options(synchronize_session=False))
        except IntegrityError:
            pass  # planned concurrently by another request

    def _ready_copy(self, campaign_id: str, rep_id: str) -> CopyView | None:
        """The hot path: a ready copy, from the cache (no query) or by its primary key.

        A ready copy never changes, so its view (presigned URLs included, refreshed well before they
        expire) is cached. While the database is unavailable, a view is served as long as its URLs stay
        valid VIEW_STALE_MARGIN longer.
        """
        key = (campaign_id, rep_id)
        now = time.monotonic()
        with self._views_lock:
            cached = self._views.get(key)
        if cached is not None and now - cached[0] < VIEW_CACHE_SECONDS:
            return cached[1]
        held = self.ready.get(campaign_id, rep_id)
        if held is not None:
            return self._keep_view(key, now, self._build_view(*held))
        try:
            with self.db.read() as s:
                copy = s.get(CopyRow, key)
                if copy is None or copy.state != "ready":
                    return None
                campaign = s.get(CampaignRow, campaign_id)
                assert campaign is not None
                view = self._build_view(campaign.post_id, campaign.revision, copy)
        except Unavailable:
            stale = self._stale("copy_view", cached, now, (URL_LIFETIME - VIEW_STALE_MARGIN).total_seconds())
            if stale is None:
                raise
            return stale
        return self._keep_view(key, now, view)

    def _keep_view(self, key: tuple[str, str], now: float, view: CopyView) -> CopyView:
        with self._views_lock:
            if len(self._views) > VIEW_CACHE_SIZE:
                self._views.clear()
            self._views[key] = (now, view)
        return view

    def _cached_image_keys(self, post_id: str, revision: int, rep_id: str) -> list[str] | None:
        """During an outage: the blob keys of the rep's copy of the post's live revision, from its cached view or the
        held copy, however old (they never change), if ``stale_seconds`` allows staleness at all."""
        with self._views_lock:
            status = self._posts.get(post_id)
            if status is None or status[1].revision != revision or status[1].campaign_id is None:
                return None
            cached = self._views.get((status[1].campaign_id, rep_id))
        now = time.monotonic()
        if cached is not None:
            keys = (cached[0], [image.blob_key for image in cached[1].images])
        elif (held := self.ready.get(status[1].campaign_id, rep_id)) is not None:
            keys = (now, [image["key"] for image in held[2].images or []])
        else:
            return None
        return self._stale("copy_image", keys, now, float("inf"))

    def _build_view(self, post_id: str, revision: int, copy: CopyRow | ReadyCopy) -> CopyView:
        images = [CopyImageView(i, im["key"], im["sha256"], im["width"], im["height"], im["mime_type"],
                                self.blobs.url(im["key"], URL_LIFETIME)) for i, im in enumerate(copy.images or [])]
        return CopyView(post_id, revision, copy.rep_id, copy.text or "", images, copy.share_token or "",
                        as_utc(copy.render_time))  # type: ignore[arg-type]

    def _view(self, campaign_id: str, rep_id: str) -> CopyView:
        with self.db.read() as s:
            copy = s.get(CopyRow, (campaign_id, rep_id))
            campaign = s.get(CampaignRow, campaign_id)
            assert copy is not None and campaign is not None and copy.state == "ready"
            return self._build_view(campaign.post_id, campaign.revision, copy)

    def open_copy_image(self, who: Principal, post_id: str, revision: int, rep_id: str, index: int) -> Iterator[bytes]:
        if who.role is Role.REP and who.rep != f"reps/{rep_id}":
            raise PermissionDenied("reps may fetch only their own copies")
        missing = NotFound(f"posts/{post_id}/revisions/{revision}/copies/{rep_id}/images/{index} not found")
        try:
            with self.db.read() as s:
                campaign = s.scalars(select(CampaignRow).where(CampaignRow.post_id == post_id,
                                                               CampaignRow.revision == revision)).first()
                copy = s.get(CopyRow, (campaign.id, rep_id)) if campaign else None
                if copy is None or copy.state != "ready" or not (0 <= index < len(copy.images or [])):
                    raise missing
                key = copy.images[index]["key"]  # type: ignore[index]
        except Unavailable:
            keys = self._cached_image_keys(post_id, revision, rep_id)
            if keys is None:
                raise
            if not 0 <= index < len(keys):
                raise missing from None
            key = keys[index]
        try:
            return self.blobs.open(key)
        except BlobNotFound:
            raise Unavailable("the rendered image is missing from the blob store") from None

    # ---- status and reports ------------------------------------------------------------------------

    def copies_by_state(self, since: timedelta = timedelta(days=7)) -> dict[str, int]:
        """Campaign progress: copies of campaigns published within ``since``, by state (pending | ready | failed)."""
        cutoff = datetime.now(UTC) - since
        with self.db.read() as s:
            return dict(s.execute(select(CopyRow.state, func.count()).join(CampaignRow, CampaignRow.id == CopyRow.campaign_id)
                                  .where(CampaignRow.create_time >= cutoff).group_by(CopyRow.state)).all())

    def campaign_status(self, post_id: str) -> CampaignStatus:
        with self.db.read() as s:
            campaign = self._latest_campaign(s, post_id)
            counts = dict(s.execute(select(CopyRow.state, func.count()).where(CopyRow.campaign_id == campaign.id)
                                    .group_by(CopyRow.state)).all())
            failures = [(r.rep_id, r.failure) for r in s.scalars(
                select(CopyRow).where(CopyRow.campaign_id == campaign.id, CopyRow.state == "failed")
                .order_by(CopyRow.rep_id).limit(1000))]
            return CampaignStatus(post_id, campaign.revision, campaign.total, int(counts.get("ready", 0)), failures,
                                  campaign.capacity_estimate, campaign.policy_met)

    def distinctness_report(self, post_id: str) -> variation.Report:
        with self.db.read() as s:
            campaign = self._latest_campaign(s, post_id)
            rows = list(s.scalars(select(CopyRow).where(CopyRow.campaign_id == campaign.id,
                                                        CopyRow.state == "ready").order_by(CopyRow.rep_id)))
            snapshot = events_pb2.PostContentSnapshot.FromString(campaign.snapshot)
            revision = campaign.revision
        rng = random.Random(f"{post_id}:{revision}")
        sample = rows if len(rows) <= REPORT_SAMPLE else rng.sample(rows, REPORT_SAMPLE)
        fidelity = rows if len(rows) <= SSIM_SAMPLE else rng.sample(rows, SSIM_SAMPLE)
        return variation.report(snapshot, [r.text or "" for r in rows], [r.images or [] for r in rows],
                                [r.images or [] for r in sample], [r.images or [] for r in fidelity],
                                self._read_blob, revision, len(rows))

    def _read_blob(self, key: str) -> bytes:
        try:
            return b"".join(self.blobs.open(key))
        except BlobNotFound:
            raise Unavailable(f"blob {key} is missing") from None

    def preview(self, snapshot: events_pb2.PostContentSnapshot, reps: list[Rep], targeted: int,
                revision_name: str) -> variation.Preview:
        return variation.preview(snapshot, reps, targeted, revision_name)

    def snapshot_for_post(self, post_id: str) -> tuple[events_pb2.PostContentSnapshot, str]:
        """The content an editor previews: the head revision (a draft, or the live one when unedited).

        Falls back to the latest campaign's snapshot while the post's changed event is on its way.
        """
        with self.db.read() as s:
            post = s.get(PostRow, post_id)
            if post is not None and post.state == "DELETED":
                raise NotFound(f"posts/{post_id} not found")
            if post is not None and post.head_snapshot is not None:
                return (events_pb2.PostContentSnapshot.FromString(post.head_snapshot),
                        f"posts/{post_id}/revisions/{post.head_revision}")
            campaign = self._latest_campaign(s, post_id)
            return (events_pb2.PostContentSnapshot.FromString(campaign.snapshot),
                    f"posts/{post_id}/revisions/{campaign.revision}")

    def count_targeted(self, snapshot: events_pb2.PostContentSnapshot) -> int:
        with self.db.read() as s:
            return len(self._targeted_reps(s, snapshot))

