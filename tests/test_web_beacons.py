"""The beacon's fast path on the production backend: the edge appends beacons straight to tracking's event log in Redis.

- Beacons sent through the edge land in the tracking service's streams as the ingest would write them and the
  tracking consumer applies them as engaged time; a replayed beacon is deduplicated.
- A forged view id is 404 and nothing is written; bad input is 400 naming the field; a flood of one view's
  heartbeats gets 429 past tracking's per-view limit, and a refused beacon is not recorded.
- 200 concurrent beacons are all acknowledged (204) and applied exactly once; beacons waiting together share one
  pipelined write, one IngestBatch per partition, in the partition the tracking service would pick.
- Redis unreachable: 503 with a plain explanation, not 500.
- A page served while tracking was down asks for its view later (POST /s/{token}/view): 503 while tracking is still
  down, then the view, the visitor cookie and the forward link; in a real Chromium the page's script does so by
  itself once tracking is back, and the reading from then on is recorded.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.protos.contentops.tracking.v1 import tracking_pb2 as pb
from services.shared.errors import Unavailable
from services.shared.metrics import UNTRACKED_PAGES
from services.tracking.domain.privacy import hash_ip
from services.tracking.domain.ratelimit import VISITOR_VIEWS
from services.tracking.ingest import view_key_for
from services.tracking.models import EventRow, ViewRow
from services.tracking.streams import RedisEventLog, stream_key
from services.web.customer import VISITOR_COOKIE
from services.web.edge_ingest import RedisIngest

from . import infra
from .helpers import wait_for
from .test_web import BODY
from .tracking_harness import Track, log_payloads
from .web_harness import PHONE_UA, Web, chromium, serve_web

pytestmark = pytest.mark.parametrize("settings", ["production"], indirect=True)


@pytest.fixture
def beacons(track: Track) -> RedisIngest:
    """The edge's beacons, on the tracking harness's own streams (its key prefix)."""
    assert isinstance(track.app.event_log, RedisEventLog)
    return RedisIngest.from_settings(track.app.settings, url=infra.REDIS_URL, prefix=track.app.event_log.prefix)


@pytest.fixture
def web(track: Track, beacons: RedisIngest) -> Iterator[Web]:
    yield from serve_web(track, beacons)


@pytest.fixture
def web_without_redis(track: Track) -> Iterator[Web]:
    """The edge with its beacons pointed at a port nothing listens on (the shared Redis is never stopped)."""
    closed = RedisIngest.from_settings(track.app.settings, url=f"redis://127.0.0.1:{infra.free_port()}/0",
                                        prefix=f"test:none:{uuid.uuid4().hex[:8]}")
    yield from serve_web(track, closed)


def shared_token(track: Track) -> tuple[str, str]:
    topic = track.topic("creativity", "创造力启蒙")
    post = track.publish("5岁小姑娘的创造力启蒙三步走", BODY, [topic], images=1)
    rep, md = track.rep("王老师")
    return post, track.share_token(post, rep, md)


def start_views(track: Track, token: str, count: int) -> list[str]:
    """``count`` views of the link by as many visitors (StartView as the edge calls it): their names, views/<id>."""
    return [track.stub.StartView(pb.StartViewRequest(share_token=token, visitor_id=f"visitor-{i:04d}-{uuid.uuid4().hex[:8]}",
                                                     user_agent=PHONE_UA), metadata=track.edge).view for i in range(count)]


def beat(client: httpx.Client, **fields: object) -> httpx.Response:
    return client.post("/t/beat", content=json.dumps(fields), headers={"content-type": "text/plain"})


def views_of(track: Track, post: str) -> list[ViewRow]:
    with track.app.db.read() as s:
        return list(s.scalars(select(ViewRow).where(ViewRow.post_id == post.removeprefix("posts/"))))


def events_of(track: Track, view_ids: list[str]) -> int:
    with track.app.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(EventRow).where(EventRow.view_id.in_(view_ids))) or 0)


def logged_events(track: Track) -> list[pb.IngestEvent]:
    return [e for payload in log_payloads(track.app.event_log) for e in pb.IngestBatch.FromString(payload).events]


def test_beacons_through_the_edge_are_written_to_the_tracking_log_and_applied_as_engaged_time(
        web: Web, beacons: RedisIngest) -> None:
    post, token = shared_token(web.track)
    with httpx.Client(base_url=web.url, headers={"user-agent": PHONE_UA}) as client:
        page = client.get(f"/s/{token}")
        view = re.search(r'data-view="(views/[^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        before = time.time() * 1000
        assert beat(client, view=view, seq=1, engaged_ms=4_000, scroll=30).status_code == 204
        assert beat(client, view=view, seq=1, engaged_ms=4_000, scroll=30).status_code == 204  # replayed
        assert beat(client, view=view, seq=2, engaged_ms=3_000, scroll=80, end=True).status_code == 204
        after = time.time() * 1000
        metrics = client.get("/metrics").text  # served ahead of the router, still counted under its route
        assert re.search(r'contentops_http_request_duration_seconds_count\{method="POST",route="/t/beat",status="204"\} [1-9]',
                         metrics), [line for line in metrics.splitlines() if "/t/beat" in line]
    assert beacons.stats.beacons == 3 and beacons.stats.failed == 0  # the fast path, not the gRPC one
    view_id = view.removeprefix("views/")
    mine = [e for e in logged_events(web.track) if e.WhichOneof("kind") != "started"]
    assert [(e.WhichOneof("kind"), e.heartbeat.seq, e.heartbeat.engaged_ms_delta, e.heartbeat.max_scroll_percent,
             e.ended.last_seq) for e in mine] == [("heartbeat", 1, 4_000, 30, 0), ("heartbeat", 1, 4_000, 30, 0),
                                                  ("heartbeat", 2, 3_000, 80, 0), ("ended", 0, 0, 0, 2)]
    assert all(view_id in (e.heartbeat.view, e.ended.view) and before - 1 <= e.received_ms <= after + 1 for e in mine)
    assert web.track.app.wait_applied(20)
    (row,) = views_of(web.track, post)
    assert row.engaged_ms == 7_000 and row.max_scroll_percent == 80 and row.closed  # the replay counted once
    assert events_of(web.track, [view_id]) == 2


def test_a_page_opened_through_the_edge_starts_its_view_in_the_log_as_the_tracking_service_would(
        web: Web, beacons: RedisIngest) -> None:
    post, token = shared_token(web.track)
    track, share = web.track, web.track.app.ingest.tokens.verify(token)
    with httpx.Client(base_url=web.url, headers={"user-agent": PHONE_UA, "referer": "https://weixin.qq.com/x?y=1"}) as client:
        first, again = client.get(f"/s/{token}"), client.get(f"/s/{token}")  # the second with the cookie the first set
        assert first.status_code == again.status_code == 200
        names = [re.search(r'data-view="(views/[^"]+)"', p.text).group(1) for p in (first, again)]  # type: ignore[union-attr]
        forward = re.search(r'id="forward-url" value="[^"]*/s/([^"]+)"', first.text).group(1)  # type: ignore[union-attr]
        visitor = client.cookies[VISITOR_COOKIE]
    assert beacons.stats.views == 2 and beacons.stats.beacons == 0
    started = [e.started for e in logged_events(track) if e.WhichOneof("kind") == "started"]
    assert [f"views/{e.view}" for e in started] == names and len(set(names)) == 2
    assert all(track.app.ingest.check_view(name, "view") for name in names)  # signed with the tracking service's key
    for e in started:
        assert (e.post, e.rep, e.share_id, e.revision, e.copy_id) == (share.post_id, share.rep_id, share.share_id,
                                                                      share.revision, share.copy_id)
        assert (e.visitor_id, e.bot, e.referrer_host) == (visitor, False, "weixin.qq.com")
        assert e.ip_hash == hash_ip("127.0.0.1", track.app.settings.tracking_ip_salt) and e.user_agent_family
    child = track.app.ingest.tokens.verify(forward)
    assert (child.parent_share_id, child.rep_id, child.post_id) == (share.share_id, share.rep_id, share.post_id)
    track.settle()
    assert sorted(f"views/{r.id}" for r in views_of(track, post)) == sorted(names)


def test_the_edge_refuses_expired_links_and_view_floods_as_the_tracking_service_does(web: Web, beacons: RedisIngest) -> None:
    _, token = shared_token(web.track)
    with httpx.Client(base_url=web.url, headers={"user-agent": PHONE_UA}) as client:
        opened = [client.get(f"/s/{token}").status_code for _ in range(VISITOR_VIEWS.burst + 5)]  # one visitor (cookie)
        assert set(opened) == {200, 429} and opened[0] == 200
        assert VISITOR_VIEWS.burst <= opened.count(200) <= VISITOR_VIEWS.burst + 2
        assert beacons.stats.views == opened.count(200)  # a refused view writes nothing
        client.cookies.clear()
        expired_before = beacons.starts.refusals.snapshot().get("expired", 0)
        beacons.clock = lambda: time.time() + web.track.app.settings.tracking_token_max_age_days * 86_400 + 60
        assert client.get(f"/s/{token}").status_code == 410
        assert beacons.starts.refusals.snapshot().get("expired", 0) == expired_before + 1
    assert beacons.stats.views == opened.count(200)


class Outage:
    """The edge's beacons, with tracking down while ``down`` is set: no view can be started."""

    def __init__(self, beacons: RedisIngest) -> None:
        self.beacons = beacons
        self.down = True
        self.refused = 0  # views asked for while down
        self.sent_ms = 0  # engaged time the page's beacons reported

    def open(self) -> None:
        self.beacons.open()

    async def close(self) -> None:
        await self.beacons.close()

    async def start_view(self, *args: Any, **kwargs: Any) -> pb.StartViewResponse:
        if self.down:
            self.refused += 1
            raise Unavailable("tracking is down")
        return await self.beacons.start_view(*args, **kwargs)

    async def record(self, view: str, seq: int, engaged_ms: int, *args: Any, **kwargs: Any) -> None:
        await self.beacons.record(view, seq, engaged_ms, *args, **kwargs)
        self.sent_ms += engaged_ms


