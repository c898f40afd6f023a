"""View sessions: heartbeats folded into one small, idempotent aggregate per view.

The browser sends a heartbeat every ``HEARTBEAT_INTERVAL_MS`` with the visible-and-focused
time since the last one (``engaged_ms_delta``), the deepest scroll so far and a per-view
sequence number starting at 1. It flushes on ``visibilitychange -> hidden`` and ``pagehide``
with ``sendBeacon``, so heartbeats arrive late, twice (retries, reclaimed stream entries)
and out of order. Folding them must therefore be

- idempotent: a (view, seq) already applied is a duplicate and changes nothing; the state
  remembers applied seqs compactly as ``seq_floor`` (every seq up to it is done) plus a
  short sorted tuple of applied seqs above it (``seqs_above``, at most ``MAX_SEQS_ABOVE``);
- order-free: a batch is applied in receive-time order whatever order it came in, and the
  totals are sums and maxima, so heartbeats split over batches in any order add up the same
  (as long as none of them closes the view);
- bounded: each delta is clamped to ``[0, MAX_DELTA_MS]`` (one interval plus slack for a
  late timer), and the engaged total reported never exceeds the wall time between the start
  of the view and its last heartbeat plus one interval. All times are *server receive times*
  (unix milliseconds): the phone's clock is never trusted.

A view closes at ``EndView`` (``close``) or after ``VIEW_IDLE_TIMEOUT_MS`` without
heartbeats (``is_expired``). Heartbeats received later are rejected ("closed"/"expired"),
except that a view closed by ``EndView`` still takes heartbeats received within
``CLOSE_GRACE_MS`` of the close: the last ``sendBeacon`` flush races the close.

A *visit* is one or more views of the same copy by the same visitor: a new open within
``VISIT_MERGE_WINDOW_MS`` of the previous visit's last activity joins it (``same_visit``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

HEARTBEAT_INTERVAL_MS = 10_000
HEARTBEAT_SLACK_MS = 5_000  # a throttled background timer or a slow flush may report a little more than one interval
MAX_DELTA_MS = HEARTBEAT_INTERVAL_MS + HEARTBEAT_SLACK_MS
VIEW_IDLE_TIMEOUT_MS = 30 * 60_000
VISIT_MERGE_WINDOW_MS = 10 * 60_000
CLOSE_GRACE_MS = MAX_DELTA_MS  # heartbeats flushed together with EndView may be received just after it
MAX_SEQS_ABOVE = 64  # applied seqs kept above the floor; past this the oldest gap is given up (see _compact)
SEQ_WINDOW = 1_024  # a seq this far past the floor is not from a real browser (about 2.8 h of lost heartbeats)
MAX_SCROLL_PERCENT = 100
STATE_VERSION = 1

# Reasons a heartbeat is rejected (the keys of BatchResult.rejected_reasons).
WRONG_VIEW = "wrong_view"
INVALID_SEQ = "invalid_seq"
SEQ_OUT_OF_RANGE = "seq_out_of_range"
CLOSED = "closed"
EXPIRED = "expired"


@dataclass(frozen=True)
class Heartbeat:
    """One heartbeat as the server received it; ``received_at`` is the server's clock (unix ms)."""

    view_id: str
    seq: int
    engaged_ms_delta: int
    max_scroll_percent: int
    received_at: int


