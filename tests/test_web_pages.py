"""The signed-in pages, served for real by the web edge in front of the services: sign-in by a token link, the
rep's page and the sales console (the editor console is in test_web_editor.py).

- Sign-in: a token link signs in and leaves the address bar at once; a bad or
  revoked token, or the edge's own machine token, gets a friendly refusal; the
  session cookie is HttpOnly and SameSite; every form needs the session's CSRF token.
- Rep: the posts for me, my copy, my images to save (the full image, as a download),
  my share link, a per-contact link that attributes whoever opens it to that
  contact, my leads, and live activity over SSE within seconds of a view starting.
- Sales: the team's leads, a contact's tags with their evidence; never another team's.
- In a real headless Chromium: (a) a rep signs in, copies the text (the clipboard
  holds it) and downloads an image (the saved file is the copy's image); (c) the
  sales console shows the contact's new tag with its evidence and the live read.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from services.protos.contentops.distribution.v1 import distribution_pb2 as dpb
from services.protos.contentops.identity.v1 import identity_pb2 as ipb
from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb
from services.shared.identity.domain import Role

from .helpers import wait_for
from .tracking_harness import Track
from .web_harness import PHONE_UA, Web, chromium, csrf_of, screenshot

BODY = ("[[亲爱的家长们|各位爸爸妈妈]]，5岁是创造力启蒙的关键期。\n第一步：和孩子一起观察身边的颜色。\n"
        "第二步：用三种材料做一件小作品。\n体验课 ¥99/节，报名 https://example.com/camp")
TITLE = "5岁小姑娘的创造力启蒙三步走"


def setup_rep(track: Track, name: str = "王老师", team: str = "") -> tuple[str, dpb.Rep, tuple[tuple[str, str], ...]]:
    topic = track.topic("creativity", "创造力启蒙")
    post = track.publish(TITLE, BODY, [topic], images=2)
    rep, md = track.rep(name, team=team)
    return post, rep, md


def token_of(md: tuple[tuple[str, str], ...]) -> str:
    return dict(md)["authorization"].removeprefix("Bearer ")


# ---- signing in -----------------------------------------------------------------------------------------------


def test_a_token_link_signs_in_and_leaves_the_address_bar(web: Web) -> None:
    track = web.track
    _, md = track.rep("王老师")
    with httpx.Client(base_url=web.url) as client:
        r = client.get(f"/signin?token={token_of(md)}")
        assert r.status_code == 303 and r.headers["location"] == "/rep"
        cookie = r.headers["set-cookie"]
        assert "co_session=" in cookie and "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
        assert client.get("/rep").status_code == 200
        assert client.get("/").headers["location"] == "/rep"


def test_bad_revoked_and_machine_tokens_are_refused_kindly(web: Web) -> None:
    track = web.track
    with httpx.Client(base_url=web.url) as client:
        assert client.get("/rep").headers["location"] == "/signin"  # not signed in
        for bad in ("nope", "co_" + "0" * 26 + "_" + "A" * 43, "x" * 500, "<script>"):
            r = client.get("/signin", params={"token": bad})
            assert r.status_code in (400, 401) and "登录链接无效" in r.text and "<script>" not in r.text
        r = client.get("/signin", params={"token": token_of(track.edge)})  # the edge's own service token
        assert r.status_code == 403
        assert client.get("/rep").headers["location"] == "/signin"
    admin = track.admin
    created = track.harness.identity.CreateUser(ipb.CreateUserRequest(user=ipb.User(  # type: ignore[attr-defined]
        display_name="李销售", role=ipb.ROLE_SALES, team="teams/east")), metadata=admin)
    with httpx.Client(base_url=web.url) as client:
        assert client.get("/signin", params={"token": created.secret}).status_code == 303
        assert client.get("/sales").status_code == 200  # signed in (a team with no reps: no leads)
        track.harness.identity.RevokeToken(ipb.RevokeTokenRequest(name=created.token.name), metadata=admin)  # type: ignore[attr-defined]
        r = client.get("/sales")
        assert r.status_code == 303 and r.headers["location"] == "/signin"  # a revoked token ends the session


def test_forms_need_the_sessions_csrf_token(web: Web) -> None:
    track = web.track
    post, rep, md = setup_rep(track)
    post_id = post.removeprefix("posts/")
    with web.client(md) as client:
        page = client.get(f"/rep/posts/{post_id}")
        csrf = csrf_of(page.text)
        for sent in ({}, {"csrf": "forged" * 5}, {"csrf": ""}):
            r = client.post(f"/rep/posts/{post_id}/links", data={"display_name": "优优妈妈", **sent})
            assert r.status_code == 403
        assert not track.stub.ListContacts(tpb.ListContactsRequest(parent=rep.name), metadata=md).contacts
        r = client.post("/signout", data={})
        assert r.status_code == 403 and client.get("/rep").status_code == 200  # still signed in
        with web.client(md) as other:  # another session's token is not this one's
            other_csrf = csrf_of(other.get("/rep").text)
            assert other_csrf != csrf
            assert client.post(f"/rep/posts/{post_id}/links", data={"display_name": "x", "csrf": other_csrf}).status_code == 403
        r = client.post("/signout", data={"csrf": csrf})
        assert r.status_code == 303 and client.get("/rep").headers["location"] == "/signin"


# ---- the rep's page -------------------------------------------------------------------------------------------


def test_the_rep_page_lists_my_posts_and_shows_my_copy_images_and_share_link(web: Web) -> None:
    track = web.track
    post, rep, md = setup_rep(track)
    post_id = post.removeprefix("posts/")
    copy = track.dstub.GetRepCopy(dpb.GetRepCopyRequest(post=post, rep=rep.name), metadata=md)
    with web.client(md) as client:
        home = client.get("/rep")
        assert home.status_code == 200 and TITLE in home.text and f"/rep/posts/{post_id}" in home.text
        assert home.headers["cache-control"] == "no-store"
        page = client.get(f"/rep/posts/{post_id}")
        assert page.status_code == 200
        assert _text_of(page.text, "copytext") == copy.text  # the text to copy is the rep's copy, byte for byte
        assert f"/s/{copy.share_token}" in page.text
        for i, img in enumerate(copy.images):
            full = client.get(f"/rep/posts/{post_id}/images/{i}?download=1")
            assert full.status_code == 200 and "attachment" in full.headers["content-disposition"]
            assert hashlib.sha256(full.content).hexdigest() == img.sha256  # the full image, not a resized one
            small = client.get(f"/rep/posts/{post_id}/images/{i}")
            assert small.status_code == 200 and small.headers["content-type"].startswith("image/")
        assert client.get(f"/rep/posts/{post_id}/images/9").status_code == 404
        assert client.get("/rep/posts/" + "z" * 26).status_code == 404


def _text_of(html: str, element_id: str) -> str:
    import html as htmllib

    m = re.search(rf'id="{element_id}"[^>]*>(.*?)</div>', html, re.S)
    assert m, element_id
    return htmllib.unescape(m.group(1))


def test_a_per_contact_link_attributes_its_reader_and_the_lead_follows(web: Web) -> None:
    track = web.track
    post, rep, md = setup_rep(track)
    post_id = post.removeprefix("posts/")
    with web.client(md) as client:
        csrf = csrf_of(client.get(f"/rep/posts/{post_id}").text)
        r = client.post(f"/rep/posts/{post_id}/links", data={"csrf": csrf, "display_name": "优优妈妈<b>"})
        assert r.status_code == 200 and "优优妈妈&lt;b&gt;" in r.text
        link = re.search(r'id="contact-url" value="([^"]+)"', r.text)
        assert link, r.text[:2000]
        (contact,) = track.stub.ListContacts(tpb.ListContactsRequest(parent=rep.name), metadata=md).contacts
        assert contact.display_name == "优优妈妈<b>" and contact.named
        # the customer opens it (a real page load: the view is counted on the server) and reads
        with httpx.Client(headers={"user-agent": PHONE_UA}) as customer:
            assert customer.get(link.group(1)).status_code == 200
        token = link.group(1).rsplit("/", 1)[1]
        track.read(token, 130, visitor="")  # a second visit, simulated at the service
        track.settle()
        home = client.get("/rep")
        assert "优优妈妈&lt;b&gt;" in home.text and "聊什么" in home.text
        profile_href = re.search(r'href="(/contacts/[^"]+)"', home.text)
        assert profile_href
        profile = client.get(profile_href.group(1))
        assert profile.status_code == 200 and TITLE in profile.text and "创造力启蒙·" in profile.text
        # an existing contact gets another link without a new contact
        r = client.post(f"/rep/posts/{post_id}/links", data={"csrf": csrf, "contact": contact.name})
        assert r.status_code == 200 and 'id="contact-url"' in r.text
        assert len(track.stub.ListContacts(tpb.ListContactsRequest(parent=rep.name), metadata=md).contacts) >= 1
        r = client.post(f"/rep/posts/{post_id}/links", data={"csrf": csrf, "display_name": "  "})
        assert r.status_code == 400 and "请填写客户称呼" in r.text
    # another rep sees neither the contact nor the copy
    _, other_md = track.rep("李老师")
    with web.client(other_md) as other:
        assert other.get(profile_href.group(1)).status_code in (403, 404)
        assert "优优妈妈" not in other.get("/rep").text


def test_live_activity_reaches_the_reps_page_as_a_customer_opens_the_link(web: Web) -> None:
    track = web.track
    post, rep, md = setup_rep(track)
    token = track.share_token(post, rep, md)
    events: list[dict[str, str]] = []
    ready = threading.Event()

    def listen() -> None:
        with web.client(md) as client, client.stream("GET", "/rep/activity", timeout=30) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            kind = ""
            for line in r.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind == "ready":
                    ready.set()
                elif line.startswith("data:") and kind == "activity":
                    events.append(json.loads(line.split(":", 1)[1]))
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(15), "the activity stream did not open"
    time.sleep(0.3)  # the upstream WatchActivity registers its listener
    with httpx.Client(headers={"user-agent": PHONE_UA}) as customer:
        assert customer.get(f"{web.url}/s/{token}").status_code == 200
    listener.join(60)  # a bound for a loaded machine; the latency itself is measured in bench/
    assert events, "no activity event arrived"
    assert TITLE in events[0]["message"] and events[0]["contact"].startswith(rep.name)


# ---- the sales console ----------------------------------------------------------------------------------------


def test_the_sales_console_shows_the_teams_leads_and_a_contacts_tags_but_never_another_teams(web: Web) -> None:
    track = web.track
    track.team("east", "华东")
    track.team("west", "西部")
    post, rep, md = setup_rep(track, team="teams/east")
    link = track.stub.CreateContactLink(tpb.CreateContactLinkRequest(
        parent=rep.name, share_token=track.share_token(post, rep, md), contact_display_name="优优妈妈"), metadata=md)
    first = track.read(link.share_token, 130)
    track.read(link.share_token, 70, visitor=first.visitor_id)
    track.read(track.share_token(post, rep, md), 60)  # someone without a per-contact link: an anonymous lead
    track.settle()
    rep_id, contact_id = link.contact.name.removeprefix("reps/").split("/contacts/")
    track.rep("新来的", team="teams/east")  # no views or links yet: tracking does not know them, nothing to list
    east = track.sales("east")
    with web.client(east) as client:
        home = client.get("/sales")
        assert home.status_code == 200 and "优优妈妈" in home.text and home.text.count("王老师的客户") == 2
        assert home.text.count("未具名访客") == 1  # the named contact is not labelled anonymous
        profile = client.get(f"/contacts/{rep_id}/{contact_id}")
        assert profile.status_code == 200
        assert "创造力启蒙·" in profile.text and TITLE in profile.text and "分钟" in profile.text
        assert client.get("/rep").status_code == 403  # not a rep
        assert client.get(f"/contacts/{rep_id}/{'z' * 26}").status_code == 404
        assert client.get("/contacts/..%2F..%2Fetc/passwd").status_code == 404
    with web.client(track.sales("west")) as other:
        assert "优优妈妈" not in other.get("/sales").text
        assert other.get(f"/contacts/{rep_id}/{contact_id}").status_code in (403, 404)


# ---- in a real browser ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("settings", ["production"], indirect=True)
def test_a_rep_signs_in_copies_the_text_and_downloads_an_image_in_a_browser(web: Web, tmp_path: Path) -> None:
    track = web.track
    post, rep, md = setup_rep(track)
    post_id = post.removeprefix("posts/")
    copy = track.dstub.GetRepCopy(dpb.GetRepCopyRequest(post=post, rep=rep.name), metadata=md)
    driver = chromium(PHONE_UA)
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
        driver.execute_cdp_cmd("Browser.grantPermissions", {
            "origin": web.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
        driver.get(web.signin_url(md))
        assert driver.current_url.endswith("/rep")
        screenshot(driver, "rep-home")
        driver.find_element("css selector", f'a[href="/rep/posts/{post_id}"]').click()
        wait_for(lambda: driver.current_url.endswith(f"/rep/posts/{post_id}"), "the copy page")
        screenshot(driver, "rep-post")
        driver.find_element("id", "copy-text").click()
        wait_for(lambda: driver.find_element("id", "copy-text").get_attribute("data-copied") == "yes", "the copy")
        clipboard = driver.execute_async_script(
            "const done = arguments[arguments.length - 1]; navigator.clipboard.readText().then(done, e => done('ERR ' + e));")
        assert clipboard == copy.text
        driver.find_element("css selector", "a.save").click()
        wait_for(lambda: any(p.suffix == ".jpg" for p in tmp_path.iterdir()), "the image download")
        (saved,) = [p for p in tmp_path.iterdir() if p.suffix == ".jpg"]
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == copy.images[0].sha256
        # a per-contact link, made in the browser
        driver.find_element("id", "display_name").send_keys("优优妈妈")
        driver.find_element("css selector", 'form[action$="/links"] button[type=submit]').click()
        wait_for(lambda: driver.find_elements("id", "contact-url"), "the contact link")
        assert "/s/" in driver.find_element("id", "contact-url").get_attribute("value")
        screenshot(driver, "rep-contact-link")
        driver.get(f"{web.url}/signin")  # signed in already: sent home
        assert driver.current_url.endswith("/rep")
        driver.find_element("css selector", "form.signout button").click()
        wait_for(lambda: driver.current_url.endswith("/signin"), "signing out")
        screenshot(driver, "signin")
        driver.get(f"{web.url}/s/not-a-real-link")  # what a customer sees for a broken link
        assert "链接无效" in driver.page_source
        screenshot(driver, "customer-link-invalid")
    finally:
        driver.quit()


@pytest.mark.slow
@pytest.mark.parametrize("settings", ["production"], indirect=True)
def test_the_sales_console_shows_the_new_tag_with_its_evidence_and_the_live_read_in_a_browser(web: Web) -> None:
    track = web.track
    track.team("east", "华东")
    post, rep, md = setup_rep(track, team="teams/east")
    link = track.stub.CreateContactLink(tpb.CreateContactLinkRequest(
        parent=rep.name, share_token=track.share_token(post, rep, md), contact_display_name="优优妈妈"), metadata=md)
    east = track.sales("east")
    driver = chromium(PHONE_UA)
    try:
        driver.get(web.signin_url(east))
        assert driver.current_url.endswith("/sales")
        assert "优优妈妈" not in driver.page_source  # no reads yet: no lead
        wait_for(lambda: driver.find_element("id", "feed").get_attribute("data-live") == "yes", "the live feed")
        time.sleep(0.3)
        first = track.read(link.share_token, 130)  # the customer reads (simulated at the service): live, then a tag
        wait_for(lambda: "优优妈妈" in driver.find_element("id", "feed").text, "the live read")
        track.read(link.share_token, 70, visitor=first.visitor_id)
        track.settle()
        driver.refresh()
        lead = driver.find_element("css selector", "#leads a.title")
        assert lead.text == "优优妈妈"
        screenshot(driver, "sales-home")
        lead.click()
        wait_for(lambda: "/contacts/" in driver.current_url, "the profile")
        tags = [t.text for t in driver.find_elements("css selector", ".tag")]
        assert tags and all(t.startswith("创造力启蒙·") for t in tags)
        evidence = driver.find_element("css selector", ".evidence li").text
        assert TITLE in evidence and "分钟" in evidence
        screenshot(driver, "sales-contact")
    finally:
        driver.quit()


def test_a_rep_without_a_rep_profile_and_a_manager_without_a_team_get_a_clear_page(web: Web) -> None:
    track = web.track
    _, md = track.harness.user(Role.REP, "未关联")  # type: ignore[attr-defined]
    with web.client(md) as client:
        r = client.get("/rep")
        assert r.status_code == 403 and "账号未关联" in r.text
    principal, _t, secret = track.harness.app.identity.create_user("无团队", Role.SALES, "", "")  # type: ignore[attr-defined]
    with web.client((("authorization", f"Bearer {secret}"),)) as client:
        r = client.get("/sales")
        assert r.status_code == 403 and "未分配团队" in r.text
