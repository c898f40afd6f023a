"""The tracking API as its callers meet it, on both backends (SQLite + memory log; PostgreSQL + Redis stream).

- who may call what: every role (and a rep or manager of someone else) against every RPC, written
  out here rather than read from api.ROLES, so a change there must be deliberate; editors get
  aggregates and never a contact's identity;
- the issue's bad input: forged and expired links refused and counted, replayed heartbeats
  deduplicated, inflated deltas capped, out-of-order heartbeats adding up, a flooding visitor
  limited without touching anyone else, forged view ids NOT_FOUND, an unparseable stream entry
  dead-lettered with its reason;
- fuzzing every RPC (raw bytes and hostile well-typed messages, the streaming ones too): never
  INTERNAL or UNKNOWN, INVALID_ARGUMENT names a field of the request, nobody past the door
  who should not be, and the consumer keeps up with whatever the ingest accepted;
- live activity, HQ's tag rules, bots, the forward chain and visit merging, end to end.

FUZZ_EXAMPLES=500 runs a deeper hunt locally (40 per property by default, so the file stays quick).
"""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from services.protos.contentops.distribution.v1 import distribution_pb2 as dpb
from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.shared.identity.domain import Role
from services.shared.ids import new_id
from services.tracking import api
from services.tracking.activity import CHANNEL, MemoryHub, RedisHub
from services.tracking.domain.engagement import MAX_DELTA_MS

from .helpers import wait_for
from .test_api_fuzz import (
    Seed,
    all_strings,
    assert_clean,
    hostile_text,
    ids,
    message_class,
    mutated,
    numbers,
    page_tokens,
    proto_messages,
    raw_message,
    use_non_utc_database_timezone,
    weighted,
)
from .tracking_harness import Metadata, Track

SERVICE = pb.DESCRIPTOR.services_by_name["TrackingService"]
METHODS: list[MethodDescriptor] = list(SERVICE.methods)

TITLE = "5岁小姑娘的创造力启蒙三步走"
BODY = "5岁小姑娘的创造力启蒙，其实只需要三步：每天15分钟自由涂鸦，一起读一本图画书，周末一次户外观察。" * 4
INSURANCE_TITLE = "给孩子买保险，先看这三点"
INSURANCE_BODY = "重疾险、医疗险、意外险怎么搭配？预算有限时先保大人，再保孩子，保额比保费更重要。" * 4
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 MicroMessenger/8.0.47"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 "
            "Safari/537.36")
IP = "203.0.113.7"

FUZZ = hsettings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---- the scene: two teams, a rep in each, their managers, a published post ----------------------------------


@dataclass
class Scene:
    t: Track
    post: str  # "早教" post, titled TITLE
    topic: str
    rep: dpb.Rep  # 王老师, teams/east
    md: Metadata
    other: dpb.Rep  # 李老师, teams/west
    other_md: Metadata
    sales: Metadata  # manager of teams/east
    sales_other: Metadata  # manager of teams/west
    token: str  # 王老师's own share token for the post
    other_token: str

    def link(self, name: str, rep: dpb.Rep | None = None) -> pb.ContactLink:
        """A per-contact link, made by the rep (王老师 unless ``rep``) from their own share of the post."""
        rep = rep or self.rep
        md, token = (self.md, self.token) if rep.name == self.rep.name else (self.other_md, self.other_token)
        return self.t.stub.CreateContactLink(pb.CreateContactLinkRequest(
            parent=rep.name, share_token=token, contact_display_name=name), metadata=md)

    def profile(self, contact: str) -> pb.ContactProfile:
        return self.t.stub.GetContactProfile(pb.GetContactProfileRequest(name=contact), metadata=self.t.admin)

    def analytics(self, post: str = "") -> pb.PostAnalytics:
        return self.t.stub.GetPostAnalytics(pb.GetPostAnalyticsRequest(post=post or self.post), metadata=self.t.editor)


def scene(t: Track) -> Scene:
    t.team("east", "华东")
    t.team("west", "西部")
    topic = t.topic("early-education", "早教")
    post = t.publish(TITLE, BODY, [topic], images=0)
    rep, md = t.rep("王老师", team="teams/east")
    other, other_md = t.rep("李老师", team="teams/west")
    return Scene(t, post, topic, rep, md, other, other_md, t.sales("east"), t.sales("west"),
                 t.share_token(post, rep, md), t.share_token(post, other, other_md))


def start(t: Track, token: str, visitor: str = "", ua: str = PHONE, ip: str = IP) -> pb.StartViewResponse:
    return t.stub.StartView(pb.StartViewRequest(share_token=token, visitor_id=visitor, user_agent=ua, client_ip=ip),
                            metadata=t.edge)


def beat(t: Track, view: str, seq: int, delta_ms: int = 10_000, scroll: int = 50) -> pb.RecordEngagementResponse:
    """One heartbeat in its own RecordEngagement call, received at the track's clock."""
    return t.stub.RecordEngagement(iter([pb.RecordEngagementRequest(heartbeats=[pb.Heartbeat(
        view=view, seq=seq, engaged_ms_delta=delta_ms, max_scroll_percent=scroll)])]), metadata=t.edge)


def outcome(call: Callable[[], object]) -> str:
    """"OK", or the status code's name the call failed with."""
    try:
        call()
    except grpc.RpcError as err:
        return err.code().name  # type: ignore[attr-defined, no-any-return]
    return "OK"


