"""The soak's accounting, as pure functions over what the clients were told and what the database holds, and its report.

- ``audit_tracking``: every view whose start was acknowledged must be stored; every acknowledged heartbeat or beacon
  (view, seq) must be a stored event with its delta; no stored event may be one no client sent; and each view's
  engaged time must equal the sum of its stored deltas (the clients keep engaged time under the wall clock, so the
  service's caps never bind). A heartbeat a client sent but gave up on (the run was stopping) is "in doubt": stored
  or not, both are right; if stored, it counts in the expected sum.
- ``audit_campaign``: one campaign per published post, a ready copy for exactly the reps of the targeted team, each
  with all of the post's images, no image variant shared between two copies.
- ``classify_errors``: every error a client saw, against the outages: only UNAVAILABLE / HTTP 503 while Redis or
  PostgreSQL is down (plus a grace period for clients' back-off and servers' reconnects), nothing else ever. A page
  served without a view (the edge could not start one: Redis down) is listed the same way: allowed only in an outage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .soak_infra import Usage
from .soak_load import UNTRACKED, ClientError, ViewLedger

ALLOWED_IN_OUTAGE = frozenset({"UNAVAILABLE", "HTTP 503", UNTRACKED})
MB = 1024 * 1024


# ---- tracking: acknowledged against stored ------------------------------------------------------------------------------


@dataclass
class TrackingAudit:
    views_acked: int = 0
    views_missing: list[str] = field(default_factory=list)  # acknowledged StartView, no row
    views_unacked_stored: int = 0  # rows no client was told about (a StartView that failed after writing): allowed
    events_acked: int = 0
    events_stored: int = 0  # of the acknowledged views
    acked_ms: int = 0
    stored_ms: int = 0  # tracking_views.engaged_ms of the acknowledged views
    missing_ms: int = 0  # acknowledged engaged ms of views not stored at all
    doubt_sent: int = 0
    doubt_stored: int = 0
    lost: list[tuple[str, int]] = field(default_factory=list)  # acknowledged (view, seq) not stored
    phantom: list[tuple[str, int]] = field(default_factory=list)  # stored (view, seq) no client sent
    delta_mismatch: list[tuple[str, int, int, int]] = field(default_factory=list)  # (view, seq, sent, stored)
    engaged_mismatch: list[tuple[str, int, int]] = field(default_factory=list)  # (view, expected ms, stored ms)

    @property
    def lost_ms(self) -> int:
        return self.missing_ms + sum(max(0, expected - stored) for _, expected, stored in self.engaged_mismatch)

    @property
    def double_ms(self) -> int:
        return sum(max(0, stored - expected) for _, expected, stored in self.engaged_mismatch)

    @property
    def ok(self) -> bool:
        return not (self.views_missing or self.lost or self.phantom or self.delta_mismatch or self.engaged_mismatch)


def audit_tracking(ledger: Mapping[str, ViewLedger], views: Mapping[str, int],
                   events: Mapping[str, Mapping[int, int]]) -> TrackingAudit:
    """``ledger``: view id -> what the clients sent; ``views``: view id -> stored engaged ms (every stored view);
    ``events``: view id -> {seq: stored engaged ms}."""
    out = TrackingAudit(views_acked=len(ledger), views_unacked_stored=len(set(views) - set(ledger)))
    for view, sent in ledger.items():
        out.events_acked += len(sent.acked)
        out.acked_ms += sum(sent.acked.values())
        out.doubt_sent += len(sent.doubt)
        if view not in views:
            out.views_missing.append(view)
            out.missing_ms += sum(sent.acked.values())
            out.lost += [(view, seq) for seq in sent.acked]
            continue
        stored = events.get(view, {})
        out.events_stored += len(stored)
        out.stored_ms += views[view]
        expected = 0
        for seq, delta in sorted(sent.acked.items()):
            if seq not in stored:
                out.lost.append((view, seq))
            elif stored[seq] != delta:
                out.delta_mismatch.append((view, seq, delta, stored[seq]))
            expected += delta
        for seq, ms in sorted(stored.items()):
            if seq in sent.doubt:
                out.doubt_stored += 1
                expected += ms
            elif seq not in sent.acked:
                out.phantom.append((view, seq))
        if views[view] != expected:
            out.engaged_mismatch.append((view, expected, views[view]))
    return out


# ---- campaigns: one copy per targeted rep -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyRecord:
    rep: str
    state: str
    image_keys: tuple[str, ...]
    has_token: bool


@dataclass
class CampaignAudit:
    post: str
    team: str
    targeted: int
    images: int
    campaigns: int = 0  # campaign rows for the post (exactly 1: one published revision)
    ready: int = 0
    not_ready: dict[str, int] = field(default_factory=dict)  # state -> copies
    missing: list[str] = field(default_factory=list)  # targeted reps without a copy
    extra: list[str] = field(default_factory=list)  # copies for reps not targeted
    wrong_images: list[str] = field(default_factory=list)  # reps whose copy lacks images or its share token
    shared_images: int = 0  # image keys used by more than one copy
    rendered_after: float | None = None  # s from the publish acknowledgement to the last copy rendered

    @property
    def ok(self) -> bool:
        return (self.campaigns == 1 and self.ready == self.targeted and not self.not_ready and not self.missing
                and not self.extra and not self.wrong_images and not self.shared_images)


def audit_campaign(post: str, team: str, images: int, team_reps: Iterable[str], campaigns: int,
                   copies: Iterable[CopyRecord]) -> CampaignAudit:
    reps = set(team_reps)
    out = CampaignAudit(post, team, len(reps), images, campaigns=campaigns)
    seen: set[str] = set()
    keys: dict[str, int] = {}
    for copy in copies:
        seen.add(copy.rep)
        if copy.state == "ready":
            out.ready += 1
        else:
            out.not_ready[copy.state] = out.not_ready.get(copy.state, 0) + 1
        if copy.state == "ready" and (len(copy.image_keys) != images or not copy.has_token):
            out.wrong_images.append(copy.rep)
        for key in copy.image_keys:
            keys[key] = keys.get(key, 0) + 1
    out.missing = sorted(reps - seen)
    out.extra = sorted(seen - reps)
    out.shared_images = sum(1 for n in keys.values() if n > 1)
    return out


# ---- client errors against the outages ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    kind: str  # redis, postgres
    start: float  # seconds into the load
    end: float


@dataclass
class ErrorRow:
    source: str
    code: str
    count: int = 0
    in_outage: int = 0
    first: float = float("inf")
    last: float = float("-inf")
    outages: Counter[str] = field(default_factory=Counter)  # errors by the kind of outage they fell in

    @property
    def allowed(self) -> bool:
        return self.code in ALLOWED_IN_OUTAGE and self.in_outage == self.count


def classify_errors(errors: Iterable[ClientError], outages: list[Outage], grace: float) -> list[ErrorRow]:
    """Errors grouped by (source, code), each counted as during an outage (start to end + ``grace``) or not."""
    rows: dict[tuple[str, str], ErrorRow] = {}
    for e in errors:
        row = rows.setdefault((e.source, e.code), ErrorRow(e.source, e.code))
        row.count += 1
        row.first, row.last = min(row.first, e.at), max(row.last, e.at)
        during = [o.kind for o in outages if o.start <= e.at <= o.end + grace]
        if during:
            row.in_outage += 1
            row.outages.update(set(during))
    return sorted(rows.values(), key=lambda r: (r.allowed, r.source, r.code))


# ---- the report -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Fault:
    kind: str  # worker, redis, consumer, postgres
    planned: float  # seconds into the load
    began: float = float("nan")  # NaN: never injected
    ended: float = float("nan")  # recovered
    detail: str = ""
    error: str = ""  # the soak could not carry it out (or see the recovery)

    @property
    def injected(self) -> bool:
        return self.began == self.began


def accounting_lines(t: TrackingAudit) -> list[str]:
    lines = [
        "| | count | engaged ms |", "|---|---:|---:|",
        f"| views started (acknowledged) | {t.views_acked:,} | |",
        f"| heartbeats + beacons acknowledged | {t.events_acked:,} | {t.acked_ms:,} |",
        f"| stored for those views (tracking_events rows; tracking_views.engaged_ms) | {t.events_stored:,} | {t.stored_ms:,} |",
        f"| lost (acknowledged, not stored) | {len(t.lost):,} | {t.lost_ms:,} |",
        f"| double-counted (stored beyond what was sent) | {len(t.phantom):,} | {t.double_ms:,} |",
        f"| in doubt (sent, the client gave up at the end; stored) | {t.doubt_sent:,} ({t.doubt_stored:,}) | |",
        f"| views stored that no client was told about (a StartView that failed after writing) | {t.views_unacked_stored:,} | |",
    ]
    if t.lost:
        lines += ["", f"Lost (view, seq), the first of them: {', '.join(f'{v}/{q}' for v, q in t.lost[:5])}."]
    return [*lines, "", "Counted as tests/test_tracking_durability.py does: per view, tracking_views.engaged_ms and the "
                        "(view, seq) rows of tracking_events, against what the clients were acknowledged."]


def campaign_lines(audits: list[tuple[int, CampaignAudit]]) -> list[str]:
    """One row per (campaign index, audit)."""
    lines = ["| # | post | team | reps | photos | ready | rendered after publish | exact |", "|---:|---|---|---:|---:|---:|---:|---|"]
    for index, a in audits:
        problems = ", ".join(filter(None, [
            f"{a.campaigns} campaigns" if a.campaigns != 1 else "", f"missing {len(a.missing)}" if a.missing else "",
            f"extra {len(a.extra)}" if a.extra else "", f"not ready {a.not_ready}" if a.not_ready else "",
            f"images wrong {len(a.wrong_images)}" if a.wrong_images else "",
            f"{a.shared_images} shared images" if a.shared_images else ""]))
        rendered = f"{a.rendered_after:.1f} s" if a.rendered_after is not None else "—"
        lines.append(f"| {index} | {a.post} | {a.team} | {a.targeted} | {a.images} | {a.ready} | {rendered} | "
                     f"{'yes' if a.ok else problems} |")
    return lines


def error_lines(rows: list[ErrorRow], grace: float) -> list[str]:
    lines = ["| source | code | count | during an outage | first / last (s into the load) | allowed |", "|---|---|---:|---|---:|---|"]
    for r in rows:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(r.outages.items())) or "—"
        lines.append(f"| {r.source} | {r.code} | {r.count:,} | {r.in_outage:,} ({kinds}) | {r.first:.1f} / {r.last:.1f} | "
                     f"{'yes' if r.allowed else '**no**'} |")
    if not rows:
        lines.append("| — | — | 0 | | | |")
    return [*lines, "", f"An error is during an outage from the moment Redis or PostgreSQL goes down until {grace:g} s after "
                        "it answers again (clients' back-off, servers' reconnects)."]


def timeline_lines(faults: list[Fault]) -> list[str]:
    return ["| fault | planned (s) | began | recovered | what happened |", "|---|---:|---:|---:|---|",
            *(f"| {f.kind} | {f.planned:.0f} | {f.began:.1f} | {f.ended:.1f} | {f.detail}"
              f"{f' **{f.error}**' if f.error else ''} |" for f in faults)]


def backlog_lines(samples: list[tuple[float, int]], faults: list[Fault], load_seconds: float, every: float) -> list[str]:
    """The consumers' backlog, ``samples`` of (seconds into the load, entries), in spans between the faults."""
    if not samples:
        return ["No samples."]
    injected = sorted((f for f in faults if f.injected), key=lambda f: f.began)
    edges = [0.0, *(f.began for f in injected), load_seconds, samples[-1][0] + 1]
    names = ["load, before any fault", *(f"after the {f.kind} fault" for f in injected), "drain, after the load"]
    lines = ["| from (s) | to (s) | span | backlog max (lag + pending) | at (s) | at the span's end |", "|---:|---:|---|---:|---:|---:|"]
    for lo, hi, name in zip(edges, edges[1:], names, strict=False):
        span = [(t, n) for t, n in samples if lo <= t < hi]
        if span:
            top = max(span, key=lambda x: x[1])
            lines.append(f"| {lo:.0f} | {hi:.0f} | {name} | {top[1]:,} | {top[0]:.0f} | {span[-1][1]:,} |")
    return [*lines, "", f"Sampled every {every:g} s (none while Redis is down). Entries: one per StartView, per "
                        "RecordEngagement message and per write of the edge's beacon micro-batches."]


