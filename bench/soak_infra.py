"""The soak's own stores and processes: a PostgreSQL cluster, a Redis with AOF, every ContentOps process on its own.

- ``PgCluster``: ``pg_createcluster <ver> soak<pid>`` on a free port (trust auth on loopback), started and stopped
  with ``pg_ctlcluster``, dropped with ``pg_dropcluster --stop``: stopping it disturbs nothing else on the machine.
- ``AofRedis``: ``redis-server`` on a free loopback port with ``--appendonly yes --appendfsync always`` in its own
  folder, so a SIGKILL loses nothing it acknowledged; started again on the same port and folder.
- ``Fleet``: the processes of deploy/Procfile, each its own OS process in its own session (so a SIGKILL of the
  group takes a Celery worker's pool child with it), supervised: a process that exits without being killed by the
  soak is recorded and started again, as a supervisor would.
- ``Usage``: resident memory (RSS) and CPU time of every process (with its children), sampled through the run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from .common import free_port

POSTGRES_ETC = Path("/etc/postgresql")
REDIS_SERVER = "redis-server"


def _run(cmd: list[str], timeout: float = 120) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stdout[-1500:]} {done.stderr[-1500:]}")
    return done.stdout


def wait_until(condition: Callable[[], bool], what: str, seconds: float, every: float = 0.2) -> float:
    """Poll ``condition`` until it holds; the seconds it took. RuntimeError naming ``what`` past ``seconds``."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > seconds:
            raise RuntimeError(f"not within {seconds:.0f} s: {what}")
        time.sleep(every)
    return time.monotonic() - began


# ---- PostgreSQL -----------------------------------------------------------------------------------------------


@dataclass
class PgCluster:
    version: str
    name: str
    port: int

    @property
    def data_dir(self) -> Path:
        return Path(f"/var/lib/postgresql/{self.version}/{self.name}")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        _run(["pg_ctlcluster", self.version, self.name, "start"])
        wait_until(self.accepting, f"PostgreSQL cluster {self.name} to accept connections", 60)

    def stop(self) -> None:
        _run(["pg_ctlcluster", self.version, self.name, "stop", "-m", "fast"])

    def accepting(self) -> bool:
        return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False).returncode == 0

    def create_database(self, database: str) -> str:
        _run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1",
              "-c", f'CREATE DATABASE "{database}"'])
        return self.url(database)

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        return None


def postgres_version() -> str:
    versions = sorted((p.name for p in POSTGRES_ETC.iterdir() if p.name.isdigit()), key=int)
    if not versions:
        raise RuntimeError(f"no PostgreSQL version under {POSTGRES_ETC}")
    return versions[-1]


def drop_stale_clusters(version: str) -> list[str]:
    """Drop ``soak<pid>`` clusters whose soak process is gone (a run killed before its cleanup)."""
    dropped = []
    for line in _run(["pg_lsclusters", "--no-header"]).splitlines():
        parts = line.split()
        found = re.fullmatch(r"soak(\d+)", parts[1]) if len(parts) > 1 and parts[0] == version else None
        if found and not psutil.pid_exists(int(found.group(1))):
            _run(["pg_dropcluster", "--stop", version, parts[1]])
            dropped.append(parts[1])
    return dropped


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PgCluster]:
    """A new PostgreSQL cluster of this machine's version on a free port, started; always dropped afterwards."""
    version = postgres_version()
    drop_stale_clusters(version)
    cluster = PgCluster(version, f"soak{os.getpid()}", free_port())
    _run(["pg_createcluster", version, cluster.name, "-p", str(cluster.port), "-o", "max_connections=300", "--", "--auth=trust"])
    try:
        cluster.start()
        yield cluster
    finally:
        _run(["pg_dropcluster", "--stop", version, cluster.name])


# ---- Redis with AOF ----------------------------------------------------------------------------------------------------


