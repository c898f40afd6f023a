"""The ``contentops`` console script end to end, against a real content server process.

Admin commands reach the database directly (same CONTENTOPS_DATA_DIR as the
server); everything else goes over gRPC with the token the CLI printed.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from services.protos.contentops.content.v1 import content_pb2 as pb
from services.protos.contentops.content.v1 import content_pb2_grpc as pb_grpc

from . import infra
from .test_process import CLI, ROOT, Server, content_server

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with content_server(tmp_path) as s:  # AUTH_CACHE_SECONDS=0: revocation is immediate
        yield s


def run(env: dict[str, str], *args: str, token: str | None = None, server: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    prefix = [*(["--server", server] if server else []), *(["--token", token] if token else [])]
    return subprocess.run([CLI, *prefix, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.lstrip().startswith("{") else result.stdout


def failed(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Non-zero exit with a readable message on stderr: no traceback, nothing on stdout."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() and not result.stdout.strip(), result
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr


def create_user(env: dict[str, str], role: str, name: str) -> tuple[str, str, str]:
    """(token, user id, token id) from ``admin create-user``: stdout is the token alone."""
    made = run(env, "admin", "create-user", "--role", role, "--name", name)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert "\n" not in token and token.startswith("co_")
    # stderr: "created users/<id> (<role>) token <token id>"
    words = made.stderr.split()
    user_id = next(w for w in words if w.startswith("users/")).removeprefix("users/")
    token_id = words[-1]
    assert token == f"co_{token_id}_{token.split('_', 2)[2]}"
    return token, user_id, token_id


def write_jpeg(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG", quality=90)
    path.write_bytes(out.getvalue())
    return out.getvalue()


def test_cli_end_to_end(server: Server, tmp_path: Path) -> None:
    env = server.env
    token, user_id, token_id = create_user(env, "editor", "王编辑")
    users = ok(run(env, "admin", "list-users"))
    assert f"users/{user_id}\teditor\t王编辑\t" in users
    server.start()
    addr = server.address
    t = {"token": token, "server": addr}

    # The printed token works.
    assert ok(run(env, "topic", "list", **t)) == {}  # no topics yet: an empty response

    topic = ok(run(env, "topic", "create", "--id", "early-education", "--name", "早教", "--description", "0-3岁",
                   **t))
    assert topic["name"] == "topics/early-education" and topic["displayName"] == "早教"

    photo = tmp_path / "photo.jpg"
    photo_bytes = write_jpeg(photo, (120, 90), (200, 30, 30))
    body = tmp_path / "body.txt"
    body.write_text("周六上午试听课，报名送绘本。\n名额有限。", encoding="utf-8")
    template = "{{ body }}\n—— {{ rep.signature }}"
    post = ok(run(env, "post", "create", "--title", "春季试听", "--body-file", str(body), "--image", str(photo),
                  "--topic", "early-education", "--protect", "送绘本", "--template", template, **t))
    name = post["name"]
    assert post["state"] == "POST_STATE_DRAFT"
    assert post["headRevision"] == f"{name}/revisions/1"
    c = post["content"]
    assert (c["title"], c["body"], c["topics"]) == ("春季试听", "周六上午试听课，报名送绘本。\n名额有限。",
                                                   ["topics/early-education"])
    assert c["variation"]["protectedPhrases"] == ["送绘本"] and c["variation"]["repTemplate"] == template
    [asset_name] = c["images"]
    # --image uploaded the file: the asset holds exactly its bytes.
    stub = pb_grpc.ContentServiceStub(server.channel())
    md = (("authorization", f"Bearer {token}"),)
    asset = stub.GetAsset(pb.GetAssetRequest(name=asset_name), metadata=md, timeout=10)
    assert (asset.sha256, asset.size_bytes, asset.filename, asset.width, asset.height) == (
        hashlib.sha256(photo_bytes).hexdigest(), len(photo_bytes), "photo.jpg", 120, 90)

    updated = ok(run(env, "post", "update", name, "--title", "春季试听（更新）", **t))
    assert updated["headRevision"] == f"{name}/revisions/2"
    assert updated["content"]["title"] == "春季试听（更新）"
    assert updated["content"]["body"] == c["body"] and updated["content"]["images"] == [asset_name]  # masked

    published = ok(run(env, "post", "publish", name, **t))
    assert published["state"] == "POST_STATE_PUBLISHED"
    assert published["publishedRevision"] == f"{name}/revisions/2"

    later = ok(run(env, "post", "create", "--title", "下月活动", "--body-file", str(body), **t))
    at = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0).astimezone(timezone(timedelta(hours=8)))
    scheduled = ok(run(env, "post", "publish", later["name"], "--at", at.isoformat(), **t))
    assert scheduled["state"] == "POST_STATE_SCHEDULED"
    assert datetime.fromisoformat(scheduled["scheduledPublishTime"].replace("Z", "+00:00")) == at
    assert scheduled["scheduledRevision"] == f"{later['name']}/revisions/1"

    revisions = ok(run(env, "post", "revisions", name, **t))["revisions"]
    assert [r["name"] for r in revisions] == [f"{name}/revisions/2", f"{name}/revisions/1"]
    assert [r["content"]["title"] for r in revisions] == ["春季试听（更新）", "春季试听"]
    assert "publishTime" in revisions[0] and "publishTime" not in revisions[1]

    listed = ok(run(env, "post", "list", **t))["posts"]
    assert {p["name"]: p["state"] for p in listed} == {name: "POST_STATE_PUBLISHED",
                                                       later["name"]: "POST_STATE_SCHEDULED"}
    only = ok(run(env, "post", "list", "--state", "scheduled", **t))["posts"]
    assert [p["name"] for p in only] == [later["name"]]

    # CONTENTOPS_TOKEN and CONTENT_GRPC_ADDR work as well as the flags.
    got = ok(run({**env, "CONTENTOPS_TOKEN": token}, "post", "get", name))
    assert got["name"] == name

    # Revocation takes effect at once (AUTH_CACHE_SECONDS=0 on this server).
    revoked = ok(run(env, "admin", "revoke-token", f"users/{user_id}/tokens/{token_id}"))
    assert f"revoked users/{user_id}/tokens/{token_id}" in revoked
    failed(run(env, "post", "get", name, **t), "UNAUTHENTICATED")
    failed(run(env, "post", "list", **t), "UNAUTHENTICATED")


def test_cli_errors_exit_non_zero_with_a_readable_message(server: Server, tmp_path: Path) -> None:
    env = server.env
    token, _, _ = create_user(env, "editor", "ed")
    rep_token, _, _ = create_user(env, "rep", "rep")
    server.start()
    t = {"token": token, "server": server.address}
    body = tmp_path / "body.txt"
    body.write_text("正文", encoding="utf-8")

    failed(run(env, "post", "publish", "posts/01hzzzzzzzzzzzzzzzzzzzzzzz", **t), "NOT_FOUND", "not found")
    failed(run(env, "post", "get", "nonsense", **t), "INVALID_ARGUMENT")
    failed(run(env, "post", "create", "--title", "无正文", **t), "INVALID_ARGUMENT", "content.body")
    failed(run(env, "post", "create", "--title", "x", "--body-file", str(body), "--topic", "no-such-topic", **t),
           "INVALID_ARGUMENT", "topics/no-such-topic")
    failed(run(env, "topic", "create", "--name", "早教", token=rep_token, server=server.address), "PERMISSION_DENIED")
    failed(run(env, "post", "list", token="co_bad", server=server.address), "UNAUTHENTICATED")
    failed(run({k: v for k, v in env.items() if k != "CONTENTOPS_TOKEN"}, "post", "list", server=server.address),
           "CONTENTOPS_TOKEN")
    failed(run(env, "post", "publish", **t), "posts/<id>")

    draft = ok(run(env, "post", "create", "--title", "草稿", "--body-file", str(body), **t))["name"]
    # Bad local input is reported as such, before anything reaches the server.
    failed(run(env, "post", "publish", draft, "--at", "next tuesday", **t), "--at")
    failed(run(env, "post", "publish", draft, "--at", "2030-01-01T09:00:00", **t), "--at", "offset")
    failed(run(env, "post", "create", "--title", "x", "--body-file", str(tmp_path / "missing.txt"), **t),
           "missing.txt")
    failed(run(env, "post", "create", "--title", "x", "--body-file", str(body), "--image",
               str(tmp_path / "missing.jpg"), **t), "missing.jpg")
    failed(run(env, "asset", "upload", str(body), **t), "INVALID_ARGUMENT")  # not an image
    # None of the failures above left anything behind.
    posts = ok(run(env, "post", "list", **t))["posts"]
    assert [p["name"] for p in posts] == [draft] and posts[0]["state"] == "POST_STATE_DRAFT"

    # A server that is not there is an error too, not a hang or a traceback.
    down = f"127.0.0.1:{infra.free_port()}"
    failed(run(env, "post", "list", token=token, server=down), "UNAVAILABLE")
