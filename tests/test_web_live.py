"""Live activity over SSE outlives the tracking server closing aged connections.

Servers close a connection after GRPC_MAX_CONNECTION_AGE_SECONDS (300 in production, so round-robin clients
re-resolve); every WatchActivity stream on it ends with UNAVAILABLE. The edge watches again at once, so a rep's
open page neither loses its stream nor waits for the browser's reconnect. Here connections age in 1 s, and streams
on an aged connection get 1.5 s more: longer than the edge's RESUME_BACKOFF_AFTER, as the 15 s default is.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import httpx
import pytest

from services.shared.settings import Settings

from .test_web_pages import TITLE, setup_rep
from .web_harness import PHONE_UA, Web

AGE_SECONDS = 1.0
GRACE_SECONDS = 1.5


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, grpc_max_connection_age_seconds=AGE_SECONDS, shutdown_grace_seconds=GRACE_SECONDS)


def test_the_live_feed_survives_the_tracking_servers_connection_age(web: Web) -> None:
    track = web.track
    post, rep, md = setup_rep(track)
    token = track.share_token(post, rep, md)
    seen: list[tuple[str, str]] = []  # (event kind, data), in order
    ready, got_activity = threading.Event(), threading.Event()
    stop = threading.Event()

    def listen() -> None:
        with web.client(md) as client, client.stream("GET", "/rep/activity", timeout=30) as r:
            kind = ""
            for line in r.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    seen.append((kind, line.split(":", 1)[1].strip()))
                    if kind == "ready":
                        ready.set()
                    elif kind == "activity":
                        got_activity.set()
                        return
                if stop.is_set():
                    return
        seen.append(("closed", ""))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        assert ready.wait(15), "the activity stream did not open"
        time.sleep(3 * (AGE_SECONDS + GRACE_SECONDS))  # the upstream stream was ended twice meanwhile
        assert ("closed", "") not in seen, "the edge ended the browser's stream when the upstream connection aged"
        with httpx.Client(headers={"user-agent": PHONE_UA}) as customer:
            assert customer.get(f"{web.url}/s/{token}").status_code == 200
        assert got_activity.wait(60), f"no activity event arrived on the open stream: {seen}"
    finally:
        stop.set()
        listener.join(30)
    assert [kind for kind, _ in seen] == ["ready", "activity"]  # one stream from the browser's side: no reconnect
    assert TITLE in json.loads(seen[1][1])["message"]