class AofRedis:
    """``redis-server`` with every write fsynced to its append-only file before it is acknowledged."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def start(self) -> float:
        """Start (again, on the same port and folder); the seconds until it answered PING (the AOF loaded)."""
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "always",
             "--dir", str(self.directory), "--save", "", "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        return wait_until(self.answering, f"Redis on port {self.port}", 60, every=0.05)

    def answering(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(self.directory / 'redis.log').read_text()[-1500:]}")
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; only the AOF remains."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


# ---- the processes ---------------------------------------------------------------------------------------------------------


@dataclass
class Managed:
    role: str  # content, distribution, tracking, web, worker, beat, consumer
    name: str  # unique per instance: worker-3
    cmd: list[str]
    proc: subprocess.Popen[bytes]
    started: float  # monotonic
    killed: bool = False  # by the soak (a fault), not by itself
    exit_code: int | None = None


@dataclass
class Exit:
    name: str
    code: int
    at: float  # monotonic
    log_tail: str


class Fleet:
    """The soak's processes: started, SIGKILLed on purpose, restarted when they exit on their own, stopped at the end."""

    def __init__(self, env: dict[str, str], cwd: Path, logs: Path) -> None:
        self.env = env
        self.cwd = cwd
        self.logs = logs
        self.procs: dict[str, Managed] = {}
        self.unexpected: list[Exit] = []
        self._counts: dict[str, int] = {}
        self._commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        self._lock = threading.RLock()  # kill and restart_exited never interleave: a kill is never taken for a crash
        logs.mkdir(parents=True, exist_ok=True)

    def next_name(self, role: str) -> str:
        with self._lock:
            self._counts[role] = self._counts.get(role, 0) + 1
            return f"{role}-{self._counts[role]}"

    def start(self, role: str, cmd: list[str], name: str | None = None, env: dict[str, str] | None = None) -> Managed:
        name = name or self.next_name(role)
        full_env = {**self.env, **(env or {})}
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(cmd, cwd=self.cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        managed = Managed(role, name, cmd, proc, time.monotonic())
        with self._lock:
            self.procs[name] = managed
            self._commands[name] = (cmd, env or {})
        return managed

    def live(self, role: str | None = None) -> list[Managed]:
        with self._lock:
            return [m for m in self.procs.values() if m.proc.poll() is None and not m.killed and role in (None, m.role)]

    def kill(self, name: str) -> Managed:
        """SIGKILL the process and everything in its session (a prefork worker's pool children too)."""
        with self._lock:
            managed = self.procs[name]
            managed.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(managed.proc.pid, signal.SIGKILL)
            managed.proc.wait()
        managed.exit_code = managed.proc.returncode
        return managed

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def restart_exited(self) -> list[Exit]:
        """Record every process that exited on its own and start a new instance of it."""
        found = []
        with self._lock:
            for managed in list(self.procs.values()):
                if managed.killed or managed.exit_code is not None or managed.proc.poll() is None:
                    continue
                managed.exit_code = managed.proc.returncode
                found.append(Exit(managed.name, managed.proc.returncode, time.monotonic(), self.log_tail(managed.name)))
                cmd, env = self._commands[managed.name]
                self.start(managed.role, cmd, env=env)
            self.unexpected += found
        return found

    def stop_all(self, grace: float = 30) -> None:
        """SIGTERM every live process (each drains and exits), then SIGKILL what is left after ``grace``."""
        live = [m for m in self.procs.values() if m.proc.poll() is None]
        for managed in live:
            managed.killed = True  # stopping is not a crash
            with contextlib.suppress(ProcessLookupError):
                os.killpg(managed.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for managed in live:
            try:
                managed.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(managed.proc.pid, signal.SIGKILL)
                managed.proc.wait()
            managed.exit_code = managed.proc.returncode


# ---- memory -------------------------------------------------------------------------------------------------------------------


def tree_usage(pid: int, children: bool = True) -> tuple[int, dict[int, float]] | None:
    """RSS in bytes of ``pid`` and (``children``) its live descendants (a prefork worker's pool, PostgreSQL's backends),
    and the CPU seconds (user + system) each of those processes has used so far, by pid; None if it is gone."""
    try:
        root = psutil.Process(pid)
        if root.status() == psutil.STATUS_ZOMBIE:  # killed, not reaped yet
            return None
        rss, cpu = root.memory_info().rss, {pid: sum(root.cpu_times()[:2])}
        for child in root.children(recursive=True) if children else []:
            with contextlib.suppress(psutil.Error):
                rss += child.memory_info().rss
                cpu[child.pid] = sum(child.cpu_times()[:2])
        return rss, cpu
    except psutil.Error:
        return None


@dataclass
class UsageTrack:
    first: int  # RSS
    first_at: float  # monotonic
    last: int
    last_at: float
    peak: int
    cpu: dict[int, tuple[float, float]]  # pid -> CPU seconds at its first and its last sample (0 first: born since)
    samples: int = 1

    @property
    def cpu_seconds(self) -> float:
        """CPU used between the first and the last sample. Children that came and went in between (PostgreSQL's
        backends) count up to their last sample."""
        return sum(last - first for first, last in self.cpu.values())

    @property
    def cores(self) -> float:
        """Average CPU use between the first and the last sample, in cores."""
        span = self.last_at - self.first_at
        return self.cpu_seconds / span if span > 0 else 0.0


@dataclass
class Usage:
    """RSS and CPU time of every process by instance name, sampled: the first and last samples and the peak RSS."""

    tracks: dict[str, UsageTrack] = field(default_factory=dict)

    def cores(self, names: Callable[[str], bool] = lambda _: True) -> float:
        """Average CPU use of the processes ``names`` accepts, in cores, over the whole time any process was sampled."""
        tracks = self.tracks.values()
        span = max((t.last_at for t in tracks), default=0.0) - min((t.first_at for t in tracks), default=0.0)
        return sum(t.cpu_seconds for name, t in self.tracks.items() if names(name)) / span if span > 0 else 0.0

    def sample(self, pids: dict[str, tuple[int, bool]], at: float) -> None:
        """``pids``: name -> (pid, whether to count its children)."""
        for name, (pid, children) in pids.items():
            usage = tree_usage(pid, children)
            if not usage or not usage[0]:  # gone (or exiting: its memory already released)
                continue
            rss, cpu = usage
            track = self.tracks.get(name)
            if track is None:
                self.tracks[name] = UsageTrack(rss, at, rss, at, rss, {p: (c, c) for p, c in cpu.items()})
            else:
                track.last, track.last_at, track.peak = rss, at, max(track.peak, rss)
                for p, c in cpu.items():
                    track.cpu[p] = (track.cpu.get(p, (0.0, 0.0))[0], c)
                track.samples += 1