def test_with_tracking_down_a_live_link_is_served_untracked_and_an_expired_one_still_410(track: Track,
                                                                                            beacons: RedisIngest) -> None:
    _, token = shared_token(track)
    share = track.app.ingest.tokens.verify(token)
    old, _ = track.app.ingest.tokens.child(share, now=time.time() - track.app.settings.tracking_token_max_age_days * 86_400 - 60)
    for web in serve_web(track, Outage(beacons)):
        with httpx.Client(base_url=web.url, headers={"user-agent": PHONE_UA}) as client:
            live = client.get(f"/s/{token}")
            assert live.status_code == 200 and 'data-view=""' in live.text and "价格 199 元" in live.text
            assert client.get(f"/s/{old}").status_code == 410  # what the tracking service would have said


def test_a_page_served_untracked_gets_its_view_once_tracking_is_back(track: Track, beacons: RedisIngest) -> None:
    post, token = shared_token(track)
    outage = Outage(beacons)
    for web in serve_web(track, outage):
        with httpx.Client(base_url=web.url, headers={"user-agent": PHONE_UA}) as client:
            page = client.get(f"/s/{token}")
            assert page.status_code == 200 and 'data-view=""' in page.text
            start = re.search(r'data-start="([^"]+)"', page.text)
            assert start and start.group(1) == f"/s/{token}/view"
            still_down = client.post(start.group(1))
            assert still_down.status_code == 503 and still_down.headers["retry-after"] and VISITOR_COOKIE not in client.cookies
            outage.down = False
            started = client.post(start.group(1))
            assert started.status_code == 200, started.text
            body = started.json()
            assert body["view"].startswith("views/") and body["interval"] == 10
            assert body["forward"].startswith(f"{web.url}/s/") and body["forward"] != f"{web.url}/s/{token}"
            assert client.cookies.get(VISITOR_COOKIE)
            assert beat(client, view=body["view"], seq=1, engaged_ms=7_000, scroll=40, end=True).status_code == 204
            forged = client.post(f"/s/{token[:-2]}xx/view")
            assert forged.status_code == 404
        assert track.app.wait_applied(20)
        with track.app.db.read() as s:
            (row,) = s.scalars(select(ViewRow).where(ViewRow.post_id == post.removeprefix("posts/"))).all()
        assert f"views/{row.id}" == body["view"] and row.engaged_ms == 7_000 and row.closed


