"""The distribution service over gRPC with the content service publishing into it.

Both run in this process on the embedded default and on PostgreSQL + S3; events
go through the in-process sink and rendering through the in-process pool (the
Celery path is in test_distribution_celery.py).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from services.distribution import service as service_module
from services.distribution.__main__ import build_server
from services.distribution.app import DistributionApp, InProcessFanout
from services.distribution.models import CopyRow
from services.distribution.ready import ReadyCopies
from services.distribution.service import Fanout
from services.protos.contentops.content.v1 import content_pb2 as cpb
from services.protos.contentops.distribution.v1 import distribution_pb2 as pb
from services.protos.contentops.distribution.v1 import distribution_pb2_grpc as pb_grpc
from services.shared.db import Database
from services.shared.errors import Unavailable
from services.shared.identity.domain import Role
from services.shared.sharetoken import ShareTokens

from . import infra
from .helpers import jpeg, upload_messages

DEMO = Path(__file__).resolve().parent.parent / "services" / "demo_data"
PROTECTED = ["「小小探索家」早教中心", "¥99/节", "400-820-1234"]


class NoFanout(Fanout):
    """Workers that never come: every copy is rendered on demand."""

    def dispatch(self, campaign_id: str, chunks: list[list[str]]) -> None:
        pass


class Recording(Fanout):
    """Workers that never come, but every chunk queued is kept."""

    def __init__(self) -> None:
        self.chunks: list[tuple[str, list[str]]] = []

    def dispatch(self, campaign_id: str, chunks: list[list[str]]) -> None:
        self.chunks += [(campaign_id, list(c)) for c in chunks]

    def take(self) -> list[str]:
        """The reps queued since the last take, sorted."""
        reps = sorted(r for _, chunk in self.chunks for r in chunk)
        self.chunks.clear()
        return reps


@dataclass
class Dist:
    harness: object
    app: DistributionApp
    stub: pb_grpc.DistributionServiceStub
    admin: tuple[tuple[str, str], ...]
    editor: tuple[tuple[str, str], ...]

    def rep(self, name: str, team: str = "", user: bool = True) -> tuple[pb.Rep, tuple[tuple[str, str], ...]]:
        principal, md = self.harness.user(Role.REP, name) if user else (None, ())  # type: ignore[attr-defined]
        rep = self.stub.CreateRep(pb.CreateRepRequest(rep=pb.Rep(
            display_name=name, signature="祝您生活愉快", store="徐汇店", region="上海", team=team,
            user=principal.name if principal else "")), metadata=self.admin)
        return rep, md

    def publish(self, images: int = 2, teams: list[str] | None = None, template: str = "", badge: bool = True) -> str:
        h = self.harness
        md = self.editor
        assets = [h.content.UploadAsset(upload_messages(p.read_bytes(), p.name), metadata=md).name  # type: ignore[attr-defined]
                  for p in sorted(DEMO.glob("*.jpg"))[:images]]
        content = cpb.PostContent(
            title="5岁小姑娘的创造力启蒙三步走", body=(DEMO / "post.txt").read_text(encoding="utf-8"), images=assets,
            target_teams=teams or [],
            variation=cpb.VariationSettings(protected_phrases=PROTECTED, badge_enabled=badge,
                                            rep_template=template or "{{ body }}\n\n—— {{ rep.display_name }}｜{{ rep.store }}"))
        post = h.content.CreatePost(cpb.CreatePostRequest(content=content), metadata=md)  # type: ignore[attr-defined]
        h.content.PublishPost(cpb.PublishPostRequest(name=post.name), metadata=md)  # type: ignore[attr-defined]
        self.settle()
        return post.name

    def settle(self) -> None:
        if isinstance(self.app.fanout, InProcessFanout):
            self.app.fanout.wait_idle(timeout=120)


def _dist(harness, fanout: Fanout | None) -> Iterator[Dist]:  # type: ignore[no-untyped-def]
    app = DistributionApp.build(harness.app.settings, blobs=harness.app.blobs, fanout=fanout, migrate=True)
    harness.events.subscribe_all(app.service.event_handlers())
    server = build_server(app, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Dist(harness, app, pb_grpc.DistributionServiceStub(channel), harness.md(Role.ADMIN), harness.md(Role.EDITOR))
    finally:
        channel.close()
        server.stop(grace=1)
        app.close()


@pytest.fixture
def dist(harness) -> Iterator[Dist]:  # type: ignore[no-untyped-def]
    yield from _dist(harness, None)


@pytest.fixture
def lazy(harness) -> Iterator[Dist]:  # type: ignore[no-untyped-def]
    yield from _dist(harness, NoFanout())


@pytest.fixture
def recorded(harness) -> Iterator[Dist]:  # type: ignore[no-untyped-def]
    yield from _dist(harness, Recording())


def code_of(call, *args, **kwargs) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value.code()  # type: ignore[attr-defined]


# ---- reps and teams -----------------------------------------------------------------------


def test_reps_and_teams_are_managed_and_validated(dist: Dist) -> None:
    team = dist.stub.CreateTeam(pb.CreateTeamRequest(team=pb.Team(name="teams/east", display_name="华东")),
                                metadata=dist.admin)
    rep, _ = dist.rep("小王", team=team.name)
    assert (rep.display_name, rep.team, rep.store) == ("小王", "teams/east", "徐汇店") and rep.user.startswith("users/")
    got = dist.stub.GetRep(pb.GetRepRequest(name=rep.name), metadata=dist.editor)
    assert got == rep
    renamed = dist.stub.UpdateRep(pb.UpdateRepRequest(rep=pb.Rep(name=rep.name, display_name="王老师", etag=rep.etag),
                                                      update_mask={"paths": ["display_name"]}), metadata=dist.admin)
    assert renamed.display_name == "王老师" and renamed.store == "徐汇店" and renamed.etag != rep.etag
    assert code_of(dist.stub.UpdateRep, pb.UpdateRepRequest(rep=pb.Rep(name=rep.name, display_name="x", etag=rep.etag),
                                                            update_mask={"paths": ["display_name"]}),
                   metadata=dist.admin) == grpc.StatusCode.ABORTED
    assert code_of(dist.stub.CreateRep, pb.CreateRepRequest(rep=pb.Rep(display_name="")),
                   metadata=dist.admin) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(dist.stub.CreateRep, pb.CreateRepRequest(rep=pb.Rep(display_name="x", team="teams/nope")),
                   metadata=dist.admin) == grpc.StatusCode.NOT_FOUND
    assert code_of(dist.stub.CreateTeam, pb.CreateTeamRequest(team=pb.Team(name="teams/east", display_name="另一个")),
                   metadata=dist.admin) == grpc.StatusCode.ALREADY_EXISTS
    assert code_of(dist.stub.CreateRep, pb.CreateRepRequest(rep=pb.Rep(display_name="x")),
                   metadata=dist.harness.md(Role.REP)) == grpc.StatusCode.PERMISSION_DENIED
    for i in range(4):
        dist.rep(f"rep{i}", user=False)
    names, token = [], ""
    while True:
        page = dist.stub.ListReps(pb.ListRepsRequest(page_size=2, page_token=token), metadata=dist.editor)
        names += [r.name for r in page.reps]
        if not (token := page.next_page_token):
            break
    assert len(names) == 5 == len(set(names))
    east = dist.stub.ListReps(pb.ListRepsRequest(team="teams/east"), metadata=dist.editor)
    assert [r.name for r in east.reps] == [rep.name]


def test_a_rep_user_links_to_one_rep_only(dist: Dist) -> None:
    principal, _ = dist.harness.user(Role.REP, "x")  # type: ignore[attr-defined]
    dist.stub.CreateRep(pb.CreateRepRequest(rep=pb.Rep(display_name="a", user=principal.name)), metadata=dist.admin)
    assert code_of(dist.stub.CreateRep, pb.CreateRepRequest(rep=pb.Rep(display_name="b", user=principal.name)),
                   metadata=dist.admin) == grpc.StatusCode.ALREADY_EXISTS
    editor, _ = dist.harness.user(Role.EDITOR, "e")  # type: ignore[attr-defined]
    assert code_of(dist.stub.CreateRep, pb.CreateRepRequest(rep=pb.Rep(display_name="c", user=editor.name)),
                   metadata=dist.admin) == grpc.StatusCode.FAILED_PRECONDITION


# ---- copies ---------------------------------------------------------------------------------


def test_every_targeted_rep_gets_a_personal_faithful_distinct_copy(dist: Dist) -> None:
    reps = [dist.rep(f"销售{i}") for i in range(6)]
    post = dist.publish(images=2)
    status = dist.stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=post), metadata=dist.editor)
    assert (status.total, status.rendered, list(status.failures)) == (6, 6, [])
    copies = [dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=r.name), metadata=md) for r, md in reps]
    tokens = ShareTokens(list(dist.app.settings.share_token_keys))
    for (rep, _md), copy in zip(reps, copies, strict=True):
        assert copy.text.endswith(f"—— {rep.display_name}｜徐汇店")
        for phrase in [*PROTECTED, "https://example.com/open-day", "#早教"]:
            assert phrase in copy.text
        assert len(copy.images) == 2 and all(i.width > 0 and i.mime_type == "image/jpeg" for i in copy.images)
        token = tokens.verify(copy.share_token)
        assert (f"posts/{token.post_id}", f"reps/{token.rep_id}", token.revision) == (post, rep.name, 1)
    assert len({c.text for c in copies}) == 6
    shas = [i.sha256 for c in copies for i in c.images]
    assert len(set(shas)) == len(shas)  # every rep's image bytes differ from every other rep's
    streamed = b"".join(m.chunk for m in dist.stub.DownloadCopyImage(
        pb.DownloadCopyImageRequest(name=copies[0].images[0].name), metadata=reps[0][1]))
    import hashlib

    assert hashlib.sha256(streamed).hexdigest() == copies[0].images[0].sha256
    again = dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=reps[0][0].name), metadata=reps[0][1])
    assert (again.text, [i.sha256 for i in again.images], again.share_token) == (
        copies[0].text, [i.sha256 for i in copies[0].images], copies[0].share_token)  # stable


def test_reps_see_only_their_own_targeted_copies(dist: Dist) -> None:
    dist.stub.CreateTeam(pb.CreateTeamRequest(team=pb.Team(name="teams/east", display_name="华东")), metadata=dist.admin)
    dist.stub.CreateTeam(pb.CreateTeamRequest(team=pb.Team(name="teams/west", display_name="西部")), metadata=dist.admin)
    east, east_md = dist.rep("东", team="teams/east")
    west, west_md = dist.rep("西", team="teams/west")
    post = dist.publish(images=1, teams=["teams/east"])
    dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=east.name), metadata=east_md)
    assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=post, rep=east.name),
                   metadata=west_md) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=post, rep=west.name),
                   metadata=west_md) == grpc.StatusCode.PERMISSION_DENIED  # not targeted
    assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=post, rep="reps/nobody"),
                   metadata=dist.admin) == grpc.StatusCode.NOT_FOUND
    draft = dist.harness.content.CreatePost(cpb.CreatePostRequest(content=cpb.PostContent(  # type: ignore[attr-defined]
        title="草稿", body="还没发布")), metadata=dist.editor)
    assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=draft.name, rep=east.name),
                   metadata=east_md) == grpc.StatusCode.FAILED_PRECONDITION
    assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=post, rep=east.name),
                   metadata=dist.editor) == grpc.StatusCode.PERMISSION_DENIED  # editors preview instead


def test_a_rep_who_joins_a_targeted_team_later_gets_a_copy(dist: Dist) -> None:
    dist.stub.CreateTeam(pb.CreateTeamRequest(team=pb.Team(name="teams/east", display_name="华东")), metadata=dist.admin)
    dist.rep("先来", team="teams/east")
    post = dist.publish(images=1, teams=["teams/east"])
    late, md = dist.rep("后到", team="teams/east")
    copy = dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=late.name), metadata=md)
    assert "后到" in copy.text
    status = dist.stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=post), metadata=dist.editor)
    assert (status.total, status.rendered) == (2, 2)


def test_a_reps_post_list_holds_the_live_revisions_that_target_them_newest_first(dist: Dist) -> None:
    dist.stub.CreateTeam(pb.CreateTeamRequest(team=pb.Team(name="teams/east", display_name="华东")), metadata=dist.admin)
    dist.stub.CreateTeam(pb.CreateTeamRequest(team=pb.Team(name="teams/west", display_name="西部")), metadata=dist.admin)
    east, east_md = dist.rep("东", team="teams/east")
    west, west_md = dist.rep("西", team="teams/west")
    everyone = dist.publish(images=1)
    east_only = dist.publish(images=1, teams=["teams/east"])
    archived = dist.publish(images=1)
    h = dist.harness
    h.content.ArchivePost(cpb.ArchivePostRequest(name=archived), metadata=dist.editor)  # type: ignore[attr-defined]
    edited = h.content.UpdatePost(cpb.UpdatePostRequest(post=cpb.Post(name=everyone, content=cpb.PostContent(  # type: ignore[attr-defined]
        title="新版")), update_mask={"paths": ["content.title"]}), metadata=dist.editor)
    h.content.PublishPost(cpb.PublishPostRequest(name=edited.name), metadata=dist.editor)  # type: ignore[attr-defined]
    dist.settle()
    dist.app.service._posts.clear()  # the archive reaches readers at most POST_CACHE_SECONDS late; not the point here

    mine = dist.stub.ListRepPosts(pb.ListRepPostsRequest(parent=east.name), metadata=east_md).posts
    assert [(p.post, p.revision.rsplit("/", 1)[1], p.title) for p in mine] == [
        (everyone, "2", "新版"), (east_only, "1", "5岁小姑娘的创造力启蒙三步走")]
    assert all(p.copy_state == pb.COPY_STATE_READY and "东" in dist.stub.GetRepCopy(pb.GetRepCopyRequest(
        post=p.post, rep=east.name), metadata=east_md).text and p.excerpt for p in mine)
    theirs = dist.stub.ListRepPosts(pb.ListRepPostsRequest(parent=west.name), metadata=west_md).posts
    assert [p.post for p in theirs] == [everyone]
    # paged: one at a time gives the same list
    first = dist.stub.ListRepPosts(pb.ListRepPostsRequest(parent=east.name, page_size=1), metadata=east_md)
    second = dist.stub.ListRepPosts(pb.ListRepPostsRequest(parent=east.name, page_size=1,
                                                           page_token=first.next_page_token), metadata=east_md)
    assert [p.post for p in [*first.posts, *second.posts]] == [everyone, east_only] and not second.next_page_token
    # a rep who joins later sees the post before their copy exists
    late, late_md = dist.rep("后到", team="teams/east")
    pending = dist.stub.ListRepPosts(pb.ListRepPostsRequest(parent=late.name), metadata=late_md).posts
    assert [(p.post, p.copy_state, p.excerpt) for p in pending] == [
        (everyone, pb.COPY_STATE_PENDING, ""), (east_only, pb.COPY_STATE_PENDING, "")]
    assert code_of(dist.stub.ListRepPosts, pb.ListRepPostsRequest(parent=east.name),
                   metadata=west_md) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(dist.stub.ListRepPosts, pb.ListRepPostsRequest(parent=east.name),
                   metadata=dist.editor) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(dist.stub.ListRepPosts, pb.ListRepPostsRequest(parent="reps/nobody"),
                   metadata=dist.admin) == grpc.StatusCode.NOT_FOUND
    assert code_of(dist.stub.ListRepPosts, pb.ListRepPostsRequest(parent="east"),
                   metadata=dist.admin) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_new_revision_gives_new_copies(dist: Dist) -> None:
    rep, md = dist.rep("小李")
    post = dist.publish(images=1)
    first = dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=rep.name), metadata=md)
    h = dist.harness
    edited = h.content.UpdatePost(cpb.UpdatePostRequest(post=cpb.Post(name=post, content=cpb.PostContent(  # type: ignore[attr-defined]
        title="新版")), update_mask={"paths": ["content.title"]}), metadata=dist.editor)
    h.content.PublishPost(cpb.PublishPostRequest(name=edited.name), metadata=dist.editor)  # type: ignore[attr-defined]
    dist.settle()
    second = dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=rep.name), metadata=md)
    assert first.revision.endswith("/revisions/1") and second.revision.endswith("/revisions/2")
    assert second.name != first.name and second.share_token != first.share_token


def test_copies_render_on_demand_once_under_concurrency(lazy: Dist) -> None:
    rep, md = lazy.rep("急性子")
    post = lazy.publish(images=2)
    results: list[pb.RepCopy] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            results.append(lazy.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=rep.name), metadata=md))
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 6
    assert len({(r.text, r.share_token, tuple(i.sha256 for i in r.images)) for r in results}) == 1
    with lazy.app.db.read() as s:
        attempts = s.scalar(select(func.sum(CopyRow.attempts)))
    assert attempts == 1  # rendered once, not six times


def test_a_vanished_image_fails_its_copies_with_a_reason_and_spares_other_posts(dist: Dist) -> None:
    rep, md = dist.rep("小张")
    good = dist.publish(images=1)
    h = dist.harness
    asset = h.content.UploadAsset(upload_messages(jpeg(42, (300, 200)), "lost.jpg"), metadata=dist.editor)  # type: ignore[attr-defined]
    key = f"originals/{asset.name.split('/')[1]}"
    h.app.blobs.delete(key)  # type: ignore[attr-defined]
    post = h.content.CreatePost(cpb.CreatePostRequest(content=cpb.PostContent(  # type: ignore[attr-defined]
        title="图丢了", body="这张图不见了。", images=[asset.name])), metadata=dist.editor)
    h.content.PublishPost(cpb.PublishPostRequest(name=post.name), metadata=dist.editor)  # type: ignore[attr-defined]
    dist.settle()
    status = dist.stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=post.name), metadata=dist.editor)
    assert status.rendered == 0 and [f.rep for f in status.failures] == [rep.name]
    assert "missing" in status.failures[0].reason
    assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=post.name, rep=rep.name),
                   metadata=md) == grpc.StatusCode.FAILED_PRECONDITION
    assert dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=good, rep=rep.name), metadata=md).text


def test_a_corrupt_image_fails_with_a_clear_reason(dist: Dist) -> None:
    rep, _ = dist.rep("小赵")
    h = dist.harness
    data = jpeg(9, (400, 300))
    asset = h.content.UploadAsset(upload_messages(data, "broken.jpg"), metadata=dist.editor)  # type: ignore[attr-defined]
    import io

    h.app.blobs.put(f"originals/{asset.name.split('/')[1]}", io.BytesIO(data[:200]), 200, "image/jpeg")  # type: ignore[attr-defined]
    post = h.content.CreatePost(cpb.CreatePostRequest(content=cpb.PostContent(  # type: ignore[attr-defined]
        title="坏图", body="截断的图片。", images=[asset.name])), metadata=dist.editor)
    h.content.PublishPost(cpb.PublishPostRequest(name=post.name), metadata=dist.editor)  # type: ignore[attr-defined]
    dist.settle()
    status = dist.stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=post.name), metadata=dist.editor)
    assert [f.rep for f in status.failures] == [rep.name] and "image 1" in status.failures[0].reason


def test_distinctness_report_and_preview(dist: Dist) -> None:
    reps = [dist.rep(f"顾问{i}", user=False)[0] for i in range(8)]
    post = dist.publish(images=1)
    report = dist.stub.GetDistinctnessReport(pb.GetDistinctnessReportRequest(post=post), metadata=dist.editor)
    assert report.copies == 8 and report.text_duplicates == 0 and report.image_byte_duplicates == 0
    assert report.protected_span_violations == 0
    assert 0 < report.jaccard_max <= 0.8 and report.jaccard_min <= report.jaccard_median <= report.jaccard_max
    assert report.ssim_min >= 0.95
    assert sum(report.phash_distances) == 8 * 7 // 2  # one entry per pair of copies
    preview = dist.stub.PreviewCopies(pb.PreviewCopiesRequest(post=post, sample_reps=[r.name for r in reps[:3]]),
                                      metadata=dist.editor)
    assert len(preview.copies) == 3 and preview.targeted_reps == 8 and preview.policy_met
    assert preview.capacity_estimate >= 8 and all("顾问" in c.text for c in preview.copies)
    assert code_of(dist.stub.PreviewCopies, pb.PreviewCopiesRequest(post=post), metadata=dist.editor) == (
        grpc.StatusCode.INVALID_ARGUMENT)


def test_roles_table_covers_every_rpc() -> None:
    from services.distribution.api import ROLES

    assert set(ROLES) == set(pb.DESCRIPTOR.services_by_name["DistributionService"].methods_by_name)


def test_identical_image_bytes_for_two_reps_are_re_planned(dist: Dist, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.distribution import variation
    from services.distribution.domain.images import plan_edit

    # Force the astronomically rare case: every rep's first plan is the same edit.
    monkeypatch.setattr(variation, "plan_edit",
                        lambda sha, rep_id, attempt=0: plan_edit(sha, "everyone" if attempt == 0 else rep_id, attempt))
    reps = [dist.rep(f"同款{i}", user=False)[0] for i in range(3)]
    post = dist.publish(images=1, badge=False)
    status = dist.stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=post), metadata=dist.editor)
    assert (status.rendered, list(status.failures)) == (3, [])
    report = dist.stub.GetDistinctnessReport(pb.GetDistinctnessReportRequest(post=post), metadata=dist.editor)
    assert report.copies == 3 and report.image_byte_duplicates == 0
    assert len(reps) == 3


# ---- what the service knows of posts (post-changed events) ------------------------------------------


def test_unknown_unpublished_archived_and_deleted_posts_get_their_own_codes(dist: Dist) -> None:
    rep, md = dist.rep("小周")
    h = dist.harness
    unknown = "posts/01aaaaaaaaaaaaaaaaaaaaaaaa"
    for call, request in ((dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=unknown, rep=rep.name)),
                          (dist.stub.GetCampaignStatus, pb.GetCampaignStatusRequest(post=unknown)),
                          (dist.stub.PreviewCopies, pb.PreviewCopiesRequest(post=unknown, sample_reps=[rep.name]))):
        assert code_of(call, request, metadata=dist.editor if call != dist.stub.GetRepCopy else md) == (
            grpc.StatusCode.NOT_FOUND)
    draft = h.content.CreatePost(cpb.CreatePostRequest(content=cpb.PostContent(  # type: ignore[attr-defined]
        title="草稿", body="还没发布")), metadata=dist.editor)
    assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=draft.name, rep=rep.name),
                   metadata=md) == grpc.StatusCode.FAILED_PRECONDITION
    h.content.DeletePost(cpb.DeletePostRequest(name=draft.name), metadata=dist.editor)  # type: ignore[attr-defined]
    assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=draft.name, rep=rep.name),
                   metadata=md) == grpc.StatusCode.NOT_FOUND
    live = dist.publish(images=1)
    assert dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=live, rep=rep.name), metadata=md).text
    h.content.ArchivePost(cpb.ArchivePostRequest(name=live), metadata=dist.editor)  # type: ignore[attr-defined]
    assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=live, rep=rep.name),
                   metadata=md) == grpc.StatusCode.FAILED_PRECONDITION


def stale_reads(what: str) -> float:
    return REGISTRY.get_sample_value("contentops_stale_reads_total", {"what": what}) or 0.0


def copy_image(dist: Dist, name: str, md: tuple[tuple[str, str], ...]) -> bytes:
    return b"".join(m.chunk for m in dist.stub.DownloadCopyImage(pb.DownloadCopyImageRequest(name=name), metadata=md))


@pytest.mark.parametrize("held", [True, False], ids=["ready-copies-held", "views-only"])
def test_shared_links_keep_opening_through_a_database_outage(dist: Dist, monkeypatch: pytest.MonkeyPatch, held: bool) -> None:
    """While the database is down, GetRepCopy and DownloadCopyImage answer from what the service read before: a post's
    state read within POST_STALE_SECONDS, and the copy itself. With the campaign's ready copies held (ReadyCopies: loaded
    in the background once the post gets traffic), every ready copy opens, also one nobody opened before. Without them
    (a budget of 0), only copies served before open (their cached views, while the URLs stay valid). A copy planned on
    demand (a rep who joined later) needs the database: UNAVAILABLE; so is everything with POST_STALE_SECONDS=0 or past
    it. An archive read before the outage still closes the link."""
    service = dist.app.service
    if not held:
        monkeypatch.setattr(service, "ready", ReadyCopies(budget=0))
    (rep, md), (other, _), (gone, gone_md) = dist.rep("小李"), dist.rep("小赵"), dist.rep("小钱")
    post, archived = dist.publish(images=2), dist.publish(images=1)
    copy = dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=rep.name), metadata=md)
    image = copy_image(dist, copy.images[1].name, md)
    service.wait_ready_loaded()
    assert service.ready.size == (3 if held else 0)  # every ready copy of the post read: 小李's, 小赵's and 小钱's
    late, late_md = dist.rep("小孙")  # targeted (every team), its copy planned when first asked for
    dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=archived, rep=gone.name), metadata=gone_md)
    dist.harness.content.ArchivePost(cpb.ArchivePostRequest(name=archived), metadata=dist.editor)  # type: ignore[attr-defined]
    assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=archived, rep=gone.name),
                   metadata=gone_md) == grpc.StatusCode.FAILED_PRECONDITION
    monkeypatch.setattr(service_module, "POST_CACHE_SECONDS", 0.0)  # every call asks the database first
    monkeypatch.setattr(service_module, "VIEW_CACHE_SECONDS", 0.0)
    before = {what: stale_reads(what) for what in ("post_status", "copy_view", "copy_image")}

    up, down = service.db, Database(f"postgresql+psycopg://127.0.0.1:{infra.free_port()}/test", pool_size=1)
    monkeypatch.setattr(service, "db", down)
    monkeypatch.setattr(dist.app.identity, "db", down)  # the callers' tokens: accepted within AUTH_STALE_SECONDS
    other_image = copy.images[1].name.replace(f"/copies/{rep.name.removeprefix('reps/')}/",
                                              f"/copies/{other.name.removeprefix('reps/')}/")
    assert other_image != copy.images[1].name
    try:
        again = dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=rep.name), metadata=md)
        assert again == copy
        assert copy_image(dist, copy.images[1].name, md) == image
        assert {what: stale_reads(what) - before[what] for what in before} == {
            "post_status": 1, "copy_view": 0 if held else 1, "copy_image": 1}  # held: the copy is not stale, just kept
        assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=archived, rep=gone.name),
                       metadata=gone_md) == grpc.StatusCode.FAILED_PRECONDITION  # still archived
        if held:  # never opened before, and it opens (asked by the admin, whose token the service has verified, as
            # the web edge's machine token is on a customer's page; 小赵's own token it never saw)
            other_bytes = copy_image(dist, other_image, dist.admin)  # first, as another replica may be asked for it
            first = dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=other.name), metadata=dist.admin)
            assert first.text.endswith("—— 小赵｜徐汇店") and len(first.images) == 2
            assert first.images[1].name == other_image and hashlib.sha256(other_bytes).hexdigest() == first.images[1].sha256
        else:  # never read: the outage shows
            assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=post, rep=other.name),
                           metadata=dist.admin) == grpc.StatusCode.UNAVAILABLE
            assert code_of(copy_image, dist, other_image, dist.admin) == grpc.StatusCode.UNAVAILABLE
        assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=post, rep=late.name),
                       metadata=dist.admin) == grpc.StatusCode.UNAVAILABLE  # its copy is not even planned yet
        assert code_of(copy_image, dist, copy.images[1].name.replace("/images/1", "/images/2"),
                       md) == grpc.StatusCode.NOT_FOUND  # the cached copy has two images

        monkeypatch.setattr(service, "stale_seconds", 0.0)
        for call in (lambda: dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=rep.name), metadata=md),
                     lambda: copy_image(dist, copy.images[1].name, md)):
            assert code_of(call) == grpc.StatusCode.UNAVAILABLE
        monkeypatch.setattr(service, "stale_seconds", 0.05)
        time.sleep(0.1)  # the post's state is now older than the window; the copy alone does not serve the page
        assert code_of(dist.stub.GetRepCopy, pb.GetRepCopyRequest(post=post, rep=rep.name),
                       metadata=md) == grpc.StatusCode.UNAVAILABLE
    finally:
        down.dispose()
    monkeypatch.setattr(service, "db", up)
    monkeypatch.setattr(dist.app.identity, "db", up)
    assert dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=late.name), metadata=late_md).text


def test_a_published_post_whose_campaign_is_not_planned_yet_is_unavailable(lazy: Dist) -> None:
    from services.protos.contentops.content.v1 import events_pb2

    rep, md = lazy.rep("小吴")
    event = events_pb2.PostChangedEvent(event_id="e1", post="posts/p1", state=events_pb2.POST_LIFECYCLE_PUBLISHED,
                                        version=3, head_revision="posts/p1/revisions/1",
                                        live_revision="posts/p1/revisions/1")
    assert lazy.app.service.handle_post_changed(event.SerializeToString())
    assert code_of(lazy.stub.GetRepCopy, pb.GetRepCopyRequest(post="posts/p1", rep=rep.name),
                   metadata=md) == grpc.StatusCode.UNAVAILABLE  # retryable: its publish event is on its way
    older = events_pb2.PostChangedEvent(event_id="e0", post="posts/p1", state=events_pb2.POST_LIFECYCLE_DRAFT,
                                        version=2, head_revision="posts/p1/revisions/1")
    assert not lazy.app.service.handle_post_changed(older.SerializeToString())  # late and older: ignored
    assert not lazy.app.service.handle_post_changed(event.SerializeToString())  # delivered twice: nothing new
    assert code_of(lazy.stub.GetRepCopy, pb.GetRepCopyRequest(post="posts/p1", rep=rep.name),
                   metadata=md) == grpc.StatusCode.UNAVAILABLE


def test_editors_preview_drafts_and_the_unpublished_head_of_a_live_post(dist: Dist) -> None:
    reps = [dist.rep(f"样本{i}", user=False)[0] for i in range(3)]
    h = dist.harness
    draft = h.content.CreatePost(cpb.CreatePostRequest(content=cpb.PostContent(  # type: ignore[attr-defined]
        title="草稿", body="[[亲爱的家长们|各位爸爸妈妈|各位家长]]，周六上午十点开放日，欢迎到店体验！",
        variation=cpb.VariationSettings(rep_template="{{ body }}\n—— {{ rep.display_name }}"))), metadata=dist.editor)
    preview = dist.stub.PreviewCopies(pb.PreviewCopiesRequest(post=draft.name, sample_reps=[r.name for r in reps]),
                                      metadata=dist.editor)
    assert preview.copies[0].revision == f"{draft.name}/revisions/1"
    assert all("开放日" in c.text and f"—— {r.display_name}" in c.text for c, r in zip(preview.copies, reps, strict=True))
    assert len({c.text for c in preview.copies}) == 3
    live = dist.publish(images=1)
    h.content.UpdatePost(cpb.UpdatePostRequest(post=cpb.Post(name=live, content=cpb.PostContent(  # type: ignore[attr-defined]
        body="改过的正文：「小小探索家」早教中心 ¥99/节 400-820-1234")), update_mask={"paths": ["content.body"]}),
        metadata=dist.editor)
    head = dist.stub.PreviewCopies(pb.PreviewCopiesRequest(post=live, sample_reps=[reps[0].name]), metadata=dist.editor)
    assert head.copies[0].revision == f"{live}/revisions/2" and "改过的正文" in head.copies[0].text
    served = dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=live, rep=reps[0].name), metadata=dist.admin)
    assert served.revision == f"{live}/revisions/1" and "改过的正文" not in served.text  # the live one keeps serving


def test_a_campaign_beyond_its_variation_capacity_warns_the_editor(dist: Dist) -> None:
    reps = [dist.rep(f"顾问{i}", user=False)[0] for i in range(40)]
    h = dist.harness
    post = h.content.CreatePost(cpb.CreatePostRequest(content=cpb.PostContent(  # type: ignore[attr-defined]
        title="短", body="周六开放日。", variation=cpb.VariationSettings(protected_phrases=["周六开放日"]))),
        metadata=dist.editor)
    preview = dist.stub.PreviewCopies(pb.PreviewCopiesRequest(post=post.name, sample_reps=[reps[0].name]),
                                      metadata=dist.editor)
    h.content.PublishPost(cpb.PublishPostRequest(name=post.name), metadata=dist.editor)  # type: ignore[attr-defined]
    dist.settle()
    status = dist.stub.GetCampaignStatus(pb.GetCampaignStatusRequest(post=post.name), metadata=dist.editor)
    assert not preview.policy_met and preview.capacity_estimate < 40 and "targets 40" in preview.warning
    assert not status.policy_met and status.warning == preview.warning


def test_a_reps_contact_qr_is_drawn_on_the_badge(dist: Dist) -> None:
    import io

    import numpy as np
    from PIL import Image

    from .test_distribution_images import qr_like

    h = dist.harness
    qr_png, _ = qr_like(px=8)
    qr_asset = h.content.UploadAsset(upload_messages(qr_png, "qr.png"), metadata=dist.editor)  # type: ignore[attr-defined]
    assert code_of(dist.stub.CreateRep, pb.CreateRepRequest(rep=pb.Rep(display_name="x", contact_qr_asset="assets/nope")),
                   metadata=dist.admin) == grpc.StatusCode.INVALID_ARGUMENT
    with_qr = dist.stub.CreateRep(pb.CreateRepRequest(rep=pb.Rep(display_name="有码", contact_qr_asset=qr_asset.name)),
                                  metadata=dist.admin)
    without = dist.stub.CreateRep(pb.CreateRepRequest(rep=pb.Rep(display_name="无码")), metadata=dist.admin)
    post = dist.publish(images=1, badge=True)

    def badge_darkness(rep: pb.Rep) -> float:
        copy = dist.stub.GetRepCopy(pb.GetRepCopyRequest(post=post, rep=rep.name), metadata=dist.admin)
        data = b"".join(m.chunk for m in dist.stub.DownloadCopyImage(pb.DownloadCopyImageRequest(
            name=f"{copy.name}/images/0"), metadata=dist.admin))
        with dist.app.db.read() as s:
            row = s.scalars(select(CopyRow).where(CopyRow.rep_id == rep.name.split("/")[1])).one()
            box = row.images[0]["badge_box"]  # type: ignore[index]
        plate = np.asarray(Image.open(io.BytesIO(data)).convert("L").crop(tuple(box)))
        return float((plate < 60).mean())

    dark_qr, dark_name = badge_darkness(with_qr), badge_darkness(without)
    assert dark_qr > 3 * dark_name  # QR modules are solid dark; a name is thin strokes


# ---- a worker that dies mid-chunk -------------------------------------------------------------------


class Killed(BaseException):
    """A worker process killed outright: nothing after this runs, nothing is cleaned up."""


def test_a_dead_workers_copies_are_queued_again_once_its_lease_runs_out(recorded: Dist, monkeypatch: pytest.MonkeyPatch) -> None:
    fanout, service = recorded.app.fanout, recorded.app.service
    assert isinstance(fanout, Recording)
    reps = sorted(recorded.rep(f"rep{i}", user=False)[0].name.removeprefix("reps/") for i in range(6))
    recorded.publish(images=1)
    [(campaign, chunk)] = fanout.chunks
    assert sorted(chunk) == reps
    fanout.take()
    start = service_module._now()
    now = [start]
    monkeypatch.setattr(service_module, "_now", lambda: now[0])
    resweep = timedelta(seconds=300)

    def sweep(at: float) -> list[str]:  # at ``at`` seconds after start: the reps queued again
        now[0] = start + timedelta(seconds=at)
        count = service.redispatch_stale(resweep)
        queued = fanout.take()
        assert count == len(queued)
        return queued

    assert sweep(0) == []  # queued at publish, not yet taken: the broker holds it, nothing to do

    real = service.render_copy

    def dies(campaign_id: str, rep_id: str) -> bool:
        raise Killed  # while rendering the chunk's first copy

    monkeypatch.setattr(service, "render_copy", dies)
    with pytest.raises(Killed):
        service.render_chunk(campaign, reps)
    monkeypatch.setattr(service, "render_copy", real)
    assert sweep(59) == []  # the lease (60 s) still holds: the worker may be alive, just slow
    assert sweep(61) == reps  # it ran out: queued again at once, not CAMPAIGN_RESWEEP_SECONDS after publishing
    assert sweep(62) == []  # queued again: held for the resweep, not sent at every sweep
    assert sweep(61 + 301) == reps  # still nobody took them

    # A live worker renews its lease as it goes, so a chunk slower than the lease is never queued twice.
    mid_chunk: list[list[str]] = []

    def slow(campaign_id: str, rep_id: str) -> bool:
        now[0] += timedelta(seconds=50)  # each copy takes 50 s: the chunk outlives its first lease 4 times over
        mid_chunk.append(sweep((now[0] - start).total_seconds()))
        return real(campaign_id, rep_id)

    monkeypatch.setattr(service, "render_copy", slow)
    assert service.render_chunk(campaign, reps) == len(reps)
    assert mid_chunk == [[]] * len(reps)
    assert sweep((now[0] - start).total_seconds() + 10_000) == []  # ready copies are never queued again
    with recorded.app.db.read() as s:
        assert set(s.scalars(select(CopyRow.state).where(CopyRow.campaign_id == campaign))) == {"ready"}


def test_copies_whose_chunk_was_never_queued_are_queued_after_the_resweep(recorded: Dist, monkeypatch: pytest.MonkeyPatch) -> None:
    """The publish handler planned the campaign and died before dispatching it: no worker ever leased a copy."""
    fanout, service = recorded.app.fanout, recorded.app.service
    assert isinstance(fanout, Recording)
    reps = sorted(recorded.rep(f"rep{i}", user=False)[0].name.removeprefix("reps/") for i in range(3))
    recorded.publish(images=1)
    fanout.take()  # lost
    start = service_module._now()
    real_dispatch = fanout.dispatch

    def broker_down(campaign_id: str, chunks: list[list[str]]) -> None:
        raise Unavailable("the broker is down")

    for after, queued in ((299, []), (301, "down"), (301, reps), (302, []), (301 + 301, reps)):
        monkeypatch.setattr(service_module, "_now", lambda a=after: start + timedelta(seconds=a))
        if queued == "down":  # a sweep that cannot queue them leaves them to the next one
            monkeypatch.setattr(fanout, "dispatch", broker_down)
            with pytest.raises(Unavailable):
                service.redispatch_stale(timedelta(seconds=300))
            monkeypatch.setattr(fanout, "dispatch", real_dispatch)
            continue
        assert service.redispatch_stale(timedelta(seconds=300)) == len(queued)
        assert fanout.take() == queued
