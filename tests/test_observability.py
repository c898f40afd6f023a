"""Structured logs and metrics.

- A log line is one JSON object with time, level, logger, message and the request id.
- The request id a browser's request gets at the web edge travels in gRPC metadata
  to the distribution and tracking services, and their log lines carry it.
- /metrics (the edge's, and any process's on METRICS_ADDR) shows RPC latency by
  method and code, errors by code, the edge's requests by route, the tracking
  stream's lag and pending entries, and campaign progress.
(Celery task durations are checked with a real worker in test_celery.py.)
"""

from __future__ import annotations

import io
import json
import logging

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb
from services.shared.logs import REQUEST_ID, json_formatter
from services.shared.metrics import serve_metrics
from services.tracking.streams import RedisEventLog

from . import infra
from .helpers import wait_for
from .web_harness import PHONE_UA, Web


def test_a_log_line_is_one_json_object_with_the_request_id() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(json_formatter())
    logger = logging.getLogger("test.observability")
    logger.addHandler(handler)
    logger.propagate = False
    token = REQUEST_ID.set("req-0123456789")
    try:
        logger.warning("读了 %d 分钟", 13)
    finally:
        REQUEST_ID.reset(token)
        logger.removeHandler(handler)
    line = json.loads(out.getvalue())
    assert line["message"] == "读了 13 分钟" and line["level"] == "WARNING" and line["logger"] == "test.observability"
    assert line["request_id"] == "req-0123456789" and line["time"].endswith("+00:00")


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def test_the_edges_request_id_reaches_the_services_logs_and_metrics_show_the_calls(
        web: Web, caplog: pytest.LogCaptureFixture) -> None:
    track = web.track
    topic = track.topic("creativity", "创造力启蒙")
    post = track.publish("开放日", "周六上午十点，欢迎来玩。", [topic])
    rep, md = track.rep("王老师")
    token = track.share_token(post, rep, md)
    caplog.set_level(logging.DEBUG, logger="services.shared.grpcserver")
    rid = "webtest-1234abcd"
    with httpx.Client(base_url=web.url, headers={"user-agent": PHONE_UA}) as client:
        page = client.get(f"/s/{token}", headers={"x-request-id": rid})
        assert page.status_code == 200 and page.headers["x-request-id"] == rid
        assert client.get("/s/forged.token").status_code == 404
        served = {(r.getMessage().split()[0].rsplit("/", 1)[1], r.getMessage().split()[1])
                  for r in caplog.records if getattr(r, "request_id", "") == rid}
        # logged by the services the page called, with the edge's id (in production the edge starts the view itself)
        fast_path = isinstance(track.app.event_log, RedisEventLog)
        called = {("GetRepCopy", "OK")} | (set() if fast_path else {("StartView", "OK")})
        assert called <= served and (("StartView", "OK") in served) is not fast_path
        with pytest.raises(grpc.RpcError) as refused:  # a caller's mistake: counted as an error by its code
            track.stub.StartView(tpb.StartViewRequest(share_token="forged.token"), metadata=track.edge)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        track.settle()
        wait_for(lambda: track.app.event_log.stats().lag == 0, "the stream to drain")
        scraped = client.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    rpc = {(labels["method"], labels["code"]) for labels, n in samples(text, "contentops_rpc_duration_seconds_count") if n}
    assert called | {("CreatePost", "OK")} <= rpc
    errors = {(labels["method"], labels["code"]) for labels, n in samples(text, "contentops_rpc_errors_total") if n}
    assert ("StartView", "INVALID_ARGUMENT") in errors
    http = {(labels["route"], labels["status"]) for labels, n in
            samples(text, "contentops_http_request_duration_seconds_count") if n}
    assert {("/s/{token}", "200"), ("/s/{token}", "404")} <= http
    stream = {labels["kind"]: v for labels, v in samples(text, "contentops_tracking_stream_entries")}
    assert stream["lag"] == 0 and "pending" in stream
    copies = {labels["state"]: v for labels, v in samples(text, "contentops_campaign_copies")}
    assert copies.get("ready", 0) >= 1


def test_a_process_serves_metrics_on_metrics_addr() -> None:
    port = infra.free_port()
    server = serve_metrics(f"127.0.0.1:{port}")
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert r.status_code == 200 and "contentops_rpc_duration_seconds" in r.text
    finally:
        server.shutdown()
    assert serve_metrics("") is None