def failure(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()  # type: ignore[attr-defined]


def engaged_seconds(s: Scene, contact: str) -> list[int]:
    """The contact's visits' engaged seconds, newest first, as the profile's timeline shows them."""
    return [e.engaged_seconds for e in s.profile(contact).timeline]


# ---- live activity ----------------------------------------------------------------------------------------


def listeners(t: Track, rep_id: str) -> int:
    """Open WatchActivity streams for the rep on this server's hub."""
    hub = t.app.hub
    if isinstance(hub, MemoryHub):
        with hub._lock:
            return len(hub._listeners.get(rep_id, ()))
    if isinstance(hub, RedisHub):
        return int(dict(hub.client.pubsub_numsub(CHANNEL + rep_id)).get((CHANNEL + rep_id).encode(), 0))
    raise AssertionError(f"unknown hub {hub!r}")


class Watcher:
    """A WatchActivity stream read on a thread, so a test can wait on it with a timeout."""

    def __init__(self, t: Track, rep: str, md: Metadata) -> None:
        self.t = t
        self.rep_id = rep.split("/", 1)[1]
        self.call = t.stub.WatchActivity(pb.WatchActivityRequest(rep=rep), metadata=md, timeout=120)
        self.events: queue.Queue[pb.WatchActivityResponse] = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for message in self.call:
                self.events.put(message)
        except grpc.RpcError as err:
            self.error = err
        finally:
            self.ended.set()

    def listening(self, count: int = 1) -> bool:
        """True once the server listens for the rep on this stream's behalf; False when it ended (refused) first."""
        wait_for(lambda: self.ended.is_set() or listeners(self.t, self.rep_id) >= count, "the stream listens or ends")
        return not self.ended.is_set()

    def next(self, timeout: float = 5.0) -> pb.WatchActivityResponse:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no activity for reps/{self.rep_id} within {timeout} s") from None

    def close(self) -> None:
        self.call.cancel()
        self.ended.wait(5)


# ---- 1. authorisation ------------------------------------------------------------------------------------

CALLERS = ["admin", "editor", "rep", "rep_other", "sales", "sales_other", "service", "none", "garbage"]
ROLE_OF: dict[str, Role | None] = {"admin": Role.ADMIN, "editor": Role.EDITOR, "rep": Role.REP, "rep_other": Role.REP,
                                   "sales": Role.SALES, "sales_other": Role.SALES, "service": Role.SERVICE,
                                   "none": None, "garbage": None}
INGEST = {"admin", "service"}
CONTACTS = {"admin", "rep", "sales"}  # the rep, and the manager of the rep's team; never another team's
HQ = {"admin", "editor"}
# Who succeeds at each RPC on 王老师's resources (everyone else is refused).
ALLOWED: dict[str, set[str]] = {
    "StartView": INGEST,
    "RecordEngagement": INGEST,
    "EndView": INGEST,
    "CreateContactLink": {"admin", "rep"},  # a rep links only for themselves; managers do not make links
    "ListContacts": CONTACTS,
    "GetContactProfile": CONTACTS,
    "ListLeads": CONTACTS,
    "WatchActivity": CONTACTS,
    "EraseContact": CONTACTS,
    "GetPostAnalytics": HQ,
    "CreateTagRule": HQ,
    "ListTagRules": HQ,
    "DeleteTagRule": HQ,
}


def refused(caller: str) -> str:
    return "UNAUTHENTICATED" if ROLE_OF[caller] is None else "PERMISSION_DENIED"


def test_the_roles_table_names_every_rpc_of_the_service_as_this_file_expects() -> None:
    methods = {m.name for m in METHODS}
    assert set(api.ROLES) == methods
    assert set(ALLOWED) == methods
    door = {rpc: {ROLE_OF[c] for c in callers} for rpc, callers in ALLOWED.items()}
    assert {rpc: set(roles) for rpc, roles in api.ROLES.items()} == door


def caller_metadata(s: Scene) -> dict[str, Metadata]:
    t = s.t
    return {"admin": t.admin, "editor": t.editor, "rep": s.md, "rep_other": s.other_md, "sales": s.sales,
            "sales_other": s.sales_other, "service": t.edge, "none": (),
            "garbage": (("authorization", "Bearer co_" + "a" * 26 + "_" + "b" * 43),)}


def test_every_role_gets_exactly_the_rpcs_it_may_call_and_refusals_change_nothing(track: Track) -> None:
    s = scene(track)
    t = s.t
    md = caller_metadata(s)
    seeded = s.link("优优妈妈")
    view = t.read(seeded.share_token, 30).view  # the rep is known to tracking, with a contact and a lead
    t.settle()
    seqs = iter(range(100, 10_000))
    erased: dict[str, str] = {}  # caller -> the contact they tried to erase
    rules_made: dict[str, str] = {}  # caller -> the rule they tried to delete

    def watch(m: Metadata) -> None:
        t.settle()  # the views earlier calls started are announced before this watcher listens, not to it
        wait_for(lambda: listeners(t, s.rep.name.split("/")[1]) == 0, "earlier streams closed")
        w = Watcher(t, s.rep.name, m)
        try:
            if not w.listening():
                assert w.error is not None
                raise w.error
            start(t, seeded.share_token)
            got = w.next()
            assert got.contact == seeded.contact.name and got.post == s.post, got
        finally:
            w.close()

    def erase(caller: str, m: Metadata) -> None:
        doomed = t.stub.CreateContactLink(pb.CreateContactLinkRequest(
            parent=s.rep.name, share_token=s.token, contact_display_name=f"待删 {caller}"), metadata=t.admin).contact
        erased[caller] = doomed.name
        t.stub.EraseContact(pb.EraseContactRequest(name=doomed.name), metadata=m)

    def delete_rule(caller: str, m: Metadata) -> None:
        rule = t.stub.CreateTagRule(pb.CreateTagRuleRequest(tag_rule=pb.TagRule(
            topic="*", min_engaged_seconds=30, min_visits=1, window_days=30, label=f"待删 {caller}")), metadata=t.admin)
        rules_made[caller] = rule.name
        t.stub.DeleteTagRule(pb.DeleteTagRuleRequest(name=rule.name), metadata=m)

    calls: dict[str, Callable[[str, Metadata], object]] = {
        "StartView": lambda c, m: t.stub.StartView(pb.StartViewRequest(share_token=s.token, user_agent=PHONE,
                                                                       client_ip=IP), metadata=m),
        "RecordEngagement": lambda c, m: t.stub.RecordEngagement(iter([pb.RecordEngagementRequest(heartbeats=[
            pb.Heartbeat(view=view, seq=next(seqs), engaged_ms_delta=1_000)])]), metadata=m),
        "EndView": lambda c, m: t.stub.EndView(pb.EndViewRequest(view=view), metadata=m),
        "CreateContactLink": lambda c, m: t.stub.CreateContactLink(pb.CreateContactLinkRequest(
            parent=s.rep.name, share_token=s.token, contact_display_name=f"新客户 {c}"), metadata=m),
        "ListContacts": lambda c, m: t.stub.ListContacts(pb.ListContactsRequest(parent=s.rep.name), metadata=m),
        "GetContactProfile": lambda c, m: t.stub.GetContactProfile(pb.GetContactProfileRequest(
            name=seeded.contact.name), metadata=m),
        "ListLeads": lambda c, m: t.stub.ListLeads(pb.ListLeadsRequest(parent=s.rep.name), metadata=m),
        "WatchActivity": lambda c, m: watch(m),
        "EraseContact": erase,
        "GetPostAnalytics": lambda c, m: t.stub.GetPostAnalytics(pb.GetPostAnalyticsRequest(post=s.post), metadata=m),
        "CreateTagRule": lambda c, m: t.stub.CreateTagRule(pb.CreateTagRuleRequest(tag_rule=pb.TagRule(
            topic=s.topic, min_engaged_seconds=60, min_visits=1, window_days=7, label=f"规则 {c}")), metadata=m),
        "ListTagRules": lambda c, m: t.stub.ListTagRules(pb.ListTagRulesRequest(), metadata=m),
        "DeleteTagRule": delete_rule,
    }
    assert set(calls) == {m.name for m in METHODS}
    got = {rpc: {c: outcome(lambda call=call, c=c: call(c, md[c])) for c in CALLERS} for rpc, call in calls.items()}
    expected = {rpc: {c: "OK" if c in ALLOWED[rpc] else refused(c) for c in CALLERS} for rpc in calls}
    assert got == expected

    # Refused calls left no trace: the contacts they tried to erase are there, the rules they tried to delete too.
    t.settle()
    for caller, contact in erased.items():
        there = outcome(lambda contact=contact: s.profile(contact))
        assert there == ("NOT_FOUND" if caller in ALLOWED["EraseContact"] else "OK"), (caller, there)
    listed = {r.name for r in t.stub.ListTagRules(pb.ListTagRulesRequest(), metadata=t.admin).tag_rules}
    assert {c for c, rule in rules_made.items() if rule in listed} == set(CALLERS) - ALLOWED["DeleteTagRule"]
    made = {r.label for r in t.stub.ListTagRules(pb.ListTagRulesRequest(), metadata=t.admin).tag_rules
            if r.label.startswith("规则 ")}
    assert made == {f"规则 {c}" for c in ALLOWED["CreateTagRule"]}


def test_a_manager_sees_their_team_reps_contacts_before_anyone_has_opened_a_link(track: Track) -> None:
    s = scene(track)
    link = s.link("优优妈妈")
    for md in (s.sales, s.md):
        listed = track.stub.ListContacts(pb.ListContactsRequest(parent=s.rep.name), metadata=md)
        assert [c.name for c in listed.contacts] == [link.contact.name]
    code, _ = failure(lambda: track.stub.ListContacts(pb.ListContactsRequest(parent=s.rep.name), metadata=s.sales_other))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_editors_see_post_analytics_without_any_contact_identity(track: Track) -> None:
    s = scene(track)
    link = s.link("优优妈妈")
    visitor = "visitor-of-youyou-42"
    track.read(link.share_token, 70, visitor=visitor)
    anonymous = track.read(s.token, 40)
    track.settle()
    contacts = track.stub.ListContacts(pb.ListContactsRequest(parent=s.rep.name), metadata=s.md).contacts
    assert len(contacts) == 2
    analytics = s.analytics()
    assert (analytics.views, analytics.unique_viewers) == (2, 2)
    raw = analytics.SerializeToString()
    for secret in (visitor, anonymous.visitor_id, *(c.name for c in contacts), *(c.display_name for c in contacts),
                   *(c.name.rsplit("/", 1)[1] for c in contacts)):
        assert secret.encode() not in raw, secret


# ---- 2. bad input -------------------------------------------------------------------------------------------


def tampered(token: str) -> str:
    payload, _, signature = token.partition(".")
    return f"{payload}.{('B' if signature[0] == 'A' else 'A')}{signature[1:]}"


def test_a_forged_share_token_is_refused_and_counted(track: Track) -> None:
    s = scene(track)
    before = track.app.ingest.refusals.snapshot()
    for forged in (tampered(s.token), s.token.partition(".")[0] + ".", s.token + "x"):
        code, details = failure(lambda forged=forged: start(track, forged))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("share_token:"), details
    assert track.app.ingest.refusals.snapshot() == {**before, "forged": before.get("forged", 0) + 3}
    track.settle()
    assert s.analytics().views == 0 and track.app.event_log.stats().length == 0


def test_an_expired_share_token_is_refused_and_counted(track: Track) -> None:
    s = scene(track)
    assert start(track, s.token).view  # fresh: fine
    before = track.app.ingest.refusals.snapshot()
    track.clock.advance((track.app.settings.tracking_token_max_age_days + 1) * 86_400)
    code, details = failure(lambda: start(track, s.token))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "expired" in details, details
    assert track.app.ingest.refusals.snapshot() == {**before, "expired": before.get("expired", 0) + 1}
    track.settle()
    assert s.analytics().views == 1


def test_a_replayed_heartbeat_is_counted_once(track: Track) -> None:
    s = scene(track)
    link = s.link("优优妈妈")
    view = start(track, link.share_token).view
    for seq in (1, 2):
        track.clock.advance(10)
        beat(track, view, seq)
    track.settle()
    once = engaged_seconds(s, link.contact.name)
    assert once == [20]
    track.clock.advance(10)
    beat(track, view, 2)  # the browser retried its flush
    track.stub.RecordEngagement(iter([pb.RecordEngagementRequest(heartbeats=[  # and a proxy replayed both, twice
        pb.Heartbeat(view=view, seq=1, engaged_ms_delta=10_000), pb.Heartbeat(view=view, seq=2, engaged_ms_delta=10_000)])] * 2),
        metadata=track.edge)
    track.settle()
    assert engaged_seconds(s, link.contact.name) == once


def test_an_inflated_delta_counts_at_most_one_interval_plus_slack_per_heartbeat(track: Track) -> None:
    s = scene(track)
    link = s.link("优优妈妈")
    view = start(track, link.share_token).view
    for seq in (1, 2, 3):
        track.clock.advance(60)  # a minute apart, each claiming an hour
        beat(track, view, seq, delta_ms=3_600_000)
    track.settle()
    assert engaged_seconds(s, link.contact.name) == [3 * MAX_DELTA_MS // 1000]
    assert MAX_DELTA_MS <= 15_000


def test_out_of_order_heartbeats_add_up_to_the_same_total_as_in_order(track: Track) -> None:
    s = scene(track)
    ordered, shuffled, batched = s.link("按序"), s.link("乱序"), s.link("一批")
    seqs = [1, 2, 3, 4, 5, 6]
    for link, order in ((ordered, seqs), (shuffled, [4, 6, 1, 5, 3, 2])):
        view = start(track, link.share_token).view
        for i, seq in enumerate(order):
            track.clock.advance(10)
            beat(track, view, seq, delta_ms=7_000 + 100 * seq, scroll=15 * i)
    view = start(track, batched.share_token).view
    track.clock.advance(60)
    track.stub.RecordEngagement(iter([pb.RecordEngagementRequest(heartbeats=[
        pb.Heartbeat(view=view, seq=seq, engaged_ms_delta=7_000 + 100 * seq) for seq in reversed(seqs)])]),
        metadata=track.edge)
    track.settle()
    in_order = engaged_seconds(s, ordered.contact.name)
    assert in_order == [sum(7_000 + 100 * seq for seq in seqs) // 1000]
    assert engaged_seconds(s, shuffled.contact.name) == in_order
    assert engaged_seconds(s, batched.contact.name) == in_order


def test_a_flood_of_views_from_one_visitor_is_limited_without_affecting_anyone_else(track: Track) -> None:
    s = scene(track)
    flooder = "flooding-visitor-1"
    codes: list[str] = []
    while len(codes) < 200 and "RESOURCE_EXHAUSTED" not in codes:  # a script reopening the page in a loop
        codes.append(outcome(lambda: start(track, s.token, visitor=flooder, ip="198.51.100.9")))
    assert codes[-1] == "RESOURCE_EXHAUSTED" and set(codes[:-1]) == {"OK"}, codes
    assert outcome(lambda: start(track, s.token, visitor=flooder, ip="192.0.2.1")) == "RESOURCE_EXHAUSTED"
    assert start(track, s.token, visitor="another-visitor-2", ip="192.0.2.1").view  # someone else, elsewhere
    assert start(track, s.token, visitor="a-neighbour-on-wifi", ip="198.51.100.9").view  # the same network
    track.settle()
    assert s.analytics().views == codes.count("OK") + 2


def test_a_view_id_not_issued_by_the_service_is_not_found(track: Track) -> None:
    s = scene(track)
    real = start(track, s.token).view
    uid, _, sig = real.removeprefix("views/").partition("-")
    forged = [f"views/{new_id()}-{'0' * 16}", f"views/{uid}-{('1' if sig[0] == '0' else '0')}{sig[1:]}", f"views/{uid}",
              f"views/{uid}-", f"views/{new_id()}-{sig}"]
    for view in forged:
        code, _ = failure(lambda view=view: beat(track, view, 1))
        assert code == grpc.StatusCode.NOT_FOUND, view
        code, _ = failure(lambda view=view: track.stub.EndView(pb.EndViewRequest(view=view), metadata=track.edge))
        assert code == grpc.StatusCode.NOT_FOUND, view
    assert beat(track, real, 1).accepted == 1


def test_an_unparseable_stream_entry_is_dead_lettered_with_its_reason_and_the_rest_applied(track: Track) -> None:
    s = scene(track)
    link = s.link("优优妈妈")
    log = track.app.event_log
    garbage = b"\xff\xfe not an ingest batch \x00"
    kindless = pb.IngestBatch(events=[pb.IngestEvent()]).SerializeToString()
    log.append([garbage, kindless], partition=0)
    track.read(link.share_token, 30)
    track.settle()
    dead = {d.payload: d.reason for d in log.dead_letters()}
    assert set(dead) == {garbage, kindless}
    assert all("unparseable" in reason for reason in dead.values()), dead
    assert "without a kind" in dead[kindless]
    assert engaged_seconds(s, link.contact.name) == [30]


# ---- 3. fuzzing -------------------------------------------------------------------------------------------


@dataclass
class FuzzWorld:
    s: Scene
    seed: Seed  # md per caller, names, page tokens and valid requests, as test_api_fuzz's helpers expect
    tokens: list[str]
    views: list[str]
    keeper: pb.ContactLink  # in no pool: its profile must read back unchanged whatever is sent
    keeper_timeline: list[tuple[str, int]]
    reps: list[str] = field(default_factory=list)
    contacts: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)


def fuzz_world(t: Track) -> FuzzWorld:
    cached = getattr(t, "_fuzz_world", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    use_non_utc_database_timezone(t.harness)
    t.app.db.engine.dispose()
    s = scene(t)
    keeper = s.link("留档客户")
    t.read(keeper.share_token, 40)
    pooled = s.link("优优妈妈")
    first = t.read(pooled.share_token, 20)
    other = s.link("乐乐爸爸", rep=s.other)
    rule = t.stub.CreateTagRule(pb.CreateTagRuleRequest(tag_rule=pb.TagRule(
        topic=s.topic, min_engaged_seconds=10, min_visits=1, window_days=30, label="{topic}·读过")), metadata=t.admin)
    t.settle()
    contacts = [pooled.contact.name, other.contact.name,
                f"{s.rep.name}/contacts/{other.contact.name.rsplit('/', 1)[1]}", f"{s.rep.name}/contacts/{'z' * 26}"]
    seed = Seed(md=caller_metadata(s))
    seed.page_tokens = [p for p in (
        t.stub.ListContacts(pb.ListContactsRequest(parent=s.rep.name, page_size=1), metadata=t.admin).next_page_token,
        t.stub.ListLeads(pb.ListLeadsRequest(parent=s.rep.name, page_size=1), metadata=t.admin).next_page_token,
    ) if p]
    assert len(seed.page_tokens) == 2
    reps = [s.rep.name, s.other.name, "reps/" + "z" * 26]
    seed.names = [*reps, *contacts, s.post, "posts/" + "z" * 26, s.topic, "topics/nope", rule.name, "tagRules/" + "z" * 26,
                  first.view]

    def m(name: str) -> MethodDescriptor:
        return SERVICE.methods_by_name[name]

    seed.valid_requests = [
        (m("StartView"), pb.StartViewRequest(share_token=s.token, visitor_id="fuzz-visitor-1", user_agent=PHONE,
                                             referrer="https://mp.weixin.qq.com/s/x", client_ip=IP).SerializeToString()),
        (m("RecordEngagement"), pb.RecordEngagementRequest(heartbeats=[pb.Heartbeat(
            view=first.view, seq=50, engaged_ms_delta=10_000, max_scroll_percent=80)]).SerializeToString()),
        (m("EndView"), pb.EndViewRequest(view=first.view, last_seq=2).SerializeToString()),
        (m("CreateContactLink"), pb.CreateContactLinkRequest(parent=s.rep.name, share_token=s.token,
                                                             contact_display_name="新客户").SerializeToString()),
        (m("ListContacts"), pb.ListContactsRequest(parent=s.rep.name, page_size=1,
                                                   page_token=seed.page_tokens[0]).SerializeToString()),
        (m("GetContactProfile"), pb.GetContactProfileRequest(name=pooled.contact.name).SerializeToString()),
        (m("ListLeads"), pb.ListLeadsRequest(parent=s.rep.name, page_size=1,
                                             page_token=seed.page_tokens[1]).SerializeToString()),
        (m("WatchActivity"), pb.WatchActivityRequest(rep=s.rep.name).SerializeToString()),
        (m("EraseContact"), pb.EraseContactRequest(name=pooled.contact.name).SerializeToString()),
        (m("GetPostAnalytics"), pb.GetPostAnalyticsRequest(post=s.post).SerializeToString()),
        (m("CreateTagRule"), pb.CreateTagRuleRequest(tag_rule=pb.TagRule(
            topic=s.topic, min_engaged_seconds=30, min_visits=2, window_days=30, label="早教意向·高")).SerializeToString()),
        (m("ListTagRules"), pb.ListTagRulesRequest().SerializeToString()),
        (m("DeleteTagRule"), pb.DeleteTagRuleRequest(name=rule.name).SerializeToString()),
    ]
    assert {mm.name for mm, _ in seed.valid_requests} == {mm.name for mm in METHODS}
    w = FuzzWorld(s, seed, [s.token, s.other_token, pooled.share_token, other.share_token, first.forward_share_token],
                  [first.view], keeper, timeline_of(s, keeper), reps, contacts, [rule.name])
    t._fuzz_world = w  # type: ignore[attr-defined]
    return w


def timeline_of(s: Scene, link: pb.ContactLink) -> list[tuple[str, int]]:
    return [(e.post, e.engaged_seconds) for e in s.profile(link.contact.name).timeline]


def forged_views(w: FuzzWorld) -> st.SearchStrategy[str]:
    real = st.sampled_from(w.views)
    return st.one_of(
        st.builds(lambda u, sig: f"views/{u}-{sig}", st.from_regex(r"[0-9a-z]{26}", fullmatch=True),
                  st.from_regex(r"[0-9a-f]{16}", fullmatch=True)),
        st.builds(lambda v, i, c: v[:i % len(v)] + c + v[i % len(v) + 1:], real, st.integers(0, 100),
                  st.sampled_from(["0", "a", "-", "/", "\x00", "é"])),
        st.builds(lambda v, n: v[: n % (len(v) + 1)], real, st.integers(0, 100)),
        st.builds(lambda v, x: v + x, real, st.sampled_from(["\n", "0", "-0", " "])),
        hostile_text,
    )


def forged_tokens(w: FuzzWorld) -> st.SearchStrategy[str]:
    real = st.sampled_from(w.tokens)
    return st.one_of(
        real.map(tampered),
        st.builds(lambda tk, i, c: tk[:i % len(tk)] + c + tk[i % len(tk) + 1:], real, st.integers(0, 1000),
                  st.sampled_from(["A", "_", ".", "=", "\x00", "é"])),
        st.builds(lambda a, b: a.partition(".")[0] + "." + b.partition(".")[2], real, real),
        st.builds(lambda tk, n: tk[: n % (len(tk) + 1)], real, st.integers(0, 1000)),
        st.sampled_from(["", ".", "a.b", "e30.AAAA", "eyJ2IjoxfQ.AAAAAAAAAAAAAAAAAAAAAA", "x" * 1025]),
        hostile_text,
    )


def hostile_names(w: FuzzWorld) -> st.SearchStrategy[str]:
    collections = st.sampled_from(["reps", "posts", "topics", "tagRules", "views", "contacts", "teams", "", "Reps"])
    return st.one_of(
        st.builds(lambda c, i: f"{c}/{i}", collections, ids),
        st.builds(lambda r, c: f"{r}/contacts/{c}", st.sampled_from(w.reps), ids),
        st.builds(lambda n, x: n + x, st.sampled_from(w.seed.names), st.sampled_from(["\n", "/", "x", "\x00", " ", "/contacts"])),
        st.builds(lambda n, cut: n[: cut % (len(n) + 1)], st.sampled_from(w.seed.names), st.integers(0, 80)),
        hostile_text,
    )


NAMES = {"parent", "rep", "name", "contact", "post", "topic"}


def plausible(f: FieldDescriptor, w: FuzzWorld) -> st.SearchStrategy[str]:
    name = f.name
    if name == "share_token":
        return st.sampled_from(w.tokens)
    if name == "view":
        return st.sampled_from(w.views)
    if name in ("parent", "rep"):
        return st.sampled_from(w.reps)
    if name in ("name", "contact"):
        return st.sampled_from([*w.contacts, *w.rules])
    if name == "post":
        return st.sampled_from([w.s.post, "posts/" + "z" * 26])
    if name == "topic":
        return st.sampled_from([w.s.topic, "*", "topics/nope"])
    if name == "visitor_id":
        return st.one_of(st.just(""), st.from_regex(r"[A-Za-z0-9_-]{8,40}", fullmatch=True))
    if name == "user_agent":
        return st.sampled_from([PHONE, GOOGLEBOT, HEADLESS, "", "-"])
    if name == "referrer":
        return st.sampled_from(["", "https://mp.weixin.qq.com/s/abc?from=timeline", "http://10.0.0.1/x", "not a url"])
    if name == "client_ip":
        return st.sampled_from([IP, "2001:db8::1", "::ffff:1.2.3.4", "[2001:db8::1]", "fe80::1%eth0", "", "999.1.1.1"])
    if name == "day":
        return st.one_of(st.just(""), st.dates().map(lambda d: d.isoformat()))
    if name == "page_token":
        return st.sampled_from(["", *w.seed.page_tokens])
    return st.text(alphabet="abc 中文保险·高{topic}😀", min_size=1, max_size=45)


def hostile(f: FieldDescriptor, w: FuzzWorld) -> st.SearchStrategy[str]:
    name = f.name
    if name == "share_token":
        return forged_tokens(w)
    if name == "view":
        return forged_views(w)
    if name in NAMES:
        return hostile_names(w)
    if name == "day":
        return st.one_of(st.sampled_from(["2024-02-30", "9999-99-99", "2024-1-1", "0000-01-01", "2024-01-01\n",
                                          "２０２４-01-01", "2024-13-01"]), hostile_text)
    if name == "page_token":
        return page_tokens(w.seed)
    if name in ("label", "contact_display_name", "user_agent", "referrer", "client_ip", "visitor_id"):
        return st.one_of(hostile_text, st.builds(lambda c, n: c * n, st.sampled_from(["a", "中", "😀", " ", "."]),
                                                  st.sampled_from([7, 8, 40, 41, 60, 61, 100, 101, 4096, 4097])))
    return hostile_text


def scalar(f: FieldDescriptor, w: FuzzWorld) -> st.SearchStrategy[Any]:
    if (number := numbers(f, (0, -1, 1, 100, 101, 1000, 1001, 1024, 15_000, 15_001))) is not None:
        return number
    if f.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    return weighted(plausible(f, w), hostile(f, w))


def messages(desc: Descriptor, w: FuzzWorld, sparse: bool = False) -> st.SearchStrategy[Any]:
    """Random, well-typed instances of ``desc`` with hostile values in every field."""
    return proto_messages(desc, lambda f: scalar(f, w), sparse=sparse, dense=(True, True, False))


# Mostly callers who get past the door for some RPC; every kind of caller sometimes.
FUZZ_CALLERS = ["admin"] * 5 + ["service"] * 3 + ["editor"] * 2 + ["rep"] * 2 + ["sales", "rep_other", "sales_other",
                                                                               "none", "garbage"]
STREAM_WAIT_S = 0.3  # how long a WatchActivity the fuzzer opened is left listening


def invoke(channel: grpc.Channel, method: MethodDescriptor, payload: bytes | list[bytes],
           md: Metadata) -> tuple[grpc.StatusCode, str]:
    """Call ``method`` with serialised bytes; a WatchActivity that listens is cut after STREAM_WAIT_S."""
    path = f"/{SERVICE.full_name}/{method.name}"
    try:
        if method.client_streaming:
            messages_ = payload if isinstance(payload, list) else [payload]
            channel.stream_unary(path)(iter(messages_), metadata=md, timeout=30)
        elif method.server_streaming:
            for _ in channel.unary_stream(path)(payload, metadata=md, timeout=STREAM_WAIT_S):
                pass
        else:
            channel.unary_unary(path)(payload, metadata=md, timeout=30)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def check(method: MethodDescriptor, who: str, code: grpc.StatusCode, details: str, request: object) -> None:
    assert_clean(method, code, details, request)
    if code == grpc.StatusCode.INVALID_ARGUMENT:  # and the field named is one of this request's
        named = details.partition(":")[0].strip()
        root = re.split(r"[.\[]", named, maxsplit=1)[0]
        assert root == "request" or root in method.input_type.fields_by_name, (method.name, details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        assert method.server_streaming, (method.name, details)  # only a stream left listening may run out of time
    role = ROLE_OF[who]
    if role is None:
        assert code == grpc.StatusCode.UNAUTHENTICATED, (method.name, who, code, details)
    elif role not in {ROLE_OF[c] for c in ALLOWED[method.name]}:
        assert code == grpc.StatusCode.PERMISSION_DENIED, (method.name, who, code, details)


def still_works(w: FuzzWorld) -> None:
    """Whatever the ingest accepted, the consumer applied (nothing stuck, nothing dead-lettered), and reads work."""
    t = w.s.t
    t.settle()
    assert t.app.event_log.dead_letters() == []
    assert timeline_of(w.s, w.keeper) == w.keeper_timeline
    t.stub.ListTagRules(pb.ListTagRulesRequest(), metadata=t.editor)
    w.s.analytics()


@FUZZ
@given(data=st.data())
def test_raw_bytes_to_any_rpc_never_give_internal(track: Track, data: st.DataObject) -> None:
    w = fuzz_world(track)
    method = data.draw(st.sampled_from(METHODS), label="method")
    who = data.draw(st.sampled_from(FUZZ_CALLERS), label="caller")
    body = st.one_of(st.binary(max_size=300), raw_message(method.input_type))
    payload: bytes | list[bytes] = data.draw(st.lists(body, max_size=3) if method.client_streaming else body, label="body")
    if data.draw(st.integers(0, 3), label="mutate") == 0:  # a valid request, slightly damaged
        method, payload = data.draw(mutated(w.seed), label="mutated")
    assert track.channel is not None
    code, details = invoke(track.channel, method, payload, w.seed.md[who])
    event(f"{method.name}: {code.name}")
    check(method, who, code, details, payload)
    still_works(w)


@FUZZ
@given(data=st.data())
def test_hostile_messages_to_any_rpc_never_give_internal(track: Track, data: st.DataObject) -> None:
    w = fuzz_world(track)
    method = data.draw(st.sampled_from(METHODS), label="method")
    who = data.draw(st.sampled_from(FUZZ_CALLERS), label="caller")
    count = data.draw(st.integers(1, 3), label="messages") if method.client_streaming else 1
    requests = []
    for _ in range(count):
        request = data.draw(messages(method.input_type, w), label="request")
        if data.draw(st.booleans(), label="start from a valid request"):
            valid = next(v for m, v in w.seed.valid_requests if m.name == method.name)
            request = message_class(method.input_type).FromString(valid)
            request.MergeFrom(data.draw(messages(method.input_type, w, sparse=True), label="changes"))
        requests.append(request)
    assert track.channel is not None
    payload = [r.SerializeToString() for r in requests]
    code, details = invoke(track.channel, method, payload if method.client_streaming else payload[0], w.seed.md[who])
    event(f"{method.name}: {code.name}")
    check(method, who, code, details, requests)
    still_works(w)


def test_every_rpc_survives_canned_hostile_requests(track: Track) -> None:
    """A fixed sweep so no RPC is left to chance: every string at every depth set to one hostile value, as an
    admin (who gets past every door), and as the caller each RPC is meant for."""
    w = fuzz_world(track)
    token, view = w.tokens[0], w.views[0]
    values = ["", "\x00", "é" * 3000, "reps/\u202e", "a" * 64, "reps/x\n", f"{w.reps[0]}\n", f"{w.contacts[0]}\n",
              token + "\n", tampered(token), token.replace(".", ".."), view + "\n", view.upper(), "views/-", "*",
              "topics/" + "a" * 64, "tagRules/default-1", "2024-02-30", "\ud7ff" * 10]
    bodies = [b"", b"\xff", b"\x0a\x02\xff\xfe", b"\x0a\x80", b"\x12\x7f"]
    assert track.channel is not None
    for method in METHODS:
        callers = ["admin", next(c for c in CALLERS if c in ALLOWED[method.name] and c != "admin")]
        for body in [*bodies, *(all_strings(method.input_type, v).SerializeToString() for v in values)]:
            for who in callers:
                code, details = invoke(track.channel, method, body, w.seed.md[who])
                check(method, who, code, details, body)
    still_works(w)


# ---- 4. live activity ---------------------------------------------------------------------------------------


def test_a_reps_activity_stream_tells_them_who_is_reading_now_and_never_another_reps_news(track: Track) -> None:
    s = scene(track)
    mine, theirs = s.link("优优妈妈"), s.link("乐乐爸爸", rep=s.other)
    watch_mine, watch_theirs = Watcher(track, s.rep.name, s.md), Watcher(track, s.other.name, s.other_md)
    try:
        assert watch_mine.listening() and watch_theirs.listening()
        view = start(track, mine.share_token).view
        got = watch_mine.next(timeout=5.0)  # the bound: the rep hears of it within 5 s
        assert got.message == f"优优妈妈 正在阅读《{TITLE}》"
        assert (got.contact, got.post, got.kind) == (mine.contact.name, s.post, pb.ACTIVITY_KIND_VIEW_STARTED)
        track.clock.advance(10)
        beat(track, view, 1)
        track.stub.EndView(pb.EndViewRequest(view=view, last_seq=1), metadata=track.edge)
        ended = watch_mine.next(timeout=5.0)
        assert ended.kind == pb.ACTIVITY_KIND_VIEW_ENDED and f"读完《{TITLE}》" in ended.message

        start(track, theirs.share_token)  # the other rep's first news is their own: 优优妈妈 never reached them
        got_theirs = watch_theirs.next(timeout=5.0)
        assert (got_theirs.contact, got_theirs.message) == (theirs.contact.name, f"乐乐爸爸 正在阅读《{TITLE}》")
        start(track, mine.share_token)  # and the first rep's next news is theirs again, not 乐乐爸爸
        assert watch_mine.next(timeout=5.0).contact == mine.contact.name
        assert watch_mine.events.empty() and watch_theirs.events.empty()
    finally:
        watch_mine.close()
        watch_theirs.close()


# ---- 5. tag rules -------------------------------------------------------------------------------------------


def tags(s: Scene, contact: str) -> list[str]:
    return [tag.label for tag in s.profile(contact).tags]


def test_hq_tag_rules_are_created_listed_deleted_and_decide_the_tags_contacts_get(track: Track) -> None:
    s = scene(track)
    t = track
    insurance = t.topic("insurance", "保险")
    post = t.publish(INSURANCE_TITLE, INSURANCE_BODY, [insurance], images=0)
    token = t.share_token(post, s.rep, s.md)

    defaults = t.stub.ListTagRules(pb.ListTagRulesRequest(), metadata=t.editor).tag_rules
    assert [r.label for r in defaults] == ["{topic}·高", "{topic}·关注"]
    first = s.link("优优妈妈")
    link = t.stub.CreateContactLink(pb.CreateContactLinkRequest(parent=s.rep.name, share_token=token,
                                                                contact=first.contact.name), metadata=s.md)
    visitor = t.read(link.share_token, 60).visitor_id
    t.settle()
    assert tags(s, first.contact.name) == ["保险·关注"]  # the shipped defaults: one read of a minute

    wanted = pb.TagRule(topic=insurance, min_engaged_seconds=30, min_visits=2, window_days=30, label="保险意向·高")
    rule = t.stub.CreateTagRule(pb.CreateTagRuleRequest(tag_rule=wanted), metadata=t.editor)
    assert rule.name.startswith("tagRules/") and rule.name != "tagRules/"
    assert (rule.topic, rule.min_engaged_seconds, rule.min_visits, rule.window_days, rule.label) == (
        insurance, 30, 2, 30, "保险意向·高")
    assert list(t.stub.ListTagRules(pb.ListTagRulesRequest(), metadata=t.editor).tag_rules) == [rule]

    t.clock.advance(11 * 60)  # a second visit, once the first is over
    t.read(link.share_token, 60, visitor=visitor)
    second = t.stub.CreateContactLink(pb.CreateContactLinkRequest(parent=s.rep.name, share_token=token,
                                                                  contact_display_name="乐乐爸爸"), metadata=s.md)
    t.read(second.share_token, 60)  # one visit only: the rule wants two
    t.settle()
    profile = s.profile(first.contact.name)
    assert [(tag.topic, tag.label) for tag in profile.tags] == [(insurance, "保险意向·高")]
    assert sorted(e.engaged_seconds for e in profile.tags[0].evidence) == [60, 60]
    assert tags(s, second.contact.name) == []

    t.stub.DeleteTagRule(pb.DeleteTagRuleRequest(name=rule.name), metadata=t.editor)
    assert list(t.stub.ListTagRules(pb.ListTagRulesRequest(), metadata=t.editor).tag_rules) == list(defaults)
    code, _ = failure(lambda: t.stub.DeleteTagRule(pb.DeleteTagRuleRequest(name=rule.name), metadata=t.editor))
    assert code == grpc.StatusCode.NOT_FOUND
    t.read(second.share_token, 60)  # new events re-evaluate the contact under the defaults again
    t.settle()
    assert tags(s, second.contact.name) == ["保险·关注"]


GOOD_RULE = {"topic": "*", "min_engaged_seconds": 30, "min_visits": 1, "window_days": 30, "label": "{topic}·读过"}
BAD_RULES = [
    ({"topic": ""}, "tag_rule.topic"),
    ({"topic": "insurance"}, "tag_rule.topic"),
    ({"topic": "topics/保险"}, "tag_rule.topic"),
    ({"min_engaged_seconds": -1}, "tag_rule.min_engaged_seconds"),
    ({"min_visits": 0}, "tag_rule.min_visits"),
    ({"window_days": 0}, "tag_rule.window_days"),
    ({"window_days": 366}, "tag_rule.window_days"),
    ({"label": ""}, "tag_rule.label"),
    ({"label": "   "}, "tag_rule.label"),
    ({"label": "高" * 41}, "tag_rule.label"),
    ({"label": "保险\x00高"}, "tag_rule.label"),
    ({"min_score": -0.5}, "tag_rule.min_score"),
    ({"min_score": float("nan")}, "tag_rule.min_score"),
    ({"min_score": float("inf")}, "tag_rule.min_score"),
]


def test_an_invalid_tag_rule_is_refused_naming_the_field_and_nothing_is_stored(track: Track) -> None:
    before = list(track.stub.ListTagRules(pb.ListTagRulesRequest(), metadata=track.editor).tag_rules)
    assert outcome(lambda: track.stub.CreateTagRule(pb.CreateTagRuleRequest(tag_rule=pb.TagRule(**GOOD_RULE)),
                                                    metadata=track.editor)) == "OK"  # the base rule is fine
    good = list(track.stub.ListTagRules(pb.ListTagRulesRequest(), metadata=track.editor).tag_rules)
    assert good != before
    for change, field_name in BAD_RULES:
        rule = pb.TagRule(**{**GOOD_RULE, **change})
        code, details = failure(lambda rule=rule: track.stub.CreateTagRule(pb.CreateTagRuleRequest(tag_rule=rule),
                                                                           metadata=track.editor))
        assert (code, details.partition(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, field_name), (change, details)
    assert list(track.stub.ListTagRules(pb.ListTagRulesRequest(), metadata=track.editor).tag_rules) == good


# ---- 6. bots ------------------------------------------------------------------------------------------------


def test_bot_and_headless_views_are_recorded_but_make_no_contact_tag_or_lead(track: Track) -> None:
    s = scene(track)
    named = s.link("优优妈妈")
    for ua in (GOOGLEBOT, HEADLESS):
        assert track.read(s.token, 130, ua=ua).bot
        assert track.read(named.share_token, 130, ua=ua).bot
    track.settle()
    listed = track.stub.ListContacts(pb.ListContactsRequest(parent=s.rep.name), metadata=s.md).contacts
    assert [c.name for c in listed] == [named.contact.name]  # no "访客" contact for a crawler
    profile = s.profile(named.contact.name)
    assert (list(profile.tags), list(profile.timeline), list(profile.topic_scores)) == ([], [], [])
    assert list(track.stub.ListLeads(pb.ListLeadsRequest(parent=s.rep.name), metadata=s.md).leads) == []
    analytics = s.analytics()
    assert (analytics.views, analytics.unique_viewers, analytics.bot_views) == (0, 0, 4)

    human = track.read(s.token, 130)  # the same link read by a person does all of that
    assert not human.bot
    track.settle()
    assert len(track.stub.ListContacts(pb.ListContactsRequest(parent=s.rep.name), metadata=s.md).contacts) == 2
    assert len(track.stub.ListLeads(pb.ListLeadsRequest(parent=s.rep.name), metadata=s.md).leads) == 1
    analytics = s.analytics()
    assert (analytics.views, analytics.bot_views) == (1, 4)


# ---- 7. forwards ----------------------------------------------------------------------------------------------


def test_forwards_chain_to_the_share_they_came_from_and_rank_the_first_share_as_spreader(track: Track) -> None:
    s = scene(track)
    share = track.app.ingest.tokens.verify  # reads a token's share and parent, as the service does
    root = share(s.token).share_id
    first = track.read(s.token, 20)
    assert share(first.forward_share_token).parent_share_id == root
    second = track.read(first.forward_share_token, 20)  # the customer forwarded the page to a friend
    forwarded = share(first.forward_share_token).share_id
    assert share(second.forward_share_token).parent_share_id == forwarded
    third = track.read(second.forward_share_token, 20)  # who forwarded it on
    track.settle()
    analytics = s.analytics()
    tree = {n.share_id: (n.parent_share_id, n.views, n.rep) for n in analytics.forward_tree}
    assert tree == {root: ("", 1, s.rep.name), forwarded: (root, 1, s.rep.name),
                    share(second.forward_share_token).share_id: (forwarded, 1, s.rep.name)}
    assert third.forward_share_token and share(third.forward_share_token).share_id not in tree  # nobody opened it yet
    assert [(sp.share_id, sp.downstream_views, sp.depth) for sp in analytics.top_spreaders] == [(root, 2, 0), (forwarded, 1, 1)]
    assert analytics.views == 3 and analytics.unique_viewers == 3


# ---- 8. visits ------------------------------------------------------------------------------------------------


def test_reopening_within_10_minutes_is_the_same_visit_and_after_11_minutes_a_new_one(track: Track) -> None:
    s = scene(track)
    link = s.link("优优妈妈")
    visitor = track.read(link.share_token, 60).visitor_id
    track.clock.advance(9 * 60)  # back from another chat 9 minutes later
    track.read(link.share_token, 30, visitor=visitor)
    track.settle()
    assert engaged_seconds(s, link.contact.name) == [90]
    track.clock.advance(11 * 60)
    track.read(link.share_token, 40, visitor=visitor)
    track.settle()
    assert engaged_seconds(s, link.contact.name) == [40, 90]  # newest first
    analytics = s.analytics()
    assert (analytics.views, analytics.unique_viewers) == (3, 1)