def read_through_an_outage(url: str, outage: Outage) -> None:
    """A phone opens the page while tracking is down, reads 9.5 s or more, looks away a moment, and tracking comes back;
    once the page has its view (the forward link shows), it reads 4 s more and leaves."""
    driver = chromium(PHONE_UA)
    try:
        driver.get(url)
        assert driver.find_element("tag name", "body").get_attribute("data-view") == ""
        assert not driver.find_element("id", "forward-url").is_displayed()
        wait_for(lambda: outage.refused >= 1, "the page to ask for its view while tracking is down", wait_s=30)
        time.sleep(8)  # the first ask comes 1.5 to 4.5 s after the load
        reader = driver.current_window_handle
        driver.switch_to.new_window("tab")  # hidden a moment: the page settles the time read so far
        time.sleep(1)
        driver.close()
        driver.switch_to.window(reader)
        wait_for(lambda: driver.execute_script("return document.visibilityState") == "visible", "the page in front")
        outage.down = False
        wait_for(lambda: driver.find_element("id", "forward-url").is_displayed(), "the view, and its forward link",
                 wait_s=60)
        time.sleep(4)
        driver.get("about:blank")  # leaving: pagehide flushes the rest
        time.sleep(1)
    finally:
        driver.quit()


def test_in_a_browser_a_page_served_in_an_outage_starts_its_view_when_tracking_is_back(track: Track,
                                                                                     beacons: RedisIngest) -> None:
    post, token = shared_token(track)
    outage = Outage(beacons)
    for web in serve_web(track, outage):
        read_through_an_outage(f"{web.url}/s/{token}", outage)
        wait_for(lambda: track.app.wait_applied(1) and bool(views_of(track, post)) and views_of(track, post)[0].closed,
                 "the view to be closed", wait_s=30)
    (row,) = views_of(track, post)
    # about 4 s read after the view started, as the page reported it: not the 9.5 s or more read before it (the
    # service would cap that by the view's age anyway, so the page's own report is what is checked)
    assert 3_000 <= outage.sent_ms <= 8_000, outage.sent_ms
    assert row.engaged_ms == outage.sent_ms


