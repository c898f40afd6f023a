"""Campaign fan-out: N reps x 9 images rendered by real Celery worker processes through Redis.

Setup (not timed): a fresh PostgreSQL database and a local blob folder that the
bench process and the workers share; reps created through the distribution
service (two teams, so a campaign can target the first 1,000 or all 10,000 reps); a
Celery worker (``celery -A services.worker worker -Q distribution --pool=prefork
--concurrency N``: N worker processes) started and answering a ping, idle; nine
images uploaded and a post created. Each campaign gets its own nine assets: three
real photos from services/demo_data (scikit-image's coffee, chelsea, astronaut),
scaled to 1080x1080 as a phone would post them (like bench/image_variant.py),
each encoded at three JPEG qualities, different for every campaign, so all nine
assets' sha256 differ and no campaign reuses another's variants. The post has
a 500-character body, a rep template and the rep badge on.

Timed: from ``publish_post`` (which relays the PostPublishedEvent to the
``distribution`` queue on Redis) until the database shows every copy of the
campaign ready: the worker plans the campaign (text assignments for every rep),
fans out ``render_chunk`` tasks of CAMPAIGN_CHUNK_SIZE reps (default 25) back
onto the queue, renders each copy (text, 9 image variants with fingerprints,
content-addressed blob writes, one UPDATE per copy). Polled every 0.1 s.
Broker: this machine's Redis, db 15 (only this bench's keys are deleted).

``python -m bench.campaign [--quick]`` prints the rows on their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import multiprocessing
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from sqlalchemy import func, select

from services.content.app import ContentApp
from services.content.domain.posts import PostContent, Variation
from services.distribution.app import DistributionApp
from services.distribution.domain.images import Badge, plan_edit, render_variant
from services.distribution.models import CampaignRow, CopyRow
from services.shared.celery_app import make_celery
from services.shared.identity.domain import Role
from services.shared.settings import load_settings

from .common import ROOT, clean_environ, postgres_database, run_alone

DEMO = ROOT / "services" / "demo_data"
CELERY = str(ROOT / ".venv" / "bin" / "celery")
REDIS_DB = 15
REDIS_URL = f"{(os.environ.get('BENCH_REDIS_URL') or 'redis://127.0.0.1:6379/0').rsplit('/', 1)[0]}/{REDIS_DB}"
POST_TEMPLATE = "{{ body }}\n\n—— {{ rep.display_name }}｜{{ rep.store }}\n{{ rep.signature }}"
SIDE = 1080
IMAGES = 9
STALL = 60.0  # give up when no copy has finished for this long (a failed task or hung worker, not a slow one)
KEY_PATTERNS = ("content", "content\x06*", "distribution", "distribution\x06*", "_kombu.*", "celery-task-meta-*",
                "unacked*", "contentops:*", "*.reply.celery.pidbox", "celery")


@dataclass(frozen=True)
class Run:
    reps: int
    workers: int


@dataclass(frozen=True)
class Plan:
    reps: int  # reps to create
    runs: tuple[Run, ...]
    compare: int  # the rep count whose 1- and 2-worker runs give the speed-up; reps 0..compare-1 are team "bench-a"
    scale: int  # 0, or the rep count (every rep: both teams) whose run gives the per-worker rate for the scale-out plan
    ceiling_renders: int  # images per process in the machine's 2-process ceiling


# Measured on this 2-core machine: 1,000 reps x 9 images take about 1.2 min with 1 worker process, so the full plan
# measures the real campaign size with 1 and 2 workers, then the scale-out plan's 10,000 reps x 9 images with 2
# (about 7 min: 90,000 image variants, ~18 GB of blobs in a temporary folder).
FULL = Plan(reps=10_000, runs=(Run(1000, 1), Run(1000, 2), Run(10_000, 2)), compare=1000, scale=10_000, ceiling_renders=180)
QUICK = Plan(reps=120, runs=(Run(60, 1), Run(60, 2), Run(120, 2)), compare=60, scale=120, ceiling_renders=36)
SCALE_OUT_SECONDS = 300  # the scale-out plan: a 10,000-rep campaign rendered within 5 minutes


@dataclass
class Result:
    run: Run
    wall: float  # publish -> every copy ready
    planned: float  # publish -> campaign row written (event delivered, text plan made, chunks about to go out)
    first_ready: float  # publish -> first copy ready
    copies: int
    failed: int
    distinct_images: int
    chunk_size: int

    @property
    def copies_per_s(self) -> float:
        return self.copies / self.wall


# ---- inputs ------------------------------------------------------------------------------------------


def _square(path: Path, side: int) -> Image.Image:
    base = Image.open(path).convert("RGB")
    scale = side / min(base.size)
    big = base.resize((round(base.width * scale), round(base.height * scale)), Image.Resampling.LANCZOS)
    left, top = (big.width - side) // 2, (big.height - side) // 2
    return big.crop((left, top, left + side, top + side))


def nine_photos(run: int, side: int | None = SIDE) -> list[tuple[str, bytes]]:
    """Nine image slots: the three demo photos, each at three JPEG qualities (distinct per ``run`` < 4).

    ``side=None`` keeps the photos' own size (400-600 px), cheap to render when only reads are measured.
    """
    if not 0 <= run < 4:
        raise ValueError("run must be 0..3: each run gets its own qualities")
    out = []
    for path in sorted(DEMO.glob("*.jpg")):
        image = _square(path, side) if side else Image.open(path).convert("RGB")
        for k in range(3):
            quality = 95 - 4 * k - run  # run 0: 95/91/87, run 1: 94/90/86, ...
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=quality)
            out.append((f"{path.stem}-q{quality}.jpg", buf.getvalue()))
    return out


def _render_batch(photos: list[bytes], count: int, tag: str) -> float:
    """Render ``count`` variants (name badge on) as campaign copies do; returns the seconds it took."""
    shas = [hashlib.sha256(p).hexdigest() for p in photos]
    began = time.perf_counter()
    for i in range(count):
        k = i % len(photos)
        render_variant(photos[k], plan_edit(shas[k], f"{tag}-rep-{i // len(photos)}"), Badge(f"销售{i:04d}"))
    return time.perf_counter() - began


def render_ceiling(count: int) -> tuple[float, float]:
    """(seconds for ``count`` renders in one process, seconds for ``count`` each in two processes at once).

    The speed-up two worker processes can reach on this machine for the work a campaign is made of, with no
    broker, database or blob store around it: 2 x one / both.
    """
    photos = [data for _, data in nine_photos(run=0)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_render_batch, [photos, photos], [9, 9], ["warm-a", "warm-b"]))  # imports, first decode
        one = pool.submit(_render_batch, photos, count, "solo").result()
        both = [pool.submit(_render_batch, photos, count, tag) for tag in ("a", "b")]
        began = time.perf_counter()
        for f in both:
            f.result()
        return one, time.perf_counter() - began


# ---- Redis, workers --------------------------------------------------------------------------------


def clear_redis(url: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    try:
        for pattern in KEY_PATTERNS:
            for key in r.scan_iter(pattern):
                r.delete(key)
    finally:
        r.close()


@contextlib.contextmanager
def celery_worker(env: dict[str, str], concurrency: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One worker node with ``concurrency`` prefork processes on the distribution queue; yields once it answers a ping."""
    node = f"bench-{uuid.uuid4().hex[:8]}@contentops"
    cmd = [CELERY, "-A", "services.worker", "worker", "-Q", "distribution", "--pool=prefork",
           f"--concurrency={concurrency}", "--loglevel=WARNING", "-n", node,
           "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    client = make_celery(load_settings(env))
    try:
        deadline = time.monotonic() + 120
        while not client.control.ping(destination=[node], timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not come up:\n{log.read_text()[-3000:]}")
        yield proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.terminate()  # warm shutdown: the queue is empty by now
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# ---- one campaign ------------------------------------------------------------------------------------


@dataclass
class Setup:
    env: dict[str, str]
    content: ContentApp
    dist: DistributionApp
    editor: object
    teams: tuple[str, str]
    first_team: int  # reps in teams[0]; a run of that many targets it alone, a run of every rep both teams


def campaign(setup: Setup, run: Run, index: int, logs: Path) -> Result:
    content, dist, editor = setup.content, setup.dist, setup.editor
    assets = [content.service.upload_asset(editor, name, [data]).id  # type: ignore[arg-type]
              for name, data in nine_photos(run=index)]
    teams = setup.teams[:1] if run.reps == setup.first_team else setup.teams
    view = content.service.create_post(editor, PostContent(  # type: ignore[arg-type]
        f"开放日第 {index + 1} 期：5岁小姑娘的创造力启蒙三步走", (DEMO / "post.txt").read_text(encoding="utf-8"),
        images=tuple(assets), target_teams=teams,
        variation=Variation(protected_phrases=("400-820-1234",), badge_enabled=True, rep_template=POST_TEMPLATE)))
    post_id = view.post.id
    log = logs / f"worker-{index}-{run.workers}.log"
    with celery_worker(setup.env, run.workers, log):
        time.sleep(1.0)  # let the pool's processes finish starting before the clock runs
        began = time.perf_counter()
        content.service.publish_post(editor, post_id, None, view.post.etag)  # type: ignore[arg-type]
        planned = first_ready = 0.0
        campaign_id = ""
        progress, progress_at = -1, 0.0
        while True:
            now = time.perf_counter() - began
            if now - progress_at > STALL:
                raise RuntimeError(f"campaign of {run.reps} reps: no copy finished for {STALL:.0f}s "
                                   f"({max(progress, 0)} done); worker log:\n{log.read_text()[-3000:]}")
            with dist.db.read() as s:
                if not campaign_id:
                    row = s.scalars(select(CampaignRow).where(CampaignRow.post_id == post_id)).first()
                    if row is not None:
                        campaign_id, planned = row.id, now
                if campaign_id:
                    counts = dict(s.execute(select(CopyRow.state, func.count()).where(CopyRow.campaign_id == campaign_id)
                                            .group_by(CopyRow.state)).all())
                    ready, failed, pending = (int(counts.get(k, 0)) for k in ("ready", "failed", "pending"))
                    if ready + failed != progress:
                        progress, progress_at = ready + failed, now
                    if ready and not first_ready:
                        first_ready = now
                    if pending == 0 and ready + failed > 0:
                        wall = now
                        break
            time.sleep(0.1)
    with dist.db.read() as s:
        rows = list(s.scalars(select(CopyRow).where(CopyRow.campaign_id == campaign_id)))
    keys = {im["key"] for r in rows for im in (r.images or [])}
    return Result(run, wall, planned, first_ready, ready, failed, len(keys), dist.settings.campaign_chunk_size)


def run(quick: bool) -> list[dict[str, str]]:
    plan = QUICK if quick else FULL
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="contentops-bench-campaign-")))
        try:
            url = stack.enter_context(postgres_database())
            import redis

            redis.Redis.from_url(REDIS_URL).ping()
        except Exception as err:  # noqa: BLE001 - reported as a row instead
            return [{"figure": "Campaign fan-out on Celery workers", "measured": "skipped", "target": "—",
                     "baseline": f"{err.__class__.__name__}: {err}", "ratio": "—"}]
        env = clean_environ(DATABASE_URL=url, DATABASE_AUTO_MIGRATE="0", REDIS_URL=REDIS_URL,
                            CONTENTOPS_DATA_DIR=str(tmp / "data"), CONTENTOPS_SECRET_KEY="bench-secret",
                            LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
        clear_redis(REDIS_URL)
        stack.callback(clear_redis, REDIS_URL)
        settings = load_settings(env)
        content = ContentApp.build(settings, migrate=True)
        stack.callback(content.close)
        dist = DistributionApp.build(settings, blobs=content.blobs, migrate=False)
        stack.callback(dist.close)
        editor = content.identity.create_user("bench editor", Role.EDITOR)[0]
        teams = (dist.service.create_team("bench-a", "Bench A").id, dist.service.create_team("bench-b", "Bench B").id)
        started = time.perf_counter()
        for i in range(plan.reps):
            dist.service.create_rep(f"销售{i:04d}", "祝您生活愉快", f"门店{i % 37}", "上海", teams[i >= plan.compare], "",
                                    None)
        print(f"  campaign: {plan.reps} reps created in {time.perf_counter() - started:.1f}s; "
              f"chunk size {settings.campaign_chunk_size}", flush=True)
        one, both = render_ceiling(plan.ceiling_renders)
        print(f"  machine ceiling: {plan.ceiling_renders} image variants in {one:.2f}s in one process, "
              f"{plan.ceiling_renders} each in two processes at once in {both:.2f}s -> {2 * one / both:.2f}x", flush=True)
        setup = Setup(env, content, dist, editor, teams, plan.compare)
        logs = tmp / "logs"
        logs.mkdir()
        results: list[Result] = []
        for index, r in enumerate(plan.runs):
            result = campaign(setup, r, index, logs)
            results.append(result)
            print(f"  campaign {r.reps} reps x {IMAGES} images, {r.workers} worker process{'es' if r.workers > 1 else ''}: "
                  f"{result.wall:.1f}s ({result.copies_per_s:.1f} copies/s; planned after {result.planned:.2f}s, "
                  f"first copy {result.first_ready:.2f}s; {result.failed} failed, "
                  f"{result.distinct_images} distinct image keys)", flush=True)
            if result.failed or result.distinct_images != result.copies * IMAGES:
                raise RuntimeError(f"campaign went wrong: {result}")
        return rows(plan, results, (one, both), load_before)


def rows(plan: Plan, results: list[Result], ceiling: tuple[float, float],
         load_before: tuple[float, ...]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    by = {(r.run.reps, r.run.workers): r for r in results}
    for result in results:
        n, w = result.run.reps, result.run.workers
        images_per_s = result.copies * IMAGES / result.wall
        out.append({
            "figure": f"Campaign {n:,} reps × {IMAGES} images ({SIDE}×{SIDE} photos, badge on), "
                      f"{w} Celery worker process{'es' if w > 1 else ''}: publish → all copies ready",
            "measured": f"{result.wall:.1f} s",
            "target": "— (report 1 vs 2 workers)",
            "baseline": f"{result.copies_per_s:.1f} copies/s, {images_per_s:.0f} images/s; per worker "
                        f"{result.copies_per_s / w:.1f} copies/s, {images_per_s / w:.0f} images/s",
            "ratio": f"planned at {result.planned:.2f} s, first copy at {result.first_ready:.2f} s; "
                     f"chunks of {result.chunk_size}",
        })
    one, two = by.get((plan.compare, 1)), by.get((plan.compare, 2))
    solo, pair = ceiling
    if one and two:
        out.append({
            "figure": f"↳ speed-up, 2 vs 1 worker processes ({plan.compare:,} reps; 1 worker {one.wall:.1f} s, "
                      f"2 workers {two.wall:.1f} s)",
            "measured": f"{one.wall / two.wall:.2f}×",
            "target": "— (≤ 2× on 2 cores)",
            "baseline": f"machine ceiling, same run: {2 * solo / pair:.2f}× ({plan.ceiling_renders} image variants "
                        f"in 1 process {solo:.2f} s; {plan.ceiling_renders} each in 2 processes at once {pair:.2f} s)",
            "ratio": f"{(one.wall / two.wall) / (2 * solo / pair):.2f} of the ceiling; load average "
                     f"{load_before[0]:.1f} → {os.getloadavg()[0]:.1f}",
        })
    scale = by.get((plan.scale, 2))
    if scale:
        per_worker = scale.copies * IMAGES / scale.wall / scale.run.workers
        needed = math.ceil(plan.scale * IMAGES / (SCALE_OUT_SECONDS - scale.planned) / per_worker)
        out.append({
            "figure": f"↳ scale-out: worker processes to render {plan.scale:,} reps × {IMAGES} images within "
                      f"{SCALE_OUT_SECONDS // 60} min (EXTRAPOLATED from the measured run above)",
            "measured": f"{needed} worker process{'es' if needed > 1 else ''}",
            "target": f"publish → all ready ≤ {SCALE_OUT_SECONDS} s",
            "baseline": f"{plan.scale * IMAGES:,} images in {SCALE_OUT_SECONDS - scale.planned:.0f} s after planning "
                        f"÷ {per_worker:.0f} images/s per worker process (measured with 2 on these 2 cores)",
            "ratio": f"measured here: {scale.wall:.0f} s with 2 → {scale.wall / SCALE_OUT_SECONDS:.2f}× the budget",
        })
    return out


if __name__ == "__main__":
    run_alone(__doc__, run)
