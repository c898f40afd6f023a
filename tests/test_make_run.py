"""``make run`` on the production stores: every process on its own (honcho, deploy/Procfile) on this machine's
PostgreSQL and Redis and an S3 server, and Ctrl-C stops them all.

A publish is rendered by the Celery worker (relayed by beat), a customer's page
view and beacon go through the web edge into the Redis stream and the consumer
applies them; then SIGINT to the process group (what Ctrl-C does) and every
process exits, releasing its port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import httpx
import pytest
import redis

from services.protos.contentops.content.v1 import content_pb2 as cpb
from services.protos.contentops.content.v1 import content_pb2_grpc as cpb_grpc
from services.protos.contentops.distribution.v1 import distribution_pb2 as dpb
from services.protos.contentops.distribution.v1 import distribution_pb2_grpc as dpb_grpc
from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb
from services.protos.contentops.tracking.v1 import tracking_pb2_grpc as tpb_grpc

from . import infra
from .helpers import jpeg, upload_messages, wait_for
from .test_all_in_one import token, wait_serving
from .web_harness import PHONE_UA

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
REDIS_DB = 9  # this test's own database: make run's Celery queues and streams, flushed first


def port_free(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


def test_make_run_starts_every_process_and_ctrl_c_stops_them(pg_url: str, s3_server: infra.S3Server,
                                                             tmp_path: Path) -> None:
    redis_url = infra.REDIS_URL.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    infra.require("Redis", infra.port_open(redis_url, 6379), redis_url)
    redis.Redis.from_url(redis_url).flushdb()
    addresses = {name: f"127.0.0.1:{infra.free_port()}" for name in ("CONTENT_GRPC_ADDR", "DISTRIBUTION_GRPC_ADDR",
                                                                     "TRACKING_GRPC_ADDR", "WEB_ADDR")}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CONTENTOPS_", "MINIO_", "DATABASE_", "REDIS_"))},
           "DATABASE_URL": pg_url, "REDIS_URL": redis_url, **s3_server.env(f"run-{uuid.uuid4().hex[:10]}"),
           "CONTENTOPS_DATA_DIR": str(tmp_path / "data"), "CONTENTOPS_SECRET_KEY": "make-run-test",
           "AUTH_CACHE_SECONDS": "0", "SCHEDULER_INTERVAL_SECONDS": "1", "SHUTDOWN_GRACE_SECONDS": "5", **addresses}
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for name in ("CONTENT_GRPC_ADDR", "DISTRIBUTION_GRPC_ADDR", "TRACKING_GRPC_ADDR"):
            wait_serving(addresses[name], proc)
        web = f"http://{addresses['WEB_ADDR']}"
        wait_for(lambda: _ok(f"{web}/healthz"), "the web edge")
        procfile = (ROOT / "deploy" / "Procfile").read_text()
        names = re.findall(r"^(\w+):", procfile, re.M)
        started = log_path.read_text(errors="replace")
        assert all(f"{n}." in started for n in names), started[-3000:]  # honcho prefixes each process's lines

        _, admin = token(env, "admin")
        _, editor = token(env, "editor")
        rep_user, rep_md = token(env, "rep")
        with grpc.insecure_channel(addresses["CONTENT_GRPC_ADDR"]) as c, \
                grpc.insecure_channel(addresses["DISTRIBUTION_GRPC_ADDR"]) as d, \
                grpc.insecure_channel(addresses["TRACKING_GRPC_ADDR"]) as t:
            content, dist, tracking = cpb_grpc.ContentServiceStub(c), dpb_grpc.DistributionServiceStub(d), \
                tpb_grpc.TrackingServiceStub(t)
            rep = dist.CreateRep(dpb.CreateRepRequest(rep=dpb.Rep(display_name="小王", user=rep_user)), metadata=admin)
            asset = content.UploadAsset(upload_messages(jpeg(5, (320, 240))), metadata=editor)
            post = content.CreatePost(cpb.CreatePostRequest(content=cpb.PostContent(
                title="开放日", body="[[亲爱的家长们|各位家长]]，周六见！电话 400-820-1234。", images=[asset.name])),
                metadata=editor)
            content.PublishPost(cpb.PublishPostRequest(name=post.name), metadata=editor)

            def rendered() -> bool:  # beat relays the publish event; the worker renders the copy
                try:
                    status = dist.GetCampaignStatus(dpb.GetCampaignStatusRequest(post=post.name), metadata=editor)
                except grpc.RpcError:
                    return False
                return status.total == 1 and status.rendered == 1

            wait_for(rendered, "the worker to render the rep's copy")
            copy = dist.GetRepCopy(dpb.GetRepCopyRequest(post=post.name, rep=rep.name), metadata=rep_md)
            with httpx.Client(base_url=web, headers={"user-agent": PHONE_UA}, timeout=30) as browser:
                page = browser.get(f"/s/{copy.share_token}")
                assert page.status_code == 200 and "400-820-1234" in page.text
                view = re.search(r'data-view="([^"]+)"', page.text)
                assert view
                beat = browser.post("/t/beat", json={"view": view.group(1), "seq": 1, "engaged_ms": 7000, "scroll": 60,
                                                     "end": True})
                assert beat.status_code == 204, beat.text

            def applied() -> bool:  # the consumer applied the view and its beacon
                a = tracking.GetPostAnalytics(tpb.GetPostAnalyticsRequest(post=post.name), metadata=editor)
                return a.views == 1 and a.engaged_seconds_p50 >= 7

            wait_for(applied, "the consumer to apply the view and its heartbeat")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
        try:
            proc.wait(timeout=60)
        finally:
            lingering = _alive(proc.pid)
            if lingering:
                os.killpg(proc.pid, signal.SIGKILL)
    assert not lingering, f"processes still running after Ctrl-C:\n{log_path.read_text(errors='replace')[-3000:]}"
    assert all(port_free(a) for a in addresses.values())


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pgid: int) -> bool:
    """Whether any process of the group is left, waiting up to 30 s for them to finish draining."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.2)
    return True