def test_a_forged_view_is_404_and_nothing_is_written(web: Web, beacons: RedisIngest) -> None:
    _, token = shared_token(web.track)
    (view,) = start_views(web.track, token, 1)
    uid, _, sig = view.partition("-")
    assert uid.startswith("views/") and sig
    forged = f"{uid}-{'0' * len(sig)}" if sig != "0" * len(sig) else f"{uid}-{'1' * len(sig)}"
    assert web.track.app.wait_applied(20)
    entries_before = web.track.app.event_log.stats().length
    with httpx.Client(base_url=web.url, headers={"user-agent": PHONE_UA}) as client:
        for name in (forged, "views/01JX0000000000000000000000-0000000000000000", "views/nope", "views/" + "a" * 50):
            refused = beat(client, view=name, seq=1, engaged_ms=1_000, scroll=10)
            assert refused.status_code == 404, (name, refused.status_code, refused.text)
            assert "not found" in refused.text
    assert beacons.stats.writes == 0 and web.track.app.event_log.stats().length == entries_before


def test_bad_input_is_400_naming_the_field(web: Web, beacons: RedisIngest) -> None:
    _, token = shared_token(web.track)
    (view,) = start_views(web.track, token, 1)
    with httpx.Client(base_url=web.url, headers={"user-agent": PHONE_UA}) as client:
        for body, field in ((b"not json", "body"), (b"[1]", "body"), (b"x" * 5000, "body"), (b"", "body")):
            bad = client.post("/t/beat", content=body)
            assert bad.status_code == 400 and bad.text.startswith(field), bad.text
        for fields, field in (({"seq": 1, "engaged_ms": 1, "scroll": 1}, "view"),
                              ({"view": 7, "seq": 1, "engaged_ms": 1, "scroll": 1}, "view"),
                              ({"view": view, "seq": 0, "engaged_ms": 1, "scroll": 1}, "seq"),
                              ({"view": view, "seq": 1.5, "engaged_ms": 1, "scroll": 1}, "seq"),
                              ({"view": view, "seq": 1, "engaged_ms": -5, "scroll": 1}, "engaged_ms"),
                              ({"view": view, "seq": 1, "engaged_ms": 3_600_001, "scroll": 1}, "engaged_ms"),
                              ({"view": view, "seq": 1, "engaged_ms": 5, "scroll": 101}, "scroll"),
                              ({"view": view, "seq": 1, "engaged_ms": 5, "scroll": 1, "end": "yes"}, "end"),
                              ({"view": view, "seq": True, "engaged_ms": 5, "scroll": 1}, "seq")):
            bad = beat(client, **fields)
            assert bad.status_code == 400 and bad.text.startswith(field), (fields, bad.text)
            assert bad.headers["content-type"].startswith("text/plain") and bad.headers["x-request-id"]
        assert client.get("/t/beat").status_code == 405
    assert beacons.stats.writes == 0


