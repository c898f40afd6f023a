"""``python -m services`` (``make run``): the embedded default's one process serves content, distribution, tracking
and the web edge; a publish reaches the reps' copies without any broker, the customer page counts a view, and a rep
signs in to their page."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.protos.contentops.content.v1 import content_pb2 as cpb
from services.protos.contentops.content.v1 import content_pb2_grpc as cpb_grpc
from services.protos.contentops.distribution.v1 import distribution_pb2 as dpb
from services.protos.contentops.distribution.v1 import distribution_pb2_grpc as dpb_grpc
from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb
from services.protos.contentops.tracking.v1 import tracking_pb2_grpc as tpb_grpc

from . import infra
from .helpers import jpeg, upload_messages

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
CLI = str(ROOT / ".venv" / "bin" / "contentops")
WAIT = 60


def token(env: dict[str, str], role: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    made = subprocess.run([CLI, "admin", "create-user", "--role", role, "--name", role], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    user = made.stderr.split()[1]  # "created users/<id> (role) token <id>"
    return user, (("authorization", f"Bearer {made.stdout.strip()}"),)


def wait_serving(address: str, proc: subprocess.Popen[bytes]) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + WAIT
        while True:
            assert proc.poll() is None, "the process exited"
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"{address} never became healthy"
            time.sleep(0.1)


def test_one_process_serves_both_and_a_publish_reaches_the_reps(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CONTENTOPS_", "MINIO_", "DATABASE_", "REDIS_"))},
           "CONTENTOPS_DATA_DIR": str(tmp_path / "data"), "AUTH_CACHE_SECONDS": "0", "SHUTDOWN_GRACE_SECONDS": "5",
           "CONTENT_GRPC_ADDR": f"127.0.0.1:{infra.free_port()}",
           "DISTRIBUTION_GRPC_ADDR": f"127.0.0.1:{infra.free_port()}",
           "TRACKING_GRPC_ADDR": f"127.0.0.1:{infra.free_port()}", "WEB_ADDR": f"127.0.0.1:{infra.free_port()}",
           "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([PYTHON, "-m", "services"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_serving(env["CONTENT_GRPC_ADDR"], proc)
        wait_serving(env["DISTRIBUTION_GRPC_ADDR"], proc)
        wait_serving(env["TRACKING_GRPC_ADDR"], proc)
        _, admin = token(env, "admin")
        _, editor = token(env, "editor")
        rep_user, rep_md = token(env, "rep")
        _, edge = token(env, "service")
        with grpc.insecure_channel(env["CONTENT_GRPC_ADDR"]) as c, grpc.insecure_channel(env["DISTRIBUTION_GRPC_ADDR"]) as d:
            content, dist = cpb_grpc.ContentServiceStub(c), dpb_grpc.DistributionServiceStub(d)
            rep = dist.CreateRep(dpb.CreateRepRequest(rep=dpb.Rep(display_name="小王", user=rep_user)), metadata=admin)
            asset = content.UploadAsset(upload_messages(jpeg(3, (320, 240))), metadata=editor)
            post = content.CreatePost(cpb.CreatePostRequest(content=cpb.PostContent(
                title="开放日", body="[[亲爱的家长们|各位家长]]，周六见！电话 400-820-1234。", images=[asset.name])),
                metadata=editor)
            content.PublishPost(cpb.PublishPostRequest(name=post.name), metadata=editor)
            copy = dist.GetRepCopy(dpb.GetRepCopyRequest(post=post.name, rep=rep.name), metadata=rep_md, timeout=30)
            assert "400-820-1234" in copy.text and len(copy.images) == 1
        with grpc.insecure_channel(env["TRACKING_GRPC_ADDR"]) as t:
            tracking = tpb_grpc.TrackingServiceStub(t)
            view = tracking.StartView(tpb.StartViewRequest(share_token=copy.share_token, user_agent="Mozilla/5.0 (iPhone) "
                                                           "MicroMessenger/8.0"), metadata=edge)
            assert view.view.startswith("views/") and view.forward_share_token
            deadline = time.monotonic() + WAIT
            while not tracking.ListContacts(tpb.ListContactsRequest(parent=rep.name), metadata=rep_md).contacts:
                assert time.monotonic() < deadline, "the view never reached the rep's contacts"
                time.sleep(0.1)
        web = f"http://{env['WEB_ADDR']}"
        with httpx.Client(base_url=web, timeout=30, follow_redirects=True) as browser:
            page = browser.get(f"/s/{copy.share_token}", headers={"user-agent": "Mozilla/5.0 (iPhone) MicroMessenger/8.0"})
            assert page.status_code == 200 and "400-820-1234" in page.text
            assert browser.get("/signin", params={"token": dict(rep_md)["authorization"].split()[1]}).status_code == 200
            assert "开放日" in browser.get("/rep").text  # signed in (redirects followed) and the post is listed
        stored = tmp_path / "data" / "web-service.token"
        assert stored.stat().st_mode & 0o777 == 0o600  # the edge's own token, made once and kept private
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
