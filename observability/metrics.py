"""Prometheus metrics of the server, exposed at ``/metrics``.

Counters and histograms live in the default ``prometheus_client`` registry of each process.
Every app records into them, so this module imports none: the gauges of the shared state
are computed at scrape time by ``observability.domain_state``.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import Counter, Gauge, Histogram

logger = logging.getLogger("trading_demo.background")

HTTP_REQUEST_SECONDS = Histogram(
    "trading_http_request_duration_seconds",
    "HTTP request latency by method, route and status.",
    ["method", "route", "status"],
)
GRPC_CALL_SECONDS = Histogram(
    "trading_grpc_call_duration_seconds",
    "gRPC client call latency by service, method and status code.",
    ["service", "method", "code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
GRPC_CALLS = Counter(
    "trading_grpc_calls_total",
    "gRPC client calls by service, method and status code.",
    ["service", "method", "code"],
)
TRADES = Counter("trading_trades_total", "Orders by the status they reached.", ["status"])
WEBSOCKET_CONNECTIONS = Gauge(
    "trading_websocket_connections", "Open WebSocket connections in this process."
)
CHANNEL_LAYER_DROPPED = Counter(
    "trading_channel_layer_dropped_total",
    "Events that could not be published to the channel layer (clients resync by seq).",
)
BACKGROUND_ROW_FAILURES = Counter(
    "trading_background_row_failures_total",
    "Rows a background job could not process (each logged with its id); the job went on "
    "with the others.",
    ["job"],
)
LEADER = Gauge(
    "trading_leader",
    "1 while this process holds the leader lock and runs the singleton background jobs.",
)

# Tells the processes behind one address apart (gunicorn's workers): their counters are per
# process, and process_start_time_seconds is the same for workers started in the same second.
PROCESS_ID = Gauge("trading_process_id", "Operating-system pid of this serving process.")
PROCESS_ID.set(os.getpid())


def observe_grpc_call(service: str, method: str, code: str, seconds: float) -> None:
    """Hook called by the gRPC client wrappers after every call."""
    GRPC_CALLS.labels(service, method, code).inc()
    GRPC_CALL_SECONDS.labels(service, method, code).observe(seconds)


def grpc_call_counts() -> dict[str, float]:
    """gRPC calls made by this process's clients so far, by ``service/method`` (all codes)."""
    counts: dict[str, float] = {}
    for metric in GRPC_CALLS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = f"{sample.labels['service']}/{sample.labels['method']}"
                counts[key] = counts.get(key, 0) + sample.value
    return counts


def background_row_failed(job: str, row_id: object) -> None:
    """Record that ``job`` could not process one row: logged with its id and its exception,
    counted in ``trading_background_row_failures_total{job=…}``. Call it from the ``except``
    block of the row's own transaction, then go on with the next row: one bad row must never
    stop a job from doing the rest of its work."""
    logger.exception("background job %s could not process row %s; going on", job, row_id)
    BACKGROUND_ROW_FAILURES.labels(job).inc()
