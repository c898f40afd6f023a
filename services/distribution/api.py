"""gRPC servicer for DistributionService: validate -> call the service -> map back."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from services.protos.contentops.distribution.v1 import distribution_pb2 as pb
from services.protos.contentops.distribution.v1 import distribution_pb2_grpc as pb_grpc
from services.shared.apiutil import (
    PageTokens,
    check_request_id,
    check_resource_id,
    mask_paths,
    parse_name,
    to_timestamp,
)
from services.shared.errors import InvalidArgument
from services.shared.grpcserver import ServiceSpec, current_principal
from services.shared.identity.domain import Role

from . import variation
from .domain.reps import Rep, Team
from .service import CopyView, DistributionService

ALL = frozenset(Role)
MANAGERS = frozenset({Role.ADMIN, Role.EDITOR})
MAX_PREVIEW_REPS = 20

ROLES = {
    "CreateRep": MANAGERS,
    "GetRep": ALL,
    "ListReps": frozenset({Role.ADMIN, Role.EDITOR, Role.SALES}),
    "UpdateRep": MANAGERS,
    "CreateTeam": MANAGERS,
    "ListTeams": ALL,
    # Reps fetch their own copies (checked in the service); admins may fetch any for support; the web edge (a
    # service) fetches the copy a share link names, to show it to whoever opened the link.
    "GetRepCopy": frozenset({Role.REP, Role.ADMIN, Role.SERVICE}),
    "DownloadCopyImage": frozenset({Role.REP, Role.ADMIN, Role.SERVICE}),
    "ListRepPosts": frozenset({Role.REP, Role.ADMIN}),
    "PreviewCopies": MANAGERS,
    "GetCampaignStatus": MANAGERS,
    "GetDistinctnessReport": MANAGERS,
}

COPY_STATES = {"pending": pb.COPY_STATE_PENDING, "ready": pb.COPY_STATE_READY, "failed": pb.COPY_STATE_FAILED}
REP_PATHS = ("display_name", "signature", "store", "region", "team", "contact_qr_asset", "user")


def rep_to_pb(r: Rep) -> pb.Rep:
    return pb.Rep(name=r.name, display_name=r.display_name, signature=r.signature, store=r.store, region=r.region,
                  team=f"teams/{r.team_id}" if r.team_id else "",
                  contact_qr_asset=f"assets/{r.contact_qr_asset}" if r.contact_qr_asset else "",
                  user=f"users/{r.user_id}" if r.user_id else "", create_time=to_timestamp(r.create_time), etag=r.etag)


def team_to_pb(t: Team) -> pb.Team:
    return pb.Team(name=t.name, display_name=t.display_name, create_time=to_timestamp(t.create_time))


def copy_to_pb(c: CopyView) -> pb.RepCopy:
    return pb.RepCopy(
        name=c.name, rep=f"reps/{c.rep_id}", revision=f"posts/{c.post_id}/revisions/{c.revision}", text=c.text,
        images=[pb.CopyImage(name=f"{c.name}/images/{i.index}", uri=i.uri, sha256=i.sha256, width=i.width,
                             height=i.height, mime_type=i.mime_type) for i in c.images],
        share_token=c.share_token, render_time=to_timestamp(c.render_time),
    )


def _optional_name(value: str, collection: str, field: str) -> str | None:
    return parse_name(value, collection, field) if value else None


MAX_ASSET_ID = 26  # distribution_reps.contact_qr_asset is VARCHAR(26), as long as the content service's ids


def _qr_asset(value: str, field: str) -> str:
    asset = _optional_name(value, "assets", field) or ""
    if len(asset) > MAX_ASSET_ID:
        raise InvalidArgument(field, f"not an asset id (at most {MAX_ASSET_ID} characters)")
    return asset


def parse_copy_image_name(value: str) -> tuple[str, int, str, int]:
    parts = value.split("/")
    if (len(parts) != 8 or parts[0] != "posts" or parts[2] != "revisions" or parts[4] != "copies"
            or parts[6] != "images"):
        raise InvalidArgument("name", "expected 'posts/<id>/revisions/<n>/copies/<rep>/images/<index>'")
    post_id = parse_name(f"posts/{parts[1]}", "posts")
    rep_id = parse_name(f"reps/{parts[5]}", "reps")
    numbers = []
    for raw in (parts[3], parts[7]):
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or (raw.startswith("0") and raw != "0"):
            raise InvalidArgument("name", "revision and image index must be numbers")
        numbers.append(int(raw))
    return post_id, numbers[0], rep_id, numbers[1]


class DistributionServicer(pb_grpc.DistributionServiceServicer):
    def __init__(self, service: DistributionService, tokens: PageTokens) -> None:
        self.service = service
        self.tokens = tokens

    def _page(self, request, query, items, key):  # type: ignore[no-untyped-def]
        return self.tokens.page(request.page_size, request.page_token, query, items, key)

    def CreateTeam(self, request: pb.CreateTeamRequest, context: grpc.ServicerContext) -> pb.Team:
        check_request_id(request.request_id)
        team_id = check_resource_id(request.team.name.removeprefix("teams/"), "team.name") if request.team.name else ""
        return team_to_pb(self.service.create_team(team_id, request.team.display_name))

    def ListTeams(self, request: pb.ListTeamsRequest, context: grpc.ServicerContext) -> pb.ListTeamsResponse:
        teams, token = self._page(request, {"m": "ListTeams"}, self.service.list_teams, lambda t: t.id)
        return pb.ListTeamsResponse(teams=[team_to_pb(t) for t in teams], next_page_token=token)

    def CreateRep(self, request: pb.CreateRepRequest, context: grpc.ServicerContext) -> pb.Rep:
        check_request_id(request.request_id)
        r = request.rep
        rep = self.service.create_rep(
            r.display_name, r.signature, r.store, r.region,
            _optional_name(r.team, "teams", "rep.team"),
            _qr_asset(r.contact_qr_asset, "rep.contact_qr_asset"),
            _optional_name(r.user, "users", "rep.user"),
        )
        return rep_to_pb(rep)

    def GetRep(self, request: pb.GetRepRequest, context: grpc.ServicerContext) -> pb.Rep:
        return rep_to_pb(self.service.get_rep(parse_name(request.name, "reps")))

    def ListReps(self, request: pb.ListRepsRequest, context: grpc.ServicerContext) -> pb.ListRepsResponse:
        team = _optional_name(request.team, "teams", "team")
        reps, token = self._page(request, {"m": "ListReps", "team": team},
                                 lambda after, n: self.service.list_reps(team, after, n), lambda r: r.id)
        return pb.ListRepsResponse(reps=[rep_to_pb(r) for r in reps], next_page_token=token)

    def UpdateRep(self, request: pb.UpdateRepRequest, context: grpc.ServicerContext) -> pb.Rep:
        rep_id = parse_name(request.rep.name, "reps", "rep.name")
        paths = mask_paths(request.update_mask.paths, REP_PATHS)
        r = request.rep
        changes: dict[str, object] = {}
        for field in ("display_name", "signature", "store", "region"):
            if field in paths:
                changes[field] = getattr(r, field)
        if "team" in paths:
            changes["team_id"] = _optional_name(r.team, "teams", "rep.team")
        if "contact_qr_asset" in paths:
            changes["contact_qr_asset"] = _qr_asset(r.contact_qr_asset, "rep.contact_qr_asset")
        if "user" in paths:
            changes["user_id"] = _optional_name(r.user, "users", "rep.user")
        return rep_to_pb(self.service.update_rep(rep_id, changes, r.etag))

    def GetRepCopy(self, request: pb.GetRepCopyRequest, context: grpc.ServicerContext) -> pb.RepCopy:
        post_id = parse_name(request.post, "posts", "post")
        rep_id = parse_name(request.rep, "reps", "rep")
        return copy_to_pb(self.service.get_rep_copy(current_principal(), post_id, rep_id))

    def ListRepPosts(self, request: pb.ListRepPostsRequest, context: grpc.ServicerContext) -> pb.ListRepPostsResponse:
        rep_id = parse_name(request.parent, "reps", "parent")
        posts, token = self._page(request, {"m": "ListRepPosts", "rep": rep_id},
                                  lambda before, n: self.service.list_rep_posts(current_principal(), rep_id, before, n),
                                  lambda p: p.campaign_id)
        return pb.ListRepPostsResponse(posts=[pb.RepPost(
            post=f"posts/{p.post_id}", revision=f"posts/{p.post_id}/revisions/{p.revision}", title=p.title,
            publish_time=to_timestamp(p.publish_time), copy_state=COPY_STATES[p.copy_state], excerpt=p.excerpt)
            for p in posts], next_page_token=token)

    def DownloadCopyImage(self, request: pb.DownloadCopyImageRequest,
                          context: grpc.ServicerContext) -> Iterator[pb.DownloadCopyImageResponse]:
        post_id, revision, rep_id, index = parse_copy_image_name(request.name)
        chunks = self.service.open_copy_image(current_principal(), post_id, revision, rep_id, index)
        return (pb.DownloadCopyImageResponse(chunk=c) for c in chunks)

    def PreviewCopies(self, request: pb.PreviewCopiesRequest,
                      context: grpc.ServicerContext) -> pb.PreviewCopiesResponse:
        post_id = parse_name(request.post, "posts", "post")
        if not request.sample_reps:
            raise InvalidArgument("sample_reps", "name at least one rep")
        if len(request.sample_reps) > MAX_PREVIEW_REPS:
            raise InvalidArgument("sample_reps", f"at most {MAX_PREVIEW_REPS} reps")
        rep_ids = [parse_name(n, "reps", f"sample_reps[{i}]") for i, n in enumerate(request.sample_reps)]
        reps = [self.service.get_rep(r) for r in rep_ids]
        snapshot, revision_name = self.service.snapshot_for_post(post_id)
        preview = self.service.preview(snapshot, reps, self.service.count_targeted(snapshot), revision_name)
        return pb.PreviewCopiesResponse(
            copies=[pb.RepCopy(name=f"{revision_name}/copies/{rep.id}", rep=rep.name, revision=revision_name, text=text)
                    for rep, text in zip(reps, preview.texts, strict=True)],
            capacity_estimate=preview.capacity_estimate, targeted_reps=preview.targeted,
            policy_met=preview.policy_met, warning=preview.warning,
        )

    def GetCampaignStatus(self, request: pb.GetCampaignStatusRequest,
                          context: grpc.ServicerContext) -> pb.CampaignStatus:
        post_id = parse_name(request.post, "posts", "post")
        st = self.service.campaign_status(post_id)
        return pb.CampaignStatus(
            post=f"posts/{post_id}", revision=f"posts/{post_id}/revisions/{st.revision}", total=st.total,
            rendered=st.rendered, failures=[pb.CopyFailure(rep=f"reps/{r}", reason=why) for r, why in st.failures],
            capacity_estimate=st.capacity_estimate, policy_met=st.policy_met,
            warning=variation.capacity_warning(st.capacity_estimate, st.total),
        )

    def GetDistinctnessReport(self, request: pb.GetDistinctnessReportRequest,
                              context: grpc.ServicerContext) -> pb.DistinctnessReport:
        post_id = parse_name(request.post, "posts", "post")
        r = self.service.distinctness_report(post_id)
        return pb.DistinctnessReport(
            post=f"posts/{post_id}", revision=f"posts/{post_id}/revisions/{r.revision}", copies=r.copies,
            text_duplicates=r.text_duplicates, jaccard_min=r.jaccard_min, jaccard_median=r.jaccard_median,
            jaccard_max=r.jaccard_max, image_byte_duplicates=r.image_byte_duplicates,
            phash_distances=r.phash_distances, dhash_distances=r.dhash_distances, ssim_min=r.ssim_min,
            protected_span_violations=r.protected_span_violations,
        )


def distribution_spec(service: DistributionService, tokens: PageTokens) -> ServiceSpec:
    return ServiceSpec(
        add_to_server=pb_grpc.add_DistributionServiceServicer_to_server,
        servicer=DistributionServicer(service, tokens),
        full_name=pb.DESCRIPTOR.services_by_name["DistributionService"].full_name,
        roles=ROLES,
    )

