"""The editor console, served for real by the web edge in front of the content, distribution and tracking services.

- Compose a post with images, topics (a new one too), protected phrases, alternatives, a rep template and a
  badge; edit it (reorder, add and remove images; a stale etag is reported with the typed text kept); preview
  the sample reps' copies with their differences marked and the capacity figures; publish now (reps get their
  copies) or at a time in the service's zone; read the analytics after a simulated reader.
- Bad input: a non-image, an oversized file, a corrupt image (refused by the content service) and too many
  images each get a 400 form naming the file, nothing created, everything typed kept; an unreadable schedule
  time gets a friendly message.
- Security: CSRF on every form (403, nothing done); reps and sales managers get 403, strangers are sent to sign
  in; HTML in a title or a body is escaped on every page.
- In a real phone-size Chromium: sign in, compose with an image upload, save, preview, publish, screenshots of
  every editor page, nothing wider than the phone.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from PIL import Image

from services.protos.contentops.content.v1 import content_pb2 as cpb
from services.protos.contentops.distribution.v1 import distribution_pb2 as dpb
from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb
from services.web.editor import bar_class, canonical, forward_tree, highlight, parse_schedule

from .helpers import wait_for
from .tracking_harness import Track
from .web_harness import Web, chromium, csrf_of, screenshot

DEMO = Path(__file__).resolve().parent.parent / "services" / "demo_data"
JPEGS = sorted(DEMO.glob("*.jpg"))
BODY = ("[[亲爱的家长们|各位爸爸妈妈|家长朋友们]]，[[本周六|这个周六]]上午10:00，早教中心开放日来啦！\n"
        "现场体验课 ¥99/节，报名电话 400-820-1234。")
TEMPLATE = "{{ body }}\n—— {{ rep.display_name }}"


# ---- helpers ------------------------------------------------------------------------------------------------


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    assert m, f"no {name} field on the page"
    return m.group(1)


def jpeg_file(path: Path) -> tuple[str, tuple[str, bytes, str]]:
    return ("files", (path.name, path.read_bytes(), "image/jpeg"))


def fields(page: str, **values: object) -> dict[str, object]:
    """The form's hidden fields (csrf, request id, etag) read from ``page``, plus ``values``."""
    return {"csrf": csrf_of(page), "request_id": hidden(page, "request_id"), "etag": hidden(page, "etag"), **values}


def compose(client: httpx.Client, files: list | None = None, **values: object) -> httpx.Response:
    page = client.get("/editor/posts/new")
    assert page.status_code == 200, page.text[:300]
    data = fields(page.text, **{"title": "开放日", "body": BODY, **values})
    return client.post("/editor/posts", data=data, files=files or None)


def created(response: httpx.Response) -> str:
    """The post a create redirected to ("posts/<id>")."""
    assert response.status_code == 303, (response.status_code, response.text[:500])
    m = re.fullmatch(r"/editor/posts/([0-9a-z]+)\?notice=created", response.headers["location"])
    assert m, response.headers["location"]
    return f"posts/{m.group(1)}"


def get_post(track: Track, name: str) -> cpb.Post:
    return track.harness.content.GetPost(cpb.GetPostRequest(name=name), metadata=track.editor)  # type: ignore[attr-defined]


def all_posts(track: Track) -> list[cpb.Post]:
    return list(track.harness.content.ListPosts(cpb.ListPostsRequest(page_size=100),  # type: ignore[attr-defined]
                                                metadata=track.editor).posts)


def article(html: str, rep: str) -> str:
    m = re.search(rf'<article class="card copy" data-rep="{re.escape(rep)}">(.*?)</article>', html, re.S)
    assert m, f"no preview copy for {rep}"
    return m.group(1)


def number(html: str, element_id: str) -> int:
    m = re.search(rf'id="{element_id}">(\d+)<', html)
    assert m, f"no #{element_id} on the page"
    return int(m.group(1))


def huge_png() -> bytes:
    """A small file of 48 megapixels: over the content service's pixel limit (40 M)."""
    out = io.BytesIO()
    Image.new("1", (8000, 6000)).save(out, "PNG")
    return out.getvalue()


