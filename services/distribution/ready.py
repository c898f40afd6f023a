"""Ready copies of live campaigns, held in memory so a customer page needs no database read.

A ready copy never changes. The distribution service loads the ready copies of a
campaign when its post gets traffic (``ReadyCopies.due``), in the background, again
every ``reload_seconds`` while copies are still being rendered, and never again once
none is pending. GetRepCopy then builds a copy's view from here (signing its image
URLs) without a query, and goes on doing so while PostgreSQL is down: a link opened
for the first time during an outage still opens, on every replica.

Bounded: at most ``budget`` copies in all; the campaigns loaded longest ago go first.
Copies planned after a campaign was complete (a rep who joined a targeted team later)
are not here; they are read from the database as before.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DEFAULT_BUDGET = 20_000  # copies (READY_COPIES): about 8 KiB each with 9 images (measured), so at most about 165 MB
RELOAD_SECONDS = 10.0


@dataclass(frozen=True)
class ReadyCopy:
    """What a copy's view is built from (the names ``CopyRow`` has for them)."""

    rep_id: str
    text: str | None
    images: list[dict[str, Any]] | None
    share_token: str | None
    render_time: datetime | None


@dataclass
class _Campaign:
    post_id: str
    revision: int
    copies: dict[str, ReadyCopy] = field(default_factory=dict)
    complete: bool = False  # nothing was pending at the last load: never loaded again
    loaded_at: float = float("-inf")  # time.monotonic() of the last load (or of its start, while one runs)


class ReadyCopies:
    def __init__(self, budget: int = DEFAULT_BUDGET, reload_seconds: float = RELOAD_SECONDS) -> None:
        self.budget = budget
        self.reload_seconds = reload_seconds
        self._campaigns: OrderedDict[str, _Campaign] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def due(self, campaign_id: str, post_id: str, revision: int) -> bool:
        """Whether the campaign should be loaded now; if so, it is marked as loading (one load at a time)."""
        now = time.monotonic()
        with self._lock:
            campaign = self._campaigns.get(campaign_id)
            if campaign is None:
                campaign = self._campaigns[campaign_id] = _Campaign(post_id, revision)
            if campaign.complete or now - campaign.loaded_at < self.reload_seconds:
                return False
            campaign.loaded_at = now
            return True

    def known(self, campaign_id: str) -> set[str]:
        """The reps whose copies are held for the campaign."""
        with self._lock:
            campaign = self._campaigns.get(campaign_id)
            return set(campaign.copies) if campaign else set()

    def add(self, campaign_id: str, copies: Iterable[ReadyCopy], complete: bool) -> None:
        with self._lock:
            campaign = self._campaigns.get(campaign_id)
            if campaign is None:  # evicted meanwhile
                return
            for copy in copies:
                if copy.rep_id in campaign.copies:
                    continue
                while self._size >= self.budget:
                    if not self._evict_other_than(campaign_id):
                        return  # this campaign alone fills the budget: the rest is read from the database (and reloaded)
                campaign.copies[copy.rep_id] = copy
                self._size += 1
            campaign.complete = complete

    def _evict_other_than(self, campaign_id: str) -> bool:
        """Drop the campaign loaded longest ago, other than ``campaign_id``; False if there is none."""
        oldest = next((c for c in self._campaigns if c != campaign_id), None)
        if oldest is None:
            return False
        self._size -= len(self._campaigns.pop(oldest).copies)
        return True

    def get(self, campaign_id: str, rep_id: str) -> tuple[str, int, ReadyCopy] | None:
        """(post id, revision, the copy), if held."""
        with self._lock:
            campaign = self._campaigns.get(campaign_id)
            copy = campaign.copies.get(rep_id) if campaign else None
            return (campaign.post_id, campaign.revision, copy) if campaign and copy else None

    @property
    def size(self) -> int:
        return self._size
