"""The content service on Celery: a real worker subprocess, real Redis, real PostgreSQL.

Each test starts ``celery -A services.worker worker`` (solo pool) as production
does, with its own PostgreSQL database and a Redis database index of its own,
and talks to it only through the broker. No eager mode anywhere.

These workers consume only the ``content`` queue, so the events the content
service sends to ``distribution`` stay in that Redis list, where the tests read
them as the distribution service's workers would receive them
(tests/test_distribution_celery.py runs those workers).
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import redis
from celery import Celery
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from services.content.app import ContentApp
from services.content.domain.posts import PostContent, PostState, Variation
from services.content.events import POST_CHANGED, POST_PUBLISHED, CeleryEvents, decode_payload
from services.content.models import OutboxRow
from services.protos.contentops.content.v1 import events_pb2
from services.shared.celery_app import make_celery
from services.shared.identity.domain import Principal, Role
from services.shared.settings import Settings, load_settings

from . import infra

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CELERY = str(ROOT / ".venv" / "bin" / "celery")
REDIS_DB = 13  # this file's own Redis database; only keys this file creates are ever deleted
REDIS_URL = f"{infra.REDIS_URL.rsplit('/', 1)[0]}/{REDIS_DB}"
WAIT = 30  # generous upper bound for a result on a loaded machine; never an assertion on speed

PUBLISH_DUE = "contentops.content.publish_due_posts"
RELAY = "contentops.content.relay_outbox"
CONSUMER = "contentops.distribution.post_published"
CHANGED_CONSUMER = "contentops.distribution.post_changed"


class RedisGate:
    """A loopback TCP port in front of Redis: refused while closed, forwarding once opened.

    Lets one sink see Redis go away and come back without restarting anything.
    """

    def __init__(self) -> None:
        self.port = infra.free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def open(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            target = urlparse(REDIS_URL)
            upstream = socket.create_connection((target.hostname or "127.0.0.1", target.port or 6379))
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for sock in self._conns:
            sock.close()
        self._conns.clear()


# ---- fixtures ----------------------------------------------------------------------------


def _redis() -> redis.Redis:
    infra.require("Redis", infra.port_open(REDIS_URL, 6379), REDIS_URL)
    return redis.Redis.from_url(REDIS_URL)


def _clear(r: redis.Redis) -> None:
    """Delete what Celery/kombu and this file keep in REDIS_DB (never FLUSHDB/FLUSHALL)."""
    for pattern in ("content*", "distribution*", "_kombu.binding*", "celery-task-meta-*", "unacked*",
                    "test-events:*"):
        keys = list(r.scan_iter(match=pattern, count=500))
        if keys:
            r.delete(*keys)


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    app: ContentApp  # the content service in this process, sending events with CeleryEvents
    client: Celery  # this process's handle on the broker, to send tasks and read results
    redis: redis.Redis
    tmp: Path

    def editor(self) -> Principal:
        return self.app.identity.create_user(f"editor {uuid.uuid4().hex[:6]}", Role.EDITOR)[0]

    def outbox(self, topic: str | None = POST_PUBLISHED) -> list[OutboxRow]:
        """The outbox's rows of one topic (publications, by default), or of all topics."""
        with self.app.db.read() as s:
            q = select(OutboxRow).order_by(OutboxRow.id)
            return list(s.scalars(q.where(OutboxRow.topic == topic) if topic else q))

    def run(self, task: str) -> int:
        return int(self.client.send_task(task).get(timeout=WAIT))

    def received(self) -> tuple[events_pb2.PostPublishedEvent, dict[str, object]]:
        """The next publication waiting in the ``distribution`` queue, and its Celery headers (blocks until one
        arrives); post-changed events ahead of it are passed over."""
        while True:
            item = self.redis.blpop(["distribution"], timeout=WAIT)
            assert item is not None, "nothing reached the distribution queue"
            message = json.loads(item[1])
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            if message["headers"]["task"] == CONSUMER:
                break
            assert message["headers"]["task"] == CHANGED_CONSUMER
        return events_pb2.PostPublishedEvent.FromString(decode_payload(args[0])), message["headers"]

    @contextmanager
    def worker(self, queues: str) -> Iterator[subprocess.Popen[bytes]]:
        """``celery worker`` as a subprocess, yielded once it answers a control ping."""
        log_path = self.tmp / f"worker-{queues.replace(',', '-')}.log"
        node = f"test-{uuid.uuid4().hex[:8]}@contentops"
        cmd = [CELERY, "-A", "services.worker", "worker", "-Q", queues, "--pool=solo", "--loglevel=INFO",
               "-n", node, "--without-gossip", "--without-mingle",
               "--without-heartbeat"]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            deadline = time.monotonic() + WAIT
            while not self.client.control.ping(destination=[node], timeout=0.5):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"worker did not come up:\n{log_path.read_text()[-3000:]}")
            yield proc
        finally:
            proc.terminate()  # warm shutdown
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def stack(pg_url: str, tmp_path: Path) -> Iterator[Stack]:
    r = _redis()
    _clear(r)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CONTENTOPS_", "MINIO_", "DATABASE_"))},
        "DATABASE_URL": pg_url,
        "DATABASE_AUTO_MIGRATE": "0",  # cloned from the migrated template
        "REDIS_URL": REDIS_URL,
        "CONTENTOPS_DATA_DIR": str(tmp_path / "data"),
        "CONTENTOPS_SECRET_KEY": "test-secret",
        "SCHEDULER_INTERVAL_SECONDS": "1",
        "PYTHONPATH": str(ROOT),
    }
    settings = load_settings(env)
    app = ContentApp.build(settings)
    client = make_celery(settings)
    try:
        yield Stack(settings, env, app, client, r, tmp_path)
    finally:
        client.close()
        app.close()
        _clear(r)
        r.close()