# ---- pure parts ---------------------------------------------------------------------------------------------


def test_highlight_escapes_every_segment_and_marks_only_what_differs() -> None:
    marked = highlight("亲爱的家长们，<b>周六</b>见", "各位爸爸妈妈，<b>周六</b>见\n—— 王老师")
    assert "<b>" not in marked and "&lt;b&gt;周六&lt;/b&gt;见" in marked
    assert re.sub(r"</?mark>", "", str(marked)) == "各位爸爸妈妈，&lt;b&gt;周六&lt;/b&gt;见\n—— 王老师"
    assert "<mark>\n—— 王老师</mark>" in marked and "<mark>" in marked.split("，")[0]
    assert highlight("same", "same") == "same"
    assert canonical("[[甲|乙]]和[[|真的]]") == "甲和"


def test_schedule_times_are_read_in_the_service_zone_and_a_past_one_means_now() -> None:
    now = datetime(2025, 6, 1, 0, 0, tzinfo=ZoneInfo("UTC"))
    at = parse_schedule("2025-06-01T09:30", "Asia/Shanghai", now)
    assert at is not None and at.timestamp() == datetime(2025, 6, 1, 1, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert parse_schedule("2025-06-01T07:59", "Asia/Shanghai", now) is None  # 23:59 UTC the day before: past
    for bad in ("", "tomorrow", "2025-13-01T09:30", "9" * 40):
        with pytest.raises(ValueError):
            parse_schedule(bad, "Asia/Shanghai", now)


def test_bars_are_width_classes_in_steps_of_five_and_the_tree_nests_forwards() -> None:
    assert [bar_class(v, 40) for v in (0, 1, 10, 39, 40)] == ["w0", "w5", "w25", "w100", "w100"]
    assert bar_class(3, 0) == "w0"
    nodes = [tpb.ShareNode(share_id="a", rep="reps/r1", views=2), tpb.ShareNode(share_id="b", parent_share_id="a", rep="reps/r1", views=1),
             tpb.ShareNode(share_id="c", parent_share_id="b", rep="reps/r1", views=1), tpb.ShareNode(share_id="d", rep="reps/r2")]
    tree, left_out = forward_tree(nodes, {"reps/r1": "王老师"})
    assert left_out == 0 and [t["rep"] for t in tree] == ["王老师", "r2"]
    assert tree[0]["children"][0]["children"][0]["views"] == 1 and tree[0]["children"][0]["forward"]


def test_a_body_without_a_length_is_cut_off_at_the_budget() -> None:
    from starlette.requests import Request

    from services.web.editor import _bounded, _TooLarge

    messages = [{"type": "http.request", "body": b"x" * 10, "more_body": True} for _ in range(5)]

    async def receive() -> dict:
        return messages.pop(0)

    async def read(limit: int) -> bytes:
        return b"".join([c async for c in _bounded(Request({"type": "http", "method": "POST", "headers": []}, receive), limit).stream()])

    with pytest.raises(_TooLarge):
        asyncio.run(read(25))
    assert len(messages) == 2  # it read no further than the chunk that went over


# ---- the whole flow -----------------------------------------------------------------------------------------


def test_compose_edit_preview_publish_and_read_the_analytics(web: Web) -> None:
    track = web.track
    topic = track.topic("creativity", "创造力启蒙")
    wang, wang_md = track.rep("王老师")
    li, _ = track.rep("李老师")
    with web.client(track.editor) as client:

        listing = client.get("/editor")
        assert listing.status_code == 200 and 'href="/editor/posts/new"' in listing.text

        # compose: two images, an existing and a new topic, a protected phrase, alternatives, a rep template, a badge
        made = compose(client, files=[jpeg_file(JPEGS[0]), jpeg_file(JPEGS[1])], topic=[topic], new_topic="亲子阅读",
                       protected="早教中心开放日\n400-820-1234\n", rep_template=TEMPLATE, badge_enabled="on",
                       badge_position=str(cpb.BADGE_POSITION_TOP_LEFT))
        name = created(made)
        post_id = name.removeprefix("posts/")
        post = get_post(track, name)
        c = post.content
        assert (c.title, c.body, len(c.images), list(c.variation.protected_phrases)) == ("开放日", BODY, 2, ["早教中心开放日", "400-820-1234"])
        assert c.variation.rep_template == TEMPLATE and c.variation.badge_enabled
        assert c.variation.badge_position == cpb.BADGE_POSITION_TOP_LEFT and post.state == cpb.POST_STATE_DRAFT
        topics = track.harness.content.ListTopics(cpb.ListTopicsRequest(), metadata=track.editor).topics  # type: ignore[attr-defined]
        assert {t.display_name for t in topics if t.name in c.topics} == {"创造力启蒙", "亲子阅读"}
        first, second = c.images

        # the edit form shows the content, the images as bounded thumbnails
        page = client.get(f"/editor/posts/{post_id}?notice=created")
        assert page.status_code == 200 and 'id="notice"' in page.text and "开放日" in page.text
        assert f'<img src="/editor/assets/{first.removeprefix("assets/")}"' in page.text
        assert "亲爱的家长们|各位爸爸妈妈" in page.text and "{{ rep.display_name }}" in page.text
        thumb = client.get(f"/editor/assets/{first.removeprefix('assets/')}")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(thumb.content)) as im:
            assert max(im.size) <= 320

        # edit: swap the two images, add a third, rename
        data = fields(page.text, title="开放日（更新）", body=BODY, topic=list(c.topics), protected="早教中心开放日",
                      rep_template=TEMPLATE, badge_enabled="on", badge_position=str(cpb.BADGE_POSITION_TOP_LEFT),
                      image=[first, second], **{f"order:{first}": "2", f"order:{second}": "1"})
        saved = client.post(f"/editor/posts/{post_id}", data=data, files=[jpeg_file(JPEGS[2])])
        assert saved.status_code == 303 and saved.headers["location"] == f"/editor/posts/{post_id}?notice=saved", saved.text[:500]
        c = get_post(track, name).content
        assert c.title == "开放日（更新）" and list(c.images[:2]) == [second, first] and len(c.images) == 3
        third = c.images[2]

        # the same form again (its etag is stale now): refused, the typed text kept, nothing changed
        stale = client.post(f"/editor/posts/{post_id}", data={**data, "title": "我的版本"})
        assert stale.status_code == 409 and "别人修改了这篇内容" in stale.text
        assert 'value="我的版本"' in stale.text and get_post(track, name).content.title == "开放日（更新）"

        # remove one image from a fresh form
        page = client.get(f"/editor/posts/{post_id}")
        removed = client.post(f"/editor/posts/{post_id}", data=fields(
            page.text, title="开放日（更新）", body=BODY, topic=list(c.topics), protected="早教中心开放日", rep_template=TEMPLATE,
            image=[second, first, third], remove=[first]))
        assert removed.status_code == 303, removed.text[:500]
        c = get_post(track, name).content
        assert list(c.images) == [second, third] and not c.variation.badge_enabled

        # preview: each sample rep's copy with the differences marked, and the capacity figures
        page = client.get(f"/editor/posts/{post_id}/preview")
        assert page.status_code == 200, page.text[:500]
        for rep in (wang, li):
            copy = article(page.text, rep.name)
            assert rep.display_name in copy and "<mark>" in copy
            assert re.search(rf"<mark>[^<]*—— {rep.display_name}</mark>", copy), copy  # the template's signature is new text
            assert "早教中心开放日" in re.sub(r"</?mark>", "", copy)
        direct = track.dstub.PreviewCopies(dpb.PreviewCopiesRequest(post=name, sample_reps=[wang.name, li.name]),
                                           metadata=track.editor)
        assert number(page.text, "capacity") == direct.capacity_estimate and number(page.text, "targeted") == direct.targeted_reps == 2
        assert ('id="capacity-warning"' in page.text) == (not direct.policy_met)
        assert 'id="report-note"' in page.text and "发布之后" in page.text

        # publish now: the post is live, and a rep gets a copy
        published = client.post(f"/editor/posts/{post_id}/publish",
                                data={"csrf": csrf_of(page.text), "etag": hidden(page.text, "etag"), "when": "now"})
        assert published.status_code == 303 and published.headers["location"] == f"/editor/posts/{post_id}?notice=published"
        assert get_post(track, name).state == cpb.POST_STATE_PUBLISHED
        copy = track.dstub.GetRepCopy(dpb.GetRepCopyRequest(post=name, rep=wang.name), metadata=wang_md)
        assert "早教中心开放日" in copy.text and copy.text.endswith("—— 王老师") and len(copy.images) == 2
        assert client.get(f"/editor/posts/{post_id}?notice=published").text.count("已发布") >= 2  # the notice and the state

        # after publishing the preview carries the distinctness report
        page = client.get(f"/editor/posts/{post_id}/preview")
        assert page.status_code == 200 and "发布之后才有差异报告" not in page.text
        assert 'id="text-duplicates"' in page.text or "差异报告还在生成" in page.text

        # a customer reads the rep's copy: the analytics show it
        track.read(copy.share_token, 35)
        track.settle()
        page = client.get(f"/editor/posts/{post_id}/analytics")
        assert page.status_code == 200, page.text[:500]
        assert number(page.text, "views") == 1 and number(page.text, "unique") == 1
        assert re.search(r'id="p50">\d+ 秒<', page.text)
        assert 'class="fill w100"' in page.text  # the one bucket with a view is the longest bar
        assert re.search(r"<td>(★ )?王老师</td><td>1</td>", page.text), "the per-variant table names the rep"
        assert 'id="tree"' in page.text and "王老师 的分享" in page.text
        assert number(page.text, "total") == 2 and number(page.text, "rendered") >= 1
        assert "contacts/" not in page.text and "访客" not in page.text  # aggregates only

        listing = client.get("/editor?state=published")
        assert listing.status_code == 200 and "开放日（更新）" in listing.text
        assert "开放日（更新）" not in client.get("/editor?state=draft").text


