"""``make demo``: the main job on the embedded default, with nothing running beforehand.

Starts the content and distribution services in-process (SQLite + local blob
folder + in-process jobs, all under ./var/demo), creates an editor and five
reps, uploads the bundled sample post (Chinese text and three photos), revises
it, publishes it, schedules a second post and lets the scheduler publish it.
Each rep then fetches their own copy over gRPC; the copies (text and images)
are written to ./var/demo/copies/ and the distinctness report is printed.

Then the tracking service: simulated customers open the reps' links (one through
a per-contact link, one a forward, one a bot) and read for different lengths of
time, last evening and this morning by a simulated server clock; the demo prints
each rep's leads for today, one contact's tags with their evidence and timeline,
a live activity event and the post's analytics, and last the links to open in a
browser once ``make run`` serves the same data: a rep's, a sales manager's and the
editor's sign-in links, and a customer's share link.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf import field_mask_pb2

from services.content.__main__ import build_server
from services.content.app import ContentApp
from services.content.events import POST_PUBLISHED, InProcessEvents
from services.distribution.__main__ import build_server as build_distribution_server
from services.distribution.app import DistributionApp
from services.protos.contentops.content.v1 import content_pb2 as pb
from services.protos.contentops.content.v1 import content_pb2_grpc as pb_grpc
from services.protos.contentops.content.v1 import events_pb2
from services.protos.contentops.distribution.v1 import distribution_pb2 as dpb
from services.protos.contentops.distribution.v1 import distribution_pb2_grpc as dpb_grpc
from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb
from services.protos.contentops.tracking.v1 import tracking_pb2_grpc as tpb_grpc
from services.shared.apiutil import to_timestamp
from services.shared.identity.domain import Role
from services.shared.logs import configure_logging
from services.shared.settings import load_settings
from services.tracking.__main__ import build_server as build_tracking_server
from services.tracking.app import TrackingApp
from services.tracking.ingest import SimulatedClock

DATA = Path(__file__).parent / "demo_data"
OUT = Path("var/demo")
REPS = [("李晓雨", "徐汇店"), ("王珊", "静安店"), ("张可欣", "浦东店"), ("陈默", "长宁店"), ("刘佳", "闵行店")]


def say(step: str, detail: str = "") -> None:
    print(f"• {step}" + (f"\n    {detail}" if detail else ""), flush=True)


def upload(stub: pb_grpc.ContentServiceStub, md: tuple[tuple[str, str], ...], path: Path) -> pb.Asset:
    def messages() -> Iterator[pb.UploadAssetRequest]:
        yield pb.UploadAssetRequest(metadata=pb.AssetMetadata(filename=path.name, request_id=str(uuid.uuid4())))
        data = path.read_bytes()
        for i in range(0, len(data), 64 * 1024):
            yield pb.UploadAssetRequest(chunk=data[i : i + 64 * 1024])

    return stub.UploadAsset(messages(), metadata=md, timeout=30)


def main() -> int:
    configure_logging("WARNING", "text")
    shutil.rmtree(OUT, ignore_errors=True)
    settings = load_settings({"CONTENTOPS_DATA_DIR": str(OUT), "SCHEDULER_INTERVAL_SECONDS": "1"})
    events = InProcessEvents()
    published: list[events_pb2.PostPublishedEvent] = []
    events.subscribe(POST_PUBLISHED, lambda raw: published.append(events_pb2.PostPublishedEvent.FromString(raw)))

    app = ContentApp.build(settings, events=events)
    server = build_server(app, "127.0.0.1:0")
    server.start()
    dist = DistributionApp.build(settings, blobs=app.blobs, migrate=True)
    events.subscribe_all(dist.service.event_handlers())
    dist_server = build_distribution_server(dist, "127.0.0.1:0")
    dist_server.start()
    dist_channel = grpc.insecure_channel(f"127.0.0.1:{dist_server.port}")
    dist_stub = dpb_grpc.DistributionServiceStub(dist_channel)
    print(f"ContentOps demo — embedded default: SQLite + local blobs in {OUT.resolve()}, in-process jobs")
    say("content and distribution services started",
        f"gRPC on 127.0.0.1:{server.port} and 127.0.0.1:{dist_server.port} (health + reflection on)")
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.ContentServiceStub(channel)
    try:
        editor, _, secret = app.identity.create_user("王编辑", Role.EDITOR)
        md = (("authorization", f"Bearer {secret}"),)
        say("editor created", f"{editor.name}; token shown once, stored only as a hash: {secret[:12]}…")

        admin = (("authorization", f"Bearer {app.identity.create_user('管理员', Role.ADMIN)[2]}"),)
        dist_stub.CreateTeam(dpb.CreateTeamRequest(team=dpb.Team(name="teams/shanghai", display_name="上海团队")),
                             metadata=admin)
        reps = []
        for name, store in REPS:
            user, _, rep_secret = app.identity.create_user(name, Role.REP)
            rep = dist_stub.CreateRep(dpb.CreateRepRequest(rep=dpb.Rep(
                display_name=name, signature="有问题随时找我～", store=store, region="上海", team="teams/shanghai",
                user=user.name)), metadata=admin)
            reps.append((rep, (("authorization", f"Bearer {rep_secret}"),)))
        say(f"{len(reps)} reps created in teams/shanghai", ", ".join(f"{r.display_name}（{r.store}）" for r, _ in reps))

        topics = []
        for topic_id, label in [("early-education", "早教"), ("picture-books", "亲子阅读")]:
            t = stub.CreateTopic(pb.CreateTopicRequest(topic=pb.Topic(display_name=label), topic_id=topic_id,
                                                       request_id=str(uuid.uuid4())), metadata=md)
            topics.append(t.name)
        say("topics created", ", ".join(topics))

        assets = [upload(stub, md, p) for p in sorted(DATA.glob("*.jpg"))]
        for a in assets:
            say(f"uploaded {a.filename}", f"{a.name} {a.mime_type} {a.width}x{a.height} {a.size_bytes:,} B sha256 {a.sha256[:12]}…")
        again = upload(stub, md, sorted(DATA.glob("*.jpg"))[0])
        say("same photo uploaded again", f"deduplicated by sha256 → {again.name} (same asset)")

        body = (DATA / "post.txt").read_text(encoding="utf-8")
        content = pb.PostContent(
            title="5岁小姑娘的创造力启蒙三步走",
            body=body,
            images=[a.name for a in assets],
            topics=topics,
            variation=pb.VariationSettings(
                protected_phrases=["「小小探索家」早教中心", "¥99/节", "400-820-1234"],
                rep_template="{{ body }}\n\n—— {{ rep.display_name }}｜{{ rep.store }}\n{{ rep.signature }}",
                badge_enabled=True,
            ),
        )
        try:
            bad = pb.PostContent()
            bad.CopyFrom(content)
            bad.variation.rep_template = "{{ body }} {{ rep.phone }}"
            stub.CreatePost(pb.CreatePostRequest(content=bad), metadata=md)
        except grpc.RpcError as err:
            say("a template using an unknown variable is refused when saved",
                f"{err.code().name}: {err.details()}")  # type: ignore[attr-defined]

        post = stub.CreatePost(pb.CreatePostRequest(content=content, request_id=str(uuid.uuid4())), metadata=md)
        say("draft created", f"{post.name} state={pb.PostState.Name(post.state)} head={post.head_revision}")

        post = stub.PublishPost(pb.PublishPostRequest(name=post.name, etag=post.etag), metadata=md)
        say("published", f"state={pb.PostState.Name(post.state)} live={post.published_revision}")

        edit = pb.Post(name=post.name, etag=post.etag, content=pb.PostContent(title="5岁女孩创造力启蒙三步走｜开放日"))
        post = stub.UpdatePost(pb.UpdatePostRequest(post=edit, update_mask=field_mask_pb2.FieldMask(
            paths=["content.title"])), metadata=md)
        say("edited after publishing → a new draft revision; the live one keeps serving",
            f"head={post.head_revision} live={post.published_revision} unpublished_changes={post.has_unpublished_changes}")
        try:
            stub.PublishPost(pb.PublishPostRequest(name=post.name, etag="stale"), metadata=md)
        except grpc.RpcError as err:
            say("publishing with a stale etag is refused", f"{err.code().name}: {err.details()}")  # type: ignore[attr-defined]
        post = stub.PublishPost(pb.PublishPostRequest(name=post.name, etag=post.etag), metadata=md)
        say("revision 2 published", f"live={post.published_revision}")

        later = pb.PostContent(title="下周亲子阅读会", body="[[周日|本周日]]下午3点，亲子阅读会，报名电话 400-820-1234。",
                               topics=[topics[1]], images=[assets[1].name])
        second = stub.CreatePost(pb.CreatePostRequest(content=later), metadata=md)
        when = datetime.now(UTC) + timedelta(seconds=2)
        second = stub.PublishPost(pb.PublishPostRequest(name=second.name, publish_time=to_timestamp(when)), metadata=md)
        say("second post scheduled", f"{second.name} state={pb.PostState.Name(second.state)} at {when:%H:%M:%S} UTC")
        time.sleep(2.2)
        n = app.service.publish_due_posts()  # what Celery beat / the in-process scheduler runs
        second = stub.GetPost(pb.GetPostRequest(name=second.name), metadata=md)
        say(f"scheduler ran: {n} post(s) went live", f"{second.name} state={pb.PostState.Name(second.state)}")

        revisions = stub.ListPostRevisions(pb.ListPostRevisionsRequest(parent=post.name), metadata=md)
        say("revision history of the first post", "; ".join(
            f"{r.name.rsplit('/', 1)[1]}: {r.content.title}" + (" (published)" if r.HasField("publish_time") else "")
            for r in revisions.revisions))

        say(f"publish events handed to distribution: {len(published)}")
        for e in published:
            print(f"    {e.event_id} {e.revision} 《{e.content.title}》 {len(e.content.images)} image(s), "
                  f"topics {', '.join(e.content.topics)}")
        listed = stub.ListPosts(pb.ListPostsRequest(state=pb.POST_STATE_PUBLISHED), metadata=md)
        say(f"published posts now: {len(listed.posts)}")

        dist.fanout.wait_idle(timeout=120)  # type: ignore[attr-defined]
        status = dist_stub.GetCampaignStatus(dpb.GetCampaignStatusRequest(post=post.name), metadata=md)
        say("campaign for the first post's live revision",
            f"{status.revision}: {status.rendered}/{status.total} copies rendered, "
            f"{len(status.failures)} failed; variation space serves ~{status.capacity_estimate} reps")
        copies_dir = OUT / "copies"
        for rep, rep_md in reps:
            copy = dist_stub.GetRepCopy(dpb.GetRepCopyRequest(post=post.name, rep=rep.name), metadata=rep_md)
            folder = copies_dir / rep.display_name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "text.txt").write_text(copy.text, encoding="utf-8")
            for image in copy.images:
                data = b"".join(m.chunk for m in dist_stub.DownloadCopyImage(
                    dpb.DownloadCopyImageRequest(name=image.name), metadata=rep_md))
                (folder / f"image-{image.name.rsplit('/', 1)[1]}.jpg").write_bytes(data)
        say(f"each rep fetched their own copy; written to {copies_dir.resolve()}")
        first_rep, first_md = reps[0]
        sample = dist_stub.GetRepCopy(dpb.GetRepCopyRequest(post=post.name, rep=first_rep.name), metadata=first_md)
        print(f"\n    ---- {first_rep.display_name}'s copy ----")
        print("    " + sample.text.replace("\n", "\n    "))
        print(f"    images: {', '.join(f'{i.width}x{i.height} {i.sha256[:10]}…' for i in sample.images)}")
        print(f"    share link token: {sample.share_token[:32]}…\n")
        try:
            dist_stub.GetRepCopy(dpb.GetRepCopyRequest(post=post.name, rep=reps[1][0].name), metadata=first_md)
        except grpc.RpcError as err:
            say("a rep asking for another rep's copy is refused", f"{err.code().name}: {err.details()}")  # type: ignore[attr-defined]

        report = dist_stub.GetDistinctnessReport(dpb.GetDistinctnessReportRequest(post=post.name),
                                                 metadata=md)
        say("distinctness report", "\n    ".join([
            f"copies: {report.copies}",
            f"text: {report.text_duplicates} duplicates; pairwise 5-gram Jaccard min {report.jaccard_min:.3f} / "
            f"median {report.jaccard_median:.3f} / max {report.jaccard_max:.3f} (policy: ≤ 0.8)",
            f"images: {report.image_byte_duplicates} byte duplicates; pHash distances {histogram(report.phash_distances)}; "
            f"dHash distances {histogram(report.dhash_distances)}",
            f"fidelity: minimum SSIM against the aligned original {report.ssim_min:.4f} (policy: ≥ 0.95)",
            f"protected-span violations: {report.protected_span_violations}",
        ]))
        track_customers(settings, events, app, post.name, reps, md, dist_stub)
        _, _, sales_secret = app.identity.create_user("赵经理", Role.SALES, "", "teams/shanghai")
        web = f"http://{settings.web_addr}"
        say("open it in a browser: run `make run` (it serves this demo's data), then open",
            "\n    ".join([
                f"rep {first_rep.display_name}:  {web}/signin?token={first_md[0][1].removeprefix('Bearer ')}",
                f"sales manager of 上海团队:  {web}/signin?token={sales_secret}",
                f"editor 王编辑:  {web}/signin?token={secret}",
                f"a customer (the rep's share link):  {web}/s/{sample.share_token}",
            ]))
        print("done.")
        return 0
    finally:
        channel.close()
        dist_channel.close()
        server.stop(grace=2)
        dist_server.stop(grace=2)
        dist.close()
        app.close()


def track_customers(settings, events, app, post: str, reps, editor_md, dist_stub) -> None:  # type: ignore[no-untyped-def]
    """Customers open the reps' links and read; the reps see leads, tags with evidence and live activity."""
    from zoneinfo import ZoneInfo

    tracking = TrackingApp.build(settings, migrate=True)
    tz = ZoneInfo(settings.tracking_timezone)
    today = datetime.now(tz).replace(second=0, microsecond=0)
    yesterday_evening = (today - timedelta(days=1)).replace(hour=21, minute=14)
    this_morning = min(today - timedelta(minutes=30), today.replace(hour=8, minute=40))
    clock = SimulatedClock(yesterday_evening.timestamp())
    tracking.ingest.clock = clock
    server = build_tracking_server(tracking, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = tpb_grpc.TrackingServiceStub(channel)
    try:
        # Titles and topics of the published revisions reach tracking from the content service's events.
        events.subscribe_all(tracking.service.event_handlers())
        from sqlalchemy import select

        from services.content.models import OutboxRow

        with app.db.read() as s:
            for row in s.scalars(select(OutboxRow).where(OutboxRow.topic == POST_PUBLISHED).order_by(OutboxRow.id)):
                tracking.service.handle_post_published(row.payload)  # they were published before tracking started
        edge = (("authorization", f"Bearer {app.identity.create_user('web edge', Role.SERVICE)[2]}"),)
        say("tracking service started", f"gRPC on 127.0.0.1:{server.port}; the web edge calls it with a service token")

        def read(token: str, seconds: int, visitor: str = "", ua: str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) "
                 "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47") -> tpb.StartViewResponse:
            view = stub.StartView(tpb.StartViewRequest(share_token=token, visitor_id=visitor, user_agent=ua,
                                                       client_ip="203.0.113.7"), metadata=edge)
            for seq in range(1, (seconds + 9) // 10 + 1):
                delta = min(10_000, seconds * 1000 - (seq - 1) * 10_000)
                clock.advance(delta / 1000)
                stub.RecordEngagement(iter([tpb.RecordEngagementRequest(heartbeats=[tpb.Heartbeat(
                    view=view.view, seq=seq, engaged_ms_delta=delta, max_scroll_percent=min(100, seq * 5))])]),
                    metadata=edge)
            stub.EndView(tpb.EndViewRequest(view=view.view), metadata=edge)
            return view

        tokens = {rep.name: dist_stub.GetRepCopy(dpb.GetRepCopyRequest(post=post, rep=rep.name), metadata=rep_md).share_token
                  for rep, rep_md in reps}
        (li, li_md), (wang, wang_md), (zhang, _zhang_md) = reps[0], reps[1], reps[2]
        youyou = stub.CreateContactLink(tpb.CreateContactLinkRequest(parent=li.name, share_token=tokens[li.name],
                                                                     contact_display_name="优优妈妈"), metadata=li_md)
        xiaoming = stub.CreateContactLink(tpb.CreateContactLinkRequest(parent=wang.name, share_token=tokens[wang.name],
                                                                       contact_display_name="小明爸爸"), metadata=wang_md)
        say("per-contact links created", f"{li.display_name} → {youyou.contact.display_name}; "
            f"{wang.display_name} → {xiaoming.contact.display_name}")

        watched: list[str] = []
        watching = threading.Event()

        def watch() -> None:
            call = stub.WatchActivity(tpb.WatchActivityRequest(rep=li.name), metadata=li_md)
            watching.set()
            try:
                for event in call:
                    watched.append(event.message)
                    call.cancel()  # one is enough for the demo
            except grpc.RpcError as err:
                if err.code() is not grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                    raise

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        watching.wait(5)
        time.sleep(0.3)
        first = read(youyou.share_token, 13 * 60)  # 优优妈妈 reads 13 minutes, last evening at 21:14
        clock.advance(300)
        read(first.forward_share_token, 150)  # she forwards it; a friend reads two and a half minutes
        clock.advance(60)
        read(tokens[li.name], 40)  # someone opens 李晓雨's own link for 40 s
        read(tokens[wang.name], 5 * 60, ua="Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
        read(xiaoming.share_token, 5 * 60)  # 小明爸爸 reads five minutes
        read(tokens[zhang.name], 5)  # a five-second bounce on 张可欣's link
        clock.now = this_morning.timestamp()
        read(youyou.share_token, 4 * 60, visitor=first.visitor_id)  # 优优妈妈 comes back this morning
        tracking.wait_applied(30)
        watcher.join(5)
        say("customers read (simulated: last evening and this morning)",
            "优优妈妈 13 min + 4 min, a friend she forwarded it to 2.5 min, an anonymous visitor 40 s, "
            "小明爸爸 5 min, a Googlebot, a 5 s bounce")
        if watched:
            say(f"live activity for {li.display_name} (WatchActivity)", watched[0])

        for rep, rep_md in reps:
            leads = stub.ListLeads(tpb.ListLeadsRequest(parent=rep.name), metadata=rep_md)
            lines = [f"{lead.contact.display_name}: {lead.reason}；{lead.talking_point}" for lead in leads.leads]
            say(f"{rep.display_name}'s leads today ({len(lines)})", "\n    ".join(lines) or "—")
        profile = stub.GetContactProfile(tpb.GetContactProfileRequest(name=youyou.contact.name), metadata=li_md)
        tags = [f"{t.label} (score {t.score:.2f}): " + "；".join(e.description for e in t.evidence) for t in profile.tags]
        say(f"{profile.contact.display_name}'s tags with evidence", "\n    ".join(tags) or "—")
        say(f"{profile.contact.display_name}'s timeline", "\n    ".join(e.description for e in profile.timeline))
        try:
            stub.GetContactProfile(tpb.GetContactProfileRequest(name=youyou.contact.name), metadata=wang_md)
        except grpc.RpcError as err:
            say("another rep asking for this contact is refused", f"{err.code().name}: {err.details()}")  # type: ignore[attr-defined]
        stats = stub.GetPostAnalytics(tpb.GetPostAnalyticsRequest(post=post), metadata=editor_md)
        say("post analytics for the editor (no contact identities)", "\n    ".join([
            f"views {stats.views}, unique viewers {stats.unique_viewers}, bot views {stats.bot_views}, "
            f"engaged p50 {stats.engaged_seconds_p50} s / p90 {stats.engaged_seconds_p90} s",
            "engaged time: " + ", ".join(f"{b.label} {b.views}" for b in stats.engaged_histogram),
            "top spreaders: " + ", ".join(f"{s.rep} share {s.share_id[:6]}… → {s.downstream_views} downstream view(s)"
                                          for s in stats.top_spreaders[:3]),
        ]))
    finally:
        channel.close()
        server.stop(grace=2)
        tracking.close()


def histogram(counts: list[int]) -> str:
    """[d] = number of pairs at distance d -> 'd:n' for the non-zero entries."""
    return " ".join(f"{d}:{n}" for d, n in enumerate(counts) if n) or "—"


if __name__ == "__main__":
    sys.exit(main())
