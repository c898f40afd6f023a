"""What the benchmarks share: backing stores, a content server process, statistics, the table.

The content server runs as its own process (``python -m services.content``,
exactly what production runs) so the benchmark's client threads do not share
its interpreter lock; both still share this machine's cores, which the floor
rows measure too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.shared.healthcheck import check
from services.shared.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL") or os.environ.get("TEST_PG_URL") or \
    "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SETTING_NAMES = {s.env for s in SETTINGS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without any ContentOps setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env.update(extra)
    return env


# ---- backing stores -------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (like tests/infra.pg_database), dropped afterwards."""
    import psycopg

    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    name = f"co_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_version() -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not open port {port} within {seconds:.0f}s")


def stop_process(proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def s3_endpoint(bucket: str) -> Iterator[tuple[dict[str, str], str]]:
    """(MINIO_* settings, label): a real MinIO when MINIO_ENDPOINT is set, else moto in its own process."""
    if os.environ.get("MINIO_ENDPOINT"):
        yield {
            "MINIO_ENDPOINT": os.environ["MINIO_ENDPOINT"],
            "MINIO_ACCESS_KEY": os.environ.get("MINIO_ACCESS_KEY", "minioadmin"),
            "MINIO_SECRET_KEY": os.environ.get("MINIO_SECRET_KEY", "minioadmin"),
            "MINIO_BUCKET": bucket,
        }, "MinIO"
        return
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, "moto server")
        yield {"MINIO_ENDPOINT": f"127.0.0.1:{port}", "MINIO_ACCESS_KEY": "bench", "MINIO_SECRET_KEY": "bench-secret",
               "MINIO_BUCKET": bucket}, "moto S3"
    finally:
        stop_process(proc)


@contextlib.contextmanager
def sink_server() -> Iterator[str]:
    """``python -m bench.sink``: the transport floor for uploads (see bench/sink.py)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.sink", f"127.0.0.1:{port}"], cwd=ROOT, env=clean_environ())
    try:
        _wait_for_port(port, proc, "gRPC sink")
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


# ---- the content server -------------------------------------------------------------------------


@dataclass
class Backend:
    """One configuration of the content service under test."""

    name: str  # "SQLite" / "PostgreSQL"
    store: str  # blob store label
    env: dict[str, str]  # settings (CONTENTOPS_DATA_DIR, DATABASE_URL, MINIO_*, ...)
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def service_process(module: str, addr_setting: str, env: dict[str, str], log_path: Path) -> Iterator[str]:
    """``python -m <module>`` listening on a loopback port (given as ``addr_setting``), with ``env`` on a clean
    environment; yields its address once it answers SERVING, and stops it (SIGTERM, then SIGKILL) afterwards."""
    address = f"127.0.0.1:{free_port()}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", module], env=clean_environ(**{**env, addr_setting: address}),
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not check(address, timeout=1)[0]:
            if proc.poll() is not None:
                raise RuntimeError(f"{module} exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{module} not SERVING after 60s: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield address
    finally:
        stop_process(proc)


def content_server(backend: Backend, log_path: Path) -> contextlib.AbstractContextManager[str]:
    """``python -m services.content`` on a loopback port, its periodic sweeps kept out of the measurements."""
    return service_process("services.content", "CONTENT_GRPC_ADDR", {
        **backend.env, "LOG_LEVEL": "WARNING", "DATABASE_AUTO_MIGRATE": "0",  # seeding migrated it
        "SCHEDULER_INTERVAL_SECONDS": "3600"}, log_path)


# ---- statistics and the table ----------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def median(values: list[float]) -> float:
    return percentile(sorted(values), 50)


@dataclass(frozen=True)
class Score:
    """A figure with a numeric target, as numbers: what bench/results.md's summary and bench/results.png show.

    ``floor`` is what the same run measured for the thing's floor or baseline (health Check, plain put, no-op
    endpoint, bare XADD): the best the figure could be on this machine, when there is one.
    """

    name: str  # short, for the plot and the summary
    value: float
    target: float
    unit: str  # "ms", "s", "/s", "" ...
    higher_is_better: bool = False
    floor: float | None = None

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    @property
    def headroom(self) -> float:
        """How far inside the target the figure is: above 1 meets it (target ÷ value, or value ÷ target for rates)."""
        return self.value / self.target if self.higher_is_better else self.target / self.value

    @property
    def floor_headroom(self) -> float | None:
        if self.floor is None or self.floor <= 0:
            return None
        return self.floor / self.target if self.higher_is_better else self.target / self.floor

    def show(self, x: float) -> str:
        text = f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}" if abs(x) < 1 else f"{x:.1f}"
        return f"{text} {self.unit}".strip() if self.unit not in ("/s", "×") else f"{text}{self.unit}"

    @property
    def target_text(self) -> str:
        return f"{'≥' if self.higher_is_better else '≤'} {self.show(self.target)}"


Figure = dict[str, Any]  # a benchmark's row: figure, measured, target, baseline, ratio (text) and maybe a score


@dataclass
class Row:
    figure: str
    measured: str
    target: str
    floor: str
    ratio: str
    score: Score | None = None

    @classmethod
    def of(cls, d: Figure) -> Row:
        return cls(d["figure"], d["measured"], d["target"], d["baseline"], d["ratio"], d.get("score"))


def run_alone(doc: str | None, run: Callable[[bool], list[Figure]]) -> None:
    """``python -m bench.<module> [--quick]``: one benchmark, its rows printed as table lines."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true")
    for row in run(parser.parse_args().quick):
        print(" | ".join(row[k] for k in ("figure", "measured", "target", "baseline", "ratio")))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def render_table(rows: list[Row]) -> str:
    header = "| figure | measured | target | baseline/floor (same run) | ratio |\n|---|---:|---|---:|---:|\n"
    return header + "".join(f"| {r.figure} | {r.measured} | {r.target} | {r.floor} | {r.ratio} |\n" for r in rows)


def delete_redis_keys(url: str, patterns: tuple[str, ...]) -> None:
    """Delete a benchmark's keys (by pattern, in batches) from its own Redis database."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for pattern in patterns:
            keys = list(client.scan_iter(match=pattern, count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i:i + 500])
    finally:
        client.close()


def run_clients(client: Callable[[int], None], count: int) -> None:
    """``client(0)`` … ``client(count - 1)`` on their own threads, until the last one returns."""
    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_together(threads: list[threading.Thread], barrier: threading.Barrier, errors: list[str], what: str) -> float:
    """Start the client threads, which wait at ``barrier`` once warmed up (or abort it on an error), and time from
    there until the last one ends: the wall seconds of the measurement."""
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        for t in threads:
            t.join()
        raise RuntimeError(f"{what} failed before the measurement: {errors[:3]}") from None
    began = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - began