def _jpeg(size: tuple[int, int] = (64, 48), seed: int = 0) -> bytes:
    image = Image.new("RGB", size, (seed % 256, 120, 200))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _queued_events(r: redis.Redis, queue: str = "distribution") -> list[tuple[str, events_pb2.PostPublishedEvent]]:
    """Messages waiting in a kombu Redis queue, decoded: (task name, event)."""
    out = []
    for raw in r.lrange(queue, 0, -1):
        message = json.loads(raw)
        assert message["properties"]["body_encoding"] == "base64"
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        if message["headers"]["task"] != CHANGED_CONSUMER:
            out.append((message["headers"]["task"], events_pb2.PostPublishedEvent.FromString(decode_payload(args[0]))))
    return out


# ---- tests -------------------------------------------------------------------------------


def test_worker_publishes_a_scheduled_post_when_due(stack: Stack) -> None:
    editor = stack.editor()
    svc = stack.app.service
    soon = svc.create_post(editor, PostContent("限时早教课", "本周六上午十点开课。"))
    later = svc.create_post(editor, PostContent("下月活动", "敬请期待。"))
    at = datetime.now(UTC) + timedelta(seconds=2)
    assert svc.publish_post(editor, soon.post.id, at, "").post.state is PostState.SCHEDULED
    assert svc.publish_post(editor, later.post.id, datetime.now(UTC) + timedelta(hours=1), "").post.state \
        is PostState.SCHEDULED
    assert stack.outbox() == []  # scheduling announces no publication...
    changed = [events_pb2.PostChangedEvent.FromString(r.payload) for r in stack.outbox(POST_CHANGED)]
    assert [e.state for e in changed][-2:] == [events_pb2.POST_LIFECYCLE_SCHEDULED] * 2  # ...only the new state

    metrics_port = infra.free_port()
    stack.env["METRICS_ADDR"] = f"127.0.0.1:{metrics_port}"  # the worker's /metrics (solo pool: one process)
    with stack.worker("content"):  # nobody consumes `distribution`, so its messages stay countable
        while datetime.now(UTC) <= at:
            time.sleep(0.2)
        assert stack.run(PUBLISH_DUE) == 1

        post = svc.get_post(editor, soon.post.id).post
        assert post.state is PostState.PUBLISHED
        assert post.published_revision == 1 and post.scheduled_revision is None
        assert svc.get_post(editor, later.post.id).post.state is PostState.SCHEDULED  # not due yet

        queued = _queued_events(stack.redis)
        assert len(queued) == 1
        task, event = queued[0]
        assert task == CONSUMER
        assert event.post == f"posts/{soon.post.id}"
        assert event.revision == f"posts/{soon.post.id}/revisions/1"
        assert event.content.title == "限时早教课"
        assert event.published_by == "system/scheduler"
        [row] = stack.outbox()
        assert row.event_id == event.event_id and row.dispatch_time is not None

        # Idempotent: a second sweep (beat fires again) publishes and announces nothing more.
        assert stack.run(PUBLISH_DUE) == 0
        assert stack.run(RELAY) == 0
        assert len(_queued_events(stack.redis)) == 1
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        runs = [sample.value for family in text_string_to_metric_families(scraped) for sample in family.samples
                if sample.name == "contentops_task_duration_seconds_count"
                and sample.labels == {"task": PUBLISH_DUE, "outcome": "success"}]
        assert runs == [2], scraped[-2000:]  # both sweeps, timed by the worker


