"""GetPost / ListPosts latency over gRPC on loopback, against the health Check RPC as the floor.

The database is seeded with ~500 posts through the service layer: half of
them published (half of those edited since, so a reader's page needs the
older live revision), each with images, topics and a body of realistic length.
Each client is a thread with its own channel (its own HTTP/2 connection) and
stub; after a warm-up, the clients start together and each makes its share
of the calls back to back. The health Check runs through the same server,
port and thread pool but skips auth and the database, so the ratio is what
the service's own work (auth, SQL, mapping) costs.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.content.app import ContentApp
from services.content.domain.posts import PostContent, Variation
from services.content.events import InProcessEvents
from services.protos.contentops.content.v1 import content_pb2 as pb
from services.protos.contentops.content.v1 import content_pb2_grpc as pb_grpc
from services.shared.identity.domain import Role
from services.shared.settings import load_settings

from .common import ROOT, Backend, run_together

DEMO = ROOT / "services" / "demo_data"
PAGE_SIZE = 50
Metadata = tuple[tuple[str, str], ...]


@dataclass
class Seeded:
    editor: Metadata
    sales: Metadata
    post_names: list[str]
    published: int


def seed(backend: Backend, posts: int) -> Seeded:
    """Migrate and fill the backend's database in-process, through the service's use cases."""
    app = ContentApp.build(load_settings(backend.env), events=InProcessEvents(), migrate=True)
    try:
        editor, _, editor_secret = app.identity.create_user("bench editor", Role.EDITOR)
        _, _, sales_secret = app.identity.create_user("bench sales", Role.SALES)
        service = app.service
        topics = [service.create_topic(editor, f"topic-{i}", f"主题 {i}", "基准测试用的主题").id for i in range(8)]
        assets = []
        for path in sorted(DEMO.glob("*.jpg")):
            data = path.read_bytes()
            assets.append(service.upload_asset(editor, path.name, [data]).id)
        text = (DEMO / "post.txt").read_text(encoding="utf-8")
        rng = random.Random(7)
        names, published = [], 0
        for i in range(posts):
            body = "\n\n".join([text] * 3)[: rng.randint(600, 1500)] + f"\n第 {i} 篇"
            content = PostContent(
                title=f"开放日第 {i} 期：5岁小姑娘的创造力启蒙三步走",
                body=body,
                images=tuple(rng.sample(assets, rng.randint(1, len(assets)))),
                topics=tuple(rng.sample(topics, 2)),
                variation=Variation(protected_phrases=("400-820-1234", "¥99/节"), rep_template="{{ body }}"),
            )
            view = service.create_post(editor, content)
            if i % 2 == 0:
                view = service.publish_post(editor, view.post.id, None, view.post.etag)
                published += 1
                if i % 4 == 0:  # edited after publishing: readers see an older revision than editors
                    service.update_post(editor, view.post.id, replace(content, title=content.title + "（修订）"),
                                        {"content.title"}, view.post.etag)
            names.append(view.post.name)
        return Seeded((("authorization", f"Bearer {editor_secret}"),), (("authorization", f"Bearer {sales_secret}"),),
                      names, published)
    finally:
        app.close()


@dataclass
class Load:
    latencies: list[float]  # seconds, sorted
    wall: float
    errors: int
    first_error: str

    def merge(self, other: "Load") -> "Load":
        return Load(sorted(self.latencies + other.latencies), self.wall + other.wall, self.errors + other.errors,
                    self.first_error or other.first_error)

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0


CallFactory = Callable[[grpc.Channel, int], Callable[[], object]]


def interleaved(address: str, clients: int, calls: dict[str, CallFactory], *, total: int, max_seconds: float,
                rounds: int, warmup: int) -> dict[str, Load]:
    """Each labelled call takes turns with the others in ``rounds`` short rounds, so a busy moment on a
    shared machine hits the measured RPC and its floor alike."""
    loads: dict[str, Load] = {}
    for round_ in range(rounds):
        for label, factory in calls.items():
            load = run_load(address, clients, total // rounds, max_seconds / rounds, warmup if round_ == 0 else 2,
                            factory)
            loads[label] = loads[label].merge(load) if label in loads else load
    return loads


def run_load(address: str, clients: int, calls: int, max_seconds: float, warmup: int, factory: CallFactory) -> Load:
    """``clients`` threads, each with its own connection, make ``calls`` calls in all (or stop at the deadline)."""
    share = max(1, calls // clients)
    barrier = threading.Barrier(clients + 1)
    results: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []

    def client(index: int) -> None:
        # A local subchannel pool: each client gets its own TCP connection, as separate processes would.
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            try:
                call = factory(channel, index)
                for _ in range(warmup):
                    call()
            except Exception as err:  # noqa: BLE001 - reported by the caller
                errors.append(f"warm-up: {err!r}")
                barrier.abort()
                return
            barrier.wait()
            out = results[index]
            clock = time.perf_counter
            stop_at = clock() + max_seconds
            for _ in range(share):
                start = clock()
                try:
                    call()
                except grpc.RpcError as err:
                    errors.append(f"{err.code().name}: {err.details()}")  # type: ignore[attr-defined]
                    continue
                except Exception as err:  # noqa: BLE001
                    errors.append(repr(err))
                    continue
                out.append(clock() - start)
                if start > stop_at:
                    break

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    wall = run_together(threads, barrier, errors, "clients")
    latencies = sorted(x for r in results for x in r)
    return Load(latencies, wall, len(errors), errors[0] if errors else "")


# ---- the calls ------------------------------------------------------------------------------------


def health_check() -> CallFactory:
    def factory(channel: grpc.Channel, _index: int) -> Callable[[], object]:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        return lambda: stub.Check(request, timeout=30)

    return factory


def get_post(seeded: Seeded) -> CallFactory:
    def factory(channel: grpc.Channel, index: int) -> Callable[[], object]:
        stub = pb_grpc.ContentServiceStub(channel)
        names = seeded.post_names[:]
        random.Random(index).shuffle(names)
        position = [0]

        def call() -> object:
            name = names[position[0] % len(names)]
            position[0] += 1
            return stub.GetPost(pb.GetPostRequest(name=name), metadata=seeded.editor, timeout=30)

        return call

    return factory


def list_posts(seeded: Seeded, as_sales: bool = False) -> CallFactory:
    metadata = seeded.sales if as_sales else seeded.editor

    def factory(channel: grpc.Channel, _index: int) -> Callable[[], object]:
        stub = pb_grpc.ContentServiceStub(channel)
        request = pb.ListPostsRequest(page_size=PAGE_SIZE)

        def call() -> object:
            reply = stub.ListPosts(request, metadata=metadata, timeout=30)
            if len(reply.posts) != PAGE_SIZE:
                raise AssertionError(f"ListPosts returned {len(reply.posts)} posts, expected a full page")
            return reply

        return call

    return factory
