"""Posts, revisions and their life cycle.

A post is a sequence of immutable revisions plus pointers:

- ``head_revision``: the newest revision; every edit appends one;
- ``published_revision``: what reps and customers see; set by publishing;
- ``scheduled_revision`` / ``scheduled_time``: a revision pinned to go live later.

Editing a published post appends a draft revision; the published one keeps
serving until the post is published again. Archiving retires a post for good.

::

    DRAFT --publish(now)--> PUBLISHED --edit--> PUBLISHED (has_unpublished_changes)
      |  \\--publish(later)--> SCHEDULED --due--> PUBLISHED
      |                                            |
      +------------------ archive -----------------+--> ARCHIVED (terminal)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.shared.errors import Aborted, FailedPrecondition, InvalidArgument
from services.shared.ids import version_etag
from services.shared.text import check_text

from . import alternatives, templates

MAX_TITLE = 120
MAX_BODY = 2000
MAX_IMAGES = 9
MAX_TOPICS = 10
MAX_PROTECTED = 50
MAX_PROTECTED_CHARS = 100
MAX_TARGET_TEAMS = 100


class PostState(enum.Enum):
    DRAFT = 1
    SCHEDULED = 2
    PUBLISHED = 3
    ARCHIVED = 4


class BadgePosition(enum.Enum):
    BOTTOM_RIGHT = 1
    BOTTOM_LEFT = 2
    TOP_RIGHT = 3
    TOP_LEFT = 4


@dataclass(frozen=True)
class Variation:
    protected_phrases: tuple[str, ...] = ()
    rep_template: str = ""
    badge_enabled: bool = False
    badge_position: BadgePosition = BadgePosition.BOTTOM_RIGHT


@dataclass(frozen=True)
class PostContent:
    title: str
    body: str
    images: tuple[str, ...] = ()  # asset ids
    topics: tuple[str, ...] = ()  # topic ids
    variation: Variation = field(default_factory=Variation)
    target_teams: tuple[str, ...] = ()  # team ids (distribution's); empty: every rep


def validate_content(content: PostContent) -> PostContent:
    """Check everything about a revision that needs no database; return it normalised."""
    check_text(content.title, "content.title", min_len=1, max_len=MAX_TITLE)
    if not content.title.strip():
        raise InvalidArgument("content.title", "required")
    check_text(content.body, "content.body", min_len=1, max_len=MAX_BODY, multiline=True)
    if not content.body.strip():
        raise InvalidArgument("content.body", "required")
    segments = alternatives.parse_body(content.body)
    if len(content.images) > MAX_IMAGES:
        raise InvalidArgument("content.images", f"at most {MAX_IMAGES} images, got {len(content.images)}")
    _no_duplicates(content.images, "content.images")
    if len(content.topics) > MAX_TOPICS:
        raise InvalidArgument("content.topics", f"at most {MAX_TOPICS} topics")
    _no_duplicates(content.topics, "content.topics")
    if len(content.target_teams) > MAX_TARGET_TEAMS:
        raise InvalidArgument("content.target_teams", f"at most {MAX_TARGET_TEAMS} teams")
    _no_duplicates(content.target_teams, "content.target_teams")
    v = content.variation
    if len(v.protected_phrases) > MAX_PROTECTED:
        raise InvalidArgument("content.variation.protected_phrases", f"at most {MAX_PROTECTED} phrases")
    literals = alternatives.literal_texts(segments)
    for i, phrase in enumerate(v.protected_phrases):
        f = f"content.variation.protected_phrases[{i}]"
        check_text(phrase, f, min_len=1, max_len=MAX_PROTECTED_CHARS)
        if not phrase.strip():
            raise InvalidArgument(f, "must not be blank")
        if not any(phrase in text for text in literals):
            raise InvalidArgument(f, "must appear in the body outside [[alternatives]]")
    _no_duplicates(v.protected_phrases, "content.variation.protected_phrases")
    template = templates.validate_rep_template(v.rep_template)
    return replace(content, variation=replace(v, rep_template=template))


def _no_duplicates(values: tuple[str, ...], f: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise InvalidArgument(f"{f}[{i}]", f"{value!r} is listed twice")
        seen.add(value)


@dataclass(frozen=True)
class Revision:
    post_id: str
    number: int
    content: PostContent
    author_id: str
    create_time: datetime
    publish_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"posts/{self.post_id}/revisions/{self.number}"


@dataclass(frozen=True)
class Post:
    id: str
    author_id: str
    head_revision: int
    create_time: datetime
    update_time: datetime
    version: int = 1
    published_revision: int | None = None
    publish_time: datetime | None = None
    scheduled_revision: int | None = None
    scheduled_time: datetime | None = None
    archived: bool = False

    @property
    def name(self) -> str:
        return f"posts/{self.id}"

    @property
    def state(self) -> PostState:
        if self.archived:
            return PostState.ARCHIVED
        if self.published_revision is not None:
            return PostState.PUBLISHED
        if self.scheduled_revision is not None:
            return PostState.SCHEDULED
        return PostState.DRAFT

    @property
    def has_unpublished_changes(self) -> bool:
        return self.published_revision is not None and self.head_revision != self.published_revision

    @property
    def etag(self) -> str:
        return version_etag(self.id, self.version)

    def check_etag(self, etag: str) -> None:
        if etag and etag != self.etag:
            raise Aborted(f"{self.name} changed since it was read (etag mismatch); read it again")

    def _bump(self, now: datetime, **changes: object) -> "Post":
        return replace(self, version=self.version + 1, update_time=now, **changes)  # type: ignore[arg-type]

    def edited(self, now: datetime) -> "Post":
        if self.archived:
            raise FailedPrecondition(f"{self.name} is archived and cannot be edited")
        return self._bump(now, head_revision=self.head_revision + 1)

    def published(self, now: datetime, at: datetime | None) -> tuple["Post", bool]:
        """Publish the head now, or schedule it for ``at``. Returns (post, went_live)."""
        if self.archived:
            raise FailedPrecondition(f"{self.name} is archived and cannot be published")
        if at is not None and at > now:
            post = self._bump(now, scheduled_revision=self.head_revision, scheduled_time=at)
            return post, False
        if self.published_revision == self.head_revision and self.scheduled_revision is None:
            return self, False  # already live: publishing again is a harmless retry
        return self._go_live(now, self.head_revision), True

    def _go_live(self, now: datetime, revision: int) -> "Post":
        return self._bump(
            now, published_revision=revision, publish_time=now, scheduled_revision=None, scheduled_time=None
        )

    def due(self, now: datetime) -> tuple["Post", int] | None:
        """If a scheduled revision is due, the post with it live and that revision."""
        if self.archived or self.scheduled_revision is None or self.scheduled_time is None:
            return None
        if self.scheduled_time > now:
            return None
        return self._go_live(now, self.scheduled_revision), self.scheduled_revision

    def archived_at(self, now: datetime) -> "Post":
        if self.archived:
            return self
        return self._bump(now, archived=True, scheduled_revision=None, scheduled_time=None)

    def check_deletable(self) -> None:
        if self.state is not PostState.DRAFT:
            raise FailedPrecondition(
                f"{self.name} is {self.state.name.lower()}; only drafts can be deleted (archive it instead)"
            )


CONTENT_PATHS = (
    "content.title",
    "content.body",
    "content.images",
    "content.topics",
    "content.variation",
    "content.variation.protected_phrases",
    "content.variation.rep_template",
    "content.variation.badge_enabled",
    "content.variation.badge_position",
    "content.target_teams",
)


def merge_content(old: PostContent, new: PostContent, paths: set[str]) -> PostContent:
    """Apply an update mask: take the named fields from ``new``, the rest from ``old``."""
    merged = old
    for name in ("title", "body", "images", "topics", "target_teams"):
        if f"content.{name}" in paths:
            merged = replace(merged, **{name: getattr(new, name)})
    if "content.variation" in paths:
        return replace(merged, variation=new.variation)
    variation = merged.variation
    for name in ("protected_phrases", "rep_template", "badge_enabled", "badge_position"):
        if f"content.variation.{name}" in paths:
            variation = replace(variation, **{name: getattr(new.variation, name)})
    return replace(merged, variation=variation)