@dataclass(frozen=True)
class ViewState:
    """The aggregate of one view; small and JSON-serialisable (``to_dict``/``from_dict``).

    ``raw_engaged_ms`` is the sum of the clamped deltas; ``engaged_ms`` is what to show and
    score: that sum capped by the wall time the view has demonstrably been open.
    """

    view_id: str
    started_at: int  # server time of StartView, unix ms
    raw_engaged_ms: int = 0
    max_scroll_percent: int = 0
    heartbeats: int = 0  # accepted heartbeats (distinct seqs)
    last_heartbeat_at: int | None = None  # latest receive time of an accepted heartbeat
    closed_at: int | None = None
    seq_floor: int = 0  # every seq <= floor has been applied (or given up, see _compact)
    seqs_above: tuple[int, ...] = ()  # applied seqs > floor + 1, sorted

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    @property
    def last_activity(self) -> int:
        return self.started_at if self.last_heartbeat_at is None else max(self.started_at, self.last_heartbeat_at)

    @property
    def engaged_ms(self) -> int:
        if self.last_heartbeat_at is None:
            return 0
        wall = max(0, self.last_heartbeat_at - self.started_at) + HEARTBEAT_INTERVAL_MS
        return min(self.raw_engaged_ms, wall)

    def applied(self, seq: int) -> bool:
        """True when ``seq`` was applied (or lies below the floor, where it can no longer be told apart)."""
        return seq <= self.seq_floor or seq in self.seqs_above

    def to_dict(self) -> dict[str, object]:
        return {"v": STATE_VERSION, "view_id": self.view_id, "started_at": self.started_at,
                "raw_engaged_ms": self.raw_engaged_ms, "engaged_ms": self.engaged_ms,
                "max_scroll_percent": self.max_scroll_percent, "heartbeats": self.heartbeats,
                "last_heartbeat_at": self.last_heartbeat_at, "closed_at": self.closed_at,
                "seq_floor": self.seq_floor, "seqs_above": list(self.seqs_above)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | str) -> ViewState:
        """The inverse of ``to_dict``/``to_json``; ValueError naming the field for anything malformed."""
        parsed = json.loads(data) if isinstance(data, str) else data
        if not isinstance(parsed, Mapping):
            raise ValueError("view state: expected a JSON object")
        fields: Mapping[str, object] = parsed
        if fields.get("v", STATE_VERSION) != STATE_VERSION:
            raise ValueError(f"v: unsupported view state version {fields.get('v')!r}")

        def integer(key: str, default: int | None = None) -> int:
            value = fields.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{key}: expected an integer, got {value!r}")
            return value

        def optional(key: str) -> int | None:
            return None if fields.get(key) is None else integer(key)

        view_id = fields.get("view_id")
        if not isinstance(view_id, str) or not view_id:
            raise ValueError("view_id: expected a non-empty string")
        above = fields.get("seqs_above", [])
        if not isinstance(above, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in above):
            raise ValueError("seqs_above: expected a list of integers")
        floor = integer("seq_floor", 0)
        seqs = tuple(sorted({s for s in above if s > floor}))
        if len(seqs) > MAX_SEQS_ABOVE:
            raise ValueError(f"seqs_above: at most {MAX_SEQS_ABOVE} entries")
        raw, scroll, count = integer("raw_engaged_ms", 0), integer("max_scroll_percent", 0), integer("heartbeats", 0)
        if raw < 0 or count < 0 or not 0 <= scroll <= MAX_SCROLL_PERCENT:
            raise ValueError("view state: negative totals or scroll outside 0..100")
        return cls(view_id, integer("started_at"), raw, scroll, count, optional("last_heartbeat_at"), optional("closed_at"),
                   floor, seqs)


@dataclass(frozen=True)
class BatchResult:
    """What one batch did. ``accepted`` includes the ``capped`` ones (applied with a clamped delta)."""

    accepted: int = 0
    duplicates: int = 0
    capped: int = 0
    rejected: int = 0
    rejected_reasons: Mapping[str, int] = field(default_factory=dict)
    engaged_added_ms: int = 0  # change of ViewState.engaged_ms

    def __add__(self, other: BatchResult) -> BatchResult:
        reasons = dict(self.rejected_reasons)
        for reason, count in other.rejected_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
        return BatchResult(self.accepted + other.accepted, self.duplicates + other.duplicates, self.capped + other.capped,
                           self.rejected + other.rejected, reasons, self.engaged_added_ms + other.engaged_added_ms)


def new_view(view_id: str, started_at: int) -> ViewState:
    if not view_id:
        raise ValueError("view_id: required")
    return ViewState(view_id, started_at)


def clamp_delta(delta: int) -> tuple[int, bool]:
    """(delta clamped to [0, MAX_DELTA_MS], whether it had to be clamped)."""
    if delta < 0:
        return 0, True
    if delta > MAX_DELTA_MS:
        return MAX_DELTA_MS, True
    return delta, False


def clamp_scroll(percent: int) -> int:
    return min(MAX_SCROLL_PERCENT, max(0, percent))


def is_expired(state: ViewState, now: int) -> bool:
    """Closed, or no heartbeat (nor the start) for ``VIEW_IDLE_TIMEOUT_MS`` up to ``now``."""
    return state.closed or now - state.last_activity >= VIEW_IDLE_TIMEOUT_MS


