"""The tracking gRPC servicer: validate, call the ingest or the service, translate back."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import date, datetime

import grpc

from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.protos.contentops.tracking.v1 import tracking_pb2_grpc as pb_grpc
from services.shared.apiutil import PageTokens, page_size, parse_name, to_timestamp
from services.shared.errors import InvalidArgument
from services.shared.grpcserver import ServiceSpec, current_principal
from services.shared.identity.domain import Role

from .activity import ActivityHub
from .domain.interest import TagRule, validate_rule
from .ingest import Ingest
from .service import ContactView, EvidenceView, TrackingService

INGEST = frozenset({Role.SERVICE, Role.ADMIN})
CONTACTS = frozenset({Role.REP, Role.SALES, Role.ADMIN})
HQ = frozenset({Role.EDITOR, Role.ADMIN})

ROLES = {
    "StartView": INGEST,
    "RecordEngagement": INGEST,
    "EndView": INGEST,
    "CreateContactLink": frozenset({Role.REP, Role.ADMIN}),
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

_CONTACT = re.compile(r"^reps/([0-9a-z]{1,26})/contacts/([0-9a-z]{1,26})$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_contact(value: str, field: str = "name") -> tuple[str, str]:
    m = _CONTACT.fullmatch(value or "")
    if not m:
        raise InvalidArgument(field, "expected 'reps/<id>/contacts/<id>'")
    return m.group(1), m.group(2)


def contact_to_pb(c: ContactView) -> pb.Contact:
    return pb.Contact(name=c.name, display_name=c.display_name, named=c.named, create_time=to_timestamp(c.create_time),
                      last_activity_time=to_timestamp(c.last_activity))


def evidence_to_pb(e: EvidenceView) -> pb.Evidence:
    return pb.Evidence(post=f"posts/{e.post_id}", post_title=e.title, read_time=to_timestamp(e.at),
                       engaged_seconds=e.engaged_seconds, completeness=e.completeness, description=e.description)


def rule_to_pb(rule_id: str, r: TagRule) -> pb.TagRule:
    return pb.TagRule(name=f"tagRules/{rule_id}", topic=r.topic if r.topic == "*" else f"topics/{r.topic}",
                      min_engaged_seconds=r.min_engaged_seconds, min_visits=r.min_visits, window_days=r.window_days,
                      label=r.label, min_score=r.min_score or 0.0)


class TrackingServicer(pb_grpc.TrackingServiceServicer):
    def __init__(self, ingest: Ingest, service: TrackingService, hub: ActivityHub, tokens: PageTokens) -> None:
        self.ingest = ingest
        self.service = service
        self.hub = hub
        self.tokens = tokens

    # ---- ingest ------------------------------------------------------------------------------------

    def StartView(self, request: pb.StartViewRequest, context: grpc.ServicerContext) -> pb.StartViewResponse:
        if not request.share_token:
            raise InvalidArgument("share_token", "required")
        started = self.ingest.start_view(request.share_token, request.visitor_id, request.user_agent, request.referrer,
                                         request.client_ip)
        return started.response()

    def RecordEngagement(self, request_iterator: Iterable[pb.RecordEngagementRequest],
                         context: grpc.ServicerContext) -> pb.RecordEngagementResponse:
        accepted = throttled = 0
        for request in request_iterator:  # each message is appended (acknowledged) on its own
            a, t = self.ingest.record(request.heartbeats)
            accepted += a
            throttled += t
        return pb.RecordEngagementResponse(accepted=accepted, throttled=throttled)

    def EndView(self, request: pb.EndViewRequest, context: grpc.ServicerContext) -> pb.EndViewResponse:
        self.ingest.end_view(request.view, request.last_seq)
        return pb.EndViewResponse()

    # ---- contacts and what sales read -------------------------------------------------------------------

    def CreateContactLink(self, request: pb.CreateContactLinkRequest, context: grpc.ServicerContext) -> pb.ContactLink:
        rep_id = parse_name(request.parent, "reps", "parent")
        if not request.share_token:
            raise InvalidArgument("share_token", "required: the rep's own link for the post")
        contact_id = ""
        if request.contact:
            contact_rep, contact_id = parse_contact(request.contact, "contact")
            if contact_rep != rep_id:
                raise InvalidArgument("contact", f"not a contact of {request.parent}")
        contact, token = self.service.create_contact_link(current_principal(), rep_id, request.share_token, contact_id,
                                                          request.contact_display_name)
        return pb.ContactLink(contact=contact_to_pb(contact), share_token=token)

    def ListContacts(self, request: pb.ListContactsRequest, context: grpc.ServicerContext) -> pb.ListContactsResponse:
        rep_id = parse_name(request.parent, "reps", "parent")
        who = current_principal()
        contacts, token = self.tokens.page(request.page_size, request.page_token, {"m": "ListContacts", "rep": rep_id},
                                           lambda after, n: self.service.list_contacts(who, rep_id, after, n),
                                           lambda c: c.id)
        return pb.ListContactsResponse(contacts=[contact_to_pb(c) for c in contacts], next_page_token=token)

    def GetContactProfile(self, request: pb.GetContactProfileRequest,
                          context: grpc.ServicerContext) -> pb.ContactProfile:
        rep_id, contact_id = parse_contact(request.name)
        p = self.service.profile(current_principal(), rep_id, contact_id)
        tags = [pb.InterestTag(topic=f"topics/{t['topic']}", label=t["label"], score=t["score"], evidence=[
            pb.Evidence(post=f"posts/{e['post']}", post_title=e["title"], read_time=to_timestamp(datetime.fromisoformat(e["at"])),
                        engaged_seconds=e["engaged_seconds"], completeness=e["completeness"],
                        description=e.get("description", "")) for e in t["evidence"]]) for t in p.tags]
        return pb.ContactProfile(contact=contact_to_pb(p.contact), tags=tags,
                                 timeline=[evidence_to_pb(e) for e in p.timeline],
                                 topic_scores=[pb.TopicScore(topic=f"topics/{t}", score=v) for t, v in p.topic_scores])

    def ListLeads(self, request: pb.ListLeadsRequest, context: grpc.ServicerContext) -> pb.ListLeadsResponse:
        rep_id = parse_name(request.parent, "reps", "parent")
        day = None
        if request.day:
            if not _DAY.fullmatch(request.day):
                raise InvalidArgument("day", "expected YYYY-MM-DD")
            try:
                day = date.fromisoformat(request.day)
            except ValueError:
                raise InvalidArgument("day", "not a calendar date") from None
        size = page_size(request.page_size)
        query = {"m": "ListLeads", "rep": rep_id, "day": request.day}
        offset = self.tokens.decode(request.page_token, query) or 0
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise InvalidArgument("page_token", "not a page token issued by this service")
        found, named = self.service.list_leads(current_principal(), rep_id, day, offset, size + 1)
        more = len(found) > size
        leads = [pb.Lead(contact=pb.Contact(name=f"reps/{rep_id}/contacts/{lead.contact_id}", display_name=lead.display_name,
                                            named=lead.contact_id in named),
                         reason=lead.reason, talking_point=lead.talking_point, score=lead.score, top_topic=lead.top_topic,
                         last_read=pb.Evidence(post=f"posts/{lead.last_read.post_id}", post_title=lead.last_read.post_title,
                                               read_time=to_timestamp(lead.last_read.at),
                                               engaged_seconds=lead.last_read.engaged_ms // 1000,
                                               completeness=lead.last_read.completeness))
                 for lead in found[:size]]
        return pb.ListLeadsResponse(leads=leads, next_page_token=self.tokens.encode(offset + size, query) if more else "")

    def WatchActivity(self, request: pb.WatchActivityRequest,
                      context: grpc.ServicerContext) -> Iterator[pb.WatchActivityResponse]:
        rep_id = parse_name(request.rep, "reps", "rep")
        who = current_principal()
        with self.service.db.read() as s:
            self.service.check_rep_scope(s, who, rep_id)
        for a in self.hub.listen(rep_id, context.is_active):
            yield pb.WatchActivityResponse(message=a.message, event_time=to_timestamp(a.at),
                                           contact=f"reps/{a.rep_id}/contacts/{a.contact_id}", post=f"posts/{a.post_id}",
                                           kind=a.kind)  # type: ignore[arg-type]

    def EraseContact(self, request: pb.EraseContactRequest, context: grpc.ServicerContext) -> pb.EraseContactResponse:
        rep_id, contact_id = parse_contact(request.name)
        views, events, entries = self.service.erase_contact(current_principal(), rep_id, contact_id)
        return pb.EraseContactResponse(views_erased=views, events_erased=events, stream_entries_erased=entries)

    # ---- editors -------------------------------------------------------------------------------------------

    def GetPostAnalytics(self, request: pb.GetPostAnalyticsRequest, context: grpc.ServicerContext) -> pb.PostAnalytics:
        post_id = parse_name(request.post, "posts", "post")
        a, tree, spreaders = self.service.post_analytics(post_id)
        return pb.PostAnalytics(
            post=f"posts/{post_id}", views=a.views, unique_viewers=a.unique_viewers, bot_views=a.bot_views,
            engaged_seconds_p50=a.engaged.percentiles_ms.get(50, 0) // 1000,
            engaged_seconds_p90=a.engaged.percentiles_ms.get(90, 0) // 1000,
            engaged_histogram=[pb.EngagedBucket(label=label, views=n) for label, n in a.engaged.buckets],
            variants=[pb.VariantStats(rep=f"reps/{v.rep_id}", copy_id=v.copy_id, views=v.views,
                                      engaged_seconds_median=v.median_ms // 1000, engaged_seconds_mean=v.mean_ms / 1000)
                      for v in a.variants],
            top_spreaders=[pb.Spreader(share_id=sp.share_id, rep=f"reps/{sp.rep_id}", downstream_views=sp.downstream_views,
                                       depth=sp.depth) for sp in spreaders],
            forward_tree=[pb.ShareNode(share_id=sid, parent_share_id=tree.parent.get(sid, ""), rep=f"reps/{sh.rep_id}",
                                       views=sh.views) for sid, sh in sorted(tree.shares.items())],
        )

    def CreateTagRule(self, request: pb.CreateTagRuleRequest, context: grpc.ServicerContext) -> pb.TagRule:
        r = request.tag_rule
        topic = r.topic if r.topic == "*" else parse_name(r.topic, "topics", "tag_rule.topic")
        rule = validate_rule(TagRule(topic, r.min_engaged_seconds, r.min_visits, r.window_days, r.label, r.min_score or None),
                             "tag_rule.")  # errors name the request's field ("tag_rule.min_visits")
        rule_id, rule = self.service.create_rule(rule)
        return rule_to_pb(rule_id, rule)

    def ListTagRules(self, request: pb.ListTagRulesRequest, context: grpc.ServicerContext) -> pb.ListTagRulesResponse:
        return pb.ListTagRulesResponse(tag_rules=[rule_to_pb(i, r) for i, r in self.service.list_rules()])

    def DeleteTagRule(self, request: pb.DeleteTagRuleRequest, context: grpc.ServicerContext) -> pb.DeleteTagRuleResponse:
        self.service.delete_rule(parse_name(request.name, "tagRules"))
        return pb.DeleteTagRuleResponse()


def tracking_spec(ingest: Ingest, service: TrackingService, hub: ActivityHub, tokens: PageTokens) -> ServiceSpec:
    return ServiceSpec(
        add_to_server=pb_grpc.add_TrackingServiceServicer_to_server,
        servicer=TrackingServicer(ingest, service, hub, tokens),
        full_name=pb.DESCRIPTOR.services_by_name["TrackingService"].full_name,
        roles=ROLES,
    )