def usage_lines(usage: Usage, t0: float, every: float) -> list[str]:
    """One row per process; times in seconds from ``t0`` (monotonic: the start of the load)."""
    lines = ["| process | start MB | peak MB | end MB | end − start MB | CPU (cores) | samples |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, t in sorted(usage.tracks.items()):
        lines.append(f"| {name} | {t.first / MB:.0f} (at {t.first_at - t0:.0f} s) | {t.peak / MB:.0f} | {t.last / MB:.0f} "
                     f"(at {t.last_at - t0:.0f} s) | {(t.last - t.first) / MB:+.0f} | {t.cores:.2f} | {t.samples} |")
    return [*lines, "", f"RSS every {every:g} s from when the process was up to the end of the drain; a process with its "
                        "children (a worker's pool process; PostgreSQL's backends, each counting the shared buffers it "
                        "touched). moto keeps every object in memory, and the load generator every acknowledgement. "
                        "CPU: user + system seconds between a process's first and last sample over that time; "
                        f"all processes together {usage.cores():.2f} cores on average."]


def render(title: str, setup: list[str], checks: list[Check], sections: list[tuple[str, list[str]]]) -> str:
    """The Markdown report: the set-up, the checks, then each section's lines."""
    failed = [c for c in checks if not c.ok]
    out = [f"# {title}", "", *setup, "",
           f"**Result: {'PASS' if not failed else 'FAIL'}** ({len(checks) - len(failed)}/{len(checks)} checks passed)", "",
           "| check | result | detail |", "|---|---|---|"]
    out += [f"| {c.name} | {'ok' if c.ok else '**FAILED**'} | {c.detail} |" for c in checks]
    for heading, lines in sections:
        out += ["", f"## {heading}", "", *lines]
    return "\n".join(out) + "\n"
