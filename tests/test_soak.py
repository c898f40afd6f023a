"""``make soak`` (bench/soak.py): its accounting, and a short run of the whole thing with every fault.

The accounting is checked on made-up ledgers and rows: a lost heartbeat, a double count, a heartbeat in doubt, a
missing or extra copy, an error outside an outage, each is caught. The slow test runs the soak for 50 s of load on
its own PostgreSQL cluster, Redis and S3 (every process, every fault) and requires every check of its report to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.soak import FAULTS, fault_plan, parse_args, tasks_in_hand
from bench.soak_load import UNTRACKED, ClientError, Clock, Errors, Ledger, TokenPool, ViewLedger, WebLoad, WebPlan, WebProcess
from bench.soak_report import CopyRecord, Outage, audit_campaign, audit_tracking, classify_errors

from . import infra

ROOT = Path(__file__).resolve().parent.parent


# ---- tracking accounting ---------------------------------------------------------------------------------------------------


def ledger(acked: dict[int, int], doubt: dict[int, int] | None = None) -> ViewLedger:
    return ViewLedger("grpc", dict(acked), dict(doubt or {}))


def test_every_acknowledged_heartbeat_stored_once_passes() -> None:
    audit = audit_tracking({"v1": ledger({1: 3000, 2: 4000}), "v2": ledger({})},
                           {"v1": 7000, "v2": 0, "orphan": 0}, {"v1": {1: 3000, 2: 4000}})
    assert audit.ok
    assert (audit.events_acked, audit.events_stored, audit.acked_ms, audit.stored_ms) == (2, 2, 7000, 7000)
    assert audit.views_unacked_stored == 1  # a StartView that failed after writing: allowed


def test_a_lost_heartbeat_and_a_missing_view_are_caught() -> None:
    audit = audit_tracking({"v1": ledger({1: 3000, 2: 4000}), "v2": ledger({1: 1000})},
                           {"v1": 3000}, {"v1": {1: 3000}})
    assert not audit.ok
    assert audit.lost == [("v1", 2), ("v2", 1)] and audit.views_missing == ["v2"]
    assert audit.lost_ms == 4000 + 1000 and audit.double_ms == 0


def test_a_double_count_and_a_heartbeat_nobody_sent_are_caught() -> None:
    audit = audit_tracking({"v1": ledger({1: 3000})}, {"v1": 6000}, {"v1": {1: 3000, 7: 3000}})
    assert audit.phantom == [("v1", 7)] and audit.double_ms == 3000 and not audit.ok
    counted_twice = audit_tracking({"v1": ledger({1: 3000})}, {"v1": 6000}, {"v1": {1: 3000}})
    assert counted_twice.engaged_mismatch == [("v1", 3000, 6000)] and counted_twice.double_ms == 3000
    assert audit_tracking({"v1": ledger({1: 3000})}, {"v1": 2500}, {"v1": {1: 2500}}).delta_mismatch == [("v1", 1, 3000, 2500)]


def test_a_heartbeat_in_doubt_may_be_stored_or_not() -> None:
    sent = {"v1": ledger({1: 3000}, doubt={2: 2000})}
    stored = audit_tracking(sent, {"v1": 5000}, {"v1": {1: 3000, 2: 2000}})
    absent = audit_tracking(sent, {"v1": 3000}, {"v1": {1: 3000}})
    assert stored.ok and absent.ok
    assert (stored.doubt_sent, stored.doubt_stored, absent.doubt_stored) == (1, 1, 0)


# ---- copies ------------------------------------------------------------------------------------------------------------------


def copy(rep: str, keys: tuple[str, ...], state: str = "ready") -> CopyRecord:
    return CopyRecord(rep, state, keys, has_token=state == "ready")


def test_one_ready_copy_per_targeted_rep_passes_and_every_deviation_is_caught() -> None:
    good = [copy("r1", ("a1", "b1")), copy("r2", ("a2", "b2"))]
    assert audit_campaign("posts/p", "t", 2, ["r1", "r2"], 1, good).ok
    missing = audit_campaign("posts/p", "t", 2, ["r1", "r2", "r3"], 1, good)
    assert missing.missing == ["r3"] and not missing.ok
    extra = audit_campaign("posts/p", "t", 2, ["r1"], 1, good)
    assert extra.extra == ["r2"] and not extra.ok
    assert not audit_campaign("posts/p", "t", 2, ["r1", "r2"], 2, good).ok  # a second campaign for one revision
    shared = audit_campaign("posts/p", "t", 2, ["r1", "r2"], 1, [copy("r1", ("a1", "b1")), copy("r2", ("a1", "b2"))])
    assert shared.shared_images == 1 and not shared.ok
    pending = audit_campaign("posts/p", "t", 2, ["r1", "r2"], 1, [good[0], copy("r2", (), "pending")])
    assert pending.not_ready == {"pending": 1} and not pending.ok
    short = audit_campaign("posts/p", "t", 2, ["r1", "r2"], 1, [good[0], copy("r2", ("a2",))])
    assert short.wrong_images == ["r2"] and not short.ok


# ---- client errors against outages ---------------------------------------------------------------------------------------------


def test_only_unavailable_during_an_outage_is_allowed() -> None:
    outages = [Outage("redis", 10.0, 15.0), Outage("postgres", 40.0, 55.0)]
    errors = [ClientError(11.0, "beacon", "HTTP 503"), ClientError(24.0, "beacon", "HTTP 503"),  # within the grace
              ClientError(41.0, "StartView", "UNAVAILABLE"), ClientError(30.0, "page", "HTTP 503"),  # outside
              ClientError(42.0, "RecordEngagement", "INTERNAL"), ClientError(43.0, "page", "HTTP 500")]
    rows = {(r.source, r.code): r for r in classify_errors(errors, outages, grace=10.0)}
    assert rows["beacon", "HTTP 503"].allowed and rows["beacon", "HTTP 503"].outages == {"redis": 2}
    assert rows["StartView", "UNAVAILABLE"].allowed
    assert not rows["page", "HTTP 503"].allowed and rows["page", "HTTP 503"].in_outage == 0
    assert not rows["RecordEngagement", "INTERNAL"].allowed and not rows["page", "HTTP 500"].allowed
    untracked = {(r.source, r.in_outage): r.allowed for r in classify_errors(  # a page served without a view
        [ClientError(12.0, "page", UNTRACKED), ClientError(33.0, "page", UNTRACKED)], outages, grace=10.0)}
    assert untracked == {("page", 1): False}  # once outside an outage: tracking lost pages it should have counted
    assert classify_errors([ClientError(12.0, "page", UNTRACKED)], outages, grace=10.0)[0].allowed


# ---- the readers' HTTP clients -----------------------------------------------------------------------------------------------


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def toy_edge(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on loopback answering with ``handler``; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def test_readers_keep_no_cookies_and_come_from_their_own_network() -> None:
    """Each page is a new reader: a cookie the edge set for one must never reach the next (else they share a visitor
    and its rate limits); and each client connects from its own loopback /24."""
    seen: list[tuple[str, str | None]] = []

    class Edge(QuietHandler):
        def do_GET(self) -> None:
            seen.append((self.client_address[0], self.headers.get("cookie")))
            self.send_response(200)
            self.send_header("set-cookie", "co_vid=reader-1; Path=/; HttpOnly")
            self.send_header("content-length", "0")
            self.end_headers()

    async def two_readers(load: WebLoad) -> None:
        client = load.client(7)
        await load.fetch(client, "GET", "/s/a")
        await load.fetch(client, "GET", "/s/b")
        await client.close()

    with toy_edge(Edge) as url:
        asyncio.run(two_readers(WebLoad(url, WebPlan(1, 1, 1), TokenPool(["t"]), Ledger(Clock()), Errors(Clock()))))
    assert seen == [("127.0.7.1", None), ("127.0.7.1", None)]


def test_readers_in_their_own_process_report_pages_beacons_answers_and_errors_to_the_parents_ledger() -> None:
    """``WebProcess``: what the readers in the child process were acknowledged (and the errors they saw) ends up in
    the parent's ledger, on the parent's clock. The toy edge refuses every third beacon with a 400 (not retried: the
    reader gives up, its beacon in doubt)."""
    beats: list[dict[str, object]] = []

    class Edge(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = f'<main data-view="views/v{threading.get_ident()}-{time.monotonic_ns()}">'.encode()
            self.send_response(200)
            self.send_header("set-cookie", "co_vid=reader; Path=/")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            beats.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(400 if len(beats) % 3 == 0 else 204)
            self.send_header("content-length", "0")
            self.end_headers()

    clock = Clock()
    ledger, errors = Ledger(clock), Errors(clock)
    with toy_edge(Edge) as url:
        web = WebProcess(url, WebPlan(10, 2, 0.2, networks=2), TokenPool(["t"]), clock)
        web.start()
        deadline = time.monotonic() + 120  # the child imports the bench (grpc, PIL, ...) first
        while len(beats) < 9 and time.monotonic() < deadline:
            time.sleep(0.1)
        web.stop(ledger, errors)
    assert not web.process.is_alive()
    counts = ledger.counts
    acked = sum(len(v.acked) for v in ledger.views.values())
    doubt = sum(len(v.doubt) for v in ledger.views.values())
    assert len(beats) >= 9, "the readers' process sent too few beacons within 120 s"
    assert counts["pages"] == len(ledger.views) > 0 and all(v.origin == "page" for v in ledger.views.values())
    assert counts["beacons"] == acked > 0 and acked + doubt == len(beats)
    assert len(ledger.answers["page"]) == counts["pages"] and len(ledger.answers["beacon"]) == acked
    assert [e.code for e in errors.items] == ["HTTP 400"] * doubt and doubt == len(beats) // 3
    assert all(0 <= e.at <= clock.now() for e in errors.items)


def test_page_errors_on_a_link_some_reader_opened_before_are_counted_apart() -> None:
    """A link opened before has its copy cached by the services: during a PostgreSQL outage it should keep opening,
    so the report counts its errors apart from those of links never opened."""
    statuses = {"a": [200, 503, 200], "b": [503, 200]}

    class Edge(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status = statuses[self.path.rsplit("/", 1)[1]].pop(0)
            body = b'<main data-view="views/v1">' if status == 200 else b""
            self.send_response(status)
            self.send_header("set-cookie", "co_vid=reader; Path=/")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    errors = Errors(Clock())

    async def read(load: WebLoad, token: str) -> None:
        load.tokens = TokenPool([token])
        client = load.client(1)
        await load._reader(client, threading.Event())
        await client.close()

    async def readers(load: WebLoad) -> None:
        for token in ("a", "a", "b"):
            await read(load, token)

    with toy_edge(Edge) as url:
        asyncio.run(readers(WebLoad(url, WebPlan(1, 0, 0.01), TokenPool(["a"]), Ledger(Clock()), errors)))
    assert [(e.source, e.code) for e in errors.items] == [("page (link opened before)", "HTTP 503"), ("page", "HTTP 503")]
    assert statuses == {"a": [], "b": []}


# ---- the schedule ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [50, 60, 600, 1800])
def test_every_fault_is_planned_inside_the_load(seconds: float) -> None:
    plan = fault_plan(seconds)
    assert {kind for _, kind in plan} == set(FAULTS)
    assert all(0 < at < seconds for at, _ in plan) and plan == sorted(plan)
    assert len(plan) == len(FAULTS) * max(1, int(seconds // 240))


def test_a_killed_workers_tasks_in_hand_are_read_from_its_log() -> None:
    log = ("[..: INFO/MainProcess] Task contentops.distribution.render_chunk[aa-1] received\n"
           "[..: INFO/ForkPoolWorker-1] Task contentops.distribution.render_chunk[aa-1] succeeded in 1.2s: 25\n"
           "[..: INFO/MainProcess] Task contentops.distribution.render_chunk[bb-2] received\n"
           "[..: INFO/MainProcess] Task contentops.content.relay_outbox[cc-3] received\n")
    assert tasks_in_hand(log, "contentops.distribution.render_chunk") == 1


def test_minutes_come_from_the_flag_or_soak_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOAK_MINUTES", "3")
    assert parse_args([]).seconds == 180
    assert parse_args(["--minutes", "1"]).seconds == 60
    assert parse_args(["--seconds", "45"]).seconds == 45


# ---- the whole soak, short ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_short_soak_with_every_fault_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    tools = [t for t in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "redis-server") if not shutil.which(t)]
    infra.require("PostgreSQL's cluster tools and redis-server, as root", not tools and os.geteuid() == 0,
                  f"missing: {', '.join(tools)}" if tools else "not root")
    out = tmp_path / "soak.md"
    run = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--seconds", "50", "--page-rate", "5", "--beacon-rate", "25",
         "--heartbeat-rate", "100", "--teams", "2", "--reps-per-team", "60", "--redis-down", "3", "--pg-down", "8",
         "--resweep-seconds", "10", "--lease-seconds", "10", "--out", str(out), "--keep-logs", str(tmp_path / "logs")],
        cwd=ROOT, capture_output=True, text=True, timeout=840, check=False)
    assert out.exists(), f"no report ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    text = out.read_text(encoding="utf-8")
    failed = re.findall(r"^\| (.+?) \| \*\*FAILED\*\* \| (.*) \|$", text, re.M)
    assert not failed and run.returncode == 0, f"failed checks: {failed}\n\n{text}"
    assert "**Result: PASS**" in text
    for fault in FAULTS:
        assert re.search(rf"^\| {fault} \| \d+ \| \d", text, re.M), f"the {fault} fault is not in the timeline"


def test_a_process_trees_cpu_counts_children_that_exited_since() -> None:
    """The soak's CPU column: a child's CPU time counts up to its last sample even once it is gone (PostgreSQL's
    backends come and go; summing only the live tree at the end would lose theirs)."""
    from bench.soak_infra import Usage

    burn = ("import sys, time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
            "print('burned', flush=True)\nsys.stdin.read()")
    usage = Usage()
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        usage.sample({"tree": (os.getpid(), True)}, time.monotonic())
        assert child.stdout is not None and child.stdout.readline().strip() == "burned"
        usage.sample({"tree": (os.getpid(), True)}, time.monotonic())
    finally:
        child.communicate("")
    usage.sample({"tree": (os.getpid(), True)}, time.monotonic())
    track = usage.tracks["tree"]
    assert track.samples == 3 and child.pid in track.cpu
    first, last = track.cpu[child.pid]
    assert last - first >= 0.25  # its burn, most of it after the first sample
    assert track.cores * (track.last_at - track.first_at) >= last - first