def test_a_flood_of_one_views_heartbeats_gets_429_past_the_per_view_limit_and_refused_ones_are_not_recorded(
        web: Web) -> None:
    _, token = shared_token(web.track)
    (view,) = start_views(web.track, token, 1)
    codes = []
    with httpx.Client(base_url=web.url, headers={"user-agent": PHONE_UA}) as client:
        for i in range(140):  # a visitor each (past the edge's per-visitor limit), one view: tracking's per-view limit
            client.cookies.set("co_vid", f"flood{i:04d}")
            codes.append(beat(client, view=view, seq=i + 1, engaged_ms=1, scroll=1).status_code)
    assert set(codes) <= {204, 429} and codes[:100] == [204] * 100 and codes.count(429) >= 10, codes
    assert web.track.app.wait_applied(20)
    assert events_of(web.track, [view.removeprefix("views/")]) == codes.count(204)


def test_200_concurrent_beacons_are_all_acknowledged_and_applied_exactly_once(web: Web, beacons: RedisIngest) -> None:
    post, token = shared_token(web.track)
    views = start_views(web.track, token, 40)
    sent = [(view, seq) for seq in range(1, 6) for view in views]  # 5 each: 5 s engaged per view

    async def send_all() -> list[int]:
        limits = httpx.Limits(max_connections=len(sent), max_keepalive_connections=len(sent))
        async with httpx.AsyncClient(base_url=web.url, limits=limits, timeout=30) as client:
            async def one(i: int, view: str, seq: int) -> int:
                r = await client.post("/t/beat", headers={"cookie": f"co_vid=reader{i:04d}"}, content=json.dumps(
                    {"view": view, "seq": seq, "engaged_ms": 1_000, "scroll": 20 * seq}))
                return r.status_code
            return list(await asyncio.gather(*(one(i, v, s) for i, (v, s) in enumerate(sent))))

    codes = asyncio.run(send_all())
    assert codes == [204] * len(sent)
    assert beacons.stats.beacons == len(sent) and beacons.stats.failed == 0
    assert web.track.app.wait_applied(20)
    rows = views_of(web.track, post)
    assert len(rows) == 40 and {r.engaged_ms for r in rows} == {5_000} and {r.max_scroll_percent for r in rows} == {100}
    assert events_of(web.track, [v.removeprefix("views/") for v in views]) == len(sent)


