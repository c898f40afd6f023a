"""The web edge served for real (uvicorn on a loopback port) in front of the tracking harness's services."""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.tracking.limits import RateLimiter, RedisRateLimiter
from services.tracking.streams import RedisEventLog
from services.web.app import build_app
from services.web.backends import Backends
from services.web.edge_ingest import EdgeIngest, RedisIngest
from services.web.threaded import ThreadedServer

from . import infra
from .tracking_harness import Track


@dataclass
class Web:
    track: Track
    url: str  # http://127.0.0.1:<port>

    def signin_url(self, md: tuple[tuple[str, str], ...]) -> str:
        """The sign-in link headquarters would send the holder of these credentials."""
        return f"{self.url}/signin?token={dict(md)['authorization'].removeprefix('Bearer ')}"

    @contextlib.contextmanager
    def client(self, md: tuple[tuple[str, str], ...] | None = None) -> Iterator[httpx.Client]:
        """``with web.client(md) as c``: an HTTP client, signed in with ``md``'s token when given (the session
        cookie kept); redirects are not followed, so tests see them."""
        with httpx.Client(base_url=self.url, follow_redirects=False, timeout=30) as client:
            if md is not None:
                r = client.get(self.signin_url(md))
                assert r.status_code == 303, (r.status_code, r.text[:300])
            yield client


PHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Mobile/15E148 MicroMessenger/8.0.47")  # headless Chrome's own UA says "HeadlessChrome": a bot
ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artifacts" / "web"  # phone screenshots


def chromium(user_agent: str = PHONE_UA):  # type: ignore[no-untyped-def]
    """Debian's chromium, headless, phone-sized (390×844), driven by Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("Debian's chromium and chromium-driver are needed (make test installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")  # type: ignore[assignment]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--window-size=390,844", f"--user-agent={user_agent}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_window_size(390, 844)  # headless Chrome opens wider than --window-size asks for a phone
    return driver




def screenshot(driver, name: str) -> Path:  # type: ignore[no-untyped-def]
    """A phone-size screenshot of the whole page as a test artifact (var/test-artifacts/web/<name>.png)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 3000)")
    driver.set_window_size(390, max(844, int(height) + 120))
    driver.save_screenshot(str(path))
    driver.set_window_size(390, 844)
    return path


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


class RealTimeClock:
    """The ingest's receive clock for tests with a browser: real time (browsers read in real time), moved ahead by
    ``advance`` so a simulated reader (``Track.read``) can still read for minutes at once."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class TrackingViewLimits:
    """The tracking app's in-memory view limits, for the edge starting views itself (production shares them in
    Redis: limits.AsyncViewLimiter)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def allow_views(self, keys: list[str]) -> bool:
        return self.limiter.allow_views(keys)


def serve_web(track: Track, beacons: EdgeIngest | None = None) -> Iterator[Web]:
    """The edge on a free port, calling the harness's distribution and tracking servers with a service token; the
    tracking ingest back on real time (browsers read in real time; RealTimeClock)."""
    assert track.addresses is not None
    token = dict(track.edge)["authorization"].removeprefix("Bearer ")
    settings = track.app.settings.replace(content_addr=track.harness.address,  # type: ignore[attr-defined]
                                          distribution_addr=track.addresses["distribution"],
                                          tracking_addr=track.addresses["tracking"], web_service_token=token)
    clock = RealTimeClock()
    track.app.ingest.clock = clock
    track.clock = clock  # type: ignore[assignment]  # track.read() still simulates minutes of reading at once
    if beacons is None and isinstance(track.app.event_log, RedisEventLog):  # production: beacons straight to its log
        beacons = RedisIngest.from_settings(settings, url=infra.REDIS_URL, prefix=track.app.event_log.prefix)
    if isinstance(beacons, RedisIngest):
        beacons.clock = clock  # the edge receives beacons on the ingest's clock, as the tracking service would
        if beacons.view_limiter is None and not isinstance(track.app.limiter, RedisRateLimiter):
            beacons.view_limiter = TrackingViewLimits(track.app.limiter)  # pages share the service's view limits
    app = build_app(settings, Backends(settings, token), ingest=beacons)
    port = infra.free_port()
    server = ThreadedServer(app, "127.0.0.1", port, log_level="warning").start()
    try:
        yield Web(track, f"http://127.0.0.1:{port}")
    finally:
        server.stop()
