"""The ingest side: what StartView, RecordEngagement and EndView do before they return.

Nothing here touches the database. A call verifies what it can on its own (the
share token's signature and age, the view id's signature), rate-limits, and
appends one ``IngestBatch`` to the event log; it returns once the log has it
(Redis with AOF in production). The aggregator applies the log to the database.

View ids are signed (``<ulid>-<hmac>``), so a heartbeat for a view nobody
started is NOT_FOUND without a lookup, and a client cannot forge its way into
someone else's view.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.shared.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from services.shared.ids import new_id
from services.shared.settings import Settings
from services.shared.sharetoken import ShareToken, ShareTokens

from .domain import bots, privacy
from .domain.engagement import HEARTBEAT_INTERVAL_MS
from .limits import RateLimiter
from .streams import EventLog

log = logging.getLogger(__name__)

MAX_HEARTBEATS_PER_CALL = 1_000
MAX_UA_CHARS = 512
MAX_VISITOR_CHARS = 40
VIEW_SIG_HEX = 16


REFUSED_TOKENS = Counter("contentops_tracking_refused_share_tokens", "Share links refused at StartView, by reason",
                         ["reason"])


class Refusals:
    """Counts refused share tokens by reason: in this process (for tests and logs) and in Prometheus."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, reason: str) -> None:
        REFUSED_TOKENS.labels(reason).inc()
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class SimulatedClock:
    """A receive clock someone moves by hand (``Ingest.clock``): the demo's customers and the tests' readers
    read for minutes by the server's clock in no time."""

    def __init__(self, now: float) -> None:
        self.now = now  # unix seconds

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class StartedView:
    view: str
    visitor_id: str
    forward_token: str
    bot: bool

    def response(self) -> pb.StartViewResponse:
        """What StartView answers, and what the web edge's own start gives its page."""
        return pb.StartViewResponse(view=f"views/{self.view}", visitor_id=self.visitor_id,
                                    forward_share_token=self.forward_token,
                                    heartbeat_interval_seconds=HEARTBEAT_INTERVAL_MS // 1000, bot=self.bot)


def expired(share: ShareToken, now: float, max_age_s: float) -> bool:
    """Whether a share link is too old to open (``TRACKING_TOKEN_MAX_AGE_DAYS``)."""
    return now - share.issued_at > max_age_s


def valid_visitor(visitor_id: str) -> bool:
    return 8 <= len(visitor_id) <= MAX_VISITOR_CHARS and all(c.isalnum() or c in "-_" for c in visitor_id)


# ---- view ids and events, for every process that takes heartbeats (this service, the web edge's fast path) ----


def view_key_for(secret_key: bytes) -> bytes:
    """The key view ids are signed with, derived from CONTENTOPS_SECRET_KEY the same way in every process."""
    return hashlib.sha256(b"tracking-view:" + secret_key).digest()


def sign_view(view_key: bytes, uid: str) -> str:
    return hmac.new(view_key, uid.encode(), hashlib.sha256).hexdigest()[:VIEW_SIG_HEX]


def check_view(view_key: bytes, name: str, field: str) -> str:
    """The view id in ``views/{id}``; NOT_FOUND when it was not signed with ``view_key``."""
    if not name.startswith("views/"):
        raise InvalidArgument(field, "expected 'views/<id>'")
    view_id = name[len("views/"):]
    uid, _, sig = view_id.partition("-")
    if len(view_id) > 48 or not uid or not hmac.compare_digest(sig, sign_view(view_key, uid)):
        raise NotFound(f"{name[:80]} not found")
    return view_id


def heartbeat_event(view_id: str, seq: int, engaged_ms_delta: int, max_scroll_percent: int, received_ms: int) -> pb.IngestEvent:
    return pb.IngestEvent(heartbeat=pb.Heartbeat(view=view_id, seq=seq, engaged_ms_delta=engaged_ms_delta,
                                                 max_scroll_percent=max_scroll_percent), received_ms=received_ms)


def ended_event(view_id: str, last_seq: int, received_ms: int) -> pb.IngestEvent:
    return pb.IngestEvent(ended=pb.EndViewRequest(view=view_id, last_seq=last_seq), received_ms=received_ms)


@dataclass(frozen=True)
class ViewOpening:
    """A view being started: its input checked and its share token verified, before the rate limit is asked."""

    share: ShareToken
    visitor: str
    limit_keys: list[str]  # for RateLimiter.allow_views: the visitor, and the network if the client's IP is known
    user_agent: str
    referrer: str
    ip_hash: str


class ViewStarts:
    """What StartView decides, for every process that starts views: this service's ``Ingest`` and the web edge's fast
    path (``services/web/edge_ingest.py``), so a page opened through either is the same event. ``open`` checks the input
    and the share token (signature and age); the caller then asks its rate limiter (in memory, or in Redis
    synchronously or not) for ``limit_keys``; ``start`` makes the signed view id, the ``ViewStarted`` event to
    append, and the forward link's token. Nothing here touches the log or the limiter."""

    def __init__(self, tokens: ShareTokens, view_key: bytes, ip_salt: bytes, *, token_max_age_s: float) -> None:
        self.tokens = tokens
        self.view_key = view_key
        self.ip_salt = ip_salt
        self.token_max_age_s = token_max_age_s
        self.refusals = Refusals()

    @classmethod
    def from_settings(cls, settings: Settings, tokens: ShareTokens | None = None) -> ViewStarts:
        """The deployment's: its share-link keys (or ``tokens`` made from them), view key, IP salt and link age."""
        return cls(tokens or ShareTokens(list(settings.share_token_keys)), view_key_for(settings.secret_key),
                   settings.tracking_ip_salt, token_max_age_s=settings.tracking_token_max_age_seconds)

    def new_view_id(self) -> str:
        uid = new_id()
        return f"{uid}-{sign_view(self.view_key, uid)}"

    def verify_token(self, token: str, now: float) -> ShareToken:
        try:
            share = self.tokens.verify(token)
        except InvalidArgument:
            self.refusals.add("forged")
            raise
        if expired(share, now, self.token_max_age_s):
            self.refusals.add("expired")
            raise FailedPrecondition("share_token: this link has expired")
        return share

    def open(self, token: str, visitor_id: str, user_agent: str, referrer: str, client_ip: str, now: float) -> ViewOpening:
        share = self.verify_token(token, now)
        if visitor_id and not valid_visitor(visitor_id):
            raise InvalidArgument("visitor_id", "8-40 letters, digits, '-' or '_'")
        if len(user_agent) > 4096:
            raise InvalidArgument("user_agent", "at most 4096 characters")
        if len(referrer) > 4096:
            raise InvalidArgument("referrer", "at most 4096 characters")
        if len(client_ip) > 100:
            raise InvalidArgument("client_ip", "at most 100 characters")
        visitor = visitor_id or secrets.token_urlsafe(18)
        ip_hash = privacy.hash_ip(client_ip, self.ip_salt) if client_ip else ""
        keys = [f"visitor:{visitor}"] + ([f"ip:{ip_hash}"] if ip_hash else [])
        return ViewOpening(share, visitor, keys, user_agent, referrer, ip_hash)

    def start(self, opening: ViewOpening, received_ms: int) -> tuple[StartedView, pb.IngestEvent]:
        """The view and its event, once the rate limit allowed it; append the event to ``partition_for(view)``."""
        share, user_agent = opening.share, opening.user_agent[:MAX_UA_CHARS]
        verdict = bots.classify_user_agent(user_agent)
        view_id = self.new_view_id()
        started = pb.ViewStarted(
            view=view_id, visitor_id=opening.visitor, share_id=share.share_id, parent_share_id=share.parent_share_id,
            post=share.post_id, revision=share.revision, rep=share.rep_id, team=share.team_id, copy_id=share.copy_id,
            contact=share.contact_id, bot=verdict.is_bot, bot_reason=verdict.reason[:60], ip_hash=opening.ip_hash,
            referrer_host=privacy.referrer_host(opening.referrer)[:255],
            user_agent_family=bots.user_agent_family(user_agent)[:24])
        forward, _ = self.tokens.child(share)
        return StartedView(view_id, opening.visitor, forward, verdict.is_bot), pb.IngestEvent(started=started,
                                                                                              received_ms=received_ms)


TOO_MANY_VIEWS = "too many views from this visitor or network; slow down"


class Ingest:
    def __init__(self, log_: EventLog, starts: ViewStarts, limiter: RateLimiter, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.log = log_
        self.starts = starts
        self.limiter = limiter
        self.clock = clock  # server receive time, unix seconds (tests and the demo simulate reading with it)

    @property
    def tokens(self) -> ShareTokens:
        return self.starts.tokens

    @property
    def refusals(self) -> Refusals:
        return self.starts.refusals

    @property
    def view_key(self) -> bytes:
        return self.starts.view_key

    def check_view(self, name: str, field: str) -> str:
        """The view id in ``views/{id}``; NOT_FOUND when it was not issued here."""
        return check_view(self.view_key, name, field)

    # ---- calls ----------------------------------------------------------------------------------

    def start_view(self, token: str, visitor_id: str, user_agent: str, referrer: str, client_ip: str,
                   now_ms: int | None = None) -> StartedView:
        opening = self.starts.open(token, visitor_id, user_agent, referrer, client_ip, self.clock())
        if not self.limiter.allow_views(opening.limit_keys):
            raise ResourceExhausted(TOO_MANY_VIEWS)
        started, event = self.starts.start(opening, int(self.clock() * 1000) if now_ms is None else now_ms)
        self.log.append([pb.IngestBatch(events=[event]).SerializeToString()], partition=self.log.partition_for(started.view))
        return started

    def record(self, heartbeats: Sequence[pb.Heartbeat], now_ms: int | None = None) -> tuple[int, int]:
        """Append heartbeats; returns (accepted, throttled)."""
        if len(heartbeats) > MAX_HEARTBEATS_PER_CALL:
            raise InvalidArgument("heartbeats", f"at most {MAX_HEARTBEATS_PER_CALL} per message")
        received = int(self.clock() * 1000) if now_ms is None else now_ms
        by_view: dict[str, list[pb.IngestEvent]] = {}
        names: dict[str, str] = {}
        for i, hb in enumerate(heartbeats):
            field = f"heartbeats[{i}]"
            view_id = names.get(hb.view) or self.check_view(hb.view, f"{field}.view")
            names[hb.view] = view_id
            if hb.seq <= 0:
                raise InvalidArgument(f"{field}.seq", "must be 1 or more")
            by_view.setdefault(view_id, []).append(
                heartbeat_event(view_id, hb.seq, hb.engaged_ms_delta, hb.max_scroll_percent, received))
        by_partition: dict[int, list[pb.IngestEvent]] = {}
        throttled = 0
        for view_id, events in by_view.items():
            if not self.limiter.allow_heartbeats(view_id, len(events)):  # a flood from one page, not a browser
                throttled += len(events)
                continue
            by_partition.setdefault(self.log.partition_for(view_id), []).extend(events)
        for partition, events in by_partition.items():
            self.log.append([pb.IngestBatch(events=events).SerializeToString()], partition=partition)
        return sum(len(e) for e in by_partition.values()), throttled

    def end_view(self, view: str, last_seq: int, now_ms: int | None = None) -> None:
        view_id = self.check_view(view, "view")
        if last_seq < 0:
            raise InvalidArgument("last_seq", "must not be negative")
        received = int(self.clock() * 1000) if now_ms is None else now_ms
        event = ended_event(view_id, last_seq, received)
        self.log.append([pb.IngestBatch(events=[event]).SerializeToString()], partition=self.log.partition_for(view_id))