def close(state: ViewState, at: int) -> ViewState:
    """EndView, or the sweeper closing an expired view. Closing twice keeps the first close."""
    return state if state.closed else replace(state, closed_at=at)


def _sort_key(hb: Heartbeat) -> tuple[int, int, int, int, str]:
    return (hb.received_at, hb.seq, hb.engaged_ms_delta, hb.max_scroll_percent, hb.view_id)


def apply_heartbeats(state: ViewState, heartbeats: Iterable[Heartbeat]) -> tuple[ViewState, BatchResult]:
    """Fold a batch into the view's state; the same batch again, or any order of it, gives the same state.

    Each heartbeat, in receive-time order, is
    rejected ``wrong_view`` (another view's), ``invalid_seq`` (seq < 1); else a *duplicate* when its
    seq was applied; else rejected ``seq_out_of_range`` (more than ``SEQ_WINDOW`` past the floor),
    ``closed`` (received over ``CLOSE_GRACE_MS`` after the close) or ``expired`` (received
    ``VIEW_IDLE_TIMEOUT_MS`` or more after the last activity: this closes the view); else accepted,
    with its delta clamped (counted in ``capped`` when it had to be) and its scroll max'ed in.
    """
    floor, above = state.seq_floor, set(state.seqs_above)
    raw, scroll, count = state.raw_engaged_ms, state.max_scroll_percent, state.heartbeats
    last, closed_at = state.last_heartbeat_at, state.closed_at
    accepted = duplicates = capped = 0
    reasons: dict[str, int] = {}
    for hb in sorted(heartbeats, key=_sort_key):
        reason = ""
        if hb.view_id != state.view_id:
            reason = WRONG_VIEW
        elif hb.seq < 1:
            reason = INVALID_SEQ
        elif hb.seq <= floor or hb.seq in above:
            duplicates += 1
            continue
        elif hb.seq > floor + SEQ_WINDOW:
            reason = SEQ_OUT_OF_RANGE
        elif closed_at is not None and hb.received_at > closed_at + CLOSE_GRACE_MS:
            reason = CLOSED
        else:
            activity = state.started_at if last is None else max(state.started_at, last)
            if hb.received_at - activity >= VIEW_IDLE_TIMEOUT_MS:
                reason = EXPIRED
                if closed_at is None:
                    closed_at = activity + VIEW_IDLE_TIMEOUT_MS
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
            continue
        delta, was_capped = clamp_delta(hb.engaged_ms_delta)
        capped += was_capped
        accepted += 1
        raw += delta
        scroll = max(scroll, clamp_scroll(hb.max_scroll_percent))
        count += 1
        last = hb.received_at if last is None else max(last, hb.received_at)
        above.add(hb.seq)
        floor = _compact(floor, above)
    new = ViewState(state.view_id, state.started_at, raw, scroll, count, last, closed_at, floor, tuple(sorted(above)))
    result = BatchResult(accepted, duplicates, capped, sum(reasons.values()), reasons, new.engaged_ms - state.engaged_ms)
    return new, result


def _compact(floor: int, above: set[int]) -> int:
    """Advance the floor over contiguous applied seqs (removing them from ``above``). When more than
    ``MAX_SEQS_ABOVE`` stay above a gap, the lowest gap is given up: the floor jumps to the lowest
    applied seq, and a heartbeat that fills that gap later counts as a duplicate (never twice)."""
    while True:
        while floor + 1 in above:
            floor += 1
            above.discard(floor)
        if len(above) <= MAX_SEQS_ABOVE:
            return floor
        floor = min(above)
        above.discard(floor)


def group_by_view(heartbeats: Iterable[Heartbeat]) -> dict[str, list[Heartbeat]]:
    """A consumer's batch split per view, views in first-seen order."""
    groups: dict[str, list[Heartbeat]] = {}
    for hb in heartbeats:
        groups.setdefault(hb.view_id, []).append(hb)
    return groups


def same_visit(previous_open_time: int, previous_last_activity: int, new_open_time: int) -> bool:
    """True when an open of the same copy by the same visitor joins the previous visit: it is within
    ``VISIT_MERGE_WINDOW_MS`` after that visit's last activity (a second tab while it is still
    active joins it too), and not more than the window before the visit began (late delivery)."""
    return previous_open_time - VISIT_MERGE_WINDOW_MS <= new_open_time <= max(previous_open_time, previous_last_activity) + VISIT_MERGE_WINDOW_MS
