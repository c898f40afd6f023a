"""Prometheus metrics (prometheus_client): what every process exposes, and how.

- RPCs: latency by service, method and status code, and errors by code (the gRPC
  interceptor records every call but health and reflection).
- HTTP: the web edge's request latency by route and status.
- Tasks: Celery task durations and failures (signals, services/shared/celery_app.py).
- Tracking: the event stream's lag and pending entries (a collector asks the log
  when scraped).
- Campaigns: copies by state for recent campaigns (a collector queries when scraped).

A process serves ``/metrics`` on METRICS_ADDR when it is set (``serve_metrics``);
the web edge serves it on its own port.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)

RPC_SECONDS = Histogram("contentops_rpc_duration_seconds", "gRPC calls served, by service, method and status code",
                        ["service", "method", "code"], buckets=LATENCY_BUCKETS)
RPC_ERRORS = Counter("contentops_rpc_errors_total", "gRPC calls that did not end OK, by service, method and code",
                     ["service", "method", "code"])
HTTP_SECONDS = Histogram("contentops_http_request_duration_seconds", "Web edge requests, by route and status",
                         ["route", "method", "status"], buckets=LATENCY_BUCKETS)
TASK_SECONDS = Histogram("contentops_task_duration_seconds", "Celery task run time, by task and outcome",
                         ["task", "outcome"], buckets=(.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300))
TASK_FAILURES = Counter("contentops_task_failures_total", "Celery tasks that raised, by task", ["task"])
# Labelled (as every metric here): a metric without labels makes its sample at import, which in prometheus_client's
# multiprocess mode opens a file in PROMETHEUS_MULTIPROC_DIR before the worker has set the folder up.
STALE_AUTH = Counter("contentops_auth_stale_total", "Tokens accepted from the cache past AUTH_CACHE_SECONDS because the "
                     "database was unavailable (within AUTH_STALE_SECONDS), by the caller's role", ["role"])
STALE_READS = Counter("contentops_stale_reads_total", "Answers the distribution service served from its cache past their "
                      "freshness because the database was unavailable (within POST_STALE_SECONDS), by what was read",
                      ["what"])
UNTRACKED_PAGES = Counter("contentops_untracked_pages_total", "Shared pages served without a view because the tracking "
                          "log (Redis) or service was unavailable: the reader sees the post, the rep sees no read, by "
                          "the error", ["code"])


def observe_rpc(full_method: str, code: str, started: float) -> None:
    service, _, method = full_method.lstrip("/").partition("/")
    service = service.rsplit(".", 1)[-1]
    RPC_SECONDS.labels(service, method, code).observe(time.perf_counter() - started)
    if code != "OK":
        RPC_ERRORS.labels(service, method, code).inc()


class _CallbackCollector(Collector):
    """Gauges computed when scraped; a failing source yields nothing (and logs) rather than breaking /metrics."""

    def __init__(self, name: str, doc: str, labels: list[str], values: Callable[[], Iterable[tuple[list[str], float]]]):
        self.name, self.doc, self.labels, self.values = name, doc, labels, values

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        try:
            for labels, value in self.values():
                family.add_metric(labels, value)
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis or the database is down
            log.warning("metric %s unavailable", self.name, exc_info=True)
            return
        yield family


_registered: dict[str, _CallbackCollector] = {}


def register_gauge(name: str, doc: str, labels: list[str], values: Callable[[], Iterable[tuple[list[str], float]]]) -> None:
    """A gauge read from ``values()`` at scrape time; registering the same name again replaces its source (one
    process may build an app more than once, as the tests do)."""
    old = _registered.pop(name, None)
    if old is not None:
        REGISTRY.unregister(old)
    collector = _CallbackCollector(name, doc, labels, values)
    REGISTRY.register(collector)
    _registered[name] = collector


def serve_metrics(addr: str) -> Any:
    """Serve /metrics on ``host:port`` (a daemon thread) when ``addr`` is set; returns the server or None."""
    if not addr:
        return None
    host, _, port = addr.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
    log.info("metrics on http://%s/metrics", addr)
    return server
