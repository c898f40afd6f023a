"""``contentops``: the command line for admins and editors.

Admin commands work on the database directly (the first admin has no token
yet); everything else talks gRPC to the content service with a bearer token
from ``--token`` or ``CONTENTOPS_TOKEN``.

    contentops migrate
    contentops admin create-user --role editor --name "王编辑"
    contentops admin list-users
    contentops admin revoke-token users/<id>/tokens/<id>
    contentops topic create --id early-education --name 早教
    contentops asset upload photo.jpg
    contentops post create --title 标题 --body-file body.txt --image photo.jpg --topic early-education
    contentops post update posts/<id> --title 新标题
    contentops post publish posts/<id> [--at 2026-12-01T09:00:00+08:00]
    contentops post get|archive|delete|revisions posts/<id>
    contentops post list [--state published]
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import grpc
from google.protobuf import field_mask_pb2, json_format, timestamp_pb2

from services.protos.contentops.content.v1 import content_pb2 as pb
from services.protos.contentops.content.v1 import content_pb2_grpc as pb_grpc

from .db import Database
from .errors import ServiceError
from .grpcclient import channel
from .identity.domain import Role
from .identity.store import IdentityStore
from .migrate import open_database
from .settings import load_settings

UPLOAD_CHUNK = 512 * 1024


def _print(message: object) -> None:
    print(json_format.MessageToJson(message, ensure_ascii=False, indent=2))  # type: ignore[arg-type]


def _db() -> Database:
    return open_database(load_settings(), migrate=True)


def cmd_migrate(_: argparse.Namespace) -> int:
    _db()
    print("migrations applied")
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    store = IdentityStore(_db())
    if args.team and args.role != Role.SALES.value:
        raise SystemExit("--team is for sales users (the team whose contacts they manage)")
    team = f"teams/{args.team.removeprefix('teams/')}" if args.team else ""
    principal, token, secret = store.create_user(args.name, Role(args.role), args.rep or "", team)
    print(f"created {principal.name} ({principal.role.value}) token {token.id}", file=sys.stderr)
    print(secret)  # stdout carries only the token, for scripts: TOKEN=$(contentops admin create-user ...)
    return 0


def cmd_list_users(_: argparse.Namespace) -> int:
    store = IdentityStore(_db())
    after = None
    while batch := store.list_users(after, 200):
        for principal, created in batch:
            print(f"{principal.name}\t{principal.role.value}\t{principal.display_name}\t{created.isoformat()}")
        after = batch[-1][0].id
    return 0


def cmd_revoke_token(args: argparse.Namespace) -> int:
    from .identity.api import parse_token_name

    user_id, token_id = parse_token_name(args.token_name)
    info = IdentityStore(_db()).revoke_token(user_id, token_id)
    print(f"revoked users/{info.user_id}/tokens/{info.id} at {info.revoke_time}")
    return 0


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        token = args.token or os.environ.get("CONTENTOPS_TOKEN", "")
        if not token:
            raise SystemExit("set CONTENTOPS_TOKEN or pass --token")
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.channel = channel(args.server or load_settings().content_addr)
        self.stub = pb_grpc.ContentServiceStub(self.channel)

    def call(self, method: str, request: object) -> object:
        return getattr(self.stub, method)(request, metadata=self.metadata, timeout=60)

    def upload(self, path: Path) -> pb.Asset:
        # Opened before the call: a missing file is an OSError here, not a request stream that dies
        # inside grpc's thread and comes back as "UNKNOWN: Exception iterating requests!".
        with path.open("rb") as f:
            def messages() -> Iterator[pb.UploadAssetRequest]:
                yield pb.UploadAssetRequest(metadata=pb.AssetMetadata(filename=path.name,
                                                                      request_id=str(uuid.uuid4())))
                while chunk := f.read(UPLOAD_CHUNK):
                    yield pb.UploadAssetRequest(chunk=chunk)

            return self.stub.UploadAsset(messages(), metadata=self.metadata, timeout=120)


def _images(client: Client, values: list[str]) -> list[str]:
    """Each --image is an asset name or a file to upload first."""
    out = []
    for value in values:
        out.append(value if value.startswith("assets/") else client.upload(Path(value)).name)
    return out


def _content(client: Client, args: argparse.Namespace) -> tuple[pb.PostContent, list[str]]:
    content = pb.PostContent()
    paths = []
    if args.title is not None:
        content.title = args.title
        paths.append("content.title")
    if args.body_file is not None:
        content.body = Path(args.body_file).read_text(encoding="utf-8")
        paths.append("content.body")
    if args.image:
        content.images.extend(_images(client, args.image))
        paths.append("content.images")
    if args.topic:
        content.topics.extend(t if t.startswith("topics/") else f"topics/{t}" for t in args.topic)
        paths.append("content.topics")
    if args.protect:
        content.variation.protected_phrases.extend(args.protect)
        paths.append("content.variation.protected_phrases")
    if args.template is not None:
        content.variation.rep_template = args.template
        paths.append("content.variation.rep_template")
    if args.badge is not None:
        content.variation.badge_enabled = args.badge
        paths.append("content.variation.badge_enabled")
    return content, paths


def cmd_post(args: argparse.Namespace) -> int:
    client = Client(args)
    action = args.action
    if action == "create":
        content, _ = _content(client, args)
        _print(client.call("CreatePost", pb.CreatePostRequest(content=content, request_id=str(uuid.uuid4()))))
    elif action == "update":
        content, paths = _content(client, args)
        post = pb.Post(name=args.name, content=content, etag=args.etag or "")
        _print(client.call("UpdatePost", pb.UpdatePostRequest(post=post, update_mask=field_mask_pb2.FieldMask(paths=paths))))
    elif action == "publish":
        request = pb.PublishPostRequest(name=args.name, etag=args.etag or "")
        if args.at:
            ts = timestamp_pb2.Timestamp()
            ts.FromDatetime(args.at)
            request.publish_time.CopyFrom(ts)
        _print(client.call("PublishPost", request))
    elif action == "get":
        _print(client.call("GetPost", pb.GetPostRequest(name=args.name)))
    elif action == "archive":
        _print(client.call("ArchivePost", pb.ArchivePostRequest(name=args.name, etag=args.etag or "")))
    elif action == "delete":
        client.call("DeletePost", pb.DeletePostRequest(name=args.name, etag=args.etag or ""))
        print(f"deleted {args.name}")
    elif action == "revisions":
        _print(client.call("ListPostRevisions", pb.ListPostRevisionsRequest(parent=args.name)))
    elif action == "list":
        state = getattr(pb, f"POST_STATE_{args.state.upper()}") if args.state else 0
        _print(client.call("ListPosts", pb.ListPostsRequest(state=state, page_size=args.page_size)))
    return 0


def cmd_topic(args: argparse.Namespace) -> int:
    client = Client(args)
    if args.action == "create":
        topic = pb.Topic(display_name=args.name, description=args.description or "")
        _print(client.call("CreateTopic", pb.CreateTopicRequest(topic=topic, topic_id=args.id or "",
                                                                request_id=str(uuid.uuid4()))))
    else:
        _print(client.call("ListTopics", pb.ListTopicsRequest(page_size=500)))
    return 0


def cmd_asset(args: argparse.Namespace) -> int:
    client = Client(args)
    for path in args.files:
        _print(client.upload(Path(path)))
    return 0


def _aware_time(value: str) -> datetime:
    """``--at``: ISO 8601 with an offset; a bare time would silently be taken as UTC."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time, e.g. 2026-12-01T09:00:00+08:00") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no UTC offset; add one, e.g. {value}+08:00")
    return when


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contentops", description="ContentOps command line")
    parser.add_argument("--server", help="content service address (default: CONTENT_GRPC_ADDR)")
    parser.add_argument("--token", help="bearer token (default: CONTENTOPS_TOKEN)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    admin = sub.add_parser("admin", help="users and tokens (direct database access)").add_subparsers(required=True)
    create = admin.add_parser("create-user", help="create a user and print its token once")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--name", required=True)
    create.add_argument("--rep", help="reps/<id> for a rep user")
    create.add_argument("--team", help="teams/<id> a sales user manages (sees its reps' contacts)")
    create.set_defaults(func=cmd_create_user)
    admin.add_parser("list-users").set_defaults(func=cmd_list_users)
    revoke = admin.add_parser("revoke-token")
    revoke.add_argument("token_name", help="users/<id>/tokens/<id>")
    revoke.set_defaults(func=cmd_revoke_token)

    post = sub.add_parser("post", help="author, revise and publish posts")
    post.add_argument("action", choices=["create", "update", "publish", "get", "archive", "delete", "revisions", "list"])
    post.add_argument("name", nargs="?", help="posts/<id>")
    post.add_argument("--title")
    post.add_argument("--body-file")
    post.add_argument("--image", action="append", default=[], help="file to upload, or assets/<id>")
    post.add_argument("--topic", action="append", default=[])
    post.add_argument("--protect", action="append", default=[], help="a phrase that must never change")
    post.add_argument("--template", help="rep template, e.g. '{{ body }}\\n—— {{ rep.signature }}'")
    post.add_argument("--badge", action=argparse.BooleanOptionalAction, default=None)
    post.add_argument("--at", type=_aware_time, help="publish later: ISO 8601 time with offset")
    post.add_argument("--etag")
    post.add_argument("--state", choices=["draft", "scheduled", "published", "archived"])
    post.add_argument("--page-size", type=int, default=50)
    post.set_defaults(func=cmd_post)

    topic = sub.add_parser("topic", help="the topic taxonomy")
    topic.add_argument("action", choices=["create", "list"])
    topic.add_argument("--id")
    topic.add_argument("--name")
    topic.add_argument("--description")
    topic.set_defaults(func=cmd_topic)

    asset = sub.add_parser("asset", help="upload images")
    asset.add_argument("action", choices=["upload"])
    asset.add_argument("files", nargs="+")
    asset.set_defaults(func=cmd_asset)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "post" and args.action not in ("create", "list") and not args.name:
        raise SystemExit("post: give the post name, e.g. posts/<id>")
    try:
        return int(args.func(args))
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1
    except ServiceError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    except OSError as err:  # a local file named on the command line (--body-file, --image, upload)
        print(f"error: {err.strerror or err}: {err.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
