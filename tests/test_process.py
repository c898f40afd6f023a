"""``python -m services.content`` as a real process: health, reflection, auth, graceful SIGTERM.

The server runs on the embedded default (SQLite + local blobs in a temporary
data dir) on a free loopback port; the editor token comes from the
``contentops`` CLI in the same environment, as an operator would make it.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from services.protos.contentops.content.v1 import content_pb2 as pb
from services.protos.contentops.content.v1 import content_pb2_grpc as pb_grpc
from services.protos.contentops.identity.v1 import identity_pb2, identity_pb2_grpc

from . import infra

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
CLI = str(ROOT / ".venv" / "bin" / "contentops")
GRACE = 20  # SHUTDOWN_GRACE_SECONDS: far longer than the slow upload needs
WAIT = 30  # upper bound for start-up on a loaded machine, never an assertion on speed
CONTENT_SERVICE = "contentops.content.v1.ContentService"
IDENTITY_SERVICE = "contentops.identity.v1.IdentityService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Server:
    env: dict[str, str]
    address: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    channels: list[grpc.Channel] = field(default_factory=list)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([PYTHON, "-m", "services.content"], cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        health = health_pb2_grpc.HealthStub(self.channel())
        deadline = time.monotonic() + WAIT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not become healthy:\n{self.log()}")
            time.sleep(0.1)

    def channel(self) -> grpc.Channel:
        channel = grpc.insecure_channel(self.address)
        self.channels.append(channel)
        return channel

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        for channel in self.channels:
            channel.close()
        self.channels.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@contextmanager
def content_server(tmp_path: Path) -> Iterator[Server]:
    """A not-yet-started server process in a fresh embedded data dir, killed on the way out."""
    data_dir = tmp_path / "data"
    env = {
        **{k: v for k, v in os.environ.items()
           if not k.startswith(("CONTENTOPS_", "MINIO_", "DATABASE_", "REDIS_"))},
        "CONTENTOPS_DATA_DIR": str(data_dir),
        "CONTENT_GRPC_ADDR": f"127.0.0.1:{infra.free_port()}",
        "SHUTDOWN_GRACE_SECONDS": str(GRACE),
        "AUTH_CACHE_SECONDS": "0",
        "PYTHONPATH": str(ROOT),
    }
    s = Server(env, env["CONTENT_GRPC_ADDR"], data_dir, tmp_path / "server.log")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with content_server(tmp_path) as s:
        yield s


def editor_token(env: dict[str, str]) -> str:
    made = cli(env, "admin", "create-user", "--role", "editor", "--name", "x")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("co_") and "\n" not in token
    return token


def big_jpeg() -> bytes:
    """About 2 MB of incompressible JPEG."""
    w, h = 1400, 1300
    image = Image.frombytes("RGB", (w, h), os.urandom(w * h * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


# ---- tests ---------------------------------------------------------------------------------


def test_health_reflection_and_auth_on_a_real_process(server: Server) -> None:
    token = editor_token(server.env)  # the CLI migrates the fresh SQLite file first
    server.start()
    channel = server.channel()
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", CONTENT_SERVICE, IDENTITY_SERVICE):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == SERVING

    # Reflection, without a token.
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    [answer] = list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                    timeout=5))
    names = {s.name for s in answer.list_services_response.service}
    assert {CONTENT_SERVICE, IDENTITY_SERVICE, "grpc.health.v1.Health"} <= names
    [answer] = list(reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=CONTENT_SERVICE)]), timeout=5))
    assert answer.file_descriptor_response.file_descriptor_proto  # clients can discover the schema

    # Everything else needs a valid bearer token.
    content = pb_grpc.ContentServiceStub(channel)
    identity = identity_pb2_grpc.IdentityServiceStub(channel)
    calls = [
        lambda md: content.ListTopics(pb.ListTopicsRequest(), metadata=md, timeout=5),
        lambda md: content.GetPost(pb.GetPostRequest(name="posts/01hzzzzzzzzzzzzzzzzzzzzzzz"), metadata=md,
                                   timeout=5),
        lambda md: identity.ListUsers(identity_pb2.ListUsersRequest(), metadata=md, timeout=5),
    ]
    for bad in ((), (("authorization", "Bearer co_nope"),), (("authorization", f"Basic {token}"),)):
        for call in calls:
            with pytest.raises(grpc.RpcError) as err:
                call(bad)
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED, err.value.details()
    md = (("authorization", f"Bearer {token}"),)
    assert content.ListTopics(pb.ListTopicsRequest(), metadata=md, timeout=5).topics == []
    with pytest.raises(grpc.RpcError) as err:
        identity.ListUsers(identity_pb2.ListUsersRequest(), metadata=md, timeout=5)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED  # an editor is no admin


def test_sigterm_drains_an_in_flight_upload_and_exits_cleanly(server: Server) -> None:
    token = editor_token(server.env)
    server.start()
    assert server.proc is not None
    md = (("authorization", f"Bearer {token}"),)
    data = big_jpeg()
    chunk_size = -(-len(data) // 20)
    chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]
    assert len(chunks) == 20 and len(data) > 1_500_000

    # A health watch opened beforehand: the drain must tell it NOT_SERVING.
    watch = health_pb2_grpc.HealthStub(server.channel()).Watch(health_pb2.HealthCheckRequest(), timeout=GRACE * 2)
    assert next(watch).status == SERVING
    watched: list[int] = []
    watch_end: list[grpc.StatusCode] = []
    watch_done = threading.Event()

    def follow() -> None:
        try:
            for response in watch:
                watched.append(response.status)
            watch_end.append(watch.code())
        except grpc.RpcError as err:
            watch_end.append(err.code())
        finally:
            watch_done.set()

    threading.Thread(target=follow, daemon=True).start()

    during: dict[str, object] = {}

    def messages() -> Iterator[pb.UploadAssetRequest]:
        yield pb.UploadAssetRequest(metadata=pb.AssetMetadata(filename="big.jpg", request_id=str(uuid.uuid4())))
        for i, chunk in enumerate(chunks):
            yield pb.UploadAssetRequest(chunk=chunk)
            time.sleep(0.05)
            if i == 5:
                server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                # While this upload is still streaming: health tells its watcher NOT_SERVING, and the
                # drain then ends the watch (it does so only once the server refuses new RPCs)...
                watch_done.wait(timeout=WAIT)
                during["watched"] = list(watched)
                during["watch_end"] = list(watch_end)
                # ...so a new RPC on a new connection is refused, a health check included.
                fresh = grpc.insecure_channel(server.address)
                try:
                    pb_grpc.ContentServiceStub(fresh).ListTopics(pb.ListTopicsRequest(), metadata=md, timeout=5)
                    during["new_rpc"] = "accepted"
                except grpc.RpcError as err:
                    during["new_rpc"] = err.code()
                try:
                    health_pb2_grpc.HealthStub(fresh).Check(health_pb2.HealthCheckRequest(), timeout=5)
                    during["new_check"] = "accepted"
                except grpc.RpcError as err:
                    during["new_check"] = err.code()
                finally:
                    fresh.close()
                during["exited_mid_upload"] = server.proc.poll()  # type: ignore[union-attr]

    upload_channel = server.channel()
    asset = pb_grpc.ContentServiceStub(upload_channel).UploadAsset(messages(), metadata=md, timeout=GRACE * 2)

    # The drain ended the watch itself (status OK) right after NOT_SERVING. Left open, a watch is
    # an in-flight RPC that holds the drain for the whole grace period, and is then cut off.
    assert during["watched"] == [NOT_SERVING] and during["watch_end"] == [grpc.StatusCode.OK], during
    assert during["new_rpc"] is grpc.StatusCode.UNAVAILABLE
    assert during["new_check"] is grpc.StatusCode.UNAVAILABLE
    assert during["exited_mid_upload"] is None
    assert asset.sha256 == hashlib.sha256(data).hexdigest()
    assert asset.size_bytes == len(data) and (asset.width, asset.height) == (1400, 1300)

    assert server.proc.wait(timeout=GRACE) == 0, server.log()  # within the grace period
    assert "content service stopped" in server.log()

    # Nothing was lost: the row is committed in SQLite and the blob holds exactly the bytes sent.
    with sqlite3.connect(server.data_dir / "contentops.db") as db:
        rows = db.execute("SELECT id, sha256, size_bytes, blob_key FROM content_assets").fetchall()
    assert [(f"assets/{r[0]}", r[1], r[2]) for r in rows] == [(asset.name, asset.sha256, len(data))]

    # And a restarted server serves it back byte for byte.
    server.start()
    stub = pb_grpc.ContentServiceStub(server.channel())
    got = b"".join(m.chunk for m in stub.DownloadAsset(pb.DownloadAssetRequest(name=asset.name), metadata=md,
                                                         timeout=30))
    assert got == data