def test_outbox_event_reaches_the_distribution_queue(stack: Stack) -> None:
    editor = stack.editor()
    svc = stack.app.service
    assert isinstance(stack.app.events, CeleryEvents)
    asset = svc.upload_asset(editor, "coffee.jpg", [_jpeg((80, 60), seed=1)])
    topic = svc.create_topic(editor, "early-education", "早教", "")
    content = PostContent("春季体验课", "报名送绘本一本。", images=(asset.id,), topics=(topic.id,),
                          variation=Variation(protected_phrases=("送绘本",)))
    post = svc.create_post(editor, content).post

    published = svc.publish_post(editor, post.id, None, "")  # relayed right after the commit
    assert published.post.state is PostState.PUBLISHED
    event, headers = stack.received()

    assert event.post == f"posts/{post.id}"
    assert event.revision == f"posts/{post.id}/revisions/1"
    assert event.published_by == editor.name
    assert event.content.title == "春季体验课"
    assert event.content.body == "报名送绘本一本。"
    assert list(event.content.topics) == ["topics/early-education"]
    assert list(event.content.protected_phrases) == ["送绘本"]
    [image] = event.content.images
    assert (image.asset, image.sha256, image.mime_type, image.width, image.height, image.blob_key) == (
        f"assets/{asset.id}", asset.sha256, "image/jpeg", 80, 60, asset.blob_key)
    [row] = stack.outbox()
    assert row.event_id == event.event_id and row.dispatch_time is not None
    assert _queued_events(stack.redis) == []  # delivered once
    left = [json.loads(m)["headers"]["task"] for m in stack.redis.lrange("distribution", 0, -1)]
    assert left == [CHANGED_CONSUMER] * 2  # and the post's two changes (created, published) for its state
    # Fire and forget: the consumer is told to store no result per event, which nobody would read.
    assert headers["ignore_result"] is True


def test_publish_commits_while_redis_is_down_and_the_outbox_relays_later(stack: Stack) -> None:
    editor = stack.editor()
    gate = RedisGate()  # closed: the sink's broker refuses connections
    # The same database, but this content service reaches Redis only through the gate.
    gated = ContentApp.build(stack.settings.replace(redis_url=gate.url(REDIS_DB)))
    try:
        assert isinstance(gated.events, CeleryEvents)
        first = gated.service.create_post(editor, PostContent("断网也能发", "事件留在发件箱。")).post
        second = gated.service.create_post(editor, PostContent("第二篇", "同样等待。")).post
        assert gated.service.publish_post(editor, first.id, None, "").post.state is PostState.PUBLISHED
        assert gated.service.publish_post(editor, second.id, None, "").post.state is PostState.PUBLISHED
        assert gated.service.relay_outbox() == 0  # still down: nothing sent, nothing lost

        # Committed: another connection sees both posts live and both events waiting.
        for post in (first, second):
            assert stack.app.service.get_post(editor, post.id).post.state is PostState.PUBLISHED
        rows = stack.outbox()
        assert len(rows) == 2 and all(r.dispatch_time is None for r in rows)
        waiting = stack.outbox(topic=None)  # and the post-changed events: 2 creations, 2 publications
        assert len(waiting) == 6 and all(r.dispatch_time is None for r in waiting)

        with stack.worker("content"):
            # Redis is back for the worker: its sweep (beat sends it in production) relays every event...
            assert stack.run(RELAY) == 6
            got = {stack.received()[0].event_id for _ in rows}
            assert got == {r.event_id for r in rows}
            assert all(r.dispatch_time is not None for r in stack.outbox())

            # ...and the very same sink that failed works again once Redis is reachable: no restart.
            gate.open()
            third = gated.service.create_post(editor, PostContent("恢复之后", "直接送达。")).post
            gated.service.publish_post(editor, third.id, None, "")
            event, _ = stack.received()
            assert event.post == f"posts/{third.id}" and event.content.title == "恢复之后"
            assert stack.run(RELAY) == 0
    finally:
        gated.close()
        gate.close()

    events = {r.event_id: r for r in stack.outbox()}
    assert len(events) == 3 and all(r.dispatch_time is not None for r in events.values())


def test_beat_schedule_has_every_sweep() -> None:
    settings = load_settings({"REDIS_URL": REDIS_URL, "CONTENTOPS_SECRET_KEY": "k",
                              "SCHEDULER_INTERVAL_SECONDS": "7"})
    app = make_celery(settings)
    schedule = {entry["task"]: entry["schedule"] for entry in app.conf.beat_schedule.values()}
    assert schedule == {PUBLISH_DUE: 7.0, RELAY: 7.0, "contentops.distribution.redispatch_stale": 30.0,
                        "contentops.tracking.purge_events": 3600.0}
    app.loader.import_default_modules()
    assert {PUBLISH_DUE, RELAY} <= set(app.tasks)
    assert app.amqp.router.route({}, PUBLISH_DUE)["queue"].name == "content"
    assert app.amqp.router.route({}, CONSUMER)["queue"].name == "distribution"