def test_capacity_warning_when_the_post_cannot_vary_enough(web: Web) -> None:
    track = web.track
    for i in range(3):
        track.rep(f"销售{i}")
    with web.client(track.editor) as client:
        name = created(compose(client, body="早教中心开放日", protected="早教中心开放日"))
        page = client.get(f"/editor/posts/{name.removeprefix('posts/')}/preview")
        assert page.status_code == 200
        assert 'id="capacity-warning"' in page.text and number(page.text, "targeted") == 3
        assert number(page.text, "capacity") < 3


def test_scheduling_in_the_service_zone_a_past_time_publishes_now_and_a_bad_time_is_explained(web: Web) -> None:
    track = web.track
    track.rep("王老师")
    with web.client(track.editor) as client:
        zone = ZoneInfo(track.app.settings.tracking_timezone)

        later = created(compose(client))
        page = client.get(f"/editor/posts/{later.removeprefix('posts/')}/preview")
        at = (datetime.now(zone) + timedelta(days=2)).replace(second=0, microsecond=0)
        r = client.post(f"/editor/posts/{later.removeprefix('posts/')}/publish", data={
            "csrf": csrf_of(page.text), "etag": hidden(page.text, "etag"), "when": "schedule", "at": at.strftime("%Y-%m-%dT%H:%M")})
        assert r.status_code == 303 and r.headers["location"].endswith("?notice=scheduled")
        post = get_post(track, later)
        assert post.state == cpb.POST_STATE_SCHEDULED and post.scheduled_publish_time.seconds == int(at.timestamp())
        shown = client.get(r.headers["location"]).text
        assert f'<time id="scheduled">{at.strftime("%Y-%m-%d %H:%M")}</time>' in shown

        now = created(compose(client))
        page = client.get(f"/editor/posts/{now.removeprefix('posts/')}/preview")
        past = (datetime.now(zone) - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
        r = client.post(f"/editor/posts/{now.removeprefix('posts/')}/publish", data={
            "csrf": csrf_of(page.text), "etag": hidden(page.text, "etag"), "when": "schedule", "at": past})
        assert r.status_code == 303 and r.headers["location"].endswith("?notice=published")
        assert get_post(track, now).state == cpb.POST_STATE_PUBLISHED

        bad = created(compose(client))
        page = client.get(f"/editor/posts/{bad.removeprefix('posts/')}/preview")
        r = client.post(f"/editor/posts/{bad.removeprefix('posts/')}/publish", data={
            "csrf": csrf_of(page.text), "etag": hidden(page.text, "etag"), "when": "schedule", "at": "next tuesday"})
        assert r.status_code == 400 and "无法识别的时间" in r.text and "next tuesday" in r.text
        assert get_post(track, bad).state == cpb.POST_STATE_DRAFT


# ---- bad input ----------------------------------------------------------------------------------------------


def test_bad_uploads_get_a_clear_message_naming_the_file_nothing_created_and_the_text_kept(web: Web) -> None:
    track = web.track
    with web.client(track.editor) as client:
        limit = track.app.settings.max_asset_bytes
        assert track.app.settings.max_image_pixels < 8000 * 6000  # huge.png is over it
        typed = {"title": "我的标题 <i>", "body": "我写的正文\n第二行", "protected": "我写的正文"}
        cases = [
            ([("files", ("x.jpg", b"just some text, not an image\n" * 20, "image/jpeg"))], "「x.jpg」不是图片"),
            ([("files", ("big.jpg", b"\xff\xd8\xff" + b"\0" * limit, "image/jpeg"))], "「big.jpg」太大"),
            ([("files", ("broken.jpg", b"\xff\xd8\xff\xe0" + b"garbage" * 100, "image/jpeg"))], "「broken.jpg」无法上传：图片已损坏"),
        ([("files", ("huge.png", huge_png(), "image/png"))], "「huge.png」无法上传：图片尺寸太大"),  # the service's pixel limit
            ([jpeg_file(JPEGS[i % 3]) for i in range(10)], "最多 9 张图片"),
        ]
        for files, message in cases:
            r = compose(client, files=files, **typed)
            assert r.status_code == 400, (message, r.status_code, r.text[:500])
            assert message in r.text, (message, re.findall(r'id="problem">[^<]*', r.text))
            assert 'value="我的标题 &lt;i&gt;"' in r.text and ">\n我写的正文\n第二行</textarea>" in r.text
            assert "<i>" not in r.text
        assert all_posts(track) == []

        # an image uploaded before another is refused is kept by the re-shown form: sending it again creates the post
        r = compose(client, files=[jpeg_file(JPEGS[0]), ("files", ("broken.jpg", b"\xff\xd8\xff\xe0junk", "image/jpeg"))], **typed)
        assert r.status_code == 400 and "「broken.jpg」无法上传" in r.text and all_posts(track) == []
        kept = re.findall(r'name="image" value="(assets/[^"]+)"', r.text)
        assert len(kept) == 1
        name = created(client.post("/editor/posts", data=fields(r.text, image=kept, **typed)))
        assert list(get_post(track, name).content.images) == kept

        # a save the content service refuses (a protected phrase not in the body) shows why, with the text kept
        r = compose(client, title="标题", body="正文", protected="不在正文里")
        assert r.status_code == 400 and "保护短语" in r.text and ">\n不在正文里</textarea>" in r.text
        assert len(all_posts(track)) == 1


def test_a_form_over_the_upload_budget_is_refused_before_it_is_read(web: Web) -> None:
    with web.client(web.track.editor) as client:
        token = csrf_of(client.get("/editor/posts/new").text)
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    budget = 9 * web.track.app.settings.max_asset_bytes
    host, port = web.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:  # claims far more than it sends
        s.sendall((f"POST /editor/posts HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n"
                   f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {budget * 2}\r\n\r\n"
                   f'--b\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{token}\r\n').encode())
        answer = b""
        while b"</html>" not in answer and (chunk := s.recv(65536)):
            answer += chunk
    text = answer.decode("utf-8", "replace")
    assert text.startswith("HTTP/1.1 413") and "每张不超过 20 MB" in text, text[:300]
    assert all_posts(web.track) == []


def test_every_form_needs_the_sessions_csrf_token(web: Web) -> None:
    track = web.track
    with web.client(track.editor) as client:
        page = client.get("/editor/posts/new")
        token = csrf_of(page.text)
        base = {"title": "t", "body": "b", "request_id": hidden(page.text, "request_id")}
        for data in (base, {**base, "csrf": "x" * len(token)}, {**base, "csrf": ""}):
            r = client.post("/editor/posts", data=data)
            assert r.status_code == 403 and "页面已过期" in r.text
            r = client.post("/editor/posts", data=data, files=[jpeg_file(JPEGS[0])])
            assert r.status_code == 403
        assert all_posts(track) == []

        name = created(compose(client))
        post_id = name.removeprefix("posts/")
        etag = get_post(track, name).etag
        with web.client(track.editor) as other:  # another session's token is not this one's
            foreign = csrf_of(other.get("/editor/posts/new").text)
        assert foreign != token
        for csrf in ("", foreign):
            r = client.post(f"/editor/posts/{post_id}", data={"csrf": csrf, "etag": etag, "title": "changed", "body": "b"})
            assert r.status_code == 403
            r = client.post(f"/editor/posts/{post_id}/publish", data={"csrf": csrf, "etag": etag, "when": "now"})
            assert r.status_code == 403
        post = get_post(track, name)
        assert post.content.title == "开放日" and post.state == cpb.POST_STATE_DRAFT


def test_only_editors_and_admins_get_the_console_and_strangers_are_sent_to_sign_in(web: Web) -> None:
    track = web.track
    with web.client(track.editor) as editor:
        name = created(compose(editor, files=[jpeg_file(JPEGS[0])]))
    post_id = name.removeprefix("posts/")
    asset = get_post(track, name).content.images[0].removeprefix("assets/")
    _, rep_md = track.rep("王老师")
    pages = ["/editor", "/editor/posts/new", f"/editor/posts/{post_id}", f"/editor/posts/{post_id}/preview",
             f"/editor/posts/{post_id}/analytics", f"/editor/assets/{asset}"]
    posts = ["/editor/posts", f"/editor/posts/{post_id}", f"/editor/posts/{post_id}/publish"]
    for md in (rep_md, track.sales("east")):
        with web.client(md) as client:
            for path in pages:
                r = client.get(path)
                assert r.status_code == 403 and "无权访问" in r.text, (path, r.status_code)
            token = csrf_of(client.get("/editor").text)  # the sign-out form's: a valid token does not make a rep an editor
            for path in posts:
                assert client.post(path, data={"csrf": token, "title": "x", "body": "y", "when": "now"}).status_code == 403
    with web.client() as stranger:
        for path in pages:
            r = stranger.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/signin", path
        for path in posts:
            assert stranger.post(path, data={"title": "x"}).status_code == 303
    with web.client(track.admin) as admin:
        assert admin.get(f"/editor/posts/{post_id}").status_code == 200
    assert get_post(track, name).state == cpb.POST_STATE_DRAFT and len(all_posts(track)) == 1


def test_html_in_a_title_or_body_is_escaped_on_every_page(web: Web) -> None:
    track = web.track
    rep, rep_md = track.rep("王老师")
    with web.client(track.editor) as client:
        title = '<script>alert("t")</script>&<b>'
        body = "<img src=x onerror=alert(1)> [[你好|您好]]，开放日见"
        name = created(compose(client, title=title, body=body, protected="开放日见"))
        post_id = name.removeprefix("posts/")
        published = client.post(f"/editor/posts/{post_id}/publish", data={
            "csrf": csrf_of(client.get("/editor").text), "etag": get_post(track, name).etag, "when": "now"})
        assert published.status_code == 303
        copy = track.dstub.GetRepCopy(dpb.GetRepCopyRequest(post=name, rep=rep.name), metadata=rep_md)
        track.read(copy.share_token, 12)
        track.settle()
        for path in ("/editor", f"/editor/posts/{post_id}", f"/editor/posts/{post_id}/preview", f"/editor/posts/{post_id}/analytics"):
            page = client.get(path)
            assert page.status_code == 200, (path, page.text[:300])
            assert "&lt;script&gt;alert(&#34;t&#34;)&lt;/script&gt;&amp;&lt;b&gt;" in page.text, path
            assert "<script>alert" not in page.text and "<b>" not in page.text and "<img src=x" not in page.text, path
        preview = client.get(f"/editor/posts/{post_id}/preview").text
        assert "&lt;img src=x onerror=alert(1)&gt;" in article(preview, rep.name)


# ---- a real browser -----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("settings", ["production"], indirect=True)
def test_an_editor_composes_previews_and_publishes_on_a_phone(web: Web) -> None:
    from selenium.webdriver.common.by import By

    track = web.track
    track.topic("creativity", "创造力启蒙")
    rep, rep_md = track.rep("王老师")
    track.rep("李老师")
    driver = chromium()
    driver.set_window_size(390, 844)  # Chromium opens headless windows at least 500 px wide

    def fits(page: str) -> None:
        """A screenshot of the page from its top, after checking nothing on it is wider than the phone."""
        wide, room = driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert wide <= room, f"{page} is {wide} px wide on a phone showing {room} px"
        driver.execute_script("window.scrollTo(0, 0)")
        screenshot(driver, f"editor-{page}")

    try:
        driver.get(web.signin_url(track.editor))
        wait_for(lambda: driver.current_url.endswith("/editor"), "the editor's home after signing in")
        driver.find_element(By.LINK_TEXT, "写新内容").click()
        wait_for(lambda: driver.current_url.endswith("/editor/posts/new"), "the new post form")
        driver.find_element(By.ID, "title").send_keys("5岁小姑娘的创造力启蒙三步走")
        driver.find_element(By.ID, "body").send_keys(BODY)
        driver.find_element(By.CSS_SELECTOR, 'input[name="topic"]').click()
        driver.find_element(By.ID, "protected").send_keys("早教中心开放日")
        driver.find_element(By.ID, "rep_template").send_keys(TEMPLATE)
        driver.find_element(By.ID, "badge_enabled").click()
        driver.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in JPEGS[:2]))
        fits("new")
        driver.find_element(By.CSS_SELECTOR, '#post-form button[type="submit"]').click()
        wait_for(lambda: "notice=created" in driver.current_url, "the saved post")
        post_id = re.search(r"/editor/posts/([0-9a-z]+)", driver.current_url).group(1)  # type: ignore[union-attr]
        wait_for(lambda: driver.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"), "the thumbnails")
        assert len(driver.find_elements(By.CSS_SELECTOR, ".thumbs img")) == 2
        fits("edit")
        driver.find_element(By.LINK_TEXT, "预览与发布").click()
        wait_for(lambda: driver.current_url.endswith("/preview"), "the preview")
        assert len(driver.find_elements(By.CSS_SELECTOR, "article.copy mark")) >= 2
        fits("preview")
        driver.find_element(By.ID, "publish-now").click()
        wait_for(lambda: "notice=published" in driver.current_url, "the published post")
        name = f"posts/{post_id}"
        assert get_post(track, name).state == cpb.POST_STATE_PUBLISHED
        copy = track.dstub.GetRepCopy(dpb.GetRepCopyRequest(post=name, rep=rep.name), metadata=rep_md)
        assert "早教中心开放日" in copy.text and len(copy.images) == 2
        fits("published")
        track.read(copy.share_token, 42)
        track.settle()
        driver.find_element(By.LINK_TEXT, "数据").click()
        wait_for(lambda: driver.current_url.endswith("/analytics"), "the analytics")
        assert driver.find_element(By.ID, "views").text == "1"
        fits("analytics")
        driver.get(f"{web.url}/editor")
        fits("list")
        driver.get(f"{web.url}/editor/posts/{post_id}/preview")  # the published preview, with the report
        fits("preview-published")
    finally:
        driver.quit()

