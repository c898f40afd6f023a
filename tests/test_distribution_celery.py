"""Campaign fan-out on real Celery workers (Redis broker, PostgreSQL, S3), including a worker killed mid-campaign."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from services.content.app import ContentApp
from services.content.domain.posts import PostContent, Variation
from services.distribution.app import CeleryFanout, DistributionApp
from services.distribution.models import CopyRow
from services.shared.celery_app import make_celery
from services.shared.identity.domain import Role
from services.shared.settings import load_settings

from . import infra
from .helpers import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CELERY = str(ROOT / ".venv" / "bin" / "celery")
DEMO = ROOT / "services" / "demo_data"
REDIS_DB = 14
REDIS_URL = f"{infra.REDIS_URL.rsplit('/', 1)[0]}/{REDIS_DB}"
WAIT = 120  # upper bound on a loaded 2-core machine; never an assertion on speed
REPS = 30
LEASE = 3  # s a worker holds its chunk's copies without renewing


def _clear(r: redis.Redis) -> None:
    for pattern in ("content*", "distribution*", "_kombu.binding*", "celery-task-meta-*", "unacked*", "contentops:*"):
        for key in r.scan_iter(pattern):
            r.delete(key)


@pytest.fixture
def env(pg_url: str, s3_server: infra.S3Server, tmp_path: Path) -> Iterator[dict[str, str]]:
    infra.require("Redis", infra.port_open(REDIS_URL, 6379), REDIS_URL)
    r = redis.Redis.from_url(REDIS_URL)
    _clear(r)
    values = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CONTENTOPS_", "MINIO_", "DATABASE_"))},
        "DATABASE_URL": pg_url,
        "DATABASE_AUTO_MIGRATE": "0",
        "REDIS_URL": REDIS_URL,
        "CONTENTOPS_DATA_DIR": str(tmp_path / "data"),
        "CONTENTOPS_SECRET_KEY": "test-secret",
        "CAMPAIGN_CHUNK_SIZE": "2",
        "CAMPAIGN_LEASE_SECONDS": str(LEASE),
        "CAMPAIGN_RESWEEP_SECONDS": "300",
        "PYTHONPATH": str(ROOT),
        **s3_server.env(f"campaign-{uuid.uuid4().hex[:10]}"),
    }
    try:
        yield values
    finally:
        _clear(r)
        r.close()


@contextmanager
def worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    node = f"dist-{uuid.uuid4().hex[:8]}@contentops"
    cmd = [CELERY, "-A", "services.worker", "worker", "-Q", "distribution", "--pool=solo", "--loglevel=INFO", "-n", node,
           "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    client = make_celery(load_settings(env))
    try:
        deadline = time.monotonic() + WAIT
        while not client.control.ping(destination=[node], timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker did not come up:\n{log.read_text()[-3000:]}")
        yield proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def states(app: DistributionApp) -> dict[str, str]:
    with app.db.read() as s:
        return {c.rep_id: c.state for c in s.scalars(select(CopyRow))}


def test_a_worker_killed_mid_campaign_leaves_every_rep_exactly_one_copy(env: dict[str, str], tmp_path: Path) -> None:
    settings = load_settings(env)
    content = ContentApp.build(settings)
    dist = DistributionApp.build(settings, blobs=content.blobs)
    assert isinstance(dist.fanout, CeleryFanout)
    try:
        editor = content.identity.create_user("编辑", Role.EDITOR)[0]
        reps = [dist.service.create_rep(f"销售{i:02d}", "祝好", "徐汇店", "上海", None, "", None) for i in range(REPS)]
        images = [content.service.upload_asset(editor, p.name, [p.read_bytes()]) for p in sorted(DEMO.glob("*.jpg"))]
        post = content.service.create_post(editor, PostContent(
            "开放日", (DEMO / "post.txt").read_text(encoding="utf-8"), images=tuple(a.id for a in images),
            variation=Variation(protected_phrases=("400-820-1234",), badge_enabled=True,
                                rep_template="{{ body }}\n—— {{ rep.display_name }}"))).post
        log = tmp_path / "worker.log"
        with worker(env, log) as first:
            # Published once the worker answers pings, so it cannot finish the campaign while starting up.
            content.service.publish_post(editor, post.id, None, "")
            wait_for(lambda: sum(s == "ready" for s in states(dist).values()) >= 4, "the first copies", WAIT)
            os.killpg(first.pid, signal.SIGKILL)  # the whole worker, mid-campaign, no warm shutdown
            first.wait()
        before = states(dist)
        assert len(before) == REPS and "pending" in before.values(), "the kill came too late to test anything"

        with worker(env, log):
            # The killed worker's chunk stays unacknowledged in Redis until the visibility timeout (an hour), and its
            # campaign is younger than the resweep (300 s); its lease ran out LEASE s after its last copy, so beat's
            # sweep (every 30 s; sent here until done instead of waiting for beat) queues it again.
            client = make_celery(settings)
            queued: list[int] = []

            def swept_and_ready() -> bool:
                queued.append(client.send_task("contentops.distribution.redispatch_stale", queue="distribution").get(timeout=WAIT))
                return set(states(dist).values()) == {"ready"}

            try:
                wait_for(swept_and_ready, "every copy to be ready", WAIT)
            finally:
                client.close()
            assert sum(queued) >= 1  # the dead worker's chunk came back through the sweep, not the broker

        with dist.db.read() as s:
            rows = list(s.scalars(select(CopyRow)))
        assert sorted(r.rep_id for r in rows) == sorted(r.id for r in reps)  # one row per rep, none missing
        keys = [im["key"] for r in rows for im in r.images]
        assert len(keys) == REPS * len(images) == len(set(keys))  # every image of every copy distinct
        stored = set(content.blobs.keys("variants/"))
        assert stored == set(keys)  # no orphan variants from the killed render, nothing missing
        status = dist.service.campaign_status(post.id)
        assert (status.total, status.rendered, status.failures) == (REPS, REPS, [])
    finally:
        dist.close()
        content.close()
