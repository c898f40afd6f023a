"""``python -m bench [--quick] [--only PART,...]``: run every benchmark (or some), write bench/results.md and print it."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.shared.blobstore import blob_store_from_settings
from services.shared.settings import load_settings

from . import campaign, consumers, image_variant, reads, rep_copy, text_variation, tracking, uploads, web
from .common import (
    Backend,
    Row,
    Score,
    content_server,
    median,
    ms,
    percentile,
    postgres_database,
    postgres_version,
    render_table,
    s3_endpoint,
    sink_server,
)
from .plot import plot

RESULTS = Path(__file__).resolve().parent / "results.md"  # with results.png beside it (every run writes a PNG beside its table)
QUICK_RESULTS = Path(__file__).resolve().parent / "out" / "results-quick.md"  # git-ignored: smoke runs do not overwrite
PARTIAL_RESULTS = Path(__file__).resolve().parent / "out" / "results-partial.md"  # --only: nor do runs of some parts
DOMAIN = {"image_variant": image_variant, "text_variation": text_variation}  # in-process, on a quiet machine
SERVICES = {"rep_copy": rep_copy, "campaign": campaign, "tracking": tracking, "consumers": consumers, "web": web}  # own processes
PARTS = [*DOMAIN, *SERVICES, "content"]
UPLOAD_TARGET = 0.5  # UploadAsset MB/s at least half of a plain put of the same bytes


@dataclass(frozen=True)
class Plan:
    posts: int
    calls: int  # per (RPC, concurrency) setting
    max_seconds: float  # per setting: a slow RPC stops early rather than blow the time budget
    warmup: int  # calls per client before measuring
    rounds: int  # each setting's calls are split into rounds, interleaved with the other RPCs'
    concurrency: tuple[int, ...]
    uploads: int
    chunks: tuple[int, ...]


FULL = Plan(posts=500, calls=2000, max_seconds=12.0, warmup=20, rounds=4, concurrency=(1, 16), uploads=12,
            chunks=(1024 * 1024, 512 * 1024))
QUICK = Plan(posts=120, calls=200, max_seconds=2.0, warmup=3, rounds=2, concurrency=(1, 16), uploads=3,
             chunks=(1024 * 1024,))


@dataclass
class Detail:
    setting: str
    load: reads.Load


def bench_reads(backend: Backend, address: str, seeded: reads.Seeded, plan: Plan,
                rows: list[Row], details: list[Detail]) -> None:
    """Each RPC and its floor take turns in short rounds, so a busy moment on a shared machine hits them alike."""
    calls = {
        "health Check (floor)": reads.health_check(),
        "GetPost": reads.get_post(seeded),
        f"ListPosts {reads.PAGE_SIZE}/page (editor)": reads.list_posts(seeded),
        f"ListPosts {reads.PAGE_SIZE}/page (sales)": reads.list_posts(seeded, as_sales=True),
    }
    for clients in plan.concurrency:
        who = f"{clients} client{'s' if clients > 1 else ''}"
        loads = reads.interleaved(address, clients, calls, total=plan.calls, max_seconds=plan.max_seconds,
                                  rounds=plan.rounds, warmup=plan.warmup)
        for label, load in loads.items():
            details.append(Detail(f"{label}, {who} — {backend.name}", load))
            print(f"  {label:<34} {who:>10}: p50 {ms(percentile(load.latencies, 50)):>10}  "
                  f"p99 {ms(percentile(load.latencies, 99)):>10}  {load.throughput:7.0f} calls/s"
                  + (f"  {load.errors} errors ({load.first_error})" if load.errors else ""), flush=True)
        floor = loads.pop("health Check (floor)")
        for label, load in loads.items():
            for q in (50, 99):
                value, base = percentile(load.latencies, q), percentile(floor.latencies, q)
                rows.append(Row(f"{label} p{q}, {who} — {backend.name}", ms(value), "—",
                                f"health Check p{q}: {ms(base)}", f"{value / base:.1f}×"))


def bench_uploads(backend: Backend, address: str, sink: str, seeded: reads.Seeded, plan: Plan, photo: bytes,
                  rows: list[Row]) -> None:
    store = blob_store_from_settings(load_settings(backend.env))
    size = f"{len(photo) / 1e6:.1f} MB JPEG"
    for chunk in plan.chunks:
        result = uploads.compare(address, seeded.editor, sink, store, photo, plan.uploads, chunk)
        over_grpc, floor, transport = result.upload, result.put, result.transport
        ratio = over_grpc.mb_per_s / floor.mb_per_s
        label = f"UploadAsset {size}, {chunk // 1024} KiB chunks — {backend.name} + {backend.store}"
        print(f"  {label}: {over_grpc.mb_per_s:.0f} MB/s ({ms(median(over_grpc.seconds))} each); "
              f"plain put {floor.mb_per_s:.0f} MB/s -> ratio {ratio:.2f}; "
              f"gRPC stream to a sink {transport.mb_per_s:.0f} MB/s", flush=True)
        rows.append(Row(label, f"{over_grpc.mb_per_s:.0f} MB/s", f"≥ {UPLOAD_TARGET} × plain put",
                        f"{backend.store} put: {floor.mb_per_s:.0f} MB/s",
                        f"{ratio:.{3 if abs(ratio - UPLOAD_TARGET) < 0.01 else 2}f} "
                        f"({'meets' if ratio >= UPLOAD_TARGET else 'misses'} target)",
                        Score(f"UploadAsset, {chunk // 1024} KiB chunks, {backend.store}", over_grpc.mb_per_s,
                              UPLOAD_TARGET * floor.mb_per_s, "MB/s", higher_is_better=True, floor=floor.mb_per_s)))
        rows.append(Row("↳ same uploads against the gRPC transport alone", f"{over_grpc.mb_per_s:.0f} MB/s", "—",
                        f"stream to a sink: {transport.mb_per_s:.0f} MB/s",
                        f"{over_grpc.mb_per_s / transport.mb_per_s:.2f}"))


def bench_backend(backend: Backend, plan: Plan, photo: bytes, sink: str, logs: Path, rows: list[Row],
                  details: list[Detail]) -> None:
    print(f"\n{backend.name} + {backend.store}: seeding {plan.posts} posts ...", flush=True)
    started = time.perf_counter()
    seeded = reads.seed(backend, plan.posts)
    backend.notes.append(f"seeded {plan.posts} posts ({seeded.published} published) in "
                         f"{time.perf_counter() - started:.1f}s")
    with content_server(backend, logs / f"content-{backend.name.lower()}.log") as address:
        bench_reads(backend, address, seeded, plan, rows, details)
        bench_uploads(backend, address, sink, seeded, plan, photo, rows)


def bench_content(plan: Plan, photo: bytes, rows: list[Row], details: list[Detail], backends: list[Backend],
                  skipped: list[str]) -> None:
    """The content server on the embedded default, then on PostgreSQL + S3."""
    with tempfile.TemporaryDirectory(prefix="contentops-bench-") as tmp, sink_server() as sink:
        root = Path(tmp)
        common = {"CONTENTOPS_SECRET_KEY": "bench-secret"}
        embedded = Backend("SQLite", "local folder", {**common, "CONTENTOPS_DATA_DIR": str(root / "embedded")})
        backends.append(embedded)
        bench_backend(embedded, plan, photo, sink, root / "logs", rows, details)
        with contextlib.ExitStack() as stack:
            try:
                url = stack.enter_context(postgres_database())
            except Exception as err:  # noqa: BLE001 - reported in the results instead
                skipped.append(f"PostgreSQL backend: {err.__class__.__name__}: {err}")
                url = ""
            if url:
                s3, label = stack.enter_context(s3_endpoint("bench-content"))
                production = Backend("PostgreSQL", label,
                                     {**common, **s3, "CONTENTOPS_DATA_DIR": str(root / "production"),
                                      "DATABASE_URL": url})
                backends.append(production)
                bench_backend(production, plan, photo, sink, root / "logs", rows, details)


def summary(scores: list[Score], picture: str) -> list[str]:
    """The figures with a numeric target, first: met or missed, and how far from the floor measured in the same run."""
    if not scores:
        return []
    return [
        f"## Targets: {sum(s.met for s in scores)} of {len(scores)} met",
        "",
        f"![every target's headroom]({picture})",
        "",
        "| figure | measured | target | floor (same run) | headroom | |",
        "|---|---:|---:|---:|---:|---|",
        *(f"| {s.name} | {s.show(s.value)} | {s.target_text} | {s.show(s.floor) if s.floor is not None else '—'} | "
          f"{s.headroom:.2f}× | {'met' if s.met else '**missed**'} |" for s in scores),
        "",
    ]


def render(plan: Plan, quick: bool, rows: list[Row], details: list[Detail], backends: list[Backend],
           elapsed: float, skipped: list[str], load_before: tuple[float, ...], picture: str) -> str:
    lines = [
        "# Benchmarks (`make bench`)",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC · {'QUICK smoke run, not for comparison · ' if quick else ''}"
        f"{platform.machine()} · {len(os.sched_getaffinity(0))} CPUs · Python {platform.python_version()} · "
        f"grpcio {grpc.__version__} · PostgreSQL {postgres_version() if not skipped else 'n/a'} · {elapsed:.0f}s in all",
        "",
        "Content server: `python -m services.content` in its own process on loopback (16 RPC threads, "
        "auth cache on); clients: threads in the bench process, each with its own connection. "
        f"Each latency setting: {plan.calls} calls after {plan.warmup} warm-up calls per client, "
        f"or fewer if it ran past {plan.max_seconds:.0f}s, in {plan.rounds} rounds taking turns with the other RPCs. "
        "The floor of every latency row is the gRPC health Check on the same server at the same concurrency "
        "(no auth, no database). Client and server share the machine's cores. No latency targets are set yet (—). "
        "Uploads: each round does one UploadAsset, one plain put and one stream to a gRPC sink (a server that "
        "only counts bytes), in rotating order, each with never-seen bytes; MB/s are medians.",
        "",
        "Distribution service (bench/rep_copy.py, bench/campaign.py): GetRepCopy against `python -m services.distribution` "
        "in its own process, seeded with 50 reps' (20 with --quick) ready copies of a 9-image post, each client calling as its own rep, "
        "taking turns with the health Check on the same server; the campaign rows time publish → every copy ready "
        "with real `celery worker` processes (prefork) on Redis db 15, PostgreSQL and a local blob folder, against "
        "the speed-up two processes reach on this machine for the same image renders with nothing around them. "
        "The GetRepCopy targets are issue 3's.",
        "",
        "Tracking service (bench/tracking.py): `python -m services.tracking` and `python -m services.tracking.consumer` "
        "in their own processes on PostgreSQL and Redis Streams (db 10); ingest with no consumer running, checked "
        "against the heartbeats found in the stream afterwards; event → tag lag from a heartbeat's ack to the tag in a "
        "polled GetContactProfile; reads on a seeded history, taking turns with the health Check. Targets are the "
        "tracking issue's. The scale-out rows (bench/consumers.py): 1, 2 and 4 consumer processes in one group on an "
        "event log of 4 partitions by viewer (Redis db 7) apply the same kind of burst at browser cadence; 0 lost and "
        "0 counted twice is checked against PostgreSQL after each, and the CPU per heartbeat (consumers, PostgreSQL) "
        "gives the cores 10× the ingest rate needs. The 10,000-rep campaign gives the per-worker render rate for "
        "the workers a 5-minute fan-out needs.",
        "",
        "Web edge (bench/web.py): `uvicorn --factory` serving services.web.app.build_app with --workers 1 and 2, in front of "
        "the distribution and tracking services on PostgreSQL, S3 and Redis (db 8). The customer page at a fixed 500 req/s "
        "from an open-loop asyncio generator, server time from a timing middleware in the edge (client-observed time "
        "beside it); the beacon endpoint's maximum with wrk (2 threads, 64 connections, every beacon valid and distinct) "
        "against a no-op Starlette POST endpoint under the same uvicorn options in the same run, and every acknowledged "
        "beacon counted in Redis afterwards. wrk, Redis, the servers and the generator share the 2 cores.",
        "",
        *summary([r.score for r in rows if r.score], picture),
        "## Every figure",
        "",
        render_table(rows),
        "## Per setting",
        "",
        "| setting | calls | wall | calls/s | errors |",
        "|---|---:|---:|---:|---:|",
        *(f"| {d.setting} | {len(d.load.latencies)} | {d.load.wall:.1f}s | {d.load.throughput:.0f} | "
          f"{d.load.errors}{' (' + d.load.first_error + ')' if d.load.errors else ''} |" for d in details),
        "",
        "## Notes",
        "",
        *(f"- {b.name} + {b.store}: {'; '.join(b.notes)}" for b in backends),
        *(f"- skipped: {s}" for s in skipped),
        f"- machine load average (1 min) {load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        f"on {len(os.sched_getaffinity(0))} CPUs: other work on the machine shows up in measured and floor alike, "
        "since they run interleaved.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run with small counts")
    parser.add_argument("--only", type=lambda v: v.split(","), default=PARTS,
                        help=f"comma-separated parts to run, of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--out", type=Path, help="where to write the table (default bench/results.md, "
                                                 "bench/out/results-quick.md with --quick, bench/out/results-partial.md "
                                                 "with --only)")
    args = parser.parse_args(argv)
    if unknown := set(args.only) - set(PARTS):
        parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    out: Path = args.out or (QUICK_RESULTS if args.quick else PARTIAL_RESULTS if set(args.only) != set(PARTS) else RESULTS)
    plan = QUICK if args.quick else FULL
    began = time.perf_counter()
    load_before = os.getloadavg()
    rows: list[Row] = []
    details: list[Detail] = []
    backends: list[Backend] = []
    skipped: list[str] = []
    print("distribution domain: image variant and text copy ...", flush=True)
    for module in (m for name, m in DOMAIN.items() if name in args.only):  # in-process, before any server starts
        rows += [Row.of(d) for d in module.run(args.quick)]
    print("distribution and tracking services, web edge: GetRepCopy, campaign fan-out on Celery workers, tracking, "
          "customer page and beacons ...", flush=True)
    for module in (m for name, m in SERVICES.items() if name in args.only):  # each starts and stops its own processes
        rows += [Row.of(d) for d in module.run(args.quick)]
    if "content" in args.only:
        bench_content(plan, uploads.noisy_photo(), rows, details, backends, skipped)
    text = render(plan, args.quick, rows, details, backends, time.perf_counter() - began, skipped, load_before,
                  out.with_suffix(".png").name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    if scores := [r.score for r in rows if r.score]:
        plot(scores, out.with_suffix(".png"), f"make bench, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
                                              f"{' (QUICK smoke run)' if args.quick else ''}: {sum(s.met for s in scores)} of "
                                              f"{len(scores)} targets met on {len(os.sched_getaffinity(0))} CPUs")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