def test_beacons_waiting_together_share_one_write_one_batch_per_partition_where_tracking_would_put_them(
        track: Track) -> None:
    """No web server here: 200 beacons awaited at once on one RedisIngest over 4 partitions, read back as the
    tracking consumer reads its log."""
    prefix = f"test:beacons:{uuid.uuid4().hex[:10]}"
    settings = track.app.settings.replace(tracking_stream_partitions=4)
    log = RedisEventLog.from_url(infra.REDIS_URL, prefix=prefix, partitions=4)
    _, token = shared_token(track)
    views = [v.removeprefix("views/") for v in start_views(track, token, 50)]
    names = [f"views/{v}" for v in views]
    beacons = RedisIngest.from_settings(settings, url=infra.REDIS_URL, prefix=prefix)
    assert beacons.view_key == view_key_for(settings.secret_key) == track.app.ingest.view_key

    async def record_all() -> None:
        beacons.open()
        try:
            await asyncio.gather(*(beacons.record(name, seq, 2_000, 50, seq == 4) for seq in range(1, 5) for name in names))
        finally:
            await beacons.close()

    try:
        asyncio.run(record_all())
        assert beacons.stats.writes == 1 and beacons.stats.largest == 200 and beacons.stats.beacons == 200
        used = {log.partition_for(v) for v in views}
        assert beacons.stats.entries == len(used) > 1  # one IngestBatch per partition
        entries = log.read("test", 1_000)
        assert len(entries) == len(used)
        for entry in entries:
            assert log.keys[entry.partition] == stream_key(prefix, entry.partition)
            events = pb.IngestBatch.FromString(entry.payload).events
            assert all(log.partition_for(e.heartbeat.view or e.ended.view) == entry.partition for e in events)
        events = [e for entry in entries for e in pb.IngestBatch.FromString(entry.payload).events]
        assert sorted((e.heartbeat.view, e.heartbeat.seq) for e in events if e.HasField("heartbeat")) == \
            sorted((v, seq) for v in views for seq in range(1, 5))
        assert sorted(e.ended.view for e in events if e.HasField("ended")) == sorted(views)
    finally:
        log.client.delete(*log.keys, log.dead_key)
        log.close()


def test_redis_unreachable_serves_the_page_untracked_and_beacons_503_with_an_explanation(web_without_redis: Web) -> None:
    _, token = shared_token(web_without_redis.track)
    untracked = UNTRACKED_PAGES.labels("UNAVAILABLE")._value.get()
    with httpx.Client(base_url=web_without_redis.url, headers={"user-agent": PHONE_UA}) as client:
        page = client.get(f"/s/{token}")  # the reader still gets the post: without a view, and no forward link
        assert page.status_code == 200 and 'data-view=""' in page.text and '<footer class="forward" hidden>' in page.text
        assert "价格 199 元" in page.text and VISITOR_COOKIE not in page.cookies
        assert UNTRACKED_PAGES.labels("UNAVAILABLE")._value.get() == untracked + 1
        (view,) = start_views(web_without_redis.track, token, 1)  # a view started while Redis was up
        for seq in (1, 2):
            down = beat(client, view=view, seq=seq, engaged_ms=1_000, scroll=10, end=seq == 2)
            assert down.status_code == 503, down.text
            assert down.text == "tracking is unavailable; try again in a moment" and down.headers["retry-after"]
            assert "Traceback" not in down.text
        forged = beat(client, view="views/01JX0000000000000000000000-0000000000000000", seq=1, engaged_ms=1, scroll=1)
        assert forged.status_code == 404  # checked before Redis is needed
