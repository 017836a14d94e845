"""Prometheus metrics of the server, exposed at ``/metrics``.

Counters and histograms live in the default ``prometheus_client`` registry of each process.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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


def observe_grpc_call(service: str, method: str, code: str, seconds: float) -> None:
    """Hook called by the gRPC client wrappers after every call."""
    GRPC_CALLS.labels(service, method, code).inc()
    GRPC_CALL_SECONDS.labels(service, method, code).observe(seconds)
